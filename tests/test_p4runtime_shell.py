"""p4runtime-shell inspects the software target: list tables, insert, read, counters.

p4runtime-shell's stream thread is not a daemon and its client is one global,
so it always runs in a subprocess with a timeout, and its script tears down in
``finally``. The server runs in this process on port 0.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from lego.p4src.p4info import load_p4info
from lego.switch import pipeline as pl
from lego.switch.server import P4RuntimeServer
from tests.support.p4rt import shell_python

TIMEOUT = 60

SCRIPT = textwrap.dedent("""
    import json, sys
    import p4runtime_sh.shell as sh
    from p4runtime_sh.context import P4Type
    sh.setup(device_id=0, grpc_addr=sys.argv[1], election_id=(0, 1), verbose=False)
    out = {}
    try:
        out["tables"] = sorted(name for name, _ in sh.context.get_objs(P4Type.table))
        te = sh.TableEntry("LegoIngress.bucket_owner")(action="LegoIngress.to_replica")
        te.match["meta.bucket"] = "5"
        te.match["meta.version"] = "0"
        te.action["port"] = "3"
        te.insert()
        dup = sh.TableEntry("LegoIngress.bucket_owner")(action="LegoIngress.to_replica")
        dup.match["meta.bucket"] = "5"
        dup.match["meta.version"] = "0"
        dup.action["port"] = "4"
        try:
            dup.insert()
            out["duplicate"] = "accepted"
        except Exception as exc:  # P4RuntimeWriteException
            out["duplicate"] = str(exc)
        out["entries"] = [(e.match["meta.bucket"].exact.value.hex(),
                           e.action["port"].value.hex())
                          for e in sh.TableEntry("LegoIngress.bucket_owner").read()]
        d = sh.TableEntry("LegoIngress.split_group")(action="LegoIngress.set_groups")
        d.is_default = True
        d.action["primary"] = "2"
        d.action["mirror"] = "5"
        d.action["epoch"] = "1"
        d.modify()
        cs = sh.CloneSessionEntry(4)
        cs.add(3, 1)
        cs.insert()
        out["sessions"] = [s.session_id for s in sh.CloneSessionEntry(0).read()]
        ce = sh.CounterEntry("LegoIngress.bucket_counter")
        ce.index = 5
        out["counter"] = [(c.index, c.packet_count) for c in ce.read()]
        out["api"] = sh.client.api_version()
    finally:
        sh.teardown()
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture
def server():
    srv = P4RuntimeServer(pl.Pipeline(), device_id=0, p4info=load_p4info())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_p4runtime_shell_api_lists_inserts_reads(server):
    proc = subprocess.run([shell_python(), "-c", SCRIPT, server.grpc_addr], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out["tables"] == sorted([pl.T_PORT_ROLE, pl.T_SPLIT_GROUP, pl.T_BUCKET_OWNER,
                                    pl.T_MIRROR_OWNER, pl.T_WINDOW_CLOCK, pl.T_FRAME_LOG])
    assert "ALREADY_EXISTS" in out["duplicate"]
    assert out["entries"] == [["05", "03"]]
    assert out["sessions"] == [4]
    assert out["counter"] == [[5, 0]]
    assert out["api"] == "1.4.1"
    state = server.service.pipeline.state
    assert state.bucket_owner[0, 5] == 3 and state.mirror_group == pl.GROUP_DSTIP
    assert state.clone_sessions[4].replicas == [3]


def test_p4runtime_shell_interactive(server):
    """``python -m p4runtime_sh`` with commands on stdin (IPython without a tty)."""
    commands = "\n".join([
        'print("TABLES", sorted(t.name for t in tables))',
        'te = table_entry["LegoIngress.port_role"](action="LegoIngress.role_traffic")',
        'te.match["standard_metadata.ingress_port"] = "1"',
        "te.insert()",
        'print("READ", [e.match["standard_metadata.ingress_port"].exact.value.hex() '
        'for e in table_entry["LegoIngress.port_role"].read()])',
        "exit",
    ]) + "\n"
    proc = subprocess.run(
        [shell_python(), "-m", "p4runtime_sh", "--grpc-addr", server.grpc_addr,
         "--device-id", "0", "--election-id", "0,1"],
        input=commands, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TABLES" in proc.stdout and "LegoIngress.port_role" in proc.stdout, proc.stdout
    assert "READ ['01']" in proc.stdout, proc.stdout
    assert server.service.pipeline.state.port_roles[1][0] == pl.ROLE_TRAFFIC
