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
reports every member's CPU time in its load report (``extra.members_cpu_s``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

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
        """A control message for a logic (e.g. a state move): the first member that
        takes control messages answers; what it emits goes through the rest."""
        for i, member in enumerate(self.members):
            if hasattr(member, "control"):
                reply, outs = member.control(cmd, packets_in)
                return reply, self._through(i + 1, outs)
        return {"ok": False, "error": "no member takes control messages"}, []

    def report(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for member in self.members:
            if hasattr(member, "report"):
                extra.update(member.report())
        extra["members_cpu_s"] = {n: round(c, 6) for n, c in self.cpu_s.items()}
        return extra


class SourceChain(Chain):
    """A chain whose first member is a source: it produces, the rest handle."""

    def produce(self) -> Iterator[Message | None]:
        head = self.members[0]
        name = self.names[0]
        it = iter(head.produce())
        while True:
            t = time.thread_time()
            msg = next(it, StopIteration)
            self.cpu_s[name] += time.thread_time() - t
            if msg is StopIteration:
                return
            if msg is None:
                yield None
                continue
            outs = self._through(1, [msg])
            if not outs:
                yield None  # lets the runtime serve control
            yield from outs

    def end_meta(self) -> dict[str, Any]:
        return getattr(self.members[0], "end_meta", dict)()


def make_chain(options: dict[str, Any], brick_id: Any) -> Chain:
    """The chain logic for a group (a source chain when its head produces)."""
    from lego.bricks.catalog import brick_type

    head = options["members"][0]["type"]
    cls = SourceChain if brick_type(head, options.get("nf")).role == "source" else Chain
    return cls(options, brick_id)
