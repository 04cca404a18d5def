"""P4Runtime entities by P4Info *name*: build them, and decode what a Read returns.

IDs come only from the P4Info of the running pipeline (the one
``GetForwardingPipelineConfig`` reports), never from constants. Values are
encoded at the full width of their field (zero-padded, which every server
accepts) and decoded as unsigned integers, so canonical and padded byte strings
read back the same.

Decoded rows are plain, hashable records (:class:`TableRow`, :class:`CloneSpec`)
that the switch logic compares without any protobuf.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from google.rpc import code_pb2
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2

from lego.control.p4rt_errors import P4RuntimeCallError
from lego.errors import ConfigError
from lego.p4src.p4info import P4InfoIndex, P4Type

INSERT = p4runtime_pb2.Update.INSERT
MODIFY = p4runtime_pb2.Update.MODIFY
DELETE = p4runtime_pb2.Update.DELETE

Pairs = tuple[tuple[str, int], ...]  # sorted (name, value) pairs


def pairs(values: Mapping[str, int] | None) -> Pairs:
    return tuple(sorted((values or {}).items()))


@dataclass(frozen=True)
class TableRow:
    """One table entry by names: ``key`` and ``params`` are sorted (name, value) pairs."""

    table: str
    key: Pairs
    action: str | None
    params: Pairs = ()
    is_default: bool = False


@dataclass(frozen=True)
class CloneSpec:
    """One clone session: its egress ports (in instance order) and truncation (0: none)."""

    session_id: int
    ports: tuple[int, ...]
    truncate: int = 0


def _encode(value: int, bitwidth: int, what: str) -> bytes:
    if value < 0 or value.bit_length() > bitwidth:
        raise ConfigError(f"{what}: expected an unsigned value that fits in {bitwidth} bits, "
                          f"got {value}")
    return value.to_bytes(max(1, (bitwidth + 7) // 8), "big")


class P4Names:
    """Builders and decoders over one P4Info."""

    def __init__(self, p4info: p4info_pb2.P4Info):
        self.p4info = p4info
        self.index = P4InfoIndex(p4info)
        self._fields: dict[tuple[str, str], p4info_pb2.MatchField] = {}
        self._params: dict[tuple[str, str], p4info_pb2.Action.Param] = {}

    def table_id(self, table: str) -> int:
        return self.index.id(P4Type.TABLE, table)

    def counter_id(self, counter: str) -> int:
        return self.index.id(P4Type.COUNTER, counter)

    def counter_size(self, counter: str) -> int:
        return self.index.get(P4Type.COUNTER, counter).size

    # ------------------------------------------------------------------ build
    def table_entry(self, row: TableRow,
                    into: p4runtime_pb2.TableEntry | None = None) -> p4runtime_pb2.TableEntry:
        """The entry for ``row`` (filled into ``into`` when given: no copy)."""
        idx = self.index
        e = into if into is not None else p4runtime_pb2.TableEntry()
        e.table_id = self.table_id(row.table)
        if row.is_default:
            e.is_default_action = True
        for name, value in row.key:
            mf = self._field(row.table, name)
            m = e.match.add()
            m.field_id = mf.id
            m.exact.value = _encode(value, mf.bitwidth, f"{row.table} match field {name}")
        if row.action is not None:
            act = e.action.action
            act.action_id = idx.id(P4Type.ACTION, row.action)
            for name, value in row.params:
                p = self._param(row.action, name)
                ap = act.params.add()
                ap.param_id = p.id
                ap.value = _encode(value, p.bitwidth, f"{row.action} parameter {name}")
        return e

    def _field(self, table: str, name: str):
        key = (table, name)
        mf = self._fields.get(key)
        if mf is None:
            mf = self._fields[key] = self.index.match_field(table, name)
        return mf

    def _param(self, action: str, name: str):
        key = (action, name)
        p = self._params.get(key)
        if p is None:
            p = self._params[key] = self.index.param(action, name)
        return p

    @staticmethod
    def clone_session(spec: CloneSpec, into: p4runtime_pb2.PacketReplicationEngineEntry
                      | None = None) -> p4runtime_pb2.PacketReplicationEngineEntry:
        pre = into if into is not None else p4runtime_pb2.PacketReplicationEngineEntry()
        cs = pre.clone_session_entry
        cs.session_id = spec.session_id
        cs.packet_length_bytes = spec.truncate
        for i, port in enumerate(spec.ports):
            cs.replicas.add(egress_port=port, instance=i + 1)
        return pre

    def update(self, op: int, thing: TableRow | CloneSpec) -> p4runtime_pb2.Update:
        u = p4runtime_pb2.Update(type=op)
        if isinstance(thing, CloneSpec):
            self.clone_session(thing, u.entity.packet_replication_engine_entry)
        elif op == DELETE:
            self.table_entry(TableRow(thing.table, thing.key, None, (), thing.is_default),
                             u.entity.table_entry)
        else:
            self.table_entry(thing, u.entity.table_entry)
        return u

    # ------------------------------------------------------------------ queries
    def table_query(self, table: str | None = None,
                    default: bool = False) -> p4runtime_pb2.Entity:
        """All entries of ``table`` (all tables when None), or its default entry."""
        te = p4runtime_pb2.TableEntry(table_id=self.table_id(table) if table else 0,
                                      is_default_action=default)
        return p4runtime_pb2.Entity(table_entry=te)

    def counter_query(self, counter: str, index: int | None = None) -> p4runtime_pb2.Entity:
        ce = p4runtime_pb2.CounterEntry(counter_id=self.counter_id(counter))
        if index is not None:
            ce.index.index = index
        return p4runtime_pb2.Entity(counter_entry=ce)

    @staticmethod
    def clone_session_query(session_id: int = 0) -> p4runtime_pb2.Entity:
        ent = p4runtime_pb2.Entity()
        ent.packet_replication_engine_entry.clone_session_entry.session_id = session_id
        return ent

    # ------------------------------------------------------------------ decode
    def decode_table_entry(self, e: p4runtime_pb2.TableEntry) -> TableRow:
        t = self.index.by_id(P4Type.TABLE, e.table_id)
        if t is None:
            raise P4RuntimeCallError("-", f"Read returned unknown table id {e.table_id}",
                                     code_pb2.INTERNAL)
        fields = {mf.id: mf.name for mf in t.match_fields}
        key = tuple(sorted((fields.get(m.field_id, str(m.field_id)),
                            int.from_bytes(m.exact.value, "big")) for m in e.match))
        action = None
        params: Pairs = ()
        if e.HasField("action") and e.action.WhichOneof("type") == "action":
            act = e.action.action
            a = self.index.by_id(P4Type.ACTION, act.action_id)
            action = a.preamble.name if a is not None else str(act.action_id)
            names = {p.id: p.name for p in (a.params if a is not None else ())}
            params = tuple(sorted((names.get(p.param_id, str(p.param_id)),
                                   int.from_bytes(p.value, "big")) for p in act.params))
        return TableRow(t.preamble.name, key, action, params, e.is_default_action)

    @staticmethod
    def decode_clone_session(cs: p4runtime_pb2.CloneSessionEntry) -> CloneSpec:
        reps = sorted(cs.replicas, key=lambda r: r.instance)
        ports = tuple(int.from_bytes(r.port, "big") if r.port else r.egress_port for r in reps)
        return CloneSpec(cs.session_id, ports, cs.packet_length_bytes)

    def describe(self, u: p4runtime_pb2.Update) -> str:
        """A short description of an update, for error messages."""
        op = p4runtime_pb2.Update.Type.Name(u.type)
        kind = u.entity.WhichOneof("entity")
        try:
            if kind == "table_entry":
                row = self.decode_table_entry(u.entity.table_entry)
                key = " ".join(f"{k}={v}" for k, v in row.key)
                what = f"{row.table} default" if row.is_default else f"{row.table} {key}"
                if row.action and u.type != DELETE:
                    args = ",".join(f"{k}={v}" for k, v in row.params)
                    what += f" -> {row.action}({args})"
                return f"{op} {what}"
            if kind == "packet_replication_engine_entry":
                spec = self.decode_clone_session(
                    u.entity.packet_replication_engine_entry.clone_session_entry)
                return f"{op} clone session {spec.session_id} -> ports {list(spec.ports)}"
        except P4RuntimeCallError:
            pass
        return f"{op} {kind}"


def rows_by_key(rows: Sequence[TableRow]) -> dict[tuple[str, Pairs], TableRow]:
    return {(r.table, r.key): r for r in rows}
