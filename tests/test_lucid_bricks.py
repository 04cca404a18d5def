"""LUCID as bricks against one offline instance, fragment for fragment and bit for
bit: the graph over a plain trace (LUCID's own clock); K graphs fed what lego.p4's
model sends K replica ports under LUCID's plan (the symmetric Socket group, the
window clock and its marks); and flows moved between two extractors by bucket
mid-capture, as a scale-out moves them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lego import nfs
from lego.bricks.agent import BrickAgent
from lego.bricks.graph import graph_from_dict
from lego.bricks.source import Frames, frame_arrays
from lego.bricks.wire import Message
from lego.ext.packets import open_trace, write_pcap
from lego.nfs.lucid.bricks import FlowWindows
from lego.nfs.lucid.cnn import LucidCNN
from lego.switch import pipeline as pl

T, N = 2.0, 10
TRAFFIC, PORTS = 1, (2, 3, 4)
LUCID = nfs.get("lucid")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """A generated trace (benign LAN, TLS cameras, a SYN flood) and a random model."""
    from lego.topo.traffic_synth import generate, write_trace

    d = tmp_path_factory.mktemp("lucid_bricks")
    write_trace(generate(seed=3, packets=12000), d / "synth.pcap")
    rng = np.random.default_rng(1)
    LucidCNN(N, 3, rng.normal(size=(33, 16)) * 0.3, rng.normal(size=16) * 0.3,
             rng.normal(size=16), 0.2, T).save(d / "model.npz")
    return d / "synth.pcap", d / "model.npz"


def frames_of(pcap: Path, batch: int = 4096):
    for r in open_trace(pcap).raw_batches(batch):
        yield frame_arrays(Frames(r.buffer, r.offsets, r.caplens, r.origlens, r.ts,
                                  r.linktypes, np.arange(r.seq0, r.seq0 + len(r),
                                                         dtype=np.uint64)), "switch")[0]


def reference(pcaps: list[Path], model: Path) -> tuple[np.ndarray, np.ndarray]:
    """One instance over the frames of ``pcaps`` merged in switch order."""
    parts = [b for p in pcaps for b in frames_of(p)]
    merged = parts[0] if len(parts) == 1 else _concat(parts)
    return LUCID.reference([merged], model, {"window": T, "packets": N})


def _concat(parts):
    """Frame batches joined and put in sequence order (marks are gone already)."""
    from lego.bricks.source import FrameBatch, gather_frames

    cols = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays
            if k not in ("frames", "offset")}
    shift = np.cumsum([0] + [len(p.arrays["frames"]) for p in parts[:-1]])
    offsets = np.concatenate([p.arrays["offset"] + s for p, s in zip(parts, shift, strict=True)])
    buf = np.concatenate([p.arrays["frames"] for p in parts])
    order = np.argsort(cols["seq"], kind="stable")
    frames, offs = gather_frames(buf, offsets[order], cols["caplen"][order])
    return FrameBatch({**{k: v[order] for k, v in cols.items()}, "offset": offs,
                       "frames": frames})


def run_graph(trace: Path, model: Path, out: Path, work: Path, cnn: int = 2) -> tuple:
    data = LUCID.graph(source={"type": "packet_batching",
                               "options": {"trace": str(trace), "batch": 500,
                                           **LUCID.source_options()}},
                       options={"window": T, "packets": N, "model": str(model)},
                       replicas={"cnn": cnn}, sink={"out": str(out), "window": 64})
    data["graph"].update(transport="ipc", hwm=4)
    agent = BrickAgent(graph_from_dict(data, "<lucid graph>"), work)
    try:
        agent.start()
        agent.go()
        agent.wait(120)
    finally:
        agent.stop()
    assert set(agent.exit_codes().values()) == {0}, agent.events
    table = np.loadtxt(out / "scores.csv", delimiter=",", skiprows=1, ndmin=2,
                       dtype=[("seq", np.uint64), ("score", np.float64), ("t", np.int8),
                              ("alert", np.int8), ("decided", np.float64)])
    summary = json.loads((out / "summary.json").read_text())
    return table["seq"].ravel(), table["score"].ravel(), summary


def assert_equal(got: tuple, want: tuple) -> None:
    order = np.argsort(got[0], kind="stable")
    seq, score = got[0][order], got[1][order]
    w_order = np.argsort(want[0], kind="stable")
    assert len(seq) == len(want[0]) > 100
    assert np.array_equal(seq, want[0][w_order].astype(np.uint64))
    assert np.array_equal(score.view(np.uint64), want[1][w_order].view(np.uint64))


@pytest.mark.slow
def test_the_graph_over_a_trace_equals_one_instance(data, tmp_path):
    trace, model = data
    seq, score, summary = run_graph(trace, model, tmp_path / "out", tmp_path / "w")
    assert summary["lost_batches"] == 0
    assert_equal((seq, score), reference([trace], model))


def switch_ports(trace: Path, work: Path, period_s: float = T) -> dict[int, Path]:
    """What lego.p4's model sends each replica port under LUCID's plan: one pcap a
    port, shims (windows, marks) kept, stamped at the capture's times."""
    p = pl.Pipeline()
    s = p.state
    pl.apply_entry(s, pl.T_PORT_ROLE, {"standard_metadata.ingress_port": TRAFFIC},
                   pl.A_ROLE_TRAFFIC, {})
    pl.apply_default(s, pl.T_SPLIT_GROUP, pl.A_SET_GROUPS,
                     {"primary": pl.GROUP_SOCKET_SYM, "mirror": pl.GROUP_NONE})
    pl.apply_default(s, pl.T_WINDOW_CLOCK, pl.A_SET_WINDOW, {"period": int(period_s * 1e6)})
    for b in range(pl.N_BUCKETS):
        pl.apply_entry(s, pl.T_BUCKET_OWNER, {"meta.version": 0, "meta.bucket": b},
                       pl.A_TO_REPLICA, {"port": PORTS[b % len(PORTS)]})
    pl.set_clone_session(s, pl.WINDOW_MARK_SESSION, list(PORTS), 0)
    out: dict[int, tuple[list, list]] = {port: ([], []) for port in PORTS}
    for r in open_trace(trace).raw_batches(4096):
        frames = [r.frame(i) for i in range(len(r))]
        stamps = [round(t * 1e6) for t in r.ts.tolist()]
        for port, frame in p.process(frames, TRAFFIC, stamps):
            out[port][0].append(frame)
            out[port][1].append(pl.strip_shim(frame)[0].ts_us / 1e6)
    paths = {}
    for port, (frames, ts) in out.items():
        paths[port] = work / f"port-{port}.pcap"
        write_pcap(paths[port], frames, ts)
    return paths


@pytest.mark.slow
def test_replicas_behind_the_switch_equal_one_instance(data, tmp_path):
    trace, model = data
    pcaps = switch_ports(trace, tmp_path)
    got = [run_graph(path, model, tmp_path / f"out-{port}", tmp_path / f"w-{port}", cnn=1)
           for port, path in pcaps.items()]
    assert all(len(g[0]) for g in got)  # every replica decided fragments
    seq = np.concatenate([g[0] for g in got])
    score = np.concatenate([g[1] for g in got])
    assert len(np.unique(seq)) == len(seq)
    assert_equal((seq, score), reference(list(pcaps.values()), model))


def _two_ports(data, tmp_path) -> tuple:
    """The frames of two replica ports under LUCID's plan (each in switch order, and
    both merged), a cut in the middle of the merged stream, two fresh extractors, the
    outputs collected and a feeder (rows of a frames batch, 700 at a time)."""
    trace, model = data
    pcaps = switch_ports(trace, tmp_path)
    ports = [_concat(list(frames_of(pcaps[p]))) for p in PORTS[:2]]
    both = _concat(ports)
    extractors = [FlowWindows({"window": T, "packets": N}, f"fx/{i}") for i in range(2)]
    got: list[Message] = []

    def feed(fx: FlowWindows, rows) -> None:
        for lo in range(0, len(rows), 700):
            got.extend(fx.handle(Message(batch=0, arrays=rows.take(slice(lo, lo + 700)).arrays)))

    cut = int(np.median(both.seq))
    for fx, frames in zip(extractors, ports, strict=True):  # up to the cut, each its own
        feed(fx, frames.take(frames.seq < cut))
    return pcaps, ports, both, cut, extractors, got, feed


def _assert_outputs_exact(got: list[Message], pcaps: dict, model: Path) -> None:
    seq = np.concatenate([m.arrays["seq"] for m in got])
    score = LucidCNN.load(model).forward(np.concatenate([m.arrays["x"] for m in got]))
    assert_equal((seq, score), reference([pcaps[PORTS[0]], pcaps[PORTS[1]]], model))


def test_flows_moved_by_bucket_between_extractors_stay_exact(data, tmp_path):
    """Two extractors, each fed one port's frames of one switch; at a cut every bucket
    of the second moves to the first (export, import, drop), and from the cut on the
    first takes both ports' frames, in switch order: together they equal one
    instance's fragments."""
    pcaps, ports, both, cut, (a, b), got, feed = _two_ports(data, tmp_path)
    moved = sorted({int(x) for x in ports[1].arrays["bucket"]})
    blob, entries = b.export_buckets(moved, [])
    assert entries > 10
    assert a.import_buckets(blob) == (entries, 0)
    assert b.drop_buckets([]) == entries and not (b.flow_bucket >= 0).any()
    feed(a, both.take(both.seq >= cut))
    for fx in (a, b):
        got.extend(fx.finish({"batches": 0}))
    _assert_outputs_exact(got, pcaps, data[1])


def test_a_scale_in_through_the_move_protocol_holds_and_stays_exact(data, tmp_path):
    """The controller's protocol on two extractors: the destination holds the moved
    buckets, the source pauses, exports at the write and drops; the destination's
    frames after the write wait (no window closes meanwhile), then the import
    releases them: together, one instance's fragments and probabilities."""
    from lego.bricks import moves

    pcaps, ports, both, cut, (dst, src), got, feed = _two_ports(data, tmp_path)
    moved = sorted({int(x) for x in ports[1].arrays["bucket"]})
    assert moves.control(dst, {"op": "hold", "buckets": moved}, 0)[0]["ok"]
    assert moves.control(src, {"op": "prepare"}, 0)[0]["ok"]
    after = both.take(both.seq >= cut)
    first, rest = after.take(slice(0, len(after) // 2)), after.take(slice(len(after) // 2, None))
    before = len(got)
    feed(dst, first)  # the moved buckets' frames are held; nothing closes while holding
    assert sum(len(m.arrays["seq"]) for m in got[before:]) == 0
    blob = tmp_path / "move.blob"
    reply, outs = moves.control(src, {"op": "export", "buckets": moved, "exclude": [],
                                      "after": src.moves.processed, "keep": [],
                                      "path": str(blob)}, 0)
    assert reply["ok"] and reply["entries"] > 10 and not (src.flow_bucket >= 0).any()
    got.extend(outs)
    reply, outs = moves.control(dst, {"op": "import", "paths": [str(blob)]}, 0)
    assert reply["imported"] > 10 and reply["skipped"] == 0
    assert outs  # the held batches, released
    got.extend(outs)
    feed(dst, rest)
    for fx in (dst, src):
        got.extend(fx.finish({"batches": 0}))
    _assert_outputs_exact(got, pcaps, data[1])


def test_a_window_mark_closes_a_window_with_no_frame_of_the_next(data, tmp_path):
    """A replica that receives no frame of window 2 still closes window 1 when the
    switch's mark for window 2 arrives: its fragments go out then, not at the end."""
    trace, model = data
    pcaps = switch_ports(trace, tmp_path)
    frames = _concat(list(frames_of(pcaps[PORTS[0]])))
    w = int(np.bincount(frames.arrays["window"]).argmax())  # this port's busiest window
    last = frames.take(frames.arrays["window"] == w)
    fx = FlowWindows({"window": T, "packets": N}, "fx/0")
    fx.handle(Message(batch=0, arrays=frames.take(frames.arrays["window"] < w).arrays))
    out = fx.handle(Message(batch=1, arrays=last.arrays))  # closes the windows before w
    assert len(last) > 20 and not np.isin(out[0].arrays["seq"], last.seq).any()  # w is open
    mark = Message(batch=2, arrays=last.take(slice(0, 0)).arrays,
                   meta={"window_mark": w + 1})
    out = fx.handle(mark)[0]
    assert len(out.arrays["seq"]) > 0 and np.isin(out.arrays["seq"], last.seq).all()
    assert out.rows == len(out.arrays["seq"])
    assert sum(len(m.arrays["seq"]) for m in fx.finish({"batches": 3})) == 0


def test_a_restarted_extractor_counts_the_ports_frames_from_its_sources_count(data, tmp_path):
    """A keyed brick restarted mid-run starts counting at 0, but the export's point
    (``after``) is the port's frame count since the graph began. Each batch carries
    the source's count before it (``taken0``): the successor counts from there, so
    a later export (a scale-in) is reached, not deferred for frames that will never
    come."""
    from lego.bricks import moves

    pcaps, ports, both, cut, _, got, _ = _two_ports(data, tmp_path)
    frames = ports[1]
    before = int((frames.seq < cut).sum())  # what the dead predecessor took
    rest = frames.take(frames.seq >= cut)
    successor = FlowWindows({"window": T, "packets": N}, "fx/1")
    for lo in range(0, len(rest), 700):
        part = rest.take(slice(lo, lo + 700))
        successor.handle(Message(batch=lo, arrays=part.arrays, meta={"taken0": before + lo}))
    assert successor.moves.processed == before + len(rest)
    assert successor.moves.stats["frames_before"] == before
    assert moves.control(successor, {"op": "prepare"}, 0)[0]["ok"]
    reply, _ = moves.control(successor, {"op": "export", "buckets": [], "exclude": [],
                                         "after": before + len(rest), "keep": [],
                                         "path": str(tmp_path / "m.blob")}, 0)
    assert reply is not None and reply["ok"]  # answered, not deferred
    stale = FlowWindows({"window": T, "packets": N}, "fx/2")  # no count: waits in vain
    stale.handle(Message(batch=0, arrays=rest.arrays))
    assert moves.control(stale, {"op": "prepare"}, 0)[0]["ok"]
    assert moves.control(stale, {"op": "export", "buckets": [], "exclude": [], "keep": [],
                                 "after": before + len(rest), "path": "x"}, 0)[0] is None
