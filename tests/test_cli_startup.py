"""``lego --help`` answers at once: building the parser (every subcommand, every
NF's) imports none of the heavy libraries the commands themselves use."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("scipy", "ray", "matplotlib", "grpc", "zmq", "lego.ext._afterimage", "lego.ext._kitnet")


def test_building_the_cli_imports_nothing_heavy():
    code = ("import json, sys; from lego.cli import build_parser; build_parser(); "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert json.loads(out.stdout) == []
