"""``lego controller``: drive one switch over P4Runtime (the southbound only).

    lego controller --switch 127.0.0.1:9559 --traffic-port 1 --replica 2 --replica 3 \\
        [--forward 2:9] [--semantics lego] [--truncate 128] [--election-id 1] \\
        [--rebalance-every 5 | --once]

Connects as primary, makes the switch hold Algorithm 1's plan for the NF's
semantics (pipeline, port roles, split groups, bucket owners, clone sessions;
only what differs is written), prints one line, and then, unless ``--once``,
rebalances the buckets by the measured counters every ``--rebalance-every``
seconds, reconnecting and re-syncing after a switch restart.
:func:`controller_config` is the pure part; ``cmd_controller`` runs it.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass

from lego.cli_args import non_negative_int
from lego.cli_switch import grpc_address
from lego.errors import ConfigError

log = logging.getLogger(__name__)


def port_pair(text: str) -> tuple[int, int]:
    """``IN:OUT`` ports, each in 0..510."""
    a, sep, b = text.partition(":")
    if not sep or not a.isdigit() or not b.isdigit() or int(a) > 510 or int(b) > 510:
        raise argparse.ArgumentTypeError(f"expected IN:OUT with ports in 0..510, got {text!r}")
    return int(a), int(b)


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return v


@dataclass(frozen=True)
class ControllerConfig:
    address: str
    device_id: int
    election_id: int
    plan: object  # lego.control.switch_state.SwitchPlan
    rebalance_every: float | None  # None: sync once and exit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("controller", help="drive a switch over P4Runtime (southbound)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--switch", type=grpc_address, default="127.0.0.1:9559", metavar="HOST:PORT",
                   help="the switch's P4Runtime address (default 127.0.0.1:9559)")
    p.add_argument("--device-id", type=non_negative_int, default=0, metavar="N")
    p.add_argument("--election-id", type=non_negative_int, default=1, metavar="N")
    p.add_argument("--traffic-port", type=non_negative_int, action="append", default=[],
                   metavar="PORT", dest="traffic", help="traffic-facing port (repeatable)")
    p.add_argument("--replica", type=non_negative_int, action="append", default=[],
                   metavar="PORT", dest="replicas", help="NF replica port (repeatable)")
    p.add_argument("--forward", type=port_pair, action="append", default=[], metavar="IN:OUT",
                   help="forward frames from IN to OUT unchanged, e.g. alerts (repeatable)")
    p.add_argument("--semantics", choices=("lego", "kitsune"), default="lego",
                   help="the NF's feature semantics, declared to Algorithm 1 (default lego)")
    p.add_argument("--truncate", type=non_negative_int, default=0, metavar="BYTES",
                   help="truncate mirrored copies to BYTES (default 0: whole frames)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="sync once and exit")
    mode.add_argument("--rebalance-every", type=positive_float, default=5.0, metavar="SECONDS",
                      help="rebalance period (default 5)")
    p.set_defaults(func=cmd_controller)


def controller_config(args: argparse.Namespace) -> ControllerConfig:
    """Arguments -> config (pure: runs Algorithm 1, opens nothing)."""
    from lego.control.granularity import plan_split
    from lego.control.switch_state import SwitchPlan
    from lego.ext.features import state_groups

    if not args.traffic:
        raise ConfigError("controller: expected at least one --traffic-port, got none")
    if not args.replicas:
        raise ConfigError("controller: expected at least one --replica, got none")
    forward = dict(args.forward)
    if len(forward) != len(args.forward):
        raise ConfigError(f"controller: a --forward IN port is given twice: {args.forward}")
    plan = SwitchPlan.from_split(plan_split(state_groups(args.semantics)), args.traffic,
                                 args.replicas, forward=forward, truncate=args.truncate)
    return ControllerConfig(args.switch, args.device_id, args.election_id, plan,
                            None if args.once else args.rebalance_every)


def cmd_controller(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    from lego.control.p4rt_client import P4RuntimeClient
    from lego.control.p4rt_errors import SwitchUnavailable
    from lego.control.switch_manager import SwitchManager

    cfg = controller_config(args)
    stop = stop or threading.Event()
    with P4RuntimeClient(cfg.address, cfg.device_id, cfg.election_id) as client:
        client.reconnect()
        manager = SwitchManager(client, cfg.plan)
        report = manager.sync()
        print(f"controller: switch {cfg.address}: groups {cfg.plan.groups}, replicas "
              f"{list(cfg.plan.replica_ports)}, {report.changes} updates written"
              f"{', pipeline pushed' if report.pipeline_pushed else ''}")
        while cfg.rebalance_every is not None and not stop.wait(cfg.rebalance_every):
            try:
                if not client.connected:
                    manager.recover()
                moves = manager.rebalance(now=time.monotonic())
                if moves:
                    log.info("rebalanced: %d buckets moved", len(moves))
            except SwitchUnavailable as exc:
                log.warning("switch unavailable (%s); reconnecting", exc)
                manager.recover()
    return 0
