"""``lego controller``: the LEGO controller, and its southbound-only mode.

    lego controller run --config FILE          # the whole controller (TOML config)
    lego controller status --controller HOST:PORT --token-file F [--json]

``run`` serves the northbound API, drives the switch and the bricks (Ray actors on
the cluster at ``[ray].address``), and scales the NF
(:mod:`lego.control.runtime`); ``status`` prints GetStatus (one JSON
document with ``--json``, else a short table). Without a subcommand:

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
    p.add_argument("--nf", default=None, metavar="NAME",
                   help="the NF whose state groups Algorithm 1 reads (default: lego.nfs.DEFAULT)")
    p.add_argument("--semantics", default="lego",
                   help="the NF's feature semantics, where it has that option (default lego)")
    p.add_argument("--nf-option", action="append", default=[], metavar="KEY=VALUE",
                   help="one of the NF's options, e.g. window=1 for LUCID: its window "
                   "clock's period (repeatable)")
    p.add_argument("--truncate", type=non_negative_int, default=0, metavar="BYTES",
                   help="truncate mirrored copies to BYTES (default 0: whole frames)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="sync once and exit")
    mode.add_argument("--rebalance-every", type=positive_float, default=5.0, metavar="SECONDS",
                      help="rebalance period (default 5)")
    p.set_defaults(func=cmd_controller)
    sub = p.add_subparsers(dest="controller_command", metavar="{run,status}")
    r = sub.add_parser("run", help="run the controller from a TOML config")
    r.add_argument("--config", required=True, metavar="FILE", help="controller config (TOML)")
    r.add_argument("--check", action="store_true", help="check the config and exit")
    r.set_defaults(func=cmd_run)
    st = sub.add_parser("status", help="print the controller's status (GetStatus)")
    st.add_argument("--controller", type=grpc_address, required=True, metavar="HOST:PORT")
    st.add_argument("--token-file", required=True, metavar="FILE")
    st.add_argument("--json", action="store_true", help="print the raw JSON document")
    st.set_defaults(func=cmd_status)


def cmd_run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    import signal

    from lego.control.config import load_config
    from lego.control.northbound import read_token
    from lego.control.runtime import ControllerRuntime

    cfg = load_config(args.config)
    if args.check:
        print(f"controller config {args.config}: ok ({len(cfg.hosts)} hosts, ports "
              f"{cfg.all_ports})")
        return 0
    token = read_token(cfg.northbound["token_file"])
    stop = stop or threading.Event()
    main = threading.current_thread() is threading.main_thread()

    def on_sigterm() -> None:
        if main:
            signal.signal(signal.SIGTERM, lambda *_: stop.set())

    on_sigterm()
    rt = ControllerRuntime(cfg, token)
    try:
        rt.start()
        on_sigterm()  # again: connecting to Ray installed its own (a crash report, exit)
        print(f"controller: northbound on {rt.address}, switch {cfg.switch['address']}: "
              f"{rt.sync_report.changes} updates written"
              f"{' (assignment adopted)' if rt.sync_report.adopted else ''}", flush=True)
        rt.run(stop)
    finally:
        rt.close()
    return 0


def status_lines(st: dict) -> list[str]:
    """A short human view of a GetStatus document (pure)."""
    lines = [f"alerts {st.get('alerts', 0)}  scores {st.get('scores', 0)}  "
             f"hosts {sum(a['alive'] for a in st.get('hosts', []))}/"
             f"{len(st.get('hosts', []))}"]
    for b in st.get("bricks", []):
        lines.append(f"  {b['id']:<12} {b['host']:<8} util {b['utilisation']:.2f}  "
                     f"queue {b['queue_depth']:>3}  pps {b['pps']:>9.1f}"
                     f"{'  standby' if b.get('standby') else ''}")
    for port, c in sorted(st.get("switch", {}).get("ports", {}).items()):
        lines.append(f"  port {port}: in {c['packets_in']} out {c['packets_out']}")
    for e in st.get("events", [])[-5:]:
        lines.append(f"  event {e['kind']} " + " ".join(f"{k}={v}" for k, v in e.items()
                                                         if k not in ("kind", "t")))
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from lego.control import northbound as nb

    client = nb.controller_client(args.controller, nb.read_token(args.token_file))
    try:
        reply = client.call("GetStatus", nb.pb.StatusRequest())
    finally:
        client.close()
    if args.json:
        print(reply.json)
    else:
        print("\n".join(status_lines(json.loads(reply.json))))
    return 0


def controller_config(args: argparse.Namespace) -> ControllerConfig:
    """Arguments -> config (pure: runs Algorithm 1, opens nothing)."""
    from lego import nfs
    from lego.control.switch_state import SwitchPlan

    if not args.traffic:
        raise ConfigError("controller: expected at least one --traffic-port, got none")
    if not args.replicas:
        raise ConfigError("controller: expected at least one --replica, got none")
    forward = dict(args.forward)
    if len(forward) != len(args.forward):
        raise ConfigError(f"controller: a --forward IN port is given twice: {args.forward}")
    nf = nfs.get(args.nf or nfs.DEFAULT)
    options = nf.pick(**{**nf.parse_options(args.nf_option), "semantics": args.semantics})
    plan = SwitchPlan.from_split(nf.plan(options), args.traffic, args.replicas,
                                 forward=forward, truncate=args.truncate,
                                 window_us=nf.window_us(options))
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
