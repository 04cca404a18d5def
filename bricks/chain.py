"""Fusion: bricks of one group run in one process as a chain of function calls.

A graph puts bricks in a ``group`` (see :mod:`lego.bricks.graph`); each
replica of the group is one process whose logic is a :class:`Chain`: a batch
goes through the members' ``handle`` one after the other, as NetBricks composes
operators, and only what the last member emits leaves the process.

What composition costs: one Python call per member per batch and the
intermediate arrays the members allocate anyway (a member's output is its
successor's input, by reference: no queue, no copy, no header). Measured on
the first NF's graph (8192-packet batches), its feature mapping and ensemble fused
cost the same as the ensemble's own execute alone to within noise, while a process hop costs
one copy of the batch into shared memory and a context switch (see
``bench/bench_bricks.py``). What fusion gives up: the members share one core
(they cannot be scaled apart) and the chain's replicas are replicas of every
member, so only bricks that may be replicated together are fused (the graph
checks it).

Each member keeps its own identity (``fm/0``), state and counters; the chain
reports every member's CPU time and the rows it took in its load report
(``extra.members_cpu_s``, ``extra.members``). A control message naming a member
(``"member": "fm"``) goes to that member; one naming none, to the first member
that takes control messages.

A graph of a live switch port runs fused this way (``[graph].fuse``,
:mod:`lego.control.graph_specs`): a source chain whose head reads the port and
whose tail is the decision. Its head's ``pause``/``inject`` (a lost port's
frames replayed first) are the chain's, and it counts the frames its head took
(:attr:`SourceChain.rows_taken`) and the wall time its members were busy
(:attr:`SourceChain.busy_s`), which the runtime reports as the process's.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from lego.bricks import recovery
from lego.bricks.wire import Message


class _Id:
    """A member's identifier: the member's node, the chain's replica serial."""

    def __init__(self, node: str, serial: int) -> None:
        self.node = node
        self.serial = serial

    def __str__(self) -> str:
        return f"{self.node}/{self.serial}"


class Chain:
    """Worker chain. Options: ``members``: ``[{"node", "type", "options"}, ...]``
    in chain order (the graph writes them)."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        from lego.bricks.catalog import make_logic

        serial = int(getattr(brick_id, "serial", 0))
        self.names: list[str] = [m["node"] for m in options["members"]]
        self.members = [make_logic(m["type"], m["options"], _Id(m["node"], serial))
                        for m in options["members"]]
        self.cpu_s = dict.fromkeys(self.names, 0.0)
        self.rows_in = dict.fromkeys(self.names, 0)
        self.state = {n: getattr(m, "state", None) for n, m in zip(self.names, self.members,
                                                                   strict=True)}
        tail = self.members[-1]
        if hasattr(tail, "split"):
            self.split = tail.split
        if any(hasattr(m, "control") for m in self.members):
            self.control = self._control
        if hasattr(tail, "bind_output"):  # only the tail's output leaves the process
            self.bind_output = tail.bind_output
        if any(hasattr(m, "resume") for m in self.members):
            self.resume = self._resume

    def _resume(self) -> None:
        """A restarted chain: every member that resumes does."""
        for member in self.members:
            if hasattr(member, "resume"):
                member.resume()

    def _step(self, i: int, msgs: list[Message]) -> list[Message]:
        """Messages through member ``i``: what it emits."""
        member = self.members[i]
        t = time.thread_time()
        out: list[Message] = []
        for msg in msgs:
            if msg.kind == "data":
                self.rows_in[self.names[i]] += msg.n
            out.extend(member.handle(msg))
        self.cpu_s[self.names[i]] += time.thread_time() - t
        return out

    def _through(self, first: int, msgs: list[Message]) -> list[Message]:
        """Messages through members ``first..``: what the last one emits."""
        for i in range(first, len(self.members)):
            if not msgs:
                break
            msgs = self._step(i, msgs)
        return msgs

    def handle(self, msg: Message) -> list[Message]:
        return self._through(0, [msg])

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        """Finish each member in order; what one emits on finishing goes through
        the members after it before they finish."""
        msgs: list[Message] = []
        for i, member in enumerate(self.members):
            msgs = self._step(i, msgs) if msgs else msgs
            t = time.thread_time()
            msgs = msgs + member.finish(meta)
            self.cpu_s[self.names[i]] += time.thread_time() - t
        return msgs

    def _control(self, cmd: dict, packets_in: int) -> tuple[dict | None, list[Message]]:
        """A control message for a logic (e.g. a state move): the member it names, or
        the first that takes control messages, answers (told the rows it took, not
        the process's ``packets_in``); what it emits goes to the members after it
        (:meth:`_queue`)."""
        named = cmd.get("member")
        for i, member in enumerate(self.members):
            if named is not None and self.names[i] != named:
                continue
            if hasattr(member, "control"):
                reply, outs = member.control(cmd, self.rows_in[self.names[i]])
                return reply, self._queue(i + 1, outs)
            if named is not None:
                break
        return {"ok": False, "error": f"no member {'named ' + repr(named) + ' ' if named else ''}"
                "takes control messages"}, []

    def _queue(self, i: int, msgs: list[Message]) -> list[Message]:
        """Messages for members ``i..``: here, through them at once."""
        return self._through(i, msgs)

    def report(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for member in self.members:
            if hasattr(member, "report"):
                extra.update(member.report())
            extra.update(recovery.report(member))  # (a keyed member's)
        extra["members_cpu_s"] = {n: round(c, 6) for n, c in self.cpu_s.items()}
        extra["members"] = {n: {"cpu_s": round(self.cpu_s[n], 6), "packets_in": self.rows_in[n]}
                            for n in self.names}
        return extra


class SourceChain(Chain):
    """A chain whose first member is a source: it produces, the rest handle.

    Its work is a queue of (member, message) steps taken one at a time, the
    head's next batch only once the queue is empty (memory stays bounded by one
    batch's outputs). Between two steps it yields to the runtime, which serves
    control and reports: a long run of released batches (a move's import) or a
    backlog never keeps a control message waiting longer than one member's one
    batch. What a control message makes a member emit joins the queue."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        super().__init__(options, brick_id)
        head = self.members[0]
        self.busy_s = 0.0  # wall time the members after the head were at work
        self.batch0 = 0  # the head's batch ids start here (its incarnation's epoch)
        self._work: deque[tuple[int, Message]] = deque()
        self._out: deque[Message] = deque()  # what left the chain, not yet yielded
        self._resumed = False
        if hasattr(head, "pause"):  # a lost port's frames first (lego.bricks.recovery)
            self.pause, self.inject = head.pause, head.inject

    @property
    def rows_taken(self) -> int:
        """Frames (rows) the head produced: the process's intake."""
        return self.rows_in[self.names[0]]

    @property
    def read_cpu_s(self) -> float:
        """The head's CPU reading its input (lego.bricks.stages)."""
        return float(getattr(self.members[0], "read_cpu_s", 0.0))

    def _resume(self) -> None:
        """The whole graph restarted: its members resume, and a decision among them
        starts at the head's first batch (known once the runtime numbers them)."""
        super()._resume()
        self._resumed = True

    def _queue(self, i: int, msgs: list[Message]) -> list[Message]:
        """Member ``i``'s inputs queued; what falls off the chain's end returned."""
        if i >= len(self.members):
            return msgs
        self._work.extend((i, m) for m in msgs)
        return []

    def _work_step(self) -> None:
        """One queued step: one member, one message (what leaves the chain joins
        :attr:`_out`)."""
        i, msg = self._work.popleft()
        t = time.perf_counter()
        outs = self._step(i, [msg])
        self.busy_s += time.perf_counter() - t
        self._out.extend(self._queue(i + 1, outs))

    def produce(self) -> Iterator[Message | None]:
        head = self.members[0]
        name = self.names[0]
        if self._resumed:
            for member in self.members[1:]:
                if hasattr(member, "resume_from"):
                    member.resume_from(self.batch0)
        it = iter(head.produce())
        try:
            while True:
                while self._work or self._out:
                    if not self._out:
                        self._work_step()
                    # the runtime serves control and reports between two steps
                    yield self._out.popleft() if self._out else None
                t = time.thread_time()
                msg = next(it, StopIteration)
                self.cpu_s[name] += time.thread_time() - t
                if msg is StopIteration:
                    return
                if msg is None:
                    yield None
                    continue
                msg.batch += self.batch0
                if msg.kind == "data":
                    self.rows_in[name] += msg.n
                self._queue(1, [msg])
        finally:
            it.close()  # (the head's last counters, before its end_meta)

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        """The queued steps first (a drain can stop the production between two),
        then every member's own finish."""
        while self._work:
            self._work_step()
        outs = list(self._out)
        self._out.clear()
        return outs + super().finish(meta)

    def end_meta(self) -> dict[str, Any]:
        return getattr(self.members[0], "end_meta", dict)()


def make_chain(options: dict[str, Any], brick_id: Any) -> Chain:
    """The chain logic for a group (a source chain when its head produces)."""
    from lego.bricks.catalog import brick_type

    head = options["members"][0]["type"]
    cls = SourceChain if brick_type(head, options.get("nf")).role == "source" else Chain
    return cls(options, brick_id)
