"""Cost estimation by pre-execution (``lego profile``): each of an NF's bricks'
per-packet CPU cost on a trace, and the SLA split into per-brick deadlines.

The brick logics run in this process, in graph order, one batch at a time,
with no IPC: the same logic objects the brick processes run
(:func:`~lego.bricks.catalog.make_logic`), so the costs are those of the
work and not of the transport. Each brick's cost is the CPU time of its
``produce``/``handle`` calls (``time.process_time``: CPU the work used, BLAS
threads included, not time other processes took) divided by the trace's packets, so the
costs add up to the pipeline's per-packet cost, whatever rows a brick sees
(mirrors reach only the extractor; only primaries are scored).

The controller takes a profile as its initial costs (``[sla].profile``) and
updates them from live load reports (an exponential average,
:func:`update_cost`); deadlines split the SLA in proportion
(:func:`~lego.control.policy_scaling.brick_deadlines`).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lego.control.policy_scaling import brick_deadlines
from lego.errors import ConfigError

LIVE_WEIGHT = 0.2  # weight of one live report in the exponential average


@dataclass
class Profile:
    trace: str
    nf: str
    options: dict[str, Any]  # the NF's options (its model among them)
    batch: int
    packets: int
    batches: int
    types: dict[str, str]  # node -> brick type, in graph order
    cost_us: dict[str, float]  # node -> CPU microseconds per trace packet
    sla_ms: float
    deadlines_ms: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def batch_costs_ms(self, batch: int) -> dict[str, float]:
        """Per-batch costs for batches of ``batch`` packets (the live reports' unit)."""
        return {r: c * batch / 1e3 for r, c in self.cost_us.items()}


def profile_trace(trace: str | Path, nf: str | None = None, options: dict | None = None,
                  sla_ms: float = 100.0, batch: int = 1024,
                  limit: int | None = None) -> Profile:
    """Run the NF's brick logics (its graph template, one replica each) over
    ``trace`` in process, in graph order; time each."""
    from lego import nfs
    from lego.bricks.catalog import make_logic
    from lego.bricks.runtime import BrickId

    if sla_ms <= 0:
        raise ConfigError(f"profile: --sla-ms: expected > 0, got {sla_ms}")
    if batch < 1:
        raise ConfigError(f"profile: --batch: expected >= 1, got {batch}")
    decl = nfs.get(nf or nfs.DEFAULT)
    options = decl.resolve(options, "profile")
    src_opts: dict = {"trace": str(trace), "batch": batch}
    if limit is not None:
        src_opts["limit"] = limit
    with tempfile.TemporaryDirectory(prefix="lego-profile-") as out:
        tmpl = decl.graph(source={"type": "packet_batching", "options": src_opts},
                          options=options, sink={"out": out, "write_scores": False,
                                                 "write_alerts": False})
        order = [tmpl["edges"][0]["from"]] + [e["to"] for e in tmpl["edges"]]
        types = {n: tmpl["bricks"][n]["type"] for n in order}
        opts = {n: {**tmpl["params"], **tmpl["bricks"][n].get("options", {})} for n in order}
        logics = {n: make_logic(types[n], opts[n], BrickId(n, 0)) for n in order}
        cpu = dict.fromkeys(logics, 0.0)
        packets = batches = 0
        produce = logics[order[0]].produce()
        while True:
            t = time.process_time()
            msg = next(produce, None)
            cpu[order[0]] += time.process_time() - t
            if msg is None:
                break
            packets += msg.n
            batches += 1
            msgs = [msg]
            for node in order[1:]:
                t = time.process_time()
                msgs = [o for m in msgs for o in logics[node].handle(m)]
                cpu[node] += time.process_time() - t
        logics[order[-1]].finish({"batches": batches})
    if not packets:
        raise ConfigError(f"profile: trace {trace}: no packets")
    cost_us = {r: 1e6 * cpu[r] / packets for r in order}
    deadlines = brick_deadlines(sla_ms / 1e3, cost_us)
    return Profile(str(trace), decl.name, options, batch, packets, batches, types, cost_us,
                   sla_ms, {r: v * 1e3 for r, v in deadlines.items()})


def load_profile(path: str | Path) -> Profile:
    """A profile written by ``lego profile --out`` (ConfigError names the file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        p = Profile(**data)
    except FileNotFoundError:
        raise ConfigError(f"[sla].profile: {path}: no such file (write it with "
                          "`lego profile --out`)") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[sla].profile: {path}: not a profile written by "
                          f"`lego profile`: {exc}") from None
    known = set(p.types)
    if set(p.cost_us) != known or any(not isinstance(v, int | float) or v < 0
                                     for v in p.cost_us.values()):
        raise ConfigError(f"[sla].profile: {path}: cost_us: expected non-negative costs for "
                          f"{sorted(known)}, got {p.cost_us}")
    return p


def update_cost(costs: dict[str, float], role: str, live_ms: float,
                weight: float = LIVE_WEIGHT) -> None:
    """Fold one live per-batch cost into ``costs`` (exponential average; the first
    live value of a role without a profile cost is taken as is)."""
    if live_ms <= 0:
        return
    old = costs.get(role)
    costs[role] = live_ms if old is None else (1.0 - weight) * old + weight * live_ms


def table_lines(p: Profile) -> list[str]:
    """The profile as a short table (pure; the CLI prints it)."""
    total = sum(p.cost_us.values())
    lines = [f"profile of {p.packets} packets ({p.batches} batches of {p.batch}), "
             f"NF {p.nf} {p.options}, SLA {p.sla_ms:g} ms",
             f"  {'brick':<6} {'type':<22} {'us/packet':>10} {'share':>7} {'deadline ms':>12}"]
    for role, kind in p.types.items():
        c = p.cost_us[role]
        lines.append(f"  {role:<6} {kind:<22} {c:>10.3f} {c / total:>7.1%} "
                     f"{p.deadlines_ms[role]:>12.3f}")
    lines.append(f"  {'total':<6} {'':<22} {total:>10.3f} {1:>7.0%} {p.sla_ms:>12.3f}")
    return lines
