"""Exact recovery of a keyed brick (lego.bricks.recovery), logic by logic: a brick
checkpointed mid-stream dies; its successor, restored from the checkpoint, takes
what arrived after the death (queued while it waited) and the source's replay of
its log since the checkpoint (overlapping both), and the first copy of each
output batch equals one brick's that never died, bit for bit. Both NFs' keyed
bricks; the source's log bounded and trimmed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lego.bricks import recovery
from lego.bricks.source import PacketBatching
from lego.bricks.wire import Message


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    from lego.topo.traffic_synth import generate, write_trace

    path = tmp_path_factory.mktemp("recovery") / "synth.pcap"
    write_trace(generate(seed=3, packets=8000), path)
    return path


def source_batches(trace: Path, frames: bool, batch: int = 250) -> list[Message]:
    src = PacketBatching({"trace": str(trace), "batch": batch, "frames": frames}, "src/0")
    msgs = [m for m in src.produce() if m is not None]
    if frames:  # a switch's window stamps and owner buckets, as LUCID's bricks get them
        from lego.nfs.lucid.features import new_extractor

        windows = new_extractor(2.0, 10).clock(np.concatenate([m.arrays["ts"] for m in msgs]))
        at = 0
        for m in msgs:
            m.arrays["window"] = windows[at:at + m.n].astype(np.uint32)
            m.arrays["bucket"] = (m.arrays["seq"] % 7).astype(np.uint16)
            at += m.n
    return msgs


def kitsune():
    from lego.nfs.kitsune.detector import FeatureQuantization

    return FeatureQuantization({"semantics": "lego"}, "fq/0")


def lucid():
    from lego.nfs.lucid.bricks import FlowWindows

    return FlowWindows({"window": 2.0, "packets": 10}, "fx/0")


def outputs(msgs: list[Message]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for m in msgs:
        out.setdefault(m.batch, (np.array(m.arrays["seq"]), np.array(m.arrays["x"])))
    return out


@pytest.mark.parametrize("make,frames", [(kitsune, False), (lucid, True)],
                         ids=["kitsune", "lucid"])
def test_a_successor_restored_from_a_checkpoint_and_the_log_equals_one_brick(
        trace, tmp_path, make, frames):
    msgs = source_batches(trace, frames)
    assert len(msgs) >= 20
    whole = outputs(_run(make(), msgs))
    check, death = len(msgs) // 3, 2 * len(msgs) // 3

    dead, got = make(), []
    log = recovery.SentLog(64)
    for i, m in enumerate(msgs[:death]):
        log.append(m)
        got += dead.handle(m)
        if i == check:
            reply, _ = dead.control({"op": "checkpoint", "path": str(tmp_path / "cp")}, 0)
            assert reply["ok"] and reply["position"] == recovery.position(m) + m.n
            assert reply["entries"] > 0
            log.trim(lambda x, p=reply["position"]: recovery.position(x) + x.n > p)
    assert recovery.position(log.entries[0][0]) == reply["position"]

    successor = make()
    recovery.await_restore(successor)
    late = msgs[death - 2:death + 3]  # sent to the dead one's socket, some it took already
    for m in late:
        assert successor.handle(m) == []  # queued until the restore
    restored, outs = successor.control({"op": "restore", "path": str(tmp_path / "cp"),
                                        "position": reply["position"],
                                        "epoch": reply["epoch"], "extra": reply["extra"]}, 0)
    assert restored["ok"] and restored["imported"] == reply["entries"]
    assert restored["queued"] == len(late)
    assert outs == []  # the queue starts after a gap: the replay fills it
    replayed, first = recovery.replayable(log, reply["position"])
    assert first == reply["position"]
    for m in replayed:
        outs += successor.handle(m)
    for m in msgs[death + 3:]:
        outs += successor.handle(m)
    outs += successor.finish({})
    got = outputs(got + outs)
    assert sorted(got) == sorted(whole)
    for b, (seq, x) in whole.items():
        assert np.array_equal(got[b][0], seq), b
        assert np.array_equal(got[b][1], x), b  # bit for bit
    assert successor.moves.recovery.stats["frames_duplicate"] > 0


def checkpoint_after_one_batch(msgs: list[Message], tmp_path: Path) -> dict:
    """A Kitsune extractor's checkpoint after its first batch, as the restore that
    carries it."""
    dead = kitsune()
    dead.handle(msgs[0])
    reply, _ = dead.control({"op": "checkpoint", "path": str(tmp_path / "cp")}, 0)
    return {"op": "restore", "path": str(tmp_path / "cp"),
            **{k: reply[k] for k in ("position", "epoch", "extra")}}


def _run(brick, msgs: list[Message]) -> list[Message]:
    out = [o for m in msgs for o in brick.handle(m)]
    return out + brick.finish({})


def test_lucids_checkpoint_keeps_the_newest_window_a_mark_set(trace, tmp_path):
    """A window mark (no frame) advances the clock: the successor must close windows
    where the dead one would, so the checkpoint carries the newest window."""
    msgs = source_batches(trace, True)
    fx = lucid()
    for m in msgs[:5]:
        fx.handle(m)
    last = msgs[4]
    newest = float(fx.state.newest) + 1
    fx.handle(Message(batch=5, arrays={k: a[:0] for k, a in last.arrays.items()},
                      meta={"taken0": recovery.position(last) + last.n,
                            "window_mark": int(newest)}))
    reply, _ = fx.control({"op": "checkpoint", "path": str(tmp_path / "cp")}, 0)
    assert reply["extra"] == {"newest": newest}
    successor = lucid()
    recovery.await_restore(successor)
    successor.control({"op": "restore", "path": str(tmp_path / "cp"), **{
        k: reply[k] for k in ("position", "epoch", "extra")}}, 0)
    assert successor.state.newest == newest


def test_a_checkpoint_is_refused_while_a_move_is_under_way(trace, tmp_path):
    fq = kitsune()
    msgs = source_batches(trace, False)
    fq.handle(msgs[0])
    fq.control({"op": "hold", "buckets": [1, 2]}, 0)
    reply, _ = fq.control({"op": "checkpoint", "path": str(tmp_path / "cp")}, 0)
    assert not reply["ok"] and reply["busy"]
    fresh = kitsune()
    reply, _ = fresh.control({"op": "checkpoint", "path": str(tmp_path / "cp")}, 0)
    assert not reply["ok"]  # no position yet


def test_a_successor_whose_replay_cannot_cover_the_gap_goes_on_after_a_resync(trace, tmp_path):
    msgs = source_batches(trace, False)
    restore = checkpoint_after_one_batch(msgs, tmp_path)
    successor = kitsune()
    recovery.await_restore(successor)
    successor.control(restore, 0)
    assert successor.handle(msgs[3]) == []  # after a gap no log fills
    done, outs = successor.control({"op": "resync"}, 0)
    assert done == {"ok": True, "queued": 1} and [m.batch for m in outs] == [3]
    assert [m.batch for m in successor.handle(msgs[4])] == [4]


def test_outside_a_recovery_a_gap_is_skipped_and_counted_never_waited_for(trace):
    """A batch that never reaches the brick (dropped by a full link in a graph file
    with ``overflow = "drop"``): the next one is taken at once."""
    msgs = source_batches(trace, False)
    fq = kitsune()
    assert fq.handle(msgs[0]) and fq.handle(msgs[2])
    assert fq.moves.recovery.stats["frames_skipped"] == msgs[1].n


def test_a_successor_without_a_checkpoint_goes_on_from_what_comes(trace):
    msgs = source_batches(trace, False)
    fq = kitsune()
    recovery.await_restore(fq)
    assert fq.handle(msgs[5]) == []
    reply, outs = fq.control({"op": "restore"}, 0)
    assert reply["ok"] and reply["imported"] == 0 and len(outs) == 1
    assert fq.handle(msgs[6])  # in order after it


def test_the_log_keeps_its_bound_and_counts_what_it_dropped():
    log = recovery.SentLog(1 / 1024)  # 1 KiB
    for i in range(10):
        log.append(Message(batch=i, meta={"taken0": 100 * i},
                           arrays={"x": np.zeros(100, dtype=np.uint16)}))  # 100 rows, 200 B
    assert log.bytes <= 1024 and log.dropped == 5
    assert [m.batch for m, _ in log.entries] == [5, 6, 7, 8, 9]
    msgs, first = recovery.replayable(log, 0)  # the start is gone: the first kept says so
    assert first == 500 and len(msgs) == 5
    assert log.trim(lambda m: recovery.position(m) >= 700) == 2
    assert recovery.replayable(log, 750)[0][0].batch == 7


def test_a_successor_that_went_on_refuses_a_late_restore_and_drains_at_the_end(trace,
                                                                                tmp_path):
    """No restore came: at its end the brick takes what it queued (never dropped); a
    restore after it went on is refused (importing then would apply frames twice)."""
    msgs = source_batches(trace, False)
    restore = checkpoint_after_one_batch(msgs, tmp_path)
    fq = kitsune()
    recovery.await_restore(fq)
    assert fq.handle(msgs[1]) == [] and fq.handle(msgs[2]) == []
    assert [m.batch for m in fq.finish({})] == [1, 2]
    assert fq.moves.recovery.stats["restore_timeouts"] == 1
    assert recovery.report(fq)["recovery"]["restore_timeouts"] == 1  # in its load report
    late, outs = fq.control(restore, 0)
    assert not late["ok"] and outs == []


def test_a_state_without_buckets_answers_a_checkpoint_with_an_error(trace, tmp_path):
    from lego.nfs.kitsune.detector import FeatureQuantization

    fq = FeatureQuantization({"semantics": "kitsune"}, "fq/0")
    fq.handle(source_batches(trace, False)[0])
    reply, _ = fq.control({"op": "checkpoint", "path": str(tmp_path / "cp")}, 0)
    assert not reply["ok"] and "StateTransferError" in reply["error"]
