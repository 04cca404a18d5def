"""No-op bricks: the transport alone, for the IPC benchmark.

They move batches of the same shapes as an NF graph's hops (packets, then
feature rows, then the ANN's inputs, then scores) through the same
transport (shared memory or ZeroMQ, fused or not, as the graph says), doing no
work on them, so their CPU time is the cost of the transport (writing the
payload once into a slot or a socket, the header, receiving, routing) per
packet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from lego.bricks.source import PACKET_FIELDS
from lego.bricks.wire import Message


@dataclass
class NoopState:
    batches: int = 0
    packets: int = 0


class NoopSource:
    """Reads ``trace`` into memory once (``batch``, ``limit``), then sends its
    batches ``repeat`` times: the sending is all it costs."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        from lego.ext.packets import read_trace

        whole = read_trace(options["trace"], limit=options.get("limit"))
        self.batches = list(whole.split(int(options.get("batch", 8192))))
        self.repeat = int(options.get("repeat", 1))
        self.src = str(brick_id)
        self.state = NoopState()

    def produce(self) -> Iterator[Message]:
        import time

        for _ in range(self.repeat):
            for b in self.batches:
                arrays = {name: getattr(b, name) for name in PACKET_FIELDS}
                yield Message(batch=self.state.batches, seq0=int(b.seq[0]),
                              seq1=int(b.seq[-1]) + 1, rows=len(b), src=self.src,
                              t0=time.time(), arrays=arrays)
                self.state.batches += 1
                self.state.packets += len(b)

    def end_meta(self) -> dict[str, Any]:
        return {"batches": self.state.batches, "packets": self.state.packets}

    def handle(self, msg: Message) -> list[Message]:
        return []

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return []


class NoopRelay:
    """Forwards each batch; ``emit`` picks the outgoing shape: ``same``,
    ``features`` (``seq`` + rows x ``width`` float64), ``mapped`` (``seq`` +
    ``arrays`` float64 arrays totalling ``width`` columns) or ``scores``."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.emit = options.get("emit", "same")
        self.width = int(options.get("width", 115))
        self.n_arrays = int(options.get("arrays", 1))
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self.state = NoopState()

    def _zeros(self, n: int) -> dict[str, np.ndarray]:
        got = self._cache.get(n)
        if got is None:
            if self.emit == "features":
                got = {"x": np.zeros((n, self.width))}
            elif self.emit == "mapped":
                cols = np.array_split(np.arange(self.width), self.n_arrays)
                got = {f"x{a}": np.zeros((n, len(c))) for a, c in enumerate(cols)}
            else:
                got = {"score": np.zeros(n)}
            self._cache[n] = got
        return got

    def handle(self, msg: Message) -> list[Message]:
        self.state.batches += 1
        self.state.packets += msg.n
        if self.emit == "same":
            return [msg]
        seq = msg.arrays["seq"]
        return [msg.with_arrays({"seq": seq, **self._zeros(len(seq))})]

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return []


class NoopSink(NoopRelay):
    def handle(self, msg: Message) -> list[Message]:
        self.state.batches += 1
        self.state.packets += msg.n
        return []
