"""The ``lego`` command line: one entry point, subcommands registered by modules.

Each ``lego.cli_*`` module exposes ``register(subparsers)`` and sets ``func`` on
its parsers; ``func(args)`` returns the exit status. Only this module prints
errors and exits.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lego import __version__, nfs
from lego.errors import LegoError

COMMAND_MODULES = (
    "lego.cli_trace",
    "lego.cli_run",
    "lego.cli_experiment",
    "lego.cli_switch",
    "lego.cli_bricks",
    "lego.cli_controller",
    "lego.cli_node",
    "lego.cli_profile",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lego", description="LEGO: scale ANN-based network functions on a P4 dataplane."
    )
    parser.add_argument("--version", action="version", version=f"lego {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for nf in nfs.all_builtin():  # each NF's own subcommand (``lego kitsune`` ...)
        if nf.cli:
            importlib.import_module(nf.cli).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except LegoError as exc:
        print(f"lego: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lego: interrupted", file=sys.stderr)
        return 130
