"""Shared-memory hops, work-conserving round robin and fused chains, in process
(fast), plus the agent's sweep of a crashed run's segments (one small graph)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import zmq

from lego.bricks.agent import BrickAgent
from lego.bricks.chain import make_chain
from lego.bricks.graph import graph_from_dict
from lego.bricks.routing import RoutingTable
from lego.bricks.shm import SHM_DIR, ShmLink, _Segment, run_id, segment_names
from lego.bricks.transport import SPILL_AHEAD, Inlet, Outlet, addresses
from lego.bricks.wire import Message, _owns_shared, decode, encode


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def workdir(tmp_path_factory):
    # short: ipc socket paths must stay under ~100 bytes
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="lego-shm-", dir="/tmp"))
    yield d
    assert segment_names(run_id(d)) == []  # every test leaves /dev/shm clean


def _msg(batch, n=1000, width=115, seed=0):
    rng = np.random.default_rng(seed + batch)
    return Message(batch=batch, seq0=batch * n, seq1=(batch + 1) * n, rows=n, src="fq/0",
                   t0=1.5, meta={"k": 1},
                   arrays={"seq": np.arange(batch * n, (batch + 1) * n, dtype=np.uint64),
                           "x": rng.random((n, width)),
                           "flags": rng.integers(0, 255, (n, 3), dtype=np.uint8),
                           "empty": np.zeros((0, 16), np.uint8)})


def _pair(ctx, workdir, hwm=2, name="in", n_links=1):
    links = []
    inlets = []
    for i in range(n_links):
        bind, connect = addresses("shm", workdir, f"{name}{i}")
        inlets.append(Inlet(ctx, bind, hwm))
        links.append(connect)
    return inlets, Outlet(ctx, RoutingTable("next", links), hwm)


def _recv(inlet, timeout_ms=5000):
    assert inlet.sock.poll(timeout_ms), "nothing arrived"
    return inlet.recv()


def _never():
    raise AssertionError("the sender blocked")


def _idle():
    pass  # a blocked sender serves its control socket here


def test_shm_round_trip_is_exact_views_in_place_and_read_only(ctx, workdir):
    (inlet,), out = _pair(ctx, workdir)
    try:
        sent = _msg(0)
        assert out.send(0, sent, _never)
        got = _recv(inlet)
        assert got.header() == sent.header()
        for k, a in sent.arrays.items():
            assert got.arrays[k].dtype == a.dtype and np.array_equal(got.arrays[k], a)
        x = got.arrays["x"]
        assert not x.flags.writeable
        assert x.ctypes.data % 64 == 0  # aligned in the slot
        assert _owns_shared(x)  # a view of the mapped segment: no copy on receiving
        # the name was unlinked once mapped: nothing to leak
        assert segment_names(run_id(workdir)) == []
    finally:
        out.close(0)
        inlet.close()


def test_slots_bound_the_queue_and_come_back_on_release(ctx, workdir):
    (inlet,), out = _pair(ctx, workdir, hwm=2)
    link: ShmLink = out.socks[0]
    try:
        assert link.offer(_msg(0)) and link.offer(_msg(1))
        assert not link.offer(_msg(2))  # both slots in flight: backpressure
        link.abandon()
        assert _recv(inlet).batch == 0
        assert not link.offer(_msg(2))  # the receiver still reads batch 0 in place
        link.abandon()
        got = _recv(inlet)  # taking batch 1 releases batch 0's slot
        assert got.batch == 1
        link.wait(5000)  # the ack wakes the sender (no sleep)
        assert link.offer(_msg(2))
        assert np.array_equal(_recv(inlet).arrays["x"], _msg(2).arrays["x"])
    finally:
        out.close(0)
        inlet.close()


def test_a_closed_sender_leaves_in_flight_batches_readable(ctx, workdir):
    (inlet,), out = _pair(ctx, workdir, hwm=2)
    try:
        assert out.send(0, _msg(0), _never)
        out.close(1000)  # e.g. a retired replica: its last batch is still on its way
        got = _recv(inlet)
        assert np.array_equal(got.arrays["x"], _msg(0).arrays["x"])
    finally:
        inlet.close()


def test_drop_overflow_counts_instead_of_blocking(ctx, workdir):
    bind, connect = addresses("shm", workdir, "d")
    inlet = Inlet(ctx, bind, 2)
    out = Outlet(ctx, RoutingTable("next", [connect]), 2, overflow="drop")
    try:
        results = [out.send(0, _msg(b), _never) for b in range(4)]
        assert results == [True, True, False, False]
        assert out.dropped == 2 and out.dropped_rows == 2000
    finally:
        out.close(0)
        inlet.close()


def test_a_logic_that_keeps_arrays_is_not_overwritten(ctx, workdir):
    (inlet,), out = _pair(ctx, workdir, hwm=2)
    link: ShmLink = out.socks[0]
    kept = []
    try:
        for b in range(6):
            assert out.send(0, _msg(b), _idle)
            got = _recv(inlet)
            if b % 2 == 0:
                kept.append((b, got.arrays["x"][::2]))  # a view kept past the next recv
            del got
        for b, x in kept:
            assert np.array_equal(x, _msg(b).arrays["x"][::2])
        assert inlet.shared.kept >= 2 and link.kept >= 2
    finally:
        out.close(0)
        inlet.close()


def test_bigger_batch_grows_its_slot_and_small_ones_reuse_it(ctx, workdir):
    (inlet,), out = _pair(ctx, workdir, hwm=2)
    link: ShmLink = out.socks[0]
    try:
        for b, n in enumerate([10, 10, 20000, 10, 20000]):
            assert out.send(0, _msg(b, n=n), _idle)
            got = _recv(inlet)
            assert np.array_equal(got.arrays["x"], _msg(b, n=n).arrays["x"])
            del got
        assert link.gen <= 4  # two slots, each grown at most once
    finally:
        out.close(0)
        inlet.close()


def test_socket_hop_copies_arrays_that_view_a_slot(ctx, workdir):
    (inlet,), out = _pair(ctx, workdir, hwm=2)
    try:
        out.send(0, _msg(0), _never)
        got = _recv(inlet)
        frames = encode(got)  # forwarded over ipc/tcp: the slot is reused later
        assert all(isinstance(f, bytes) or not np.shares_memory(f, got.arrays["x"])
                   for f in frames[1:])
        back = decode([bytes(f) if not isinstance(f, bytes) else f for f in frames])
        assert np.array_equal(back.arrays["x"], _msg(0).arrays["x"])
    finally:
        out.close(0)
        inlet.close()


def test_round_robin_spills_to_a_replica_with_room(ctx, workdir):
    inlets, out = _pair(ctx, workdir, hwm=2, n_links=2)
    out.overflow = "drop"
    try:
        # replica 0's two slots fill; its next batches go to replica 1 while it has room
        assert [out.send(0, _msg(b), _never) for b in range(5)] == [True] * 4 + [False]
        assert out.sent == [2, 2] and out.spilled == 2 and out.dropped == 1
        assert [_recv(inlets[1]).batch for _ in range(2)] == [2, 3]
        assert [_recv(inlets[0]).batch for _ in range(2)] == [0, 1]
        # taking 1 and 3 released 0 and 2: each replica has one slot free again
        out.socks[0].wait(5000)
        out.socks[1].wait(5000)
        assert out.send(0, _msg(5), _never) and out.sent[0] == 3  # replica 0 full again
        # batch 1 is the oldest still queued: a batch SPILL_AHEAD past it waits its turn
        assert not out.send(0, _msg(1 + SPILL_AHEAD), _never)
        assert out.send(0, _msg(SPILL_AHEAD), _never) and out.sent[1] == 3
    finally:
        out.close(0)
        for i in inlets:
            i.close()


def test_key_routing_never_spills(ctx, workdir):
    inlets, out = _pair(ctx, workdir, hwm=2, n_links=2)
    out.table.policy = "key"
    out.overflow = "drop"
    try:
        assert [out.send(1, _msg(b), _never) for b in range(3)] == [True, True, False]
        assert out.sent == [0, 2] and out.spilled == 0
    finally:
        out.close(0)
        for i in inlets:
            i.close()


def test_a_lent_slot_carries_the_array_written_in_place_without_a_copy(ctx, workdir):
    inlets, out = _pair(ctx, workdir, hwm=2, n_links=2)
    try:
        want = _msg(0)
        x = out.lend(want.arrays["x"].shape)  # round robin's next replica: 0
        link = out.socks[0]
        assert x is not None and x.ctypes.data == link.segments[link._lent].buf.ctypes.data
        x[:] = want.arrays["x"]  # the logic writes its output here
        sent = Message(batch=0, arrays={"seq": want.arrays["seq"], "x": x})
        assert out.send(*out.table.route(sent)[0], _never)
        assert link._lent is None and out.sent == [1, 0]
        got = _recv(inlets[0])
        assert got.arrays["x"].ctypes.data % 64 == 0
        assert np.array_equal(got.arrays["x"], want.arrays["x"])
        assert np.array_equal(got.arrays["seq"], want.arrays["seq"])
        x[0, 0] = -1.0  # not done in earnest: it shows the receiver reads that very memory
        assert got.arrays["x"][0, 0] == -1.0
    finally:
        out.close(0)
        for i in inlets:
            i.close()


def test_an_unused_loan_is_lent_again_or_given_back(ctx, workdir):
    (inlet,), out = _pair(ctx, workdir, hwm=2)
    link: ShmLink = out.socks[0]
    try:
        a = out.lend((10, 3))
        b = out.lend((20, 3))  # never offered: the same slot again
        assert a.ctypes.data == b.ctypes.data and len(link.free) == 1
        assert out.send(0, _msg(0), _never)  # another array: copied, the loan given back
        assert link._lent is None and len(link.free) == 1
        assert out.send(0, _msg(1), _never)
        assert out.lend((10, 3)) is None  # both slots in flight: nothing to lend
        assert [_recv(inlet).batch for _ in range(2)] == [0, 1]
    finally:
        out.close(0)
        inlet.close()


def test_lending_needs_round_robin_over_shared_memory(ctx, workdir):
    inlets, out = _pair(ctx, workdir, hwm=2, n_links=2)
    bind, connect = addresses("ipc", workdir, "plain")
    plain_in = Inlet(ctx, bind, 2)
    plain = Outlet(ctx, RoutingTable("next", [connect]), 2)
    try:
        out.table.policy = "key"
        assert out.lend((4, 4)) is None
        assert plain.lend((4, 4)) is None
    finally:
        out.close(0)
        plain.close(0)
        plain_in.close()
        for i in inlets:
            i.close()


def test_try_send_never_waits_and_reports_a_full_edge(ctx, workdir):
    inlets, out = _pair(ctx, workdir, hwm=2, n_links=2)
    try:
        assert all(out.try_send(0, _msg(b)) for b in range(4))  # two slots a link
        assert out.sent == [2, 2] and out.spilled == 2
        assert not out.try_send(0, _msg(4))  # no room anywhere: the caller keeps it
        assert out.dropped == 0
    finally:
        out.close(0)
        for i in inlets:
            i.close()


# ---------------------------------------------------------------- chains


class _Add:
    def __init__(self, options, brick_id):
        self.k = options["k"]
        self.id = str(brick_id)
        self.state = None
        self.finished = []

    def handle(self, msg):
        return [msg.with_arrays({"v": msg.arrays["v"] + self.k})]

    def finish(self, meta):
        return [Message(batch=99, arrays={"v": np.array([self.k * 100])})]


def test_chain_composes_handles_and_flows_finish_output_through_the_rest(monkeypatch):
    from lego.bricks import catalog

    monkeypatch.setitem(catalog.BRICK_TYPES, "add", catalog.BrickType(
        "add", f"{__name__}:_Add", "worker", "stateless"))
    chain = make_chain({"members": [{"node": "a", "type": "add", "options": {"k": 1}},
                                    {"node": "b", "type": "add", "options": {"k": 10}}]},
                       type("Id", (), {"serial": 3})())
    out = chain.handle(Message(arrays={"v": np.array([0, 5])}))
    assert [list(m.arrays["v"]) for m in out] == [[11, 16]]
    assert chain.members[0].id == "a/3"
    fin = chain.finish({})
    # a's finish output (100) goes through b (+10), then b's own (1000)
    assert [list(m.arrays["v"]) for m in fin] == [[110], [1000]]
    assert set(chain.report()["members_cpu_s"]) == {"a", "b"}
    assert not hasattr(chain, "produce") and not hasattr(chain, "split")
    assert not hasattr(chain, "resume")  # no member resumes: neither does the chain


def test_a_restarted_chain_resumes_the_members_that_resume(monkeypatch, tmp_path):
    from lego.bricks import catalog

    monkeypatch.setitem(catalog.BRICK_TYPES, "add", catalog.BrickType(
        "add", f"{__name__}:_Add", "worker", "stateless"))
    chain = make_chain({"members": [
        {"node": "a", "type": "add", "options": {"k": 1}},
        {"node": "d", "type": "decision", "options": {"threshold": 0.5, "out": str(tmp_path)}}]},
        type("Id", (), {"serial": 0})())
    chain.resume()
    assert chain.members[1].state.resuming


class _Src:
    def __init__(self, options, brick_id):
        self.state = None

    def produce(self):
        yield Message(batch=0, arrays={"v": np.array([1])})
        yield None  # a quiet interface
        yield Message(batch=1, arrays={"v": np.array([2])})

    def end_meta(self):
        return {"batches": 2}

    def handle(self, msg):
        raise AssertionError("a source takes no input")

    def finish(self, meta):
        return []


class _Split(_Add):
    def split(self, msg, owner, k):
        return [msg] * k

    def control(self, cmd, packets_in):
        return {"ok": True, "seen": packets_in}, [Message(arrays={"v": np.array([0])})]


def test_source_chain_produces_through_its_members(monkeypatch):
    from lego.bricks import catalog

    for name, cls, role in (("src", "_Src", "source"), ("split", "_Split", "worker")):
        monkeypatch.setitem(catalog.BRICK_TYPES, name, catalog.BrickType(
            name, f"{__name__}:{cls}", role, "single"))
    chain = make_chain({"members": [{"node": "s", "type": "src", "options": {}},
                                    {"node": "t", "type": "split", "options": {"k": 5}}]},
                       type("Id", (), {"serial": 0})())
    got = list(chain.produce())
    # one step at a time, the runtime served after each (an output, or None), the
    # head's quiet turn kept
    assert [None if m is None else int(m.arrays["v"][0]) for m in got] == [6, None, 7]
    assert chain.end_meta() == {"batches": 2} and chain.rows_taken == 2
    assert len(chain.split(got[0], None, 3)) == 3  # the tail's splitter routes by key
    reply, outs = chain.control({"op": "x"}, 42)  # answered by the member that takes it,
    assert reply == {"ok": True, "seen": 2}  # told the rows it took; what the tail emits
    assert [int(m.arrays["v"][0]) for m in outs] == [0]  # leaves the process
    assert chain.control({"op": "x", "member": "s"}, 0)[0]["ok"] is False  # takes none


# ---------------------------------------------------------------- crash cleanup


def _noop_graph(trace, pps=None):
    src = {"trace": str(trace), "batch": 256, "repeat": 5000}
    data = {"graph": {"name": "noop", "hwm": 2},
            "bricks": {"source": {"type": "noop_source", "options": src},
                       "relay": {"type": "noop_relay", "options": {"emit": "features"}},
                       "sink": {"type": "noop_sink"}},
            "edges": [{"from": "source", "to": "relay"}, {"from": "relay", "to": "sink"}]}
    return graph_from_dict(data, "<noop>")


def test_agent_unlinks_a_crashed_runs_segments(shared_data, workdir):
    trace = shared_data / "kitsune_mirai_first2000.pcap"
    graph = _noop_graph(trace)
    agent = BrickAgent(graph, workdir)
    try:
        stray = _Segment(f"lego-{run_id(workdir)}-1-0-0-1", 4096)  # a SIGKILLed sender's
        agent.start()
        agent.go()
        deadline = time.monotonic() + 20
        while agent.board.latest.get("sink/0", {}).get("packets_in", 0) == 0:
            assert time.monotonic() < deadline, "no batch reached the sink"
            agent.poll(0.05)
        os.kill(agent.pid("sink/0"), signal.SIGKILL)  # the relay's slots are never released
        os.kill(agent.pid("relay/0"), signal.SIGKILL)
        while sum(e.kind == "died" for e in agent.events) < 2:
            assert time.monotonic() < deadline, "deaths not reported"
            agent.poll(0.05)
    finally:
        agent.stop()
    assert not (SHM_DIR / stray.name).exists()
    assert segment_names(run_id(workdir)) == []


def test_a_source_chain_queues_a_members_control_output_and_finishes_its_queue(monkeypatch):
    """What a middle member emits on a control message waits in the chain's queue
    (the control answer does not wait for it); a drain between two steps leaves
    queued work that finish() still runs through the members after."""
    from lego.bricks import catalog

    for name, cls, role in (("src", "_Src", "source"), ("mid", "_Split", "worker"),
                            ("add", "_Add", "worker")):
        monkeypatch.setitem(catalog.BRICK_TYPES, name, catalog.BrickType(
            name, f"{__name__}:{cls}", role, "single"))
    chain = make_chain({"members": [{"node": "s", "type": "src", "options": {}},
                                    {"node": "m", "type": "mid", "options": {"k": 5}},
                                    {"node": "a", "type": "add", "options": {"k": 100}}]},
                       type("Id", (), {"serial": 0})())
    reply, outs = chain.control({"op": "x", "member": "m"}, 0)
    assert reply == {"ok": True, "seen": 0} and outs == []  # queued for member "a"
    chain.batch0 = 1 << 20
    produced = chain.produce()
    first = next(produced)  # the queued control output goes first, through "a"
    assert int(first.arrays["v"][0]) == 100
    assert next(produced) is None  # the head's first batch through "m", then the runtime
    produced.close()  # a drain: that batch still queued for "a"
    out = chain.finish({})  # through "a", then each member's finish (its own 100 x k)
    assert [int(m.arrays["v"][0]) for m in out] == [1 + 5 + 100, 500 + 100, 10000]
    assert out[0].batch == 1 << 20 and chain.rows_taken == 1
