"""LUCID through the NF boundary (:class:`lego.nfs.NetworkFunction`).

LUCID's state is keyed by the bidirectional 5-tuple (a flow's open fragment and its
TCP conversation's base numbers), and one clock no header keys: the time window
every flow's fragments follow. The declaration puts that clock in the switch (a
register restarted by the first frame past start + t, stamped on every frame;
DESIGN §4), so Algorithm 1 splits on the symmetric 5-tuple with no mirror, and
the controller installs the clock's period with the split. The brick graph:
source (the frames) -> flow windows (keyed) -> CNN (stateless) -> decision
(:mod:`lego.nfs.lucid.bricks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lego.bricks.catalog import BrickType
from lego.errors import ConfigError
from lego.nfs import FRAME, NetworkFunction, chain_template

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


BRICK_TYPES = (
    BrickType("flow_windows", "lego.nfs.lucid.bricks:FlowWindows", "worker", "keyed",
              "LUCID's extractor: frames in, a window's fragments out once it closes"),
    BrickType("cnn", "lego.nfs.lucid.bricks:Classifier", "worker", "stateless",
              "LUCID's CNN: the probability that a fragment is an attack"),
    BrickType("lucid_decision", "lego.nfs.lucid.bricks:Decision", "sink", "single",
              "merges fragments' probabilities in switch order; malicious above 0.5"),
)
NODES = (("src", None), ("fx", "flow_windows"), ("cnn", "cnn"), ("dec", "lucid_decision"))


def graph(*, source: Mapping[str, Any], options: Mapping[str, Any],
          replicas: Mapping[str, int] | None = None, sink: Mapping[str, Any] | None = None,
          name: str | None = None) -> dict:
    """The four-brick graph (graph-file layout): ``source`` the framework's source
    brick (its options with ``NF.source_options()``: frames); ``options`` LUCID's
    (window, packets, model); ``replicas`` per node (the extractor's are the switch's
    ports: one per graph); ``sink`` the decision's options."""
    replicas = dict(replicas or {})
    if replicas.get("fx", 1) != 1:
        raise ConfigError(f"lucid: the flow-window extractor runs one replica per graph (the "
                          f"switch splits flows over graphs), got {replicas['fx']}")
    bricks, edges = chain_template(NODES, source, replicas, sink)
    params = {"nf": "lucid", "window": float(options.get("window", DEFAULT_WINDOW)),
              "packets": int(options.get("packets", DEFAULT_PACKETS))}
    if options.get("model"):
        params["model"] = str(options["model"])
    return {"graph": {"name": name or "lucid"}, "params": params, "bricks": bricks,
            "edges": edges}


def train(trace: str | Path, out: str | Path, options: Mapping[str, Any], packets: int) -> Path:
    """LUCID's CNN for a run, saved to ``out``: the ``model`` option's, or one trained
    on the labelled generated trace of seed :data:`~lego.nfs.lucid.detect.TRAINING_SEED`
    (LUCID is supervised: a replayed trace's prefix rarely holds both classes, so
    ``trace`` and ``packets`` are not read)."""
    from lego.nfs.lucid.detect import prepared_model

    return prepared_model(options, Path(out))


def instance(model: str | Path, options: Mapping[str, Any]):
    from lego.nfs.lucid.bricks import Instance

    return Instance(model, options)


def run(trace: str | Path, options: Mapping[str, Any], packets: int):
    """One instance over a whole trace: (first frame of each fragment, probability,
    scored: all)."""
    from lego.nfs.lucid.detect import run_trace

    return run_trace(Path(trace), options)


NF = NetworkFunction(
    name="lucid",
    state_groups=state_groups,
    global_state=global_state(),
    graph=graph,
    brick_types=BRICK_TYPES,
    packet_fields=(FRAME,),
    options={"window": (float, DEFAULT_WINDOW), "packets": (int, DEFAULT_PACKETS),
             "model": (str, None)},
    check=check,
    merge="window",
    window_clock=lambda options: float(options["window"]),
    split_experiment=split_experiment,
    train=train,
    prefix_training=False,
    decision_threshold=0.5,
    instance=instance,
    run=run,
    offline=offline,
    cli="lego.nfs.lucid.cli",
    help="LUCID: a CNN over bidirectional-flow time windows (supervised)",
)
