"""StreamChannel arbitration (P4Runtime primary/backup election), as pure logic.

Per role (the default role is ""), the connected stream with the highest
election id is the primary. Events return the arbitration updates to send, as
(stream, ``MasterArbitrationUpdate``) pairs; the server only delivers them:

- a stream that arbitrates gets an answer at once: ``OK`` when it is the
  primary, ``ALREADY_EXISTS`` (with the primary's election id) otherwise;
- when the primary changes (a higher id arrives, or the primary leaves), every
  stream of that role is re-notified;
- an election id already held by another stream of the role is
  INVALID_ARGUMENT, a wrong device id NOT_FOUND (the stream is then closed);
- a stream that sends no election id is a backup that never becomes primary.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from google.rpc import code_pb2
from p4.v1 import p4runtime_pb2

from lego.switch.entities import P4RuntimeError


@dataclass
class _Member:
    role: str
    election_id: int | None  # None: no election id (never primary)


def election_id(msg: p4runtime_pb2.Uint128) -> int:
    return (msg.high << 64) | msg.low


class Arbitration:
    """Who is primary, per role. Thread-safe."""

    def __init__(self, device_id: int):
        self.device_id = device_id
        self._members: dict[object, _Member] = {}
        self._lock = threading.Lock()

    def primary(self, role: str = "") -> tuple[object, int] | None:
        """(stream, election id) of the role's primary, or None."""
        best = None
        for stream, m in self._members.items():
            if m.role == role and m.election_id is not None and \
                    (best is None or m.election_id > best[1]):
                best = (stream, m.election_id)
        return best

    def is_primary(self, eid: int, role: str = "") -> bool:
        with self._lock:
            p = self.primary(role)
            return p is not None and p[1] == eid

    def _update(self, stream: object, role: str) -> p4runtime_pb2.MasterArbitrationUpdate:
        upd = p4runtime_pb2.MasterArbitrationUpdate(device_id=self.device_id)
        if role:
            upd.role.name = role
        p = self.primary(role)
        if p is None:
            upd.status.code = code_pb2.NOT_FOUND
            upd.status.message = "no primary"
        else:
            upd.election_id.high, upd.election_id.low = p[1] >> 64, p[1] & ((1 << 64) - 1)
            if p[0] is stream:
                upd.status.code = code_pb2.OK
                upd.status.message = "is primary"
            else:
                upd.status.code = code_pb2.ALREADY_EXISTS
                upd.status.message = "is backup: another client is primary"
        return upd

    def _notify_all(self, role: str) -> list[tuple[object, p4runtime_pb2.MasterArbitrationUpdate]]:
        return [(s, self._update(s, role)) for s, m in self._members.items() if m.role == role]

    def arbitrate(self, stream: object, msg: p4runtime_pb2.MasterArbitrationUpdate
                  ) -> list[tuple[object, p4runtime_pb2.MasterArbitrationUpdate]]:
        if msg.device_id != self.device_id:
            raise P4RuntimeError(code_pb2.NOT_FOUND,
                                 f"device id {msg.device_id} is not this switch's "
                                 f"({self.device_id})")
        role = msg.role.name if msg.HasField("role") else ""
        eid = election_id(msg.election_id) if msg.HasField("election_id") else None
        with self._lock:
            for s, m in self._members.items():
                if s is not stream and m.role == role and eid is not None and m.election_id == eid:
                    raise P4RuntimeError(code_pb2.INVALID_ARGUMENT,
                                         f"election id {eid} is used by another client")
            before = self.primary(role)
            old = self._members.get(stream)
            self._members[stream] = _Member(role, eid)
            after = self.primary(role)
            changed = (before is None) != (after is None) or (
                before is not None and after is not None and
                (before[0] is not after[0] or before[1] != after[1]))
            notes = self._notify_all(role) if changed else [(stream, self._update(stream, role))]
            if old is not None and old.role != role:
                notes += self._notify_all(old.role)
            return notes

    def remove(self, stream: object) -> list[tuple[object, p4runtime_pb2.MasterArbitrationUpdate]]:
        with self._lock:
            m = self._members.get(stream)
            if m is None:
                return []
            before = self.primary(m.role)
            del self._members[stream]
            if before is not None and before[0] is stream:
                return self._notify_all(m.role)
            return []
