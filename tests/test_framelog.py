"""The switch's frame log (lego.switch.framelog): what it keeps and what it answers.

The store alone: a lost port's frames after a checkpoint, by bucket, up to the
switch write that moved them (the first frame of the new epoch), window marks
included; trimmed to a checkpoint; bounded, with what the bound dropped making a
replay from before it uncovered. Then the keeper as a process would run it: on
a veth (root), answering a ZeroMQ client, a ``frames`` request waiting for its cut.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lego.errors import LegoError
from lego.switch import pipeline as pl
from lego.switch.framelog import FrameLog, FrameLogClient, serve
from lego.switch.netns import NetnsLab, netns_available


def frame(seq: int, bucket: int, epoch: int = 0, mirror: bool = False, mark: bool = False,
          payload: bytes = b"x" * 40) -> bytes:
    flags = (epoch << 1) | int(mirror)
    kind = pl.SHIM_KIND_WINDOW if mark else pl.SHIM_KIND_FRAME
    shim = pl.shim_header(flags, pl.GROUP_SRCIP, 0 if mark else bucket, seq, 1000 + seq,
                          60, 0x0800, window=1, kind=kind)
    macs = bytes(range(12))
    return macs + pl.LEGO_ETHERTYPE.to_bytes(2, "big") + shim + (b"" if mark else payload)


def test_a_lost_ports_frames_after_its_checkpoint_up_to_the_cut():
    flog = FrameLog(mib=8)
    flog.add([frame(s, bucket=s % 4, epoch=3) for s in range(10)])  # buckets 0..3
    flog.add([frame(10, 0, epoch=3, mark=True), frame(11, 1, epoch=3, mirror=True),
              b"not a switch copy", frame(12, 1, epoch=4), frame(13, 0, epoch=4)])
    got, marks = flog.select(after=4, buckets=np.array([0, 1]), cut_epoch=4)
    seqs = [pl.strip_shim(f)[0].seq for f in got]
    assert seqs == [5, 8, 9, 10, 11] and marks == 1  # 0/1 after 4, the mark, the mirror
    assert flog.cut_logged(after=4, cut_epoch=4)
    assert got[-1] == frame(11, 1, epoch=3, mirror=True)  # byte for byte
    got, _ = flog.select(after=4, buckets=np.array([0, 1]), cut_epoch=5)
    assert not flog.cut_logged(4, 5) and len(got) == 7  # no epoch 5 yet: all so far
    # an epoch within EPOCH_AHEAD after the cut's is after it too (a later move)
    assert flog.cut_logged(after=0, cut_epoch=2)


def test_copies_logged_out_of_order_come_back_in_switch_order():
    """BMv2 makes a primary's copy in its replica port's egress: a mirror or a frame
    of the next epoch can reach the log first. The selection is by sequence number
    and epoch, not by where the cut's first frame was logged."""
    flog = FrameLog(mib=8)
    flog.add([frame(1, 0, epoch=3), frame(3, 0, epoch=3, mirror=True),
              frame(4, 1, epoch=4)])  # the cut's first frame, logged before seq 2's copy
    assert flog.cut_logged(after=0, cut_epoch=4) and not flog.cut_logged(4, cut_epoch=4)
    flog.add([frame(2, 0, epoch=3), frame(2, 0, epoch=3, mark=True), frame(5, 0, epoch=4)])
    got, marks = flog.select(after=0, buckets=np.array([0]), cut_epoch=4)
    assert [(pl.strip_shim(f)[0].seq, pl.strip_shim(f)[0].mark) for f in got] == [
        (1, False), (2, False), (2, True), (3, False)] and marks == 1
    flog.lost_in_kernel(3)
    assert not flog.covers(4) and flog.covers(5)


def test_trim_and_the_bound_say_what_a_replay_can_still_reach():
    flog = FrameLog(mib=8)
    for c in range(4):
        flog.add([frame(10 * c + i, bucket=1) for i in range(10)])
    assert flog.trim(9) == 10 and flog.trim(15) == 0  # whole chunks only
    assert flog.covers(9) and flog.report()["first_seq"] == 10
    small = FrameLog(mib=0.002)  # ~2 KiB: a few chunks
    for c in range(20):
        small.add([frame(10 * c + i, bucket=1) for i in range(10)])
    assert small.stats["dropped_for_bound"] > 0 and small.bytes <= small.limit + 2048
    first = small.report()["first_seq"]
    assert not small.covers(first - 5) and small.covers(first - 1)


def test_a_paused_source_sends_the_injected_frames_first_even_none():
    """The runtime's inject op with no frames (a failed recovery) unpauses the
    source; with frames, they go out first, parsed as the port's own, counted
    without their window marks."""
    from types import SimpleNamespace

    from lego.bricks.runtime import Brick
    from lego.bricks.source import PacketBatching

    src = PacketBatching({"interface": "lo"}, "src-5/0")
    rt = SimpleNamespace(logic=src, spec=SimpleNamespace(epoch=2))
    assert Brick._inject_op(rt, {"op": "pause_frames"}) == {
        "ok": True, "position": 0, "epoch": 2}
    empty = Path(tempfile.mkdtemp()) / "none"
    empty.write_bytes(b"")
    assert Brick._inject_op(rt, {"op": "inject_frames", "path": str(empty),
                                        "lens": []})["ok"]
    assert list(src._paused()) == [] and src.paused_at is None
    src.pause()
    frames = [frame(7, 1), frame(8, 1, mark=True), frame(9, 2)]
    src.inject(frames)
    out = list(src._paused())
    assert len(out) == 1 and list(out[0][0].seq) == [7, 9]
    assert src.state.counters["frames_injected"] == 2


@pytest.mark.skipif(netns_available() is not None, reason=f"{netns_available()}")
def test_the_keeper_logs_an_interface_and_answers_once_the_cut_is_logged(tmp_path):
    with NetnsLab(1, prefix="fl") as lab:
        stop = threading.Event()
        addr = f"ipc://{tmp_path}/framelog.sock"
        keeper = threading.Thread(target=serve, args=(lab.switch_ifaces[0], addr, 8.0),
                                  kwargs={"quiet_s": 2.0, "stop": stop}, daemon=True)
        keeper.start()
        client = FrameLogClient(addr, timeout_s=5.0)
        try:
            deadline = time.monotonic() + 10
            while True:  # the keeper binds once its socket is open
                try:
                    client.report()
                    break
                except LegoError:
                    if time.monotonic() > deadline:
                        raise
            tx = lab.host_socket(0)
            for s in range(20):
                tx.send(frame(s, bucket=s % 2, epoch=1))
            result: dict = {}

            def ask() -> None:
                result["head"], result["data"] = client.frames(9, [0], cut_epoch=2,
                                                               timeout_s=8.0)

            asker = threading.Thread(target=ask)
            t0 = time.monotonic()
            asker.start()
            time.sleep(0.5)
            assert asker.is_alive()  # no frame of epoch 2 logged, and not quiet yet
            tx.send(frame(20, bucket=0, epoch=2))
            asker.join(10)
            head = result["head"]
            assert head["cut_seen"] and head["covered"] and time.monotonic() - t0 < 1.9
            assert client.covers(9)
            assert head["frames"] == 5 and head["marks"] == 0
            assert sum(head["lens"]) == len(result["data"])
            assert client.trim(15)["ok"]
            tx.close()
        finally:
            stop.set()
            keeper.join(5)
            client.close()


def test_the_benchmarks_frame_log_row_runs():
    """make bench's frame-log row, small (it exercises the log as the bench does)."""
    from bench.bench_recovery import _frame_log_row

    row = _frame_log_row(3000, fe_pps=1.0)
    assert row.packets == 3000 and row.seconds > 0


def test_the_log_is_trimmed_only_to_what_every_ports_checkpoints_still_need():
    """A live port without a checkpoint yet holds the trim back: its first one may
    stand behind the others' (its brick lags), and must still be replayable; a lost
    port's checkpoints hold it until its recovery forgets them."""
    from lego.control.recovery import frame_log_floor

    def cps(*seqs):
        return [{"last_seq": s} for s in seqs]

    assert frame_log_floor({2: cps(500, 900)}, live=[2, 3]) is None  # 3 has none yet
    assert frame_log_floor({2: cps(500, 900), 3: cps(420)}, live=[2, 3]) == 420
    assert frame_log_floor({2: cps(500), 3: cps(None, 700)}, live=[2, 3]) is None
    # port 3's host is lost: not live, its checkpoints still count
    assert frame_log_floor({2: cps(500, 900), 3: cps(420)}, live=[2]) == 420
    assert frame_log_floor({2: cps(500, 900), 3: []}, live=[2]) == 500
    assert frame_log_floor({}, live=[]) is None
