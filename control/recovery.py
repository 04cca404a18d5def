"""Exact recovery, the controller's side (the bricks' side: :mod:`lego.bricks.recovery`).

- **Checkpoints** (:meth:`Recovery.checkpoint_loop`, a thread of its own: a large
  state under a small quota takes a while, and the command thread must not
  wait): each live graph's keyed brick, when its turn is due, exports its whole
  state and its position; the blob is kept here, off the NF hosts, and the
  source's log is trimmed to it. A port's next one is due after
  ``max([recovery].checkpoint_s, its last one's duration / CHECKPOINT_SHARE)``.
  A brick in a move answers busy; one taken across a move (a per-port move
  generation, bumped by :mod:`lego.control.live_moves`) is thrown away, and the
  port is due again once the move ends.
- **A dead keyed brick** (command ``recover``, after its restart and the
  re-route): its checkpoint restored, its source's log replayed from the
  checkpoint's position. Without a checkpoint, or with a log that does not reach
  back to it, the brick goes on from what comes and the run reports
  ``state_lost``.
- **A dead worker after it** (command ``resend``): the keyed brick sends its
  outputs again from the batch the decision waits for.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from lego.control.registry import Command, brick_name
from lego.errors import LegoError

if TYPE_CHECKING:  # the runtime owns this; imported for the annotation only
    from lego.control.runtime import ControllerRuntime

log = logging.getLogger(__name__)

#: checkpoints take at most this share of the time
CHECKPOINT_SHARE = 0.1


class Recovery:
    """Checkpoints kept off the NF hosts, and what rebuilds a dead brick's part."""

    def __init__(self, rt: ControllerRuntime) -> None:
        self.rt = rt
        self.checkpoints: dict[int, dict[str, Any]] = {}  # port -> its newest
        self.due: dict[int, float] = {}  # port -> when its next one is due
        #: port -> state moves that engaged it: a checkpoint taken across one is stale
        self.move_generation: dict[int, int] = {}
        self.stats = {"taken": 0, "busy": 0, "failed": 0, "stale": 0, "ms_sum": 0.0,
                      "ms_max": 0.0, "bytes_max": 0, "entries_max": 0}

    # ------------------------------------------------------------ state moves

    def moving(self, port: int) -> None:
        """A move engages ``port``'s keyed brick: its checkpoint is stale from now."""
        self.move_generation[port] = self.move_generation.get(port, 0) + 1
        self.checkpoints.pop(port, None)

    def moved(self, port: int) -> None:
        """The move ended: a new checkpoint of ``port`` is due at once."""
        self.due[port] = 0.0

    # ------------------------------------------------------------ checkpoints

    def checkpoint_loop(self) -> None:
        rt = self.rt
        every = rt.cfg.recovery["checkpoint_s"]
        chain = rt.core.chain
        while not rt._stop.wait(0.1):
            if rt.frozen:
                return
            with rt.lock:
                ports = [g.port for g in rt.core.live_graphs()]
            for port in ports:
                if time.monotonic() < self.due.get(port, 0.0):
                    continue
                ms = self.checkpoint(port, brick_name(chain.keyed, port),
                                     brick_name(chain.source, port))
                self.due[port] = time.monotonic() + max(every, (ms or 0.0) / 1e3 /
                                                        CHECKPOINT_SHARE)

    def checkpoint(self, port: int, brick: str, source: str) -> float | None:
        """The keyed brick's whole state and its position, kept here; the source's log
        trimmed to it (best effort: a source restarting keeps its log a while
        longer). Returns how long it took (ms; None: none taken)."""
        st = self.stats
        generation = self.move_generation.get(port, 0)
        t0 = time.monotonic()
        try:
            info, blob = self.rt.engine.export_state(brick, {"op": "checkpoint"})
        except LegoError as exc:
            st["failed"] += 1
            log.debug("checkpoint of %s: %s", brick, exc)
            return None
        if not info.get("ok"):
            st["busy" if info.get("busy") else "failed"] += 1
            return None
        ms = 1e3 * (time.monotonic() - t0)
        if self.move_generation.get(port, 0) != generation:
            st["stale"] += 1
            return ms
        self.checkpoints[port] = {"brick": brick, "blob": blob, "t": t0, "ms": ms,
                                  **{k: info.get(k) for k in ("position", "epoch", "entries",
                                                              "extra")}}
        st["taken"] += 1
        st["ms_sum"] += ms
        st["ms_max"] = max(st["ms_max"], ms)
        st["bytes_max"] = max(st["bytes_max"], len(blob))
        st["entries_max"] = max(st["entries_max"], int(info["entries"]))
        try:
            self.rt.engine.send(source, {"op": "trim", "upto": int(info["position"])})
        except LegoError as exc:
            log.debug("trim of %s's log: %s", source, exc)
        return ms

    # ------------------------------------------------------------ a dead brick

    def recover(self, c: Command) -> None:
        """A restarted keyed brick rebuilt: its port's checkpoint restored, then its
        source's log replayed from the checkpoint's position."""
        engine = self.rt.engine
        brick, source = c.args["brick"], c.args["source"]
        cp = self.checkpoints.get(c.port)
        if cp is None:
            engine.restore_state(brick, None, {})
            self._event("state_lost", port=c.port, brick=brick,
                        reason="keyed brick died before its first checkpoint")
            return
        reply = engine.restore_state(brick, cp["blob"], {
            "position": cp["position"], "epoch": cp["epoch"], "extra": cp["extra"]})
        if not reply.get("ok"):
            raise LegoError(f"restore of {brick}: {reply}")
        replay = engine.request(source, {"op": "replay", "from": cp["position"]})
        lost = _not_covered(replay, cp)
        if lost:  # the brick would wait for frames no log holds: it goes on from here
            engine.request(brick, {"op": "resync"})
            self._event("state_lost", port=c.port, brick=brick, reason=lost)
            return
        now = time.monotonic()
        with self.rt.lock:
            counters = self.rt.core.counters
            counters["states_recovered"] = counters.get("states_recovered", 0) + 1
        self._event("state_recovered", port=c.port, brick=brick, entries=cp["entries"],
                    position=cp["position"], checkpoint_age_s=round(now - cp["t"], 2),
                    batches=replay.get("batches", 0), frames=replay.get("rows", 0),
                    seconds=round(now - c.args["died"], 2))

    def resend(self, c: Command) -> None:
        """A worker after the keyed brick died: the batches in flight to it (from the
        decision's next batch on) go again from the keyed brick's output log."""
        engine = self.rt.engine
        progress = engine.request(c.args["sink"], {"op": "progress"})
        if not progress.get("ok"):
            raise LegoError(f"progress of {c.args['sink']}: {progress}")
        reply = engine.request(c.args["keyed"], {"op": "resend",
                                                 "from_batch": progress["next_batch"]})
        if not reply.get("ok"):
            raise LegoError(f"resend from {c.args['keyed']}: {reply}")
        self._event("batches_resent", port=c.port, brick=c.args["brick"],
                    sender=c.args["keyed"], batches=reply["batches"],
                    from_batch=progress["next_batch"],
                    seconds=round(time.monotonic() - c.args["died"], 2))

    def _event(self, kind: str, **fields: Any) -> None:
        with self.rt.lock:
            self.rt.core.event(time.monotonic(), kind, **fields)


def _not_covered(replay: dict, cp: dict) -> str | None:
    """Why the source's replay cannot rebuild the stream from the checkpoint (None:
    it can)."""
    if not replay.get("ok"):
        return f"the source keeps no log ({replay.get('error')})"
    if replay.get("epoch") != cp["epoch"]:
        return "the source restarted since the checkpoint"
    first = replay["first"] if replay.get("first") is not None else replay["sent"]
    if first > cp["position"]:  # (an empty log: nothing sent since, or all of it gone)
        return (f"the source's log does not reach back to the checkpoint (it starts at "
                f"frame {replay.get('first')}, the checkpoint at {cp['position']})")
    return None
