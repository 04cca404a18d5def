"""The controller's P4Runtime client against the software target's real gRPC server
(in process, port 0): arbitration, pipeline push, batched writes and their
per-update errors, reads, losing primaryship, reconnect with bounded backoff, and
p4runtime-shell reading what the controller wrote as a backup."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time

import numpy as np
import pytest
from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as p4r

from lego.control.p4rt_client import Backoff, P4RuntimeClient
from lego.control.p4rt_entities import DELETE, INSERT, MODIFY, CloneSpec, TableRow
from lego.control.p4rt_errors import (
    NotPrimary,
    PipelineMissing,
    SwitchUnavailable,
    UpdateFailure,
    WriteError,
)
from lego.errors import ConfigError
from lego.p4src.p4info import load_p4info
from lego.polling import wait_for
from lego.switch import pipeline as pl
from tests.support.p4rt import shell_python

pytestmark = pytest.mark.timeout(120)


def owner_row(bucket: int, port: int) -> TableRow:
    return TableRow(pl.T_BUCKET_OWNER, (("meta.bucket", bucket), ("meta.version", 0)),
                    pl.A_TO_REPLICA,
                    (("port", port),))


@pytest.fixture
def clients():
    opened: list[P4RuntimeClient] = []

    def make(addr: str, election_id: int = 1, **kw) -> P4RuntimeClient:
        c = P4RuntimeClient(addr, election_id=election_id, timeout=3.0, **kw)
        opened.append(c)
        return c

    try:
        yield make
    finally:
        for c in opened:
            c.close()


def test_backoff_is_exponential_capped_and_bounded():
    d = list(Backoff(initial=0.1, factor=2.0, max_delay=0.5, budget=2.0).delays())
    assert d[:4] == [0.1, 0.2, 0.4, 0.5]
    assert sum(d) == pytest.approx(2.0)
    assert max(d) <= 0.5


def test_write_request_encoding_equals_the_protobuf_message():
    c = P4RuntimeClient("127.0.0.1:1", device_id=3, election_id=(7 << 64) | 9, role="r")
    from lego.control.p4rt_entities import P4Names

    n = P4Names(load_p4info())
    ups = [n.update(INSERT, owner_row(b, 2)) for b in range(300)]
    ups.append(n.update(INSERT, CloneSpec(3, (2, 4), 128)))
    want = p4r.WriteRequest(device_id=3, role="r", atomicity=p4r.WriteRequest.ROLLBACK_ON_ERROR)
    want.election_id.high, want.election_id.low = 7, 9
    want.updates.extend(ups)
    got = p4r.WriteRequest.FromString(c._encode_write(ups, p4r.WriteRequest.ROLLBACK_ON_ERROR))
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)


def test_connect_push_pipeline_write_and_read_back(servers, clients):
    srv = servers()
    c = clients(srv.grpc_addr)
    assert c.connect() is True and c.is_primary
    with pytest.raises(PipelineMissing):
        c.get_pipeline()
    cookie = c.set_pipeline(load_p4info(), device_config=b"")
    running = c.get_pipeline()
    assert running.cookie.cookie == cookie
    n = c.names
    rows = [owner_row(b, 2 + b % 2) for b in range(10)]
    updates = [n.update(INSERT, r) for r in rows]
    updates.append(n.update(MODIFY, TableRow(pl.T_SPLIT_GROUP, (), pl.A_SET_GROUPS,
                                             (("epoch", 3), ("mirror", pl.GROUP_DSTIP),
                                              ("primary", pl.GROUP_SRCIP)), is_default=True)))
    updates.append(n.update(INSERT, CloneSpec(3, (2,), 64)))
    assert c.write(updates) == 1
    got = c.read_tables([pl.T_BUCKET_OWNER, pl.T_SPLIT_GROUP])
    assert [r for r in got if not r.is_default] == rows
    split_default = next(r for r in got if r.table == pl.T_SPLIT_GROUP)
    assert dict(split_default.params) == {"primary": pl.GROUP_SRCIP, "mirror": pl.GROUP_DSTIP,
                                          "epoch": 3}
    assert c.read_clone_sessions() == {3: CloneSpec(3, (2,), 64)}
    # the switch's own state (the model) holds it
    state = srv.service.pipeline.state
    assert state.bucket_owner[0, :10].tolist() == [2, 3] * 5
    assert state.mirror_group == pl.GROUP_DSTIP and state.clone_sessions[3].replicas == [2]
    # counters read back by name
    c.write([n.update(DELETE, owner_row(0, 2))])
    assert state.bucket_owner[0, 0] == -1
    counters = c.read_counters([pl.C_PORT_OUT, pl.C_BUCKET])
    assert counters[pl.C_PORT_OUT].shape == (pl.N_PORTS, 2)
    assert counters[pl.C_BUCKET].shape == (pl.N_BUCKETS, 2)
    # only the cells asked for, per counter: the rest stay 0 and are not sent
    state.counters[pl.C_PORT_OUT][[2, 3, 9], 0] = [5, 6, 7]
    state.counters[pl.C_EVENT][:, 0] = np.arange(1, pl.N_EVENTS + 1)
    sent = []
    real_read = c.read
    c.read = lambda q: sent.append(len(q)) or real_read(q)
    got = c.read_counters([pl.C_PORT_OUT, pl.C_EVENT], {pl.C_PORT_OUT: [2, 3]})
    assert sent == [3]  # two cells and one whole counter
    assert got[pl.C_PORT_OUT][:, 0].tolist() == [0, 0, 5, 6] + [0] * (pl.N_PORTS - 4)
    assert got[pl.C_EVENT][:, 0].tolist() == list(range(1, pl.N_EVENTS + 1))
    assert c.read_counters([pl.C_PORT_OUT], {pl.C_PORT_OUT: []})[pl.C_PORT_OUT].sum() == 0


def test_failed_batch_reports_each_failed_update_by_index(servers, clients):
    srv = servers(with_pipeline=True)
    c = clients(srv.grpc_addr)
    c.connect()
    n = c.names
    c.write([n.update(INSERT, owner_row(b, 2)) for b in (1, 3)])
    batch = [n.update(INSERT, owner_row(b, 4)) for b in range(5)]  # 1 and 3 exist
    batch.append(n.update(MODIFY, owner_row(700, 4)))  # no such entry
    with pytest.raises(WriteError) as info:
        c.write(batch)
    err = info.value
    assert err.indices == [1, 3, 5]
    assert [f.code for f in err.failures] == [code_pb2.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS,
                                              code_pb2.NOT_FOUND]
    assert isinstance(err.failures[0], UpdateFailure)
    assert "meta.bucket=1" in err.failures[0].update
    assert "update #1" in str(err) and "ALREADY_EXISTS" in str(err)
    # the ones that did not fail are applied (CONTINUE_ON_ERROR)
    assert srv.service.pipeline.state.bucket_owner[0, :5].tolist() == [4, 2, 4, 2, 4]


def test_a_write_with_a_thousand_failed_updates_reports_each(servers, clients):
    """Per-update errors travel in the trailing metadata: far past gRPC's default
    16 KB here, and the client must still read them (and keep its stream)."""
    srv = servers(with_pipeline=True)
    c = clients(srv.grpc_addr)
    c.connect()
    rows = [c.names.update(INSERT, owner_row(b, 2)) for b in range(pl.N_BUCKETS)]
    c.write(rows)
    with pytest.raises(WriteError) as info:
        c.write(rows)
    assert info.value.indices == list(range(pl.N_BUCKETS))
    assert {f.code for f in info.value.failures} == {code_pb2.ALREADY_EXISTS}
    assert c.read_tables([pl.T_BUCKET_OWNER], defaults=False)  # the same stream still reads


def test_failed_update_in_a_later_batch_keeps_its_index(servers, clients):
    srv = servers(with_pipeline=True)
    c = clients(srv.grpc_addr)
    c.connect()
    n = c.names
    c.write([n.update(INSERT, owner_row(7, 2))])
    batch = [n.update(INSERT, owner_row(b, 3)) for b in range(10)]
    with pytest.raises(WriteError) as info:
        c.write(batch, batch_size=4)
    assert info.value.indices == [7]
    assert info.value.total == 10


def test_value_too_wide_is_refused_before_sending(servers, clients):
    srv = servers(with_pipeline=True)
    c = clients(srv.grpc_addr)
    c.connect()
    with pytest.raises(ConfigError, match="fits in 9 bits, got 600"):
        c.names.update(INSERT, owner_row(6, 600))


def test_higher_election_id_takes_over_and_the_first_learns_it(servers, clients):
    srv = servers(with_pipeline=True)
    changes: list[bool] = []
    first = clients(srv.grpc_addr, election_id=5, on_primary_change=changes.append)
    assert first.connect()
    second = clients(srv.grpc_addr, election_id=9)
    assert second.connect()
    assert first.primary_lost.wait(5.0), "first controller never learnt it lost primaryship"
    assert not first.is_primary and first.primary_election_id == 9
    assert changes == [True, False]
    with pytest.raises(NotPrimary):
        first.write([first.names.update(INSERT, owner_row(1, 2))])
    second.write([second.names.update(INSERT, owner_row(1, 2))])
    assert srv.service.pipeline.state.bucket_owner[0, 1] == 2
    # a lower election id is a backup: refused as a primary, accepted as a reader
    third = clients(srv.grpc_addr, election_id=2)
    with pytest.raises(NotPrimary):
        third.connect()
    assert third.connect(require_primary=False) is False
    assert [r.key for r in third.read_tables([pl.T_BUCKET_OWNER], defaults=False)] == \
        [(("meta.bucket", 1), ("meta.version", 0))]


def test_unreachable_switch_gives_up_within_the_backoff_budget(servers, clients):
    srv = servers()
    addr = srv.grpc_addr
    srv.stop()
    c = clients(addr, backoff=Backoff(initial=0.02, factor=2.0, max_delay=0.1, budget=0.4))
    t0 = time.monotonic()
    with pytest.raises(SwitchUnavailable, match="not reachable after"):
        c.reconnect()
    assert time.monotonic() - t0 < 0.4 + 4 * 3.0


def test_reconnects_when_the_server_comes_back(servers, clients):
    srv = servers(with_pipeline=True)
    addr, port = srv.grpc_addr, srv.port
    c = clients(addr, backoff=Backoff(initial=0.02, factor=2.0, max_delay=0.2, budget=20.0))
    c.connect()
    srv.stop()
    wait_for(lambda: not c.connected, 5.0, "the client to see the stream drop")
    with pytest.raises(SwitchUnavailable):
        c.read_tables([pl.T_BUCKET_OWNER])
    failed: list[int] = []
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["attempts"] = c.reconnect(on_attempt=lambda n, exc: failed.append(n))
        except Exception as exc:  # reported below
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: len(failed) >= 2, 5.0, "two failed reconnect attempts")
    again = servers(with_pipeline=True, port=port)
    t.join(timeout=20)
    assert "error" not in result, result
    assert result["attempts"] >= 3 and c.is_primary
    c.write([c.names.update(INSERT, owner_row(4, 3))])
    assert again.service.pipeline.state.bucket_owner[0, 4] == 3


SHELL_SCRIPT = textwrap.dedent("""
    import json, sys
    import p4runtime_sh.shell as sh
    from p4runtime_sh.context import P4Type
    sh.setup(device_id=0, grpc_addr=sys.argv[1], election_id=(0, 1), verbose=False)
    out = {}
    try:
        out["owners"] = sorted((int.from_bytes(e.match["meta.bucket"].exact.value, "big"),
                                int.from_bytes(e.action["port"].value, "big"))
                               for e in sh.TableEntry("LegoIngress.bucket_owner").read())
        out["sessions"] = sorted(s.session_id for s in sh.CloneSessionEntry(0).read())
        te = sh.TableEntry("LegoIngress.bucket_owner")(action="LegoIngress.to_replica")
        te.match["meta.bucket"] = "9"
        te.match["meta.version"] = "0"
        te.action["port"] = "3"
        try:
            te.insert()
            out["backup_write"] = "accepted"
        except Exception as exc:
            out["backup_write"] = str(exc)
    finally:
        sh.teardown()
    print("RESULT " + json.dumps(out))
""")


def test_p4runtime_shell_reads_the_controllers_tables_as_a_backup(servers, clients):
    srv = servers()
    c = clients(srv.grpc_addr, election_id=10)
    c.connect()
    c.set_pipeline(load_p4info(), device_config=b"")
    n = c.names
    c.write([n.update(INSERT, owner_row(b, 2 + b % 3)) for b in range(6)]
            + [n.update(INSERT, CloneSpec(p + 1, (p,))) for p in (2, 3, 4)])
    proc = subprocess.run([shell_python(), "-c", SHELL_SCRIPT, srv.grpc_addr],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(ln for ln in proc.stdout.splitlines()
                          if ln.startswith("RESULT "))[len("RESULT "):])
    assert out["owners"] == [[b, 2 + b % 3] for b in range(6)]
    assert out["sessions"] == [3, 4, 5]
    assert "PERMISSION_DENIED" in out["backup_write"] or "primary" in out["backup_write"]
    assert c.is_primary and not c.primary_lost.is_set()
    assert srv.service.pipeline.state.bucket_owner[0, 9] == -1
