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
- **A lost host** (command ``recover_port``, with the switch's frame log,
  :mod:`lego.switch.framelog`): the lost port's successor (the warm standby)
  pauses its source, imports the newest checkpoint whose outputs the dead
  decision reported written, takes the lost port's buckets at the switch, and
  its source sends first the frames the log holds for the lost port since the
  checkpoint (those the dead host never read included, up to the switch write),
  then its own. The log is trimmed to the oldest checkpoint kept, and not at
  all while a live port has none yet (:func:`frame_log_floor`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from lego.control.registry import Command, brick_name
from lego.errors import LegoError
from lego.switch.framelog import FrameLogClient

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
        addr = rt.cfg.recovery["frame_log"] if rt.cfg.recovers_hosts else ""
        self.frame_log = FrameLogClient(addr) if addr else None

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
                                                     "extra", "last_seq")}})
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
        self._trim_frame_log()
        return ms

    def _trim_frame_log(self) -> None:
        """The switch's frame log, to the oldest frame a live port's checkpoint still
        needs (none while a live port has none yet: see :func:`frame_log_floor`)."""
        if self.frame_log is None:
            return
        with self.rt.lock:
            live = [g.port for g in self.rt.core.live_graphs()]
        with self._lock:
            seq = frame_log_floor(self.checkpoints, live)
        if seq is not None:
            try:
                self.frame_log.trim(seq)
            except LegoError as exc:
                log.warning("frame log trim: %s", exc)

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
        self._recovered()
        self._event("state_recovered", port=c.port, brick=brick, entries=cp["entries"],
                    position=cp["position"], checkpoint_age_s=round(now - cp["t"], 2),
                    batches=replay.get("batches", 0), frames=replay.get("rows", 0),
                    seconds=round(now - c.args["died"], 2))

    def recover_port(self, c: Command) -> None:
        """Lost port ``lost_port``'s buckets to port ``c.port``'s graph, its keyed
        state rebuilt there from its checkpoint and the switch's frame log."""
        lost = int(c.args["lost_port"])
        with self._lock:  # kept until the log is read: they hold its trim back
            kept = list(self.checkpoints.get(lost, []))
        try:
            self._recover_port(c, lost, kept)
        finally:
            self.forget(lost)  # (a checkpoint of it still under way is stale)

    def _recover_port(self, c: Command, lost: int, kept: list[dict[str, Any]]) -> None:
        """The steps in order; on any failure the buckets still move (without their
        state), the successor goes on with its own frames, and the loss is reported."""
        engine, source = self.rt.engine, c.args["source"]
        done: list[str] = []  # the steps taken: what a failure has to undo
        buckets: list[int] = []
        try:
            cp = self._written_checkpoint(kept, c.args.get("written_before"))
            if not self.frame_log.covers(cp["last_seq"]):
                raise _Unrecoverable("the frame log no longer reaches back to its checkpoint")
            paused = _ok(engine.request(source, {"op": "pause_frames"}), "pause", source)
            done.append("paused")
            _ok(engine.restore_state(c.args["keyed"], cp["blob"], {
                "position": paused["position"], "epoch": paused["epoch"],
                "extra": cp["extra"], "adopt": True}), "restore", c.args["keyed"])
            done.append("restored")
            buckets, epoch = self.rt.move_port(lost, c.port, rebuilt=True)
            done.append("moved")
            head, data = self.frame_log.frames(cp["last_seq"], buckets, epoch)
            if not head["covered"]:
                raise _Unrecoverable("the frame log lost frames after its checkpoint")
            _ok(engine.request_with_file(source, {"op": "inject_frames", "lens": head["lens"]},
                                         data), "inject", source)
        except (LegoError, _Unrecoverable) as exc:
            self._port_lost(c, lost, done, buckets, str(exc))
            return
        injected = head["frames"] - head["marks"]  # (a source counts no window mark)
        with self.rt.lock:
            g = self.rt.core.graphs.get(c.port)
            if g is not None:  # its count now has frames of another port
                g.adopted += injected
        # the lost port's frames: up to the checkpoint it took them, then this port did
        self._count_taken(int(cp["position"]))
        now = time.monotonic()
        self._recovered()
        self._event("state_recovered", port=lost, host=c.args["lost_host"], to_port=c.port,
                    entries=cp["entries"], checkpoint_age_s=round(now - cp["t"], 2),
                    frames=injected, marks=head["marks"], from_frame_log=True,
                    buckets=len(buckets), seconds=round(now - c.args["died"], 2))

    @staticmethod
    def _written_checkpoint(kept: list[dict[str, Any]], written: int | None
                            ) -> dict[str, Any]:
        """The newest checkpoint whose outputs the dead decision reported written
        (its outputs still in the dead host's bricks died with it); the oldest kept
        when it never reported."""
        cp = _newest_written([cp for cp in kept if cp.get("last_seq") is not None], written)
        if cp is None:
            raise _Unrecoverable("no checkpoint whose outputs its decision wrote")
        return cp

    def _port_lost(self, c: Command, lost: int, done: list[str], buckets: list[int],
                   why: str) -> None:
        """A lost port not rebuilt: its buckets move all the same, the successor takes
        its own frames from the lowest position on, the loss is counted."""
        engine = self.rt.engine
        if "moved" not in done:
            buckets, _ = self.rt.move_port(lost, c.port, rebuilt=False)
        else:
            with self.rt.lock:
                self.rt.core.counters["state_lost_buckets"] += len(buckets)
        if "restored" in done:  # from the lowest position on, the gap given up
            _tell(c.args["keyed"], lambda b: engine.request(b, {"op": "resync"}))
        if "paused" in done:  # nothing to send first: its own frames again
            _tell(c.args["source"], lambda b: engine.request_with_file(
                b, {"op": "inject_frames", "lens": []}, b""))
        self._count_taken(int(c.args.get("taken", 0)))
        self._event("state_lost", port=lost, host=c.args["lost_host"],
                    reason=f"host lost: {why}", buckets=len(buckets))

    def _recovered(self) -> None:
        with self.rt.lock:
            counters = self.rt.core.counters
            counters["states_recovered"] = counters.get("states_recovered", 0) + 1

    def _count_taken(self, frames: int) -> None:
        with self.rt.lock:
            self.rt.core.counters["retired_taken"] += frames

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
            nxt = None
        return _newest_written(kept, nxt)

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


def frame_log_floor(checkpoints: dict[int, list[dict[str, Any]]], live: list[int]
                    ) -> int | None:
    """The sequence number the frame log may be trimmed to: the oldest kept
    checkpoint's of every port that has some (a lost one's until its recovery ends
    included) or is live. None (no trim) while a live port has none yet: its first
    one (after its start or a move) stands where its keyed brick is then, which may
    lag behind the frames other ports' checkpoints already cover. (A live port
    that never gets a frame holds the trim back: the log's bound drops the oldest.)"""
    seqs = []
    for port in set(live) | {p for p, kept in checkpoints.items() if kept}:
        kept = checkpoints.get(port)
        if not kept or kept[0].get("last_seq") is None:
            return None
        seqs.append(int(kept[0]["last_seq"]))
    return min(seqs) if seqs else None


def _newest_written(kept: list[dict[str, Any]], next_batch: int | None
                    ) -> dict[str, Any] | None:
    """The newest checkpoint whose last batch is before the decision's next one (its
    outputs are written); the oldest kept when the decision's progress is unknown."""
    if next_batch is None:
        return kept[0] if kept else None
    done = [cp for cp in kept if cp["batch"] is not None and cp["batch"] < int(next_batch)]
    return done[-1] if done else None


def _tell(brick: str, call) -> None:
    """A best-effort command to ``brick`` (logged when it fails)."""
    try:
        call(brick)
    except LegoError as exc:
        log.warning("%s after a failed recovery: %s", brick, exc)


class _Unrecoverable(Exception):
    """A lost port's state cannot be rebuilt (why, as a sentence)."""


def _ok(reply: dict, what: str, brick: str) -> dict:
    if not reply.get("ok"):
        raise LegoError(f"{what} of {brick}: {reply.get('error', reply)}")
    return reply


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
