"""LUCID through the NF boundary (:class:`lego.nfs.NetworkFunction`).

LUCID's state is keyed by the bidirectional 5-tuple (a flow's open fragment and its
TCP conversation's base numbers), and one clock no header keys: the time window
every flow's fragments follow. The declaration puts that clock in the switch (a
register restarted by the first frame past start + t, stamped on every frame;
DESIGN §4), so Algorithm 1 splits on the symmetric 5-tuple with no mirror. The
split simulator keeps the clock and the symmetric hash as the switch will;
lego.p4 carries neither yet, and the live brick graph is not built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lego.errors import ConfigError
from lego.nfs import FRAME, NetworkFunction

#: LUCID's README example, 10t-10n: 10 s windows, at most 10 packets per fragment
DEFAULT_WINDOW, DEFAULT_PACKETS = 10.0, 10

SOCKET = frozenset({"src_ip", "dst_ip", "src_port", "dst_port", "proto"})
FEATURES = ("time", "ip_len", "highest_layer", "ip_flags", "protocols", "tcp_len", "tcp_ack",
            "tcp_flags", "tcp_window", "udp_len", "icmp_type")


def state_groups(options: Mapping[str, Any]) -> list:
    from lego.control.granularity import StateGroup

    return [StateGroup("flow", SOCKET, symmetric=True, features=FEATURES)]


def global_state() -> tuple:
    from lego.control.granularity import GlobalState

    return (GlobalState("window clock", switch_held=True, features=("time",)),)


def check(options: Mapping[str, Any], where: str) -> None:
    if not options["window"] > 0:
        raise ConfigError(f"{where}: window: expected seconds > 0, got {options['window']!r}")
    if options["packets"] < 1:
        raise ConfigError(f"{where}: packets: expected >= 1, got {options['packets']!r}")


def split_experiment(trace, replicas, out, model=None) -> list:
    from lego.nfs.lucid.split import split_experiment as run

    return run(trace, replicas, out, model)


def offline(trace, options, packets, results, labels, quiet) -> dict:
    from lego.nfs.lucid.detect import offline_run

    return offline_run(trace, dict(options), packets, results, labels, quiet)


def graph(**_: Any) -> dict:
    raise ConfigError("lucid: the live brick graph is not built yet: LUCID runs offline "
                      "(lego lucid run, lego run --nf lucid --offline)")


NF = NetworkFunction(
    name="lucid",
    state_groups=state_groups,
    global_state=global_state(),
    graph=graph,
    packet_fields=(FRAME,),
    options={"window": (float, DEFAULT_WINDOW), "packets": (int, DEFAULT_PACKETS),
             "model": (str, None)},
    check=check,
    merge="window",
    window_clock=lambda options: float(options["window"]),
    split_experiment=split_experiment,
    offline=offline,
    cli="lego.nfs.lucid.cli",
    help="LUCID: a CNN over bidirectional-flow time windows (supervised)",
)
