"""P4Runtime from the outside, for the tests: what p4runtime-shell reads from a
running switch (:func:`shell_reads`). The tests' own P4Runtime client is
:class:`lego.switch.small_client.SmallClient` (the switch benchmark uses it too)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lego.errors import LegoError

#: p4runtime-shell's own environment (tools/setup-host; it pins protobuf < 3.21)
SHELL_VENV = Path(__file__).resolve().parents[2] / ".venv-shell"


def shell_python() -> str:
    """The interpreter that runs p4runtime-shell; the test is skipped without it."""
    python = SHELL_VENV / "bin" / "python"
    if not python.exists():
        pytest.skip(f"p4runtime-shell's environment {SHELL_VENV} is missing: tools/setup-host")
    return str(python)

#: the README's inspection recipe as a script: p4runtime-shell connects as a backup
#: (election id 0,1) and prints what it reads as one JSON line
_SHELL_READS = """
import json, sys
import p4runtime_sh.shell as sh
sh.setup(device_id=0, grpc_addr=sys.argv[1], election_id=(0, 1), verbose=False)
out = {}
try:
    te = sh.TableEntry("LegoIngress.split_group")
    te.is_default = True
    defaults = list(te.read())
    out["default"] = [e.action.action_name for e in defaults]
    # the owner table's version frames read: split_group's epoch, low bit
    version = int.from_bytes(defaults[0].action["epoch"].value, "big") & 1
    out["owners"] = sum(int.from_bytes(e.match["meta.version"].exact.value, "big") == version
                        for e in sh.TableEntry("LegoIngress.bucket_owner").read())
    out["sessions"] = sorted(s.session_id for s in sh.CloneSessionEntry(0).read())
    out["port_in"] = len(list(sh.CounterEntry("LegoIngress.port_in_counter").read()))
    try:
        sh.TableEntry("LegoIngress.bucket_owner")(action="LegoIngress.unowned").insert()
        out["write"] = "accepted"
    except Exception as exc:
        out["write"] = type(exc).__name__
finally:
    sh.teardown()
print(json.dumps(out))
"""


def shell_reads(grpc_addr: str, timeout: float = 60.0) -> dict[str, Any]:
    """What p4runtime-shell reads from a running switch as a backup: the split
    group's default action, bucket owners (of the version frames read),
    clone sessions, port counters, and
    whether its write was refused. A subprocess: the shell's client is one global
    and its stream thread is not a daemon."""
    done = subprocess.run([shell_python(), "-c", _SHELL_READS, grpc_addr],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise LegoError(f"p4runtime-shell failed: {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
