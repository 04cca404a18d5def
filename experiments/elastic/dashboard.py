"""The live terminal dashboard of ``lego run`` (rich): one status -> one renderable.

:func:`render` is pure (a status dict from :mod:`lego.topo.status`, the
rates and the replay step -> a rich Group); the run refreshes it in a
``rich.live.Live`` about twice a second.
"""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def _bar(fraction: float, width: int = 12) -> str:
    n = int(round(max(0.0, min(1.0, fraction)) * width))
    return "█" * n + "·" * (width - n)


def render(status: dict, pps_in: float, pps_out: float, step: str, elapsed: float,
           title: str) -> Group:
    head = Table.grid(padding=(0, 3))  # three columns: readable at 80 columns
    sw = status.get("switch", {})
    ev = sw.get("events", {})
    ports = sw.get("replica_ports", [])
    head.add_row(Text(f"t = {elapsed:.1f} s", style="bold"),
                 Text(f"in {pps_in:,.0f} pkt/s", style="cyan"),
                 Text(f"out {pps_out:,.0f} pkt/s", style="cyan"))
    head.add_row(Text(f"replicas {len(ports)} (ports {', '.join(map(str, ports))})"),
                 Text(f"alerts {status.get('alerts', 0):,}", style="bold red"),
                 Text(f"scores {status.get('scores', 0):,}"))
    head.add_row(Text(step), Text(f"mirrored {ev.get('mirror', 0):,}"),
                 Text(f"unowned {ev.get('unowned', 0):,}, malformed "
                      f"{ev.get('parser_error', 0) + ev.get('runt', 0):,}"))
    head.add_row(Text(f"controller: {status.get('mode', '?')}"), Text(""), Text(""))
    bricks = Table(title="bricks", expand=True, title_justify="left")
    for col in ("brick", "role", "replicas", "load", "pps", "queue", "packets", "state"):
        bricks.add_column(col, justify="right" if col in ("pps", "queue", "packets",
                                                          "replicas") else "left",
                          no_wrap=col == "load")
    for b in status.get("bricks", []):
        style = "red" if b.get("state") == "died" else None
        bricks.add_row(b["brick"], b.get("role") or b["type"], str(b["replicas"]),
                       f"{_bar(b['utilisation'], 8)} {100 * b['utilisation']:3.0f}%",
                       f"{b['pps']:.0f}", str(b["queue_depth"]), f"{b['packets_in']:,}",
                       b.get("state", ""), style=style)
    ports = Table(title="switch ports", title_justify="left")
    ports.add_column("port")
    ports.add_column("in", justify="right")
    ports.add_column("out", justify="right")
    for p, v in sorted(sw.get("ports", {}).items(), key=lambda kv: int(kv[0])):
        ports.add_row(str(p), f"{v['in']:,}", f"{v['out']:,}")
    events = Table(title="events", title_justify="left")
    events.add_column("event")
    for e in status.get("events", [])[-6:]:
        events.add_row(e["what"])
    lower = Table.grid(padding=(0, 4))
    lower.add_row(ports, events)
    return Group(Panel(head, title=title), bricks, lower)
