"""The software target's P4Runtime server, in process on port 0, driven by a small
client on the p4.v1 stubs: arbitration, every error case, round trips, counters,
clone sessions, and the effect of writes on forwarding."""

from __future__ import annotations

import queue
import time

import grpc
import pytest
from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2 as p4r
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from lego.p4src.p4info import P4Type, load_p4info
from lego.switch import pipeline as pl
from lego.switch.server import READ_CHUNK, P4RuntimeServer, read_responses
from lego.switch.small_client import SmallClient, WriteFailed

INSERT, MODIFY, DELETE = p4r.Update.INSERT, p4r.Update.MODIFY, p4r.Update.DELETE


@pytest.fixture
def server():
    srv = P4RuntimeServer(pl.Pipeline(), device_id=0, p4info=load_p4info())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def bare_server():
    srv = P4RuntimeServer(pl.Pipeline(), device_id=0, p4info=None)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def clients(server):
    opened = []

    def make(election=(0, 1), arbitrate=True, **kw):
        c = SmallClient(server.grpc_addr, election=election, **kw)
        opened.append(c)
        if arbitrate:
            c.open_stream()
            c.get_p4info()
        return c

    try:
        yield make
    finally:
        for c in opened:
            c.close()


def owner_entry(c, bucket, port, table="LegoIngress.bucket_owner", key="meta.bucket",
                action="LegoIngress.to_replica"):
    return c.table_entry(table, {"meta.version": 0, key: bucket}, action, {"port": port})


def codes(exc: WriteFailed) -> list[tuple[int, int]]:
    return [(i, code) for i, code, _ in exc.errors]


# ---------------------------------------------------------------- arbitration
def test_arbitration_answers_fast_and_elects_the_highest(server):
    a = SmallClient(server.grpc_addr, election=(0, 1))
    b = SmallClient(server.grpc_addr, election=(0, 5))
    try:
        t0 = time.monotonic()
        first = a.open_stream()
        assert time.monotonic() - t0 < 2.0
        assert first.status.code == code_pb2.OK
        # b is higher: it becomes primary, and a is told it is now a backup
        assert b.open_stream().status.code == code_pb2.OK
        demoted = a.next_arbitration()
        assert demoted.status.code == code_pb2.ALREADY_EXISTS
        assert (demoted.election_id.high, demoted.election_id.low) == (0, 5)
        # b leaves: a is primary again and is told so
        b.close()
        promoted = a.next_arbitration()
        assert promoted.status.code == code_pb2.OK
        assert promoted.election_id.low == 1
    finally:
        a.close()
        b.close()


def test_a_lower_election_id_is_a_backup_and_cannot_write(clients):
    primary = clients((0, 10))
    backup = SmallClient(primary.addr, election=(0, 3))
    try:
        ans = backup.open_stream()
        assert ans.status.code == code_pb2.ALREADY_EXISTS
        backup.get_p4info()
        with pytest.raises(grpc.RpcError) as e:
            backup.insert(owner_entry(backup, 1, 2))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        primary.insert(owner_entry(primary, 1, 2))
        assert len(backup.read(p4r.Entity(table_entry=p4r.TableEntry()))) == 1  # reads allowed
        with pytest.raises(queue.Empty):
            primary.next_arbitration(timeout=0.3)  # a backup joining changes nothing
    finally:
        backup.close()


def test_duplicate_election_id_and_wrong_device_close_the_stream(clients, server):
    clients((0, 7))
    dup = SmallClient(server.grpc_addr, election=(0, 7))
    wrong = SmallClient(server.grpc_addr, election=(0, 8), device_id=0)
    try:
        err = dup.open_stream()
        assert isinstance(err, grpc.RpcError)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        err = wrong.open_stream(device_id=3)
        assert isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.NOT_FOUND
    finally:
        dup.close()
        wrong.close()


def test_no_stream_means_no_primary(server):
    c = SmallClient(server.grpc_addr)
    try:
        c.get_p4info()
        with pytest.raises(grpc.RpcError) as e:
            c.insert(owner_entry(c, 1, 2))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        c.close()


# ---------------------------------------------------------------- pipeline config
def test_everything_before_a_pipeline_is_failed_precondition(bare_server):
    c = SmallClient(bare_server.grpc_addr)
    try:
        c.open_stream()
        for call in (c.get_p4info,
                     lambda: c.read(p4r.Entity(table_entry=p4r.TableEntry())),
                     lambda: c.write([])):
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        c.set_pipeline(load_p4info())
        assert c.get_p4info().tables[0].preamble.name.startswith("LegoIngress.")
        c.insert(owner_entry(c, 3, 4))
    finally:
        c.close()


def test_set_pipeline_rules(clients, server):
    c = clients((0, 2))
    info = load_p4info()
    c.insert(owner_entry(c, 3, 4))
    bad = load_p4info()
    owners = next(t for t in bad.tables if t.preamble.name == pl.T_BUCKET_OWNER)
    owners.match_fields[1].bitwidth = 12
    with pytest.raises(grpc.RpcError) as e:
        c.set_pipeline(bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "meta.bucket" in e.value.details()
    # IDs may differ from the committed ones (e.g. p4c's): resolved by name
    renumbered = load_p4info()
    for t in renumbered.tables:
        t.preamble.id += 100
    c.set_pipeline(renumbered)
    assert c.read(p4r.Entity(table_entry=p4r.TableEntry())) == []  # commit resets state
    c.insert(owner_entry(c, 3, 4))
    assert server.service.pipeline.state.bucket_owner[0, 3] == 4
    backup = clients((0, 1))
    with pytest.raises(grpc.RpcError) as e:
        backup.set_pipeline(info)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_capabilities(server):
    c = SmallClient(server.grpc_addr)
    try:
        assert c.stub.Capabilities(p4r.CapabilitiesRequest()).p4runtime_api_version == "1.4.1"
    finally:
        c.close()


# ---------------------------------------------------------------- write errors
def test_write_error_codes(clients):
    c = clients()
    cases = []
    e = owner_entry(c, 1, 2)
    e.table_id = 0x02FFFFFF
    cases.append((e, INSERT, code_pb2.NOT_FOUND))
    e = owner_entry(c, 1, 2)
    e.action.action.action_id = 0x01FFFFFF
    cases.append((e, INSERT, code_pb2.NOT_FOUND))
    e = owner_entry(c, 1, 2)
    e.match[0].exact.value = b"\x01\x00\x00"  # 17 bits for a 16-bit key
    cases.append((e, INSERT, code_pb2.INVALID_ARGUMENT))
    e = owner_entry(c, 1, 2)
    e.action.action.params[0].value = b"\x02\x00"  # 10 bits for a 9-bit port
    cases.append((e, INSERT, code_pb2.INVALID_ARGUMENT))
    e = owner_entry(c, 1, 2)
    del e.match[:]
    cases.append((e, INSERT, code_pb2.INVALID_ARGUMENT))
    key = {"meta.version": 0, "meta.bucket": 1}
    e = c.table_entry("LegoIngress.bucket_owner", key, "LegoIngress.unowned")
    cases.append((e, INSERT, code_pb2.INVALID_ARGUMENT))  # default-only action
    e = c.table_entry("LegoIngress.bucket_owner", key, "LegoIngress.role_drop")
    cases.append((e, INSERT, code_pb2.INVALID_ARGUMENT))  # not this table's action
    e = c.table_entry("LegoIngress.split_group", None, "LegoIngress.set_groups",
                      {"primary": 2, "mirror": 5, "epoch": 0})
    cases.append((e, INSERT, code_pb2.INVALID_ARGUMENT))  # keyless: default entry only
    e = owner_entry(c, 1, 2)
    e.priority = 10
    cases.append((e, INSERT, code_pb2.INVALID_ARGUMENT))
    cases.append((owner_entry(c, 9, 2), DELETE, code_pb2.NOT_FOUND))
    cases.append((owner_entry(c, 9, 2), MODIFY, code_pb2.NOT_FOUND))
    e = c.table_entry("LegoIngress.split_group", None, "LegoIngress.set_groups",
                      {"primary": 2, "mirror": 5, "epoch": 0}, default=True)
    cases.append((e, INSERT, code_pb2.INVALID_ARGUMENT))  # default entry: MODIFY only
    for entry, utype, code in cases:
        with pytest.raises(WriteFailed) as exc:
            c.write([c.update(utype, {"table_entry": entry})])
        assert codes(exc.value) == [(0, code)], (entry, exc.value)
    c.insert(owner_entry(c, 1, 2))
    with pytest.raises(WriteFailed) as exc:
        c.insert(owner_entry(c, 1, 3))
    assert codes(exc.value) == [(0, code_pb2.ALREADY_EXISTS)]


def test_batch_reports_each_failed_update(clients, server):
    c = clients()
    ups = [c.update(INSERT, {"table_entry": owner_entry(c, b, 2)}) for b in (1, 2, 1, 3)]
    ups.append(c.update(DELETE, {"table_entry": owner_entry(c, 99, 2)}))
    with pytest.raises(WriteFailed) as exc:
        c.write(ups)
    assert codes(exc.value) == [(2, code_pb2.ALREADY_EXISTS), (4, code_pb2.NOT_FOUND)]
    assert sorted(int(b) for b in (server.service.pipeline.state.bucket_owner[0] >= 0).nonzero()[0]
                  ) == [1, 2, 3]  # CONTINUE_ON_ERROR: the others applied


def test_rollback_on_error_applies_nothing(clients, server):
    c = clients()
    ups = [c.update(INSERT, {"table_entry": owner_entry(c, b, 2)}) for b in (5, 6, 5)]
    with pytest.raises(WriteFailed) as exc:
        c.write(ups, atomicity=p4r.WriteRequest.ROLLBACK_ON_ERROR)
    assert (2, code_pb2.ALREADY_EXISTS) in codes(exc.value)
    assert (0, code_pb2.ABORTED) in codes(exc.value)
    assert c.read(p4r.Entity(table_entry=p4r.TableEntry())) == []
    assert (server.service.pipeline.state.bucket_owner < 0).all()


# ---------------------------------------------------------------- round trips
def test_table_round_trip_with_zero_padded_bytes(clients, server):
    c = clients()
    e = owner_entry(c, 5, 3)
    fid = c.index.match_field("bucket_owner", "meta.bucket").id
    bucket = next(m for m in e.match if m.field_id == fid)
    bucket.exact.value = b"\x00\x00\x05"  # padded past the width: still bucket 5
    e.action.action.params[0].value = b"\x00\x03"
    c.insert(e)
    got = c.read(p4r.Entity(table_entry=p4r.TableEntry(
        table_id=c.index.id(P4Type.TABLE, "LegoIngress.bucket_owner"))))
    assert len(got) == 1
    assert next(m for m in got[0].table_entry.match if m.field_id == fid).exact.value == b"\x05"
    assert got[0].table_entry.action.action.params[0].value == b"\x03"
    c.modify(owner_entry(c, 5, 4))
    one = c.read(p4r.Entity(table_entry=owner_entry(c, 5, 0)))
    assert one[0].table_entry.action.action.params[0].value == b"\x04"
    assert server.service.pipeline.state.bucket_owner[0, 5] == 4
    c.delete(owner_entry(c, 5, 4))
    assert c.read(p4r.Entity(table_entry=p4r.TableEntry())) == []
    assert server.service.pipeline.state.bucket_owner[0, 5] == -1


def test_default_entry_modify_read_and_reset(clients, server):
    c = clients()
    tid = c.index.id(P4Type.TABLE, "LegoIngress.split_group")
    q = p4r.Entity(table_entry=p4r.TableEntry(table_id=tid, is_default_action=True))
    initial = c.read(q)[0].table_entry
    assert [p.value for p in initial.action.action.params] == [b"\x02", b"\x00", b"\x00"]
    c.modify(c.table_entry("LegoIngress.split_group", None, "LegoIngress.set_groups",
                           {"primary": pl.GROUP_SRCIP, "mirror": pl.GROUP_DSTIP, "epoch": 5},
                           default=True))
    assert [p.value for p in c.read(q)[0].table_entry.action.action.params] == \
        [b"\x02", b"\x05", b"\x05"]
    state = server.service.pipeline.state
    assert (state.primary_group, state.mirror_group, state.epoch) == (
        pl.GROUP_SRCIP, pl.GROUP_DSTIP, 5)
    c.modify(p4r.TableEntry(table_id=tid, is_default_action=True))  # no action: reset
    assert c.read(q)[0].table_entry == initial
    assert state.mirror_group == pl.GROUP_NONE


def test_clone_sessions(clients, server):
    c = clients()
    c.clone_session(3, [2], truncate=128)
    c.clone_session(4, [3, 4])
    with pytest.raises(WriteFailed) as exc:
        c.clone_session(3, [2])
    assert codes(exc.value) == [(0, code_pb2.ALREADY_EXISTS)]
    with pytest.raises(WriteFailed) as exc:
        c.clone_session(512, [2])
    assert codes(exc.value) == [(0, code_pb2.INVALID_ARGUMENT)]
    pre = p4r.Entity()
    pre.packet_replication_engine_entry.clone_session_entry.session_id = 0
    got = c.read(pre)
    assert [e.packet_replication_engine_entry.clone_session_entry.session_id for e in got] == [3, 4]
    assert got[0].packet_replication_engine_entry.clone_session_entry.packet_length_bytes == 128
    c.clone_session(4, [5], utype=MODIFY)
    sessions = server.service.pipeline.state.clone_sessions
    assert sessions[4].replicas == [5] and sessions[3].packet_length_bytes == 128
    c.clone_session(3, [], utype=DELETE)
    with pytest.raises(WriteFailed) as exc:
        c.clone_session(3, [], utype=DELETE)
    assert codes(exc.value) == [(0, code_pb2.NOT_FOUND)]
    assert 3 not in sessions


# ---------------------------------------------------------------- counters and forwarding
def test_a_read_copies_counter_cells_and_builds_them_in_chunks_afterwards(server):
    store = server.service.store
    cid = store.index.id(P4Type.COUNTER, "LegoIngress.bucket_counter")
    arr = server.service.pipeline.state.counters["LegoIngress.bucket_counter"]
    arr[5] = (3, 300)
    (cells,) = store.read(p4r.Entity(counter_entry=p4r.CounterEntry(counter_id=cid)))
    arr[5] = (4, 400)  # a frame counted after the read (the lock released): not in it
    table = p4r.Entity(table_entry=p4r.TableEntry(table_id=1))
    resps = list(read_responses([table, cells, table]))
    assert [len(r.entities) for r in resps] == [READ_CHUNK, pl.N_BUCKETS + 2 - READ_CHUNK]
    got = [e for r in resps for e in r.entities]
    assert got[0] == table and got[-1] == table
    five = got[1 + 5].counter_entry
    assert (five.counter_id, five.index.index, five.data.packet_count,
            five.data.byte_count) == (cid, 5, 3, 300)
    assert [e.counter_entry.index.index for e in got[1:-1]] == list(range(pl.N_BUCKETS))
    assert [len(r.entities) for r in read_responses([])] == [0]  # nothing: one empty answer


def test_writes_steer_frames_and_counters_read_back(clients, server):
    c = clients()
    pipe = server.service.pipeline
    c.insert(c.table_entry("LegoIngress.port_role", {"standard_metadata.ingress_port": 1},
                           "LegoIngress.role_traffic"))
    frame = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP())
    assert pipe.process([frame], 1, 0) == []  # no owner yet: dropped, counted
    ups = [c.update(INSERT, {"table_entry": owner_entry(c, b, 7)}) for b in range(pl.N_BUCKETS)]
    c.write(ups)
    out = pipe.process([frame, frame], 1, 0)
    assert [p for p, _ in out] == [7, 7]
    bucket = pl.strip_shim(out[0][1])[0].bucket
    assert c.read_counter("LegoIngress.bucket_counter", bucket) == [(bucket, 3, 3 * len(frame))]
    assert c.read_counter("LegoIngress.port_in_counter", 1)[0][1] == 3
    assert c.read_counter("LegoEgress.port_out_counter", 7)[0][1:] == (2, 2 * len(frame))
    assert c.read_counter("LegoIngress.event_counter", pl.EVENT_UNOWNED)[0][1] == 1
    every = c.read_counter("LegoIngress.bucket_counter")
    assert len(every) == pl.N_BUCKETS and sum(p for _, p, _ in every) == 3
    all_counters = c.read(p4r.Entity(counter_entry=p4r.CounterEntry()))
    assert len(all_counters) == sum(pl.COUNTER_SIZES.values())
    with pytest.raises(grpc.RpcError) as e:
        c.read_counter("LegoIngress.bucket_counter", pl.N_BUCKETS)
    assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
    with pytest.raises(grpc.RpcError) as e:
        c.read(p4r.Entity(counter_entry=p4r.CounterEntry(counter_id=0x12FFFFFF)))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # reset one counter by writing it
    reset = p4r.CounterEntry(counter_id=c.index.id(P4Type.COUNTER, "LegoIngress.bucket_counter"))
    c.write([c.update(MODIFY, {"counter_entry": reset})])
    assert sum(p for _, p, _ in c.read_counter("LegoIngress.bucket_counter")) == 0
