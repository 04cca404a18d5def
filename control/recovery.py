"""Exact recovery, the controller's side (the bricks' side: :mod:`lego.bricks.recovery`).

- **Checkpoints** (:meth:`Recovery.checkpoint_loop`, a thread of its own: a large
  state under a small quota takes a while, and the command thread must not
  wait): each live graph's keyed brick, when its turn is due, exports its whole
  state, its position and the last batch it took; the port's newest
  :data:`KEEP` are kept here, off the NF hosts, and the source's log is trimmed
  to the oldest of them. A port's next one is due after
  ``max([recovery].checkpoint_s, its last one's duration / CHECKPOINT_SHARE)``.
  A brick in a move answers busy; one taken across a move (a per-port move
  generation, bumped by :mod:`lego.control.live_moves`) is thrown away, and the
  port is due again once the move ends.
- **A dead keyed brick** (command ``recover``, after its restart and the
  re-route): the newest checkpoint whose outputs all reached the decision (its
  last batch is before the one the decision waits for: outputs still queued in
  the dead process died with it) is restored, and its source's log replayed
  from the checkpoint's position. Without a checkpoint, or with a log that does not reach
  back to it, the brick goes on from what comes and the run reports
  ``state_lost``.
- **A dead worker after it** (command ``resend``): the keyed brick sends its
  outputs again from the batch the decision waits for.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from lego.control.registry import Command, brick_name
from lego.errors import LegoError

if TYPE_CHECKING:  # the runtime owns this; imported for the annotation only
    from lego.control.runtime import ControllerRuntime

log = logging.getLogger(__name__)

#: checkpoints take at most this share of the time
CHECKPOINT_SHARE = 0.1
#: checkpoints kept per port (a recovery takes the newest the decision has caught up with)
KEEP = 4


class Recovery:
    """Checkpoints kept off the NF hosts, and what rebuilds a dead brick's part."""

    def __init__(self, rt: ControllerRuntime) -> None:
        self.rt = rt
        self.checkpoints: dict[int, list[dict[str, Any]]] = {}  # port -> newest last
        self.due: dict[int, float] = {}  # port -> when its next one is due
        self._lock = threading.Lock()  # a move's generation against a checkpoint's store
        #: port -> state moves that engaged it: a checkpoint taken across one is stale
        self.move_generation: dict[int, int] = {}
        self.stats = {"taken": 0, "busy": 0, "failed": 0, "stale": 0, "ms_sum": 0.0,
                      "ms_max": 0.0, "bytes_max": 0, "entries_max": 0}

    # ------------------------------------------------------------ state moves

    def moving(self, port: int) -> None:
        """A move engages ``port``'s keyed brick: its checkpoints are stale from now."""
        with self._lock:
            self.move_generation[port] = self.move_generation.get(port, 0) + 1
            self.checkpoints.pop(port, None)

    def forget(self, port: int) -> None:
        """A new graph on ``port``: nothing of an earlier one's applies."""
        self.moving(port)
        self.due.pop(port, None)

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
        with self._lock:
            if self.move_generation.get(port, 0) != generation:
                st["stale"] += 1
                return ms
            kept = self.checkpoints.setdefault(port, [])
            kept.append({"brick": brick, "blob": blob, "t": t0, "ms": ms,
                         **{k: info.get(k) for k in ("position", "epoch", "batch", "entries",
                                                     "extra")}})
            del kept[:-KEEP]
            oldest = kept[0]
        st["taken"] += 1
        st["ms_sum"] += ms
        st["ms_max"] = max(st["ms_max"], ms)
        st["bytes_max"] = max(st["bytes_max"], len(blob))
        st["entries_max"] = max(st["entries_max"], int(info["entries"]))
        try:  # to the oldest kept: a recovery may go back to it
            self.rt.engine.send(source, {"op": "trim", "upto": int(oldest["position"]),
                                         "epoch": oldest["epoch"]})
        except LegoError as exc:
            log.debug("trim of %s's log: %s", source, exc)
        return ms

    # ------------------------------------------------------------ a dead brick

    def recover(self, c: Command) -> None:
        """A restarted keyed brick rebuilt: its port's checkpoint restored, then its
        source's log replayed from the checkpoint's position."""
        engine = self.rt.engine
        brick, source = c.args["brick"], c.args["source"]
        cp = self._caught_up(c.port, c.args["sink"])
        if cp is None:
            engine.restore_state(brick, None, {})
            self._event("state_lost", port=c.port, brick=brick,
                        reason="no checkpoint whose outputs all reached the decision")
            return
        reply = engine.restore_state(brick, cp["blob"], {
            "position": cp["position"], "epoch": cp["epoch"], "extra": cp["extra"]})
        if not reply.get("ok"):
            raise LegoError(f"restore of {brick}: {reply}")
        try:
            replay = engine.request(source, {"op": "replay", "from": cp["position"]})
        except LegoError as exc:
            replay = {"ok": False, "error": str(exc)}
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

    def _caught_up(self, port: int, sink: str) -> dict[str, Any] | None:
        """The newest checkpoint of ``port`` whose last batch the decision has written
        (its next batch is later); the oldest kept when the decision cannot say."""
        with self._lock:
            kept = list(self.checkpoints.get(port, []))
        if not kept:
            return None
        try:
            progress = self.rt.engine.request(sink, {"op": "progress"})
            nxt = int(progress["next_batch"])
        except (LegoError, KeyError, TypeError) as exc:
            log.warning("progress of %s: %s; the oldest checkpoint is used", sink, exc)
            return kept[0]
        done = [cp for cp in kept if cp["batch"] is not None and cp["batch"] < nxt]
        return done[-1] if done else None

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
