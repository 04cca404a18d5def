"""``lego node``: make this server an NF host of a LEGO Ray cluster.

    lego node --head HEAD:PORT --host nf1 --ports 2 --cores 4 [--node-ip IP] [--print]

A thin wrapper around ``ray start --address=HEAD:PORT``: it adds the custom
resources brick actors are placed by (``nf:<host>`` and ``port:<p>`` for each
switch port the server is wired to) and the server's cores. The controller
(``lego controller run``, ``[ray].address``) then places that host's bricks
there. ``--print`` shows the command instead of running it. Stop the node with
``ray stop`` on that server.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess

from lego.cli_args import positive_float


def register(subparsers) -> None:
    p = subparsers.add_parser("node", help="join this server to the Ray cluster as an NF host",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--head", required=True, metavar="HOST:PORT", help="the Ray head (GCS)")
    p.add_argument("--host", required=True, metavar="NAME", help="its [[hosts]] name")
    p.add_argument("--ports", required=True, type=int, nargs="+", metavar="PORT",
                   help="the switch port(s) it is wired to")
    p.add_argument("--cores", required=True, type=positive_float, metavar="N")
    p.add_argument("--node-ip", metavar="IP", help="its management address (default: Ray's)")
    p.add_argument("--print", action="store_true", help="print the command, do not run it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lego.control.ray_bricks import QUIET_ENV, worker_argv

    argv = worker_argv(args.head, args.host, args.ports, args.cores, args.node_ip)
    if args.print:
        print(shlex.join(argv))
        return 0
    return subprocess.call(argv, env=dict(os.environ, **QUIET_ENV))
