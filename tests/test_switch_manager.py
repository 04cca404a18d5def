"""The switch manager against the software target's real gRPC server (in process,
port 0), asserting where frames go through the target's pipeline model: the plan
of Algorithm 1 installed, controller and switch restarts, rebalancing under a
skewed load, scale-out and scale-in with their hooks; plus the pure logic (diff,
moves) on its own."""

from __future__ import annotations

import ipaddress
import struct
import time
import zlib
from collections import Counter

import numpy as np
import pytest
from google.rpc import code_pb2

from lego.control.granularity import plan_split
from lego.control.p4rt_client import Backoff, P4RuntimeClient
from lego.control.p4rt_entities import DELETE, INSERT, MODIFY, CloneSpec, TableRow
from lego.control.p4rt_errors import WriteError
from lego.control.policy_buckets import initial_assignment
from lego.control.switch_manager import SwitchManager
from lego.control.switch_rebalance import CounterDeltas, plan_moves
from lego.control.switch_state import SwitchPlan, SwitchState, desired_state, diff, owner_key
from lego.errors import ConfigError
from lego.ext.features import state_groups
from lego.switch import pipeline as pl
from lego.switch.server import P4RuntimeServer

pytestmark = pytest.mark.timeout(120)

TRAFFIC, R1, R2, R3, R4, COLLECTOR = 1, 2, 3, 4, 5, 9
REPLICAS = (R1, R2, R3)
# both owner tables in both versions, sessions, split default, roles
FULL_PLAN_UPDATES = 2 * 2 * pl.N_BUCKETS + 3 + 1 + 4
NO_OWNERS = np.full(pl.N_BUCKETS, -1)  # a version nobody wrote


# ---------------------------------------------------------------- frames and reference
def udp_frame(src: str, dst: str, sport: int = 40000, dport: int = 53) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 36, 0, 0, 64, 17, 0, s, d)
    udp = struct.pack("!HHHH", sport, dport, 16, 0) + b"legolego"
    return bytes.fromhex("020000000002" "020000000001" "0800") + ip + udp


def host_bucket(ip: str) -> int:
    """DESIGN §4: SrcIP and DstIP hash (family 4, address left-aligned in 16 bytes)."""
    return zlib.crc32(bytes([4]) + ipaddress.IPv4Address(ip).packed + bytes(12)) % pl.N_BUCKETS


def deliver(server: P4RuntimeServer, frames: list[bytes],
            port: int = TRAFFIC) -> list[tuple[int, pl.Shim | None, bytes]]:
    """Frames through the switch's pipeline: [(egress port, shim or None, frame)]."""
    out = []
    for egress, frame in server.service.pipeline.process(frames, port, 1000):
        try:
            shim, orig = pl.strip_shim(frame)
        except ValueError:
            shim, orig = None, frame
        out.append((egress, shim, orig))
    return out


def assert_frames_follow(server: P4RuntimeServer, owners: np.ndarray, hosts: list[str],
                         truncate: int = 0) -> None:
    """Every frame reaches its source's owner, and a copy (truncated to ``truncate``
    bytes with the shim, if set) its destination's owner when that is another
    replica; nothing else."""
    pairs = [(a, b) for a in hosts for b in hosts if a != b]
    frames = [udp_frame(a, b) for a, b in pairs]
    got = deliver(server, frames)
    want = []
    for (a, b), f in zip(pairs, frames, strict=True):
        o_src, o_dst = int(owners[host_bucket(a)]), int(owners[host_bucket(b)])
        want.append((o_src, False, f))
        if o_dst != o_src:
            want.append((o_dst, True, f[:truncate - pl.SHIM_BYTES] if truncate else f))
    assert sorted((p, s.mirror, f) for p, s, f in got) == sorted(want)


HOSTS = [f"10.0.{i // 50}.{i % 50 + 1}" for i in range(40)]


# ---------------------------------------------------------------- fixtures
@pytest.fixture
def clients():
    opened: list[P4RuntimeClient] = []

    def make(addr: str, election_id: int = 1, **kw) -> P4RuntimeClient:
        c = P4RuntimeClient(addr, election_id=election_id, timeout=3.0, **kw)
        c.connect()
        opened.append(c)
        return c

    try:
        yield make
    finally:
        for c in opened:
            c.close()


def lego_plan(replicas=REPLICAS, **kw) -> SwitchPlan:
    return SwitchPlan.from_split(plan_split(state_groups("lego")), [TRAFFIC], replicas,
                                 forward={R1: COLLECTOR, R2: COLLECTOR}, **kw)


class RecordingHooks:
    """Records the hooks and what the switch held when each was called."""

    def __init__(self, server: P4RuntimeServer):
        self.server = server
        self.calls: list[tuple] = []

    def on_buckets_moving(self, moves):
        st = self.server.service.pipeline.state
        owners = st.bucket_owner[st.version]
        self.calls.append(("moving", list(moves), [int(owners[m.bucket]) for m in moves]))

    def on_buckets_moved(self, moves, seq_hint):
        st = self.server.service.pipeline.state
        owners = st.bucket_owner[st.version]
        self.calls.append(("moved", list(moves), [int(owners[m.bucket]) for m in moves],
                           dict(seq_hint)))


# ---------------------------------------------------------------- pure logic
def test_diff_is_empty_for_equal_states_and_orders_sessions_owners_deletes():
    plan = lego_plan()
    owners = initial_assignment(pl.N_BUCKETS, list(REPLICAS))
    want = desired_state(plan, owners)  # both versions hold ``owners``
    assert diff(want, want) == []
    assert len(diff(SwitchState(), want)) == FULL_PLAN_UPDATES
    # the version frames do not read left empty
    changes = diff(SwitchState(), desired_state(plan, owners, previous=NO_OWNERS))
    assert len(changes) == FULL_PLAN_UPDATES - 2 * pl.N_BUCKETS
    kinds = [("clone" if isinstance(c.item, CloneSpec) else c.item.table) for c in changes]
    assert kinds[:3] == ["clone"] * 3 and kinds[-1] == pl.T_SPLIT_GROUP
    assert kinds[3:5] == [pl.T_BUCKET_OWNER, pl.T_MIRROR_OWNER]
    assert owner_key(changes[3].item.key) == owner_key(changes[4].item.key) == (0, 0)
    # scale-in of R3: owners change, then its session and role go last
    smaller = plan.with_replicas((R1, R2))
    owners2 = np.where(owners == R3, R1, owners)
    ch = diff(want, desired_state(smaller, owners2))
    assert [c.op for c in ch[-2:]] == [DELETE, DELETE]
    assert isinstance(ch[-1].item, CloneSpec) and ch[-1].item.session_id == R3 + 1
    assert all(c.op == MODIFY for c in ch[:-2])


def _apply_one(state: pl.PipelineState, change) -> None:
    """One update, as a target that applies a Write's updates one by one does."""
    item = change.item
    if isinstance(item, CloneSpec):
        if change.op == DELETE:
            pl.remove_clone_session(state, item.session_id)
        else:
            pl.set_clone_session(state, item.session_id, list(item.ports), item.truncate)
    elif item.is_default:
        pl.apply_default(state, item.table, item.action, dict(item.params))
    elif change.op == DELETE:
        pl.remove_entry(state, item.table, dict(item.key))
    else:
        pl.apply_entry(state, item.table, dict(item.key), item.action, dict(item.params))


def test_a_move_applied_update_by_update_splits_every_frame_by_one_assignment():
    """BMv2 applies a Write's updates one at a time. After every one of them, each
    frame must be split wholly by the old assignment or wholly by the new one (its
    primary and its clone), with the old epoch or the new: otherwise a replica gets
    a bucket's packets out of order across the move."""
    plan = lego_plan()
    old = initial_assignment(pl.N_BUCKETS, list(REPLICAS))
    new = np.where(old == R1, R3, np.where(old == R3, R1, old))  # two replicas swap
    frames = [udp_frame(a, b) for a in HOSTS for b in HOSTS if a != b]
    records, _ = pl.parse_keys(frames)
    pipe = pl.Pipeline()
    for c in diff(SwitchState(), desired_state(plan, old, 4, previous=NO_OWNERS)):
        _apply_one(pipe.state, c)

    def split() -> tuple:
        d = pipe.decide(records)
        return d.owner.tolist(), d.clone_owner.tolist(), pipe.state.epoch

    before = split()
    moved = desired_state(plan, new, 5, previous=old)
    fresh = pl.Pipeline()
    for c in diff(SwitchState(), moved):
        _apply_one(fresh.state, c)
    d = fresh.decide(records)
    after = (d.owner.tolist(), d.clone_owner.tolist(), 5)
    assert after != before
    changes = diff(desired_state(plan, old, 4, previous=NO_OWNERS), moved)
    assert len(changes) > 2 * 300
    for i, c in enumerate(changes):
        _apply_one(pipe.state, c)
        assert split() in (before, after), f"after update {i}, frames are split by a mix"
    assert split() == after


def test_plan_rejects_bad_ports_and_unsplittable_plans():
    with pytest.raises(ConfigError, match="replica ports must be distinct"):
        SwitchPlan((TRAFFIC,), (R1, R1))
    with pytest.raises(ConfigError, match="both traffic-facing"):
        SwitchPlan((R1,), (R1, R2))
    with pytest.raises(ConfigError, match="no exact split"):
        SwitchPlan.from_split(plan_split(state_groups("kitsune")), [TRAFFIC], REPLICAS)
    with pytest.raises(ConfigError, match="not replica ports"):
        desired_state(lego_plan(), np.full(pl.N_BUCKETS, R4))


def test_counter_deltas_survive_a_counter_reset():
    d = CounterDeltas()
    a = np.array([[5, 50], [1, 10]], dtype=np.uint64)
    assert d.update({"c": a}, now=1.0)["c"].tolist() == [[5, 50], [1, 10]]
    b = np.array([[7, 70], [0, 0]], dtype=np.uint64)  # index 1 went down: a reset
    assert d.update({"c": b}, now=2.0)["c"].tolist() == [[2, 20], [0, 0]]
    assert d.interval == 1.0


def test_plan_moves_without_load_balances_bucket_counts():
    owners = initial_assignment(pl.N_BUCKETS, [R1, R2, R3])
    new, moves = plan_moves(owners, np.zeros(pl.N_BUCKETS), [R1, R2, R3, R4])
    counts = Counter(new.tolist())
    assert max(counts.values()) - min(counts.values()) <= 0.1 * pl.N_BUCKETS / 4 + 1
    assert all(m.new_port == R4 for m in moves) and len(moves) == counts[R4]


# ---------------------------------------------------------------- over gRPC
def test_sync_installs_algorithm1_plan_and_frames_reach_owners(servers, clients):
    srv = servers()  # as simple_switch_grpc --no-p4: no pipeline yet
    mgr = SwitchManager(clients(srv.grpc_addr), lego_plan(truncate=64), device_config=b"")
    report = mgr.sync()
    assert report.pipeline_pushed and report.changes == FULL_PLAN_UPDATES
    assert report.write_rpcs == 1
    state = srv.service.pipeline.state
    assert (state.primary_group, state.mirror_group) == (pl.GROUP_SRCIP, pl.GROUP_DSTIP)
    assert (state.bucket_owner[0, :pl.N_BUCKETS] == state.mirror_owner[0, :pl.N_BUCKETS]).all()
    assert_frames_follow(srv, mgr.owners, HOSTS, truncate=64)
    # clones are truncated to the plan's length, primaries are not
    got = deliver(srv, [udp_frame("10.0.0.1", h) for h in HOSTS[1:]])
    assert {len(f) + pl.SHIM_BYTES for p, s, f in got if s.mirror} == {64}
    assert {len(f) for p, s, f in got if not s.mirror} == {50}
    # NF-facing ports: R1, R2 forward to the collector, R3 drops
    alert = udp_frame("10.9.9.9", "10.9.9.8")
    assert deliver(srv, [alert], port=R1) == [(COLLECTOR, None, alert)]
    assert deliver(srv, [alert], port=R3) == []


def test_controller_restart_writes_nothing_then_fixes_only_what_differs(servers, clients):
    srv = servers()
    first = SwitchManager(clients(srv.grpc_addr, election_id=1), lego_plan(),
                          device_config=b"")
    first.sync()
    deliver(srv, [udp_frame(a, "10.0.0.1") for a in HOSTS])
    first.scale_out(R4, now=1.0)  # an assignment that is not the initial one
    owners = first.owners.copy()
    first.client.close()
    assert_frames_follow(srv, owners, HOSTS)  # traffic keeps flowing without a controller
    # a new controller (new client, higher election id), same plan, no assignment given
    c2 = clients(srv.grpc_addr, election_id=2)
    second = SwitchManager(c2, lego_plan(replicas=REPLICAS + (R4,)), device_config=b"")
    report = second.sync()
    assert (report.pipeline_pushed, report.changes, report.write_rpcs) == (False, 0, 0)
    assert report.adopted and (second.owners == owners).all()
    assert c2.stats.write_rpcs == 0 and c2.stats.updates == 0
    # something changes behind its back: a bucket in one table, a session, a stray role
    n = c2.names
    b = host_bucket(HOSTS[0])
    other = R1 if owners[b] != R1 else R2
    c2.write([n.update(MODIFY, TableRow(pl.T_MIRROR_OWNER,
                                        (("meta.mirror_bucket", b), ("meta.version", 0)),
                                        pl.A_MIRROR_TO, (("port", other),))),
              n.update(DELETE, CloneSpec(R4 + 1, (R4,))),
              n.update(INSERT, TableRow(pl.T_PORT_ROLE,
                                        (("standard_metadata.ingress_port", 7),),
                                        pl.A_ROLE_TRAFFIC))])
    before = c2.stats.updates
    report = second.sync()
    assert report.changes == 3 and c2.stats.updates - before == 3
    assert_frames_follow(srv, owners, HOSTS)
    assert 7 not in srv.service.pipeline.state.port_roles


@pytest.mark.parametrize("with_pipeline", [False, True], ids=["no-pipeline", "empty-tables"])
def test_switch_restart_is_detected_and_everything_pushed_again(servers, clients,
                                                                with_pipeline):
    srv = servers()
    c = clients(srv.grpc_addr, backoff=Backoff(initial=0.02, max_delay=0.2, budget=10.0))
    mgr = SwitchManager(c, lego_plan(), device_config=b"")
    mgr.sync()
    owners = mgr.owners.copy()
    port = srv.port
    srv.stop()
    deadline = time.monotonic() + 5
    while c.connected and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not c.connected
    new = servers(with_pipeline=with_pipeline, port=port)  # a fresh switch process
    report = mgr.recover()
    assert report.pipeline_pushed is not with_pipeline
    assert report.changes == FULL_PLAN_UPDATES
    assert (mgr.owners == owners).all()
    assert_frames_follow(new, owners, HOSTS)


def test_rebalance_under_a_skewed_load_moves_few_buckets_and_evens_it(servers, clients):
    srv = servers()
    hooks = RecordingHooks(srv)
    mgr = SwitchManager(clients(srv.grpc_addr), lego_plan(), device_config=b"", hooks=hooks)
    mgr.sync()
    rng = np.random.default_rng(3)
    sources = [f"10.1.{i // 200}.{i % 200 + 1}" for i in range(600)]
    dests = [f"192.168.0.{i + 1}" for i in range(60)]
    # every source owned by R1 sends three times as much as the others, and one
    # heavy source sends a fifth of all packets
    frames = []
    for s in sources:
        n = 3 if mgr.owners[host_bucket(s)] == R1 else 1
        frames += [udp_frame(s, dests[int(rng.integers(len(dests)))])] * n
    frames += [udp_frame(sources[0], dests[0])] * (len(frames) // 4)

    def load(out) -> dict[int, float]:  # as the controller weighs it: mirrors count half
        c = Counter((p, s.mirror) for p, s, _ in out)
        return {r: c[(r, False)] + mgr.mirror_weight * c[(r, True)] for r in REPLICAS}

    out = deliver(srv, frames)
    received = Counter(p for p, _, _ in out)
    before = load(out)
    assert max(before.values()) > 1.3 * np.mean(list(before.values()))
    moves = mgr.rebalance(now=10.0)
    assert 0 < len(moves) < 0.1 * pl.N_BUCKETS
    after = load(deliver(srv, frames))
    # clones change where a move joins or parts a source and its destination, so the
    # measured load is evened to the tolerance (10%) give or take that
    assert max(after.values()) <= 1.15 * np.mean(list(after.values()))
    # hooks: before the write the switch still had the old owners, after it the new;
    # the seq hint is what each old owner had been sent when the change was made
    (k1, m1, owners_then), (k2, m2, owners_now, hint) = hooks.calls
    assert (k1, k2) == ("moving", "moved") and m1 == m2 == moves
    assert owners_then == [m.old_port for m in moves]
    assert owners_now == [m.new_port for m in moves]
    assert hint == {p: received[p] for p in {m.old_port for m in moves}}
    # nothing measured since: a second rebalance moves nothing
    assert mgr.rebalance(now=20.0) == [] and len(hooks.calls) == 2


def test_seq_hint_is_what_each_old_owner_received_before_the_change(servers, clients):
    srv = servers()
    hooks = RecordingHooks(srv)
    mgr = SwitchManager(clients(srv.grpc_addr), lego_plan(), device_config=b"", hooks=hooks)
    mgr.sync()
    received = Counter(p for p, _, _ in deliver(srv, [udp_frame(a, b) for a in HOSTS
                                                      for b in HOSTS[:3] if a != b]))
    moves = mgr.scale_out(R4, now=1.0)
    assert R4 in {m.new_port for m in moves}
    _, _, _, hint = hooks.calls[-1]
    assert hint == {p: received[p] for p in {m.old_port for m in moves}}


def test_scale_out_reaches_the_new_replica_and_scale_in_drains_one(servers, clients):
    srv = servers()
    hooks = RecordingHooks(srv)
    mgr = SwitchManager(clients(srv.grpc_addr), lego_plan(), device_config=b"", hooks=hooks)
    mgr.sync()
    traffic = [udp_frame(a, b) for a in HOSTS for b in HOSTS[:4] if a != b]
    deliver(srv, traffic)
    moves = mgr.scale_out(R4, now=1.0)
    state = srv.service.pipeline.state
    assert R4 + 1 in state.clone_sessions and state.port_roles[R4][0] == pl.ROLE_DROP
    assert sum(m.new_port == R4 for m in moves) >= len(moves) / 2
    assert any(p == R4 for p, _, _ in deliver(srv, traffic))
    assert_frames_follow(srv, mgr.owners, HOSTS)
    # scale in R2: all its buckets leave, its session goes, traffic skips it
    deliver(srv, traffic)
    moves = mgr.scale_in(R2, now=2.0)
    assert {m.old_port for m in moves} == {R2}
    assert (mgr.owners != R2).all() and R2 + 1 not in state.clone_sessions
    assert all(p != R2 for p, _, _ in deliver(srv, traffic))
    assert_frames_follow(srv, mgr.owners, HOSTS)
    with pytest.raises(ConfigError, match="not a replica"):
        mgr.scale_in(R2, now=3.0)


def test_partial_write_failure_is_reported_by_index_and_resynced(servers, clients):
    srv = servers()
    c = clients(srv.grpc_addr)
    mgr = SwitchManager(c, lego_plan(), device_config=b"", batch_size=100)
    mgr.sync()
    # somebody deletes bucket 250 of bucket_owner's idle version behind its back
    c.write([c.names.update(DELETE, TableRow(pl.T_BUCKET_OWNER,
                                             (("meta.bucket", 250), ("meta.version", 1)),
                                             None))])
    owners = mgr.owners.copy()
    owners[:300] = np.where(owners[:300] == R1, R2, R1)
    # 600 owner updates in the idle version, then the new epoch in split_group's
    # default: 601 updates, 7 Writes; the sixth fails on bucket 250
    with pytest.raises(WriteError) as info:
        mgr.apply(mgr.plan, owners)
    assert info.value.indices == [500] and info.value.total == 601
    assert [f.code for f in info.value.failures] == [code_pb2.NOT_FOUND]
    assert "meta.bucket=250" in info.value.failures[0].update
    assert mgr.installed is None
    state = srv.service.pipeline.state
    assert state.epoch == 0  # frames still read the old assignment, whole
    report = mgr.sync()
    assert report.changes == 2  # the missing entry, then the epoch; the rest was written
    assert state.epoch == 1 and state.bucket_owner[1, 250] == owners[250]
    assert_frames_follow(srv, owners, HOSTS)


# ---------------------------------------------------------------- CLI
def test_cli_controller_syncs_once_and_a_rerun_writes_nothing(servers, capsys):
    from lego.cli import build_parser, main

    srv = servers()
    argv = ["controller", "--switch", srv.grpc_addr, "--traffic-port", "1", "--replica", "2",
            "--replica", "3", "--forward", "2:9", "--truncate", "64", "--once"]
    assert main(argv) == 0
    assert "4102 updates written, pipeline pushed" in capsys.readouterr().out
    state = srv.service.pipeline.state
    assert (state.primary_group, state.mirror_group) == (pl.GROUP_SRCIP, pl.GROUP_DSTIP)
    assert state.port_roles[2] == (pl.ROLE_FORWARD, 9) and state.clone_sessions[4].replicas == [3]
    assert main(argv + ["--election-id", "2"]) == 0
    assert "0 updates written" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv[:-1] + ["--forward", "2-9"])
    assert main(["controller", "--switch", srv.grpc_addr, "--traffic-port", "1", "--once"]) == 1
    assert "expected at least one --replica" in capsys.readouterr().err
    assert main(["controller", "--switch", srv.grpc_addr, "--traffic-port", "1", "--replica",
                 "2", "--semantics", "kitsune", "--once"]) == 1
    assert "no exact split" in capsys.readouterr().err


def test_a_window_clock_plan_installs_the_symmetric_split_the_period_and_the_marks(
        servers, clients):
    """LUCID's plan (symmetric Socket, the switch's window clock): a flow and its reply
    reach one replica, every frame carries the window, the marks' session follows the
    replica set through a scale-out and a scale-in, and a second sync writes nothing."""
    from lego import nfs

    srv = servers()
    plan = SwitchPlan.from_split(nfs.get("lucid").plan(), [TRAFFIC], REPLICAS, window_us=1000)
    mgr = SwitchManager(clients(srv.grpc_addr), plan, device_config=b"")
    mgr.sync()
    state = srv.service.pipeline.state
    assert (state.primary_group, state.mirror_group) == (pl.GROUP_SOCKET_SYM, pl.GROUP_NONE)
    assert state.window_period_us == 1000

    def marks() -> tuple[list[int], int]:
        s = state.clone_sessions[pl.WINDOW_MARK_SESSION]
        return s.replicas, s.packet_length_bytes

    assert marks() == ([R1, R2, R3], 0)  # lego.p4 cuts the marks itself
    pairs = list(enumerate(zip(HOSTS, HOSTS[1:], strict=False)))
    there = [udp_frame(a, b, 40000 + i, 53) for i, (a, b) in pairs]
    back = [udp_frame(b, a, 53, 40000 + i) for i, (a, b) in pairs]
    got = [(p, s) for p, s, _ in deliver(srv, there + back) if not s.mark]
    ports = [p for p, _ in got]
    assert ports[:len(there)] == ports[len(there):] and len(set(ports)) == 3
    assert {s.window for _, s in got} == {1}
    mgr.scale_out(R4, now=1.0)
    assert marks()[0] == [R1, R2, R3, R4]
    mgr.scale_in(R2, now=2.0)
    assert marks()[0] == [R1, R3, R4]
    assert mgr.sync().changes == 0
