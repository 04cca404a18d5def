"""A small P4Runtime client on the ``p4.v1`` stubs, for the switch benchmark and the tests.

Not the controller's client (``lego.control`` has its own): just enough to open
a StreamChannel, arbitrate, and build entries by P4Info *name* (IDs resolved
from the pipeline the server reports). Write errors come back as
:class:`WriteFailed` with (index, code, message) per failed update.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable

import grpc
from google.rpc import code_pb2, status_pb2
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2, p4runtime_pb2_grpc

from lego.errors import LegoError
from lego.p4src.p4info import P4InfoIndex, P4Type


class WriteFailed(LegoError):
    """A Write with per-update errors: ``errors`` is [(index, canonical code, message)]."""

    def __init__(self, errors: list[tuple[int, int, str]]):
        self.errors = errors
        super().__init__("; ".join(f"update {i}: {code_pb2.Code.Name(c)} {m}"
                                   for i, c, m in errors))


def _bytes(value: int, bitwidth: int) -> bytes:
    return value.to_bytes((bitwidth + 7) // 8, "big")


class SmallClient:
    def __init__(self, addr: str, device_id: int = 0, election: tuple[int, int] = (0, 1),
                 role: str = "", timeout: float = 5.0):
        self.addr = addr
        self.device_id = device_id
        self.election = election
        self.role = role
        self.timeout = timeout
        self.channel = grpc.insecure_channel(addr)
        self.stub = p4runtime_pb2_grpc.P4RuntimeStub(self.channel)
        self._out: queue.Queue = queue.Queue()
        self.arbitrations: queue.Queue = queue.Queue()
        self.stream = None
        self._thread: threading.Thread | None = None
        self.index: P4InfoIndex | None = None

    # ------------------------------------------------------------------ stream
    def open_stream(self, election: tuple[int, int] | None = None,
                    device_id: int | None = None) -> p4runtime_pb2.MasterArbitrationUpdate:
        """Open the StreamChannel, arbitrate, and return the first answer."""
        def requests():
            while True:
                m = self._out.get()
                if m is None:
                    return
                yield m

        self.stream = self.stub.StreamChannel(requests())

        def recv():
            try:
                for resp in self.stream:
                    if resp.HasField("arbitration"):
                        self.arbitrations.put(resp.arbitration)
            except grpc.RpcError as exc:
                self.arbitrations.put(exc)

        self._thread = threading.Thread(target=recv, daemon=True)
        self._thread.start()
        self.arbitrate(election, device_id)
        return self.next_arbitration()

    def arbitrate(self, election: tuple[int, int] | None = None,
                  device_id: int | None = None) -> None:
        if election is not None:
            self.election = election
        req = p4runtime_pb2.StreamMessageRequest()
        req.arbitration.device_id = self.device_id if device_id is None else device_id
        req.arbitration.election_id.high, req.arbitration.election_id.low = self.election
        if self.role:
            req.arbitration.role.name = self.role
        self._out.put(req)

    def next_arbitration(self, timeout: float | None = None):
        """The next arbitration update (or the stream's RpcError); queue.Empty on timeout."""
        return self.arbitrations.get(timeout=self.timeout if timeout is None else timeout)

    def close(self) -> None:
        self._out.put(None)
        if self.stream is not None:
            self.stream.cancel()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout)
        self.channel.close()

    def __enter__(self) -> SmallClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ pipeline
    def set_pipeline(self, p4info: p4info_pb2.P4Info, action: int = p4runtime_pb2.
                     SetForwardingPipelineConfigRequest.VERIFY_AND_COMMIT,
                     device_config: bytes = b"") -> None:
        """Push the P4Info (and, for BMv2, the compiled JSON as the device config)."""
        req = p4runtime_pb2.SetForwardingPipelineConfigRequest(device_id=self.device_id,
                                                               action=action)
        req.election_id.high, req.election_id.low = self.election
        req.config.p4info.CopyFrom(p4info)
        req.config.p4_device_config = device_config
        self.stub.SetForwardingPipelineConfig(req, timeout=self.timeout)
        self.index = P4InfoIndex(p4info)

    def get_p4info(self) -> p4info_pb2.P4Info:
        req = p4runtime_pb2.GetForwardingPipelineConfigRequest(
            device_id=self.device_id,
            response_type=p4runtime_pb2.GetForwardingPipelineConfigRequest.P4INFO_AND_COOKIE)
        info = self.stub.GetForwardingPipelineConfig(req, timeout=self.timeout).config.p4info
        self.index = P4InfoIndex(info)
        return info

    # ------------------------------------------------------------------ builders
    def table_entry(self, table: str, match: dict[str, int] | None = None,
                    action: str | None = None, params: dict[str, int] | None = None,
                    default: bool = False) -> p4runtime_pb2.TableEntry:
        idx = self.index
        t = idx.get(P4Type.TABLE, table)
        e = p4runtime_pb2.TableEntry(table_id=t.preamble.id, is_default_action=default)
        for name, value in (match or {}).items():
            mf = idx.match_field(table, name)
            m = e.match.add()
            m.field_id = mf.id
            m.exact.value = _bytes(value, mf.bitwidth)
        if action is not None:
            a = idx.get(P4Type.ACTION, action)
            e.action.action.action_id = a.preamble.id
            for name, value in (params or {}).items():
                p = idx.param(action, name)
                ap = e.action.action.params.add()
                ap.param_id = p.id
                ap.value = _bytes(value, p.bitwidth)
        return e

    def update(self, utype: int, entity_kw: dict) -> p4runtime_pb2.Update:
        return p4runtime_pb2.Update(type=utype, entity=p4runtime_pb2.Entity(**entity_kw))

    def write(self, updates: Iterable[p4runtime_pb2.Update], atomicity: int = 0) -> None:
        req = p4runtime_pb2.WriteRequest(device_id=self.device_id, atomicity=atomicity)
        req.election_id.high, req.election_id.low = self.election
        if self.role:
            req.role = self.role
        req.updates.extend(updates)
        try:
            self.stub.Write(req, timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNKNOWN:
                raise
            raise WriteFailed(per_update_errors(exc)) from None

    def insert(self, entry: p4runtime_pb2.TableEntry) -> None:
        self.write([self.update(p4runtime_pb2.Update.INSERT, {"table_entry": entry})])

    def modify(self, entry: p4runtime_pb2.TableEntry) -> None:
        self.write([self.update(p4runtime_pb2.Update.MODIFY, {"table_entry": entry})])

    def delete(self, entry: p4runtime_pb2.TableEntry) -> None:
        self.write([self.update(p4runtime_pb2.Update.DELETE, {"table_entry": entry})])

    def clone_session(self, session_id: int, ports: list[int], truncate: int = 0,
                      utype: int = p4runtime_pb2.Update.INSERT) -> None:
        pre = p4runtime_pb2.PacketReplicationEngineEntry()
        cs = pre.clone_session_entry
        cs.session_id = session_id
        cs.packet_length_bytes = truncate
        for i, p in enumerate(ports):
            cs.replicas.add(egress_port=p, instance=i + 1)
        self.write([self.update(utype, {"packet_replication_engine_entry": pre})])

    def read(self, entity: p4runtime_pb2.Entity) -> list[p4runtime_pb2.Entity]:
        req = p4runtime_pb2.ReadRequest(device_id=self.device_id)
        req.entities.append(entity)
        out = []
        for resp in self.stub.Read(req, timeout=self.timeout):
            out.extend(resp.entities)
        return out

    def read_counter(self, counter: str, index: int | None = None) -> list[tuple[int, int, int]]:
        """[(index, packets, bytes)] of a counter (one index, or all)."""
        ce = p4runtime_pb2.CounterEntry(counter_id=self.index.id(P4Type.COUNTER, counter))
        if index is not None:
            ce.index.index = index
        return [(e.counter_entry.index.index, e.counter_entry.data.packet_count,
                 e.counter_entry.data.byte_count)
                for e in self.read(p4runtime_pb2.Entity(counter_entry=ce))]


def per_update_errors(exc: grpc.RpcError) -> list[tuple[int, int, str]]:
    """(index, code, message) of each failed update in a Write's UNKNOWN status."""
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            out = []
            for i, any_msg in enumerate(status.details):
                err = p4runtime_pb2.Error()
                any_msg.Unpack(err)
                if err.canonical_code != code_pb2.OK:
                    out.append((i, err.canonical_code, err.message))
            return out
    raise LegoError(f"Write failed without per-update details: {exc.details()}")
