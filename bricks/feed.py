"""A source brick fed frames over ZeroMQ instead of an interface (tests, benchmarks).

``frame_feed`` is :class:`~lego.bricks.source.PacketBatching` whose
"interface" is a PULL socket bound at option ``feed``: the process that plays the
switch's egress port (a test driving the software target's pipeline model) sends
the frames that port would carry, shim and all, in order. One message:

    [b'{"n": N}', buffer (uint8, the N frames back to back), lens (<u4[N]), ts (<f8[N])]

``ts`` are the frames' capture times (so scores compare with an offline run on
the same trace); ``[b'{"end": true}']`` ends the input. Frames are batched as on
an interface (``batch`` frames or ``flush_ms``) and shims stripped the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import zmq

from lego.bricks.source import Frames, PacketBatching
from lego.ext.batch import PacketBatch


def feed_message(frames: list[bytes], ts: np.ndarray) -> list[bytes]:
    """The frames of one feed message."""
    lens = np.fromiter((len(f) for f in frames), dtype="<u4", count=len(frames))
    return [json.dumps({"n": len(frames)}).encode(), b"".join(frames), lens.tobytes(),
            np.asarray(ts, dtype="<f8").tobytes()]


END = [b'{"end": true}']


class FrameFeed(PacketBatching):
    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        opts = {k: v for k, v in options.items() if k not in ("feed", "trace")}
        opts["interface"] = options["feed"]
        opts.setdefault("timestamps", "capture")
        super().__init__(opts, brick_id)
        self.feed = options["feed"]

    def _interface_batches(self) -> Iterator[tuple[PacketBatch | None, np.ndarray | None]]:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.feed)
        buf: list[np.ndarray] = []
        lens: list[np.ndarray] = []
        times: list[np.ndarray] = []
        pending = 0
        try:
            while True:
                if sock.poll(int(self.flush_s * 1000)):
                    parts = sock.recv_multipart()
                    head = json.loads(parts[0])
                    if head.get("end"):
                        break
                    buf.append(np.frombuffer(parts[1], dtype=np.uint8))
                    lens.append(np.frombuffer(parts[2], dtype="<u4"))
                    times.append(np.frombuffer(parts[3], dtype="<f8"))
                    pending += int(head["n"])
                    if pending < self.size:
                        continue
                if pending:
                    yield self._feed_batch(buf, lens, times)
                    buf, lens, times, pending = [], [], [], 0
                else:
                    yield None, None  # idle: the runtime serves control meanwhile
            if pending:
                yield self._feed_batch(buf, lens, times)
        finally:
            sock.close(0)

    def _feed_batch(self, buf, lens, times):
        b = np.concatenate(buf)
        ln = np.concatenate(lens).astype(np.uint32)
        ts = np.concatenate(times)
        offsets = np.concatenate([[0], np.cumsum(ln[:-1], dtype=np.int64)]).astype(np.int64)
        seq = np.arange(self.state.packets, self.state.packets + len(ln), dtype=np.uint64)
        return self._decode(Frames(b, offsets, ln, ln.copy(), ts, 1, seq), self.timestamps)
