"""``lego agent``: the brick agent of one NF host, driven by the controller.

    lego agent --controller HOST:PORT --token-file F --host NAME --cores N --workdir DIR \\
        [--bind HOST:PORT]

Registers with the controller, heartbeats, forwards its bricks' loads and runs
the controller's commands (:mod:`lego.bricks.brick_agent_remote`) until SIGTERM
or Ctrl-C; then stops every brick it started. ``--bind`` is its management
address (default: the local address that reaches the controller, any port).
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from lego.cli_switch import grpc_address


def positive_cores(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a number of cores > 0, got {text!r}")
    return v


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("agent", help="run the brick agent of an NF host",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--controller", type=grpc_address, required=True, metavar="HOST:PORT")
    p.add_argument("--token-file", required=True, metavar="FILE")
    p.add_argument("--host", required=True, metavar="NAME", help="this host's name in the "
                   "controller config")
    p.add_argument("--cores", type=positive_cores, required=True, metavar="N")
    p.add_argument("--workdir", type=Path, required=True, metavar="DIR",
                   help="brick specs, logs and ipc sockets (keep the path short)")
    p.add_argument("--bind", type=grpc_address, default=None, metavar="HOST:PORT",
                   help="management address of the agent's API (default: towards the "
                   "controller, any port)")
    p.set_defaults(func=cmd_agent)


def cmd_agent(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    import signal

    from lego.bricks.brick_agent_remote import RemoteAgent
    from lego.control.northbound import read_token

    token = read_token(args.token_file)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent = RemoteAgent(args.controller, token, args.host, args.cores, args.workdir,
                        bind=args.bind)
    try:
        agent.start()
        print(f"agent {args.host}: serving on {agent.address}, controller {args.controller}",
              flush=True)
        agent.serve_forever(stop)
    finally:
        agent.close()
    return 0
