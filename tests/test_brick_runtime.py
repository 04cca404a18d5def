"""Brick runtime pieces in process: wire format, routing, shim stripping, owner
split, the decision's reorder window (fast, no processes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lego.bricks.errors import WireError
from lego.bricks.merge import SequenceMerge
from lego.bricks.northbound import LoadBoard
from lego.bricks.routing import N_BUCKETS, RoutingTable, dealt_owners
from lego.bricks.source import (
    PACKET_FIELDS,
    Frames,
    address_buckets,
    frames_to_batch,
    split_by_owner,
)
from lego.bricks.wire import Message, decode, encode, epoch_start
from lego.ext.packets import open_trace


def _bytes(frames):
    return [bytes(f) if not isinstance(f, bytes) else f for f in frames]


def test_wire_round_trip_is_exact_and_zero_copy_views():
    x = np.random.default_rng(1).random((37, 115))
    msg = Message(batch=3, part=1, parts=2, seq0=10, seq1=47, rows=37, src="fq/0", t0=1.5,
                  meta={"k": 1}, arrays={"seq": np.arange(37, dtype=np.uint64), "x": x,
                                         "empty": np.zeros((0, 16), np.uint8)})
    back = decode(_bytes(encode(msg)))
    assert back.header() == msg.header()
    assert np.array_equal(back.arrays["x"], x) and back.arrays["x"].dtype == np.float64
    assert back.arrays["seq"].dtype == np.uint64 and back.arrays["empty"].shape == (0, 16)
    assert not back.arrays["x"].flags.writeable  # a view of the received frame


def test_wire_rejects_bad_messages():
    frames = _bytes(encode(Message(arrays={"a": np.zeros(4)})))
    with pytest.raises(WireError, match="expected 32 bytes"):
        decode([frames[0], frames[1][:8]])
    with pytest.raises(WireError, match="lists 1 arrays"):
        decode(frames[:1])
    with pytest.raises(WireError, match="wire version"):
        decode([json.dumps({"v": 99}).encode()])
    with pytest.raises(WireError, match="expected JSON"):
        decode([b"\xff"])


def test_round_robin_skips_removed_replicas_and_updates():
    t = RoutingTable("uln", ["a", "b", "c"])
    m = Message()
    assert [t.route(m)[0][0] for _ in range(4)] == [0, 1, 2, 0]
    t.remove(1)
    assert [t.route(m)[0][0] for _ in range(4)] == [2, 0, 2, 0]
    assert [i for i, _ in t.route(Message(kind="end"))] == [0, 2]
    t.update(["x", "y"])
    assert t.n_live == 2 and [t.route(m)[0][0] for _ in range(3)] == [0, 1, 0]


def _trace_message(shared_data, n=2000):
    reader = open_trace(shared_data / "kitsune_mirai_first2000.pcap")
    batch = next(reader.batches(n))
    return batch, Message(batch=0, seq0=0, seq1=len(batch), rows=len(batch),
                          arrays={k: getattr(batch, k) for k in PACKET_FIELDS})


def test_owner_split_primary_to_source_owner_mirror_to_destination_owner(shared_data):
    batch, msg = _trace_message(shared_data)
    owner = dealt_owners(3)
    parts = split_by_owner(msg, owner, 3)
    src = owner[address_buckets(batch.src_family, batch.src_addr)]
    dst = owner[address_buckets(batch.dst_family, batch.dst_addr)]
    primaries = np.concatenate([p.arrays["seq"][p.arrays["mirror"] == 0] for p in parts])
    assert sorted(primaries.tolist()) == list(range(len(batch)))  # each primary once
    for r, p in enumerate(parts):
        seq = p.arrays["seq"].astype(np.int64)
        prim = p.arrays["mirror"] == 0
        assert (src[seq[prim]] == r).all()
        assert (dst[seq[~prim]] == r).all() and (src[seq[~prim]] != r).all()
        assert p.part == r and p.parts == 3 and (np.diff(seq) > 0).all()
    # same address, same bucket, as source or destination
    assert np.array_equal(address_buckets(batch.src_family, batch.src_addr)[batch.proto == 0],
                          address_buckets(batch.src_family, batch.src_addr)[batch.proto == 0])
    assert address_buckets(batch.src_family, batch.src_addr).max() < N_BUCKETS


def test_shim_stripped_into_mirror_seq_and_switch_time(shared_data):
    from lego.switch.pipeline import shim_header, strip_shim

    reader = open_trace(shared_data / "kitsune_mirai_first2000.pcap")
    raw = next(reader.raw_batches(300))
    plain = [raw.frame(i) for i in range(len(raw))]
    shimmed = []
    for i, f in enumerate(plain):
        hdr = shim_header((i % 5) << 1 | i % 2, 2, i % 1024, 1000 + i, 5_000_000 + i, len(f) + 7,
                          int.from_bytes(f[12:14], "big"))
        shimmed.append(f[:12] + b"\x88\xb5" + hdr + f[14:])
    assert strip_shim(shimmed[5])[1] == plain[5]
    lens = np.array([len(f) for f in shimmed], dtype=np.uint32)
    offs = np.concatenate([[0], np.cumsum(lens[:-1])]).astype(np.int64)
    frames = Frames(np.frombuffer(b"".join(shimmed), np.uint8), offs, lens, lens, raw.ts, 1,
                    np.arange(len(lens), dtype=np.uint64))
    got, shim = frames_to_batch(frames)
    want, _ = frames_to_batch(Frames(raw.buffer, raw.offsets, raw.caplens, raw.origlens,
                                     raw.ts, raw.linktypes, np.zeros(len(raw), np.uint64)))
    for name in ("eth_src", "eth_dst", "proto", "src_addr", "dst_addr", "sport", "dport", "ts"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.array_equal(got.frame_len, want.frame_len + 7)  # the shim's orig_len
    assert np.array_equal(got.seq, 1000 + np.arange(len(raw)))
    assert np.array_equal(got.mirror, np.arange(len(raw)) % 2)
    assert np.array_equal(shim.ts_us, 5_000_000 + np.arange(len(raw)))
    assert np.array_equal(shim.epoch, np.arange(len(raw)) % 5)  # flags bits 1..7
    switch, _ = frames_to_batch(frames, timestamps="switch")
    assert np.array_equal(switch.ts, (5_000_000 + np.arange(len(raw))) / 1e6)
    assert not shim.window.any() and not shim.mark.any() and shim.mark_window == 0


def test_window_marks_are_no_packets_and_every_frame_keeps_its_window(shared_data):
    """Frames carry the window clock's window; a window mark (Ethernet + shim, cut
    by its clone session) is left out of the batch and reported as ``mark_window``."""
    from lego.p4src.contract import SHIM_KIND_WINDOW, WINDOW_MARK_BYTES
    from lego.switch.pipeline import shim_header

    raw = next(open_trace(shared_data / "kitsune_mirai_first2000.pcap").raw_batches(100))
    shimmed, windows = [], []
    for i in range(len(raw)):
        f = raw.frame(i)
        w = 1 + i // 40
        if i and i % 40 == 0:  # the frame that opens window w, and its mark
            shimmed.append((f[:12] + b"\x88\xb5" + shim_header(
                0, 0, 0, i, i, len(f), int.from_bytes(f[12:14], "big"), w,
                SHIM_KIND_WINDOW) + f[14:])[:WINDOW_MARK_BYTES])
        shimmed.append(f[:12] + b"\x88\xb5" + shim_header(
            0, 7, i, i, i, len(f), int.from_bytes(f[12:14], "big"), w) + f[14:])
        windows.append(w)
    lens = np.array([len(f) for f in shimmed], dtype=np.uint32)
    offs = np.concatenate([[0], np.cumsum(lens[:-1])]).astype(np.int64)
    frames = Frames(np.frombuffer(b"".join(shimmed), np.uint8), offs, lens, lens,
                    np.zeros(len(lens)), 1, np.arange(len(lens), dtype=np.uint64))
    got, shim = frames_to_batch(frames)
    assert np.array_equal(got.seq, np.arange(len(raw)))
    assert shim.window.tolist() == windows and not shim.mark.any()
    assert shim.mark_window == 3


def _scores(batch, part, parts, seqs, rows):
    seq = np.array(seqs, dtype=np.uint64)
    return Message(batch=batch, part=part, parts=parts, seq0=batch * 10, seq1=batch * 10 + 10,
                   rows=rows, arrays={"seq": seq, "score": seq / 100.0})


def test_decision_merges_in_order_and_counts_lost(tmp_path):
    d = SequenceMerge({"threshold": 0.5, "out": str(tmp_path), "window": 2}, "decision/0")
    d.handle(_scores(1, 0, 1, [10, 11], 2))
    d.handle(_scores(0, 1, 2, [3, 1], 4))
    d.handle(_scores(0, 0, 2, [0, 2], 4))  # batch 0 complete -> 0, 1 released
    assert d.state.next_batch == 2
    d.handle(_scores(3, 0, 1, [30], 1))  # batch 2 missing
    d.handle(_scores(4, 0, 2, [40], 2))  # window: 4 - 2 >= 2 -> batch 2 lost
    assert d.state.next_batch == 4 and d.state.lost[0]["batch"] == 2
    d.handle(_scores(0, 0, 2, [0], 4))  # late duplicate
    d.finish({"batches": 6})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["lost_batches"] == 3  # 2 (all), 4 (part 1 of 2), 5 (all)
    assert [x["batch"] for x in summary["lost"]] == [2, 4, 5]
    assert summary["lost"][1]["rows_lost"] == 1 and summary["duplicates"] == 1
    table = np.loadtxt(tmp_path / "scores.csv", delimiter=",", skiprows=1)
    assert table[:, 0].tolist() == [0, 1, 2, 3, 10, 11, 30, 40]
    assert summary["alerts"] == 0


def test_decision_takes_a_restarted_sources_batches_from_its_new_epoch(tmp_path):
    """A source its supervisor restarted numbers from the next epoch: the decision
    scores those batches (they are no duplicates of the dead incarnation's ids),
    still takes the dead one's stragglers in order, and closes its epoch once the
    new one is a window ahead; a straggler after that is late, not scored."""
    d = SequenceMerge({"threshold": 0.5, "out": str(tmp_path), "window": 2}, "decision/0")
    new = epoch_start(1)
    d.handle(_scores(0, 0, 1, [0], 1))
    d.handle(_scores(1, 0, 2, [10], 2))  # one part of two
    d.handle(_scores(new, 0, 1, [50], 1))  # the restarted source's first batch
    d.handle(_scores(1, 1, 2, [11], 2))  # the dead one's straggler completes batch 1
    assert d.state.next_batch == 2
    d.handle(_scores(3, 0, 1, [30], 1))  # the old epoch's batch 2 never comes
    d.handle(_scores(new + 1, 0, 1, [51], 1))  # a window ahead: the old epoch closes
    assert d.state.next_batch == new + 2
    d.handle(_scores(4, 0, 1, [40], 1))
    d.finish({"batches": 3, "batch0": new})  # the new source sent 3: new + 2 is lost
    summary = json.loads((tmp_path / "summary.json").read_text())
    table = np.loadtxt(tmp_path / "scores.csv", delimiter=",", skiprows=1)
    assert table[:, 0].tolist() == [0, 10, 11, 30, 50, 51]
    assert [x["batch"] for x in summary["lost"]] == [2, new + 2]
    assert summary["late"] == 1 and summary["duplicates"] == 0
    assert summary["source_epochs"] == [{"epoch": 1, "closed_after": 3}]
    assert summary["batches_total"] == 7
    # a restarted source that sent nothing but its end: the old epoch still closes
    d = SequenceMerge({"threshold": 0.5, "out": str(tmp_path / "b"), "window": 2}, "decision/0")
    d.handle(_scores(0, 0, 1, [0], 1))
    d.handle(_scores(2, 0, 1, [20], 1))
    d.finish({"batches": 0, "batch0": new})
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert [x["batch"] for x in summary["lost"]] == [1] and summary["batches_total"] == 3


def test_a_restarted_decision_appends_and_takes_up_the_numbering_where_it_is(tmp_path):
    """A decision restarted after a crash keeps what the dead one wrote (its torn
    last line cut off) and starts at the lowest batch pending once a reorder window
    has arrived, not at 0, which its upstream never sends again."""
    d = SequenceMerge({"threshold": 0.5, "out": str(tmp_path), "window": 2}, "decision/0")
    for b in range(3):
        d.handle(_scores(b, 0, 1, [b * 10], 1))
    with open(tmp_path / "scores.csv", "a") as f:
        f.write("31,0.1")  # the dead incarnation was killed mid-line
    d = SequenceMerge({"threshold": 0.5, "out": str(tmp_path), "window": 2}, "decision/0")
    d.resume()
    d.handle(_scores(8, 0, 1, [80], 1))
    assert d.state.next_batch == 0 and d.state.resuming  # one batch: wait for a window
    d.handle(_scores(7, 0, 1, [70], 1))
    assert d.state.next_batch == 9 and d.state.resumed_from == 7
    d.handle(_scores(6, 0, 1, [60], 1))  # older than where it resumed: late
    d.finish({"batches": 10})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["resumed_from"] == 7 and summary["late"] == 1
    assert [x["batch"] for x in summary["lost"]] == [9]
    table = np.loadtxt(tmp_path / "scores.csv", delimiter=",", skiprows=1)
    assert table[:, 0].tolist() == [0, 10, 20, 70, 80]  # one header, no torn row


def test_load_board_queue_depth():
    board = LoadBoard()
    board.update({"op": "load", "brick": "fm/0", "sent": {"uln": [5, 7]}, "batches_in": 9})
    board.update({"op": "load", "brick": "uln/1", "batches_in": 4})
    assert board.queue_depth("uln/1", "uln", 1) == 3
    assert board.silent(now=1e9) == []


def test_alert_lines_are_json_dumps_lines():
    from lego.bricks.merge import alert_lines

    seq = np.array([3, 2**40, 7], dtype=np.uint64)
    for score in (np.array([0.1, 1 / 3, 1e-300]), np.array([0.5, np.inf, 2.0])):
        want = "".join(json.dumps({"seq": int(q), "score": float(x)}) + "\n"
                       for q, x in zip(seq, score, strict=True))
        assert alert_lines(seq, score) == want


def test_feature_brick_state_moves_west_east_as_a_blob():
    from lego.bricks.errors import StateTransferError
    from lego.bricks.source import PACKET_FIELDS
    from lego.nfs.kitsune.detector import FeatureQuantization
    from lego.topo.traffic_batches import mixed_traffic

    batch = mixed_traffic(1500, seed=4)

    def message(b):
        return Message(batch=0, arrays={n: getattr(b, n) for n in PACKET_FIELDS})

    first, rest = batch.take(slice(0, 1000)), batch.take(slice(1000, None))
    one = FeatureQuantization({"semantics": "lego"}, None)
    one.handle(message(first))
    other = FeatureQuantization({"semantics": "lego"}, None)
    other.import_buckets(one.export_buckets(np.arange(N_BUCKETS))[0])
    a, b = one.handle(message(rest))[0], other.handle(message(rest))[0]
    assert np.array_equal(a.arrays["x"], b.arrays["x"])  # the moved state continues exactly
    fresh = FeatureQuantization({"semantics": "lego"}, None).handle(message(rest))[0]
    assert not np.array_equal(a.arrays["x"], fresh.arrays["x"])
    with pytest.raises(StateTransferError, match="cannot be split"):
        FeatureQuantization({"semantics": "kitsune"}, None).export_buckets(np.arange(4))


def test_score_lines_read_back_to_the_same_floats():
    import io

    from lego.bricks.merge import score_lines

    rng = np.random.default_rng(3)
    score = np.concatenate([rng.random(50), [0.0, 1e-300, 3.0e38, np.inf]])
    seq = np.arange(len(score), dtype=np.uint64) + 2**40
    alert = score > 0.5
    back = np.loadtxt(io.StringIO(score_lines(seq, score, alert, 12.25)), delimiter=",")
    assert (back[:, 0].astype(np.uint64) == seq).all()
    assert (back[:, 1].view(np.uint64) == score.view(np.uint64)).all()
    assert (back[:, 2] == 1).all() and (back[:, 3] == alert).all() and (back[:, 4] == 12.25).all()


def test_the_stage_clock_counts_nested_stages_once_and_adds_up_to_the_thread():
    """A stage entered inside another pauses it; the source's reading moves from its
    logic to receive; the stages add up to the process's CPU."""
    import time as _time

    from lego.bricks.stages import STAGES, StageClock

    def spin(s: float) -> None:
        end = _time.thread_time() + s
        while _time.thread_time() < end:
            pass

    clock = StageClock()
    clock.enter("send")
    spin(0.02)
    clock.enter("control")  # served while the send blocks
    spin(0.03)
    clock.leave()
    clock.leave()
    clock.enter("logic")
    spin(0.04)
    clock.leave()
    st = clock.seconds(moved_to_receive=0.01)
    assert list(st) == list(STAGES)
    assert 0.018 < st["send"] < 0.03 and 0.028 < st["control"] < 0.04
    assert 0.028 < st["logic"] < 0.04 and 0.0098 < st["receive"] < 0.0102
    total = _time.process_time() - clock.process0
    assert abs(sum(st.values()) - total) < 0.005
