"""Where a brick process's CPU goes, stage by stage (its load report's ``stages_cpu_s``).

The runtime's main thread marks each stage as it enters and leaves it
(:class:`StageClock`); a stage entered inside another (a control message served
while a send blocks) pauses the outer one, so the stages never count a CPU
second twice. The stages, in a batch's order:

- ``receive``: taking a batch from the input queue and decoding it (a source:
  reading its switch port or trace, :attr:`SOURCE_READ`);
- ``logic``: the NF's own work (``handle``; a source: dissecting what it read);
- ``send``: routing, encoding and sending the outputs (and keeping them for a
  resend, where recovery is on);
- ``control``: control messages (moves, checkpoints, routes);
- ``report``: load reports to the supervisor;
- ``loop``: the rest of the main thread (polling, wake-ups);
- ``threads``: every other thread of the process (ZeroMQ's I/O thread, BLAS).

They add up to the process's CPU time. ``thread_time`` counts CPU, not wall
time: a process paused by its CPU quota or asleep in a read costs nothing.
"""

from __future__ import annotations

import time

#: the stages a report names, in a batch's order
STAGES = ("receive", "logic", "send", "control", "report", "loop", "threads")
#: a source logic's attribute: CPU seconds of its ``produce`` spent reading its input
SOURCE_READ = "read_cpu_s"


class StageClock:
    """CPU seconds of the calling thread per stage, nested stages exclusive."""

    def __init__(self) -> None:
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self._stack: list[str] = []
        self._t = time.thread_time()
        self.thread0 = self._t  # the main thread's CPU from here on
        self.process0 = time.process_time()

    def enter(self, stage: str) -> None:
        now = time.thread_time()
        if self._stack:
            self.cpu[self._stack[-1]] += now - self._t
        self._stack.append(stage)
        self._t = now

    def leave(self) -> None:
        now = time.thread_time()
        self.cpu[self._stack.pop()] += now - self._t
        self._t = now

    def stage(self, name: str) -> _Stage:
        """``with clock.stage("send"): ...``: :meth:`enter` and :meth:`leave` around it."""
        return _Stage(self, name)

    def seconds(self, moved_to_receive: float = 0.0) -> dict[str, float]:
        """Each stage's CPU seconds so far; ``moved_to_receive``: of ``logic``'s, the
        source's reading (it happens inside ``produce``)."""
        now = time.thread_time()
        out = dict(self.cpu)
        if self._stack:  # the stage under way (a report is made inside ``report``)
            out[self._stack[-1]] += now - self._t
        moved = min(moved_to_receive, out["logic"])
        out["logic"] -= moved
        out["receive"] += moved
        main = now - self.thread0
        out["loop"] = max(0.0, main - sum(out[s] for s in STAGES[:5]))
        out["threads"] = max(0.0, time.process_time() - self.process0 - main)
        return {s: round(v, 6) for s, v in out.items()}


class _Stage:
    """One stage as a context (a class, not a generator: a few per batch)."""

    __slots__ = ("clock", "name")

    def __init__(self, clock: StageClock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.clock.enter(self.name)

    def __exit__(self, *exc: object) -> None:
        self.clock.leave()
