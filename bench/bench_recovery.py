"""Exact recovery (lego.bricks.recovery): what a checkpoint costs, and how fast a
successor rebuilds the state a dead feature extractor had.

Kitsune's extractor (``lego`` semantics) on the real Mirai prefix (generated
mixed traffic when ``../shared/data`` is absent), fed as the live source feeds it
(256-packet batches, each with its position):

- ``checkpoint``: the brick's whole keyed state exported and written to a file,
  as the controller asks every ``[recovery].checkpoint_s`` ("packets" are state
  entries); baseline: the brick taking the packets that built the state;
- ``restore + replay``: a successor imports the checkpoint taken half-way and
  takes the second half from the source's log, its outputs checked equal to the
  brick that never died; baseline: the same brick taking that half with its state
  already in place (the replay's own cost: the import is the difference);
- ``source log``: a source appending its batches to its bounded log and trimming
  it at each checkpoint; baseline: the brick taking those batches;
- ``import``: the restore's import of the checkpoint alone (entries), the fixed
  part of a recovery's time; the rest is the replay above;
- ``frame log``: the switch's frame log (:mod:`lego.switch.framelog`) keeping the
  copies of every frame (the trace's frames with a shim, 256 a read) and then
  selecting a lost port's frames after a checkpoint; baseline: the brick taking
  the packets.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import SHARED_DATA, Row
from lego.bricks import recovery
from lego.bricks.wire import Message

TRACE = SHARED_DATA / "kitsune_mirai_first38363.tsv"
BATCH = 256


def _batches(quick: bool) -> tuple[str, list[Message]]:
    from lego.bricks.source import PACKET_FIELDS

    if TRACE.exists():
        from lego.ext.packets import read_trace

        label, pb = "real Mirai prefix", read_trace(TRACE)
    else:
        from lego.topo.traffic_batches import mixed_traffic

        label, pb = "mixed_traffic", mixed_traffic(n=10_000 if quick else 40_000)
    msgs = []
    for i, part in enumerate(pb.split(BATCH)):
        msgs.append(Message(batch=i, rows=len(part), meta={"taken0": i * BATCH},
                            arrays={f: getattr(part, f) for f in PACKET_FIELDS}))
    return label, msgs


def _brick():
    from lego.nfs.kitsune.detector import FeatureQuantization

    return FeatureQuantization({"semantics": "lego"}, "fq/0")


def _take(brick, msgs: list[Message]) -> tuple[float, list[Message]]:
    start = time.perf_counter()
    outs = [o for m in msgs for o in brick.handle(m)]
    return time.perf_counter() - start, outs


def run(quick: bool) -> list[Row]:
    label, msgs = _batches(quick)
    half = len(msgs) // 2
    packets = sum(m.n for m in msgs)
    work = Path(tempfile.mkdtemp(prefix="lego-bench-recovery-"))
    rows = []

    # checkpoint of the state the first half built, against building it
    brick = _brick()
    build_s, _ = _take(brick, msgs[:half])
    built = sum(m.n for m in msgs[:half])
    best, reply = float("inf"), {}
    for i in range(3 if quick else 10):
        start = time.perf_counter()
        reply, _ = brick.control({"op": "checkpoint", "path": str(work / f"cp{i}")}, 0)
        best = min(best, time.perf_counter() - start)
    assert reply["ok"], reply
    base = Row(f"FE taking the packets that built the state ({label}), baseline", built,
               build_s, "itself")
    base.baseline_pps = base.pps
    rows += [base, Row(f"checkpoint: whole FE state ({reply['entries']:,} entries, "
                       f"{reply['bytes'] / 1024:,.0f} KiB) to a file", reply["entries"],
                       best, "FE taking packets", base.pps)]

    # restore + replay of the second half, against the same brick going on
    rest = sum(m.n for m in msgs[half:])
    going_s, going_outs = _take(brick, msgs[half:])
    successor = _brick()
    recovery.await_restore(successor)
    start = time.perf_counter()
    successor.control({"op": "restore", "path": str(work / "cp0"),
                       "position": reply["position"], "epoch": reply["epoch"]}, 0)
    outs = [o for m in msgs[half:] for o in successor.handle(m)]
    replay_s = time.perf_counter() - start
    assert len(outs) == len(going_outs) and all(
        np.array_equal(a.arrays["x"], b.arrays["x"]) for a, b in zip(outs, going_outs,
                                                                    strict=True))
    base = Row("FE taking the second half, its state in place (baseline)", rest, going_s,
               "itself")
    base.baseline_pps = base.pps
    rows += [base, Row(f"restore the checkpoint + replay the second half ({rest:,} packets, "
                       "outputs equal)", rest, replay_s, "FE going on", base.pps)]

    # the source's log: append every batch, trim at a checkpoint every 10 batches
    log = recovery.SentLog(32)
    start = time.perf_counter()
    for i, m in enumerate(msgs):
        log.append(m)
        if i % 10 == 9:
            upto = recovery.position(m) + m.n
            log.trim(lambda x, u=upto: recovery.position(x) + x.n > u)
    log_s = time.perf_counter() - start
    base = Row("FE taking the whole trace (baseline)", packets, build_s + going_s, "itself")
    base.baseline_pps = base.pps
    rows += [base, Row("source log: append each batch, trim at each checkpoint", packets,
                       log_s, "FE taking packets", base.pps)]

    # the import alone: a recovery's time = this + the replay of the log since
    fresh = _brick()
    recovery.await_restore(fresh)
    start = time.perf_counter()
    fresh.control({"op": "restore", "path": str(work / "cp0"),
                   "position": reply["position"], "epoch": reply["epoch"]}, 0)
    import_s = time.perf_counter() - start
    rows.append(Row(f"restore: import the checkpoint alone ({reply['entries']:,} entries)",
                    reply["entries"], import_s, "FE taking packets", base.pps))
    rows.append(_frame_log_row(packets, base.pps))
    return rows


def _frame_log_row(packets: int, fe_pps: float) -> Row:
    """The frame log keeping ``packets`` switch copies, then one selection."""
    from lego.switch import pipeline as pl
    from lego.switch.framelog import FrameLog
    from lego.topo.traffic_synth import generate

    frames = generate(1, packets, attack_start=0.6).frames
    rng = np.random.default_rng(1)
    buckets = rng.integers(0, pl.N_BUCKETS, len(frames)).tolist()
    ether = pl.LEGO_ETHERTYPE.to_bytes(2, "big")
    copies = [f[:12] + ether + pl.shim_header(0, pl.GROUP_SRCIP, b, i, i, len(f), 0x0800)
              + f[12:] for i, (f, b) in enumerate(zip(frames, buckets, strict=True))]
    flog = FrameLog(mib=256)
    start = time.perf_counter()
    for i in range(0, len(copies), 256):
        flog.add(copies[i:i + 256])
    got, _ = flog.select(len(copies) // 2, np.arange(pl.N_BUCKETS // 4), cut_epoch=1)
    log_s = time.perf_counter() - start
    assert 0 < len(got) < len(copies) // 2
    return Row(f"frame log: keep every switch copy ({len(copies):,}), then a lost port's "
               f"after a checkpoint ({len(got):,})", len(copies), log_s, "FE taking packets",
               fe_pps)


if __name__ == "__main__":  # pragma: no cover
    for r in run(quick=True):
        print(f"{r.name:80s} {r.packets:8d} {r.seconds * 1000:9.2f} ms  ratio {r.ratio:.2f}")
