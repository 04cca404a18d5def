"""The controller's P4Runtime client: one device, on the ``p4.v1`` protos.

Unlike p4runtime-shell's client (one global per process) a
:class:`P4RuntimeClient` is an ordinary object, so the controller may drive
several switches. It:

- opens the StreamChannel and arbitrates (``connect``); the arbitration reply
  says whether it is the primary; a receive thread follows later updates, so a
  client learns when a higher election id takes over (``primary_lost``) and when
  the stream breaks (``connected`` turns false);
- pushes and reads the forwarding pipeline (``set_pipeline`` with
  VERIFY_AND_COMMIT, the P4Info and the device config bytes: ``lego.json`` where
  it exists, else empty; ``get_pipeline``); every name resolves to an ID through
  the P4Info of the *running* pipeline (``names``, :mod:`.p4rt_entities`);
- writes batches of updates (INSERT / MODIFY / DELETE, default-action MODIFY,
  clone sessions) and reads table entries, counters and clone sessions;
- reconnects with bounded exponential backoff (``reconnect``).

Every failure is a :class:`~lego.control.p4rt_errors.SwitchError`; a Write whose
updates fail raises :class:`~lego.control.p4rt_errors.WriteError` listing each
failed update by its index in the caller's list, its code and message.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from google.rpc import code_pb2
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2, p4runtime_pb2_grpc

from lego.control.p4rt_entities import CloneSpec, P4Names, TableRow
from lego.control.p4rt_errors import (
    NotPrimary,
    P4RuntimeCallError,
    PipelineMissing,
    SwitchError,
    SwitchUnavailable,
    WriteError,
    translate,
    write_failures,
)
from lego.p4src.p4info import P4SRC_DIR

log = logging.getLogger(__name__)

DEVICE_CONFIG_PATH = P4SRC_DIR / "lego.json"
MAX_MESSAGE = 64 << 20
_CHANNEL_OPTIONS = [
    # a fresh channel per connection attempt must not inherit another's backoff
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    # a Write's per-update errors come back in the trailing metadata: 1,024 failed
    # updates are ~86 KB, past gRPC's 16 KB default, which drops the call and the stream
    ("grpc.max_metadata_size", MAX_MESSAGE),
    ("grpc.absolute_max_metadata_size", MAX_MESSAGE),
]
_Action = p4runtime_pb2.SetForwardingPipelineConfigRequest
_STREAM_CLOSED = object()
_UPDATES_TAG = bytes([(4 << 3) | 2])  # WriteRequest.updates: field 4, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def default_device_config(path: Path = DEVICE_CONFIG_PATH) -> bytes:
    """The BMv2 JSON (``p4src/lego.json``) where ``make p4`` built it, else empty
    (the software target runs lego.p4's model and needs none)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return b""


def pipeline_cookie(p4info: p4info_pb2.P4Info, device_config: bytes) -> int:
    """A 64-bit cookie naming a pipeline, so a restarted controller recognises its own."""
    h = hashlib.sha256(p4info.SerializeToString(deterministic=True))
    h.update(device_config)
    return int.from_bytes(h.digest()[:8], "big")


def _uint128(value: int) -> p4runtime_pb2.Uint128:
    return p4runtime_pb2.Uint128(high=value >> 64, low=value & ((1 << 64) - 1))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between connection attempts: ``initial`` x ``factor``^n,
    each at most ``max_delay``, until ``budget`` seconds have been waited in all."""

    initial: float = 0.05
    factor: float = 2.0
    max_delay: float = 1.0
    budget: float = 10.0

    def delays(self) -> Iterator[float]:
        waited, d = 0.0, self.initial
        while waited < self.budget:
            step = min(d, self.max_delay, self.budget - waited)
            yield step
            waited += step
            d *= self.factor


@dataclass
class ClientStats:
    write_rpcs: int = 0
    updates: int = 0
    read_rpcs: int = 0
    connects: int = 0


class P4RuntimeClient:
    """P4Runtime to one device, as primary for ``role`` with ``election_id``."""

    def __init__(self, address: str, device_id: int = 0, election_id: int = 1, role: str = "",
                 timeout: float = 5.0, backoff: Backoff | None = None,
                 on_primary_change: Callable[[bool], None] | None = None):
        if election_id < 0 or election_id >= 1 << 128:
            raise P4RuntimeCallError(address, f"election id must be in 0..2^128-1, got "
                                              f"{election_id}", code_pb2.INVALID_ARGUMENT)
        self.address = address
        self.device_id = device_id
        self.election_id = election_id
        self.role = role
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.on_primary_change = on_primary_change
        self.stats = ClientStats()
        self.primary_lost = threading.Event()
        self.primary_election_id: int | None = None
        self._primary = False
        self._connected = False
        self._closing = False
        self._channel: grpc.Channel | None = None
        self._stub: p4runtime_pb2_grpc.P4RuntimeStub | None = None
        self._write_raw: Callable | None = None
        self._requests: queue.Queue | None = None
        self._stream = None
        self._thread: threading.Thread | None = None
        self._first: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._names: P4Names | None = None
        self._stop = threading.Event()

    @property
    def switch(self) -> str:
        return f"{self.address} (device {self.device_id})"

    @property
    def is_primary(self) -> bool:
        return self._primary and self._connected

    @property
    def connected(self) -> bool:
        return self._connected

    # ------------------------------------------------------------------ stream
    def connect(self, require_primary: bool = True) -> bool:
        """Open a channel and the StreamChannel, arbitrate, and wait for the reply.

        Returns whether this client is the primary; raises :class:`NotPrimary`
        when it is not and ``require_primary``, :class:`SwitchUnavailable` when
        the switch does not answer within ``timeout``.
        """
        self._teardown()
        self._closing = False
        self._stop.clear()
        self.primary_lost.clear()
        self._first = queue.Queue()
        self._channel = grpc.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
        self._stub = p4runtime_pb2_grpc.P4RuntimeStub(self._channel)
        self._write_raw = self._channel.unary_unary(
            "/p4.v1.P4Runtime/Write", request_serializer=None,
            response_deserializer=p4runtime_pb2.WriteResponse.FromString)
        self._requests = queue.Queue()
        requests = self._requests

        def outgoing() -> Iterator[p4runtime_pb2.StreamMessageRequest]:
            while True:
                msg = requests.get()
                if msg is None:
                    return
                yield msg

        self._stream = self._stub.StreamChannel(outgoing())
        self._thread = threading.Thread(target=self._receive, args=(self._stream, self._first),
                                        name=f"p4rt-stream-{self.address}", daemon=True)
        self._thread.start()
        req = p4runtime_pb2.StreamMessageRequest()
        arb = req.arbitration
        arb.device_id = self.device_id
        arb.election_id.CopyFrom(_uint128(self.election_id))
        if self.role:
            arb.role.name = self.role
        requests.put(req)
        self.stats.connects += 1
        try:
            first = self._first.get(timeout=self.timeout)
        except queue.Empty:
            self._teardown()
            raise SwitchUnavailable(self.switch, f"no arbitration reply within {self.timeout}s",
                                    code_pb2.DEADLINE_EXCEEDED) from None
        if first is _STREAM_CLOSED:
            self._teardown()
            raise SwitchUnavailable(self.switch, "StreamChannel closed without an arbitration "
                                                 "reply", code_pb2.UNAVAILABLE)
        if isinstance(first, grpc.RpcError):
            self._teardown()
            raise translate(first, self.switch, "StreamChannel")
        self._connected = True
        log.info("P4Runtime %s: connected, %s (election id %d)", self.switch,
                 "primary" if self._primary else "backup", self.election_id)
        if require_primary and not self._primary:
            eid = self.primary_election_id
            self.close()
            raise NotPrimary(self.switch, f"election id {self.election_id} is not the primary's "
                                          f"({eid})", eid, code_pb2.ALREADY_EXISTS)
        return self._primary

    def _receive(self, stream, first: queue.Queue) -> None:
        answered = False
        try:
            for resp in stream:
                if not resp.HasField("arbitration"):
                    log.debug("P4Runtime %s: ignoring stream message %s", self.switch,
                              resp.WhichOneof("update"))
                    continue
                self._on_arbitration(resp.arbitration)
                if not answered:
                    answered = True
                    first.put(resp.arbitration)
        except grpc.RpcError as exc:
            if not answered:
                answered = True
                first.put(exc)
                return
            if not self._closing:
                log.warning("P4Runtime %s: stream lost: %s", self.switch,
                            translate(exc, self.switch, "StreamChannel"))
        finally:
            was_primary = self._primary
            self._connected = False
            self._primary = False
            if not answered:
                first.put(_STREAM_CLOSED)
            elif was_primary and not self._closing and self.on_primary_change:
                self.on_primary_change(False)

    def _on_arbitration(self, upd: p4runtime_pb2.MasterArbitrationUpdate) -> None:
        eid = (upd.election_id.high << 64) | upd.election_id.low
        self.primary_election_id = eid if upd.HasField("election_id") else None
        now_primary = upd.status.code == code_pb2.OK
        was = self._primary
        self._primary = now_primary
        if was and not now_primary:
            log.warning("P4Runtime %s: lost primaryship to election id %s", self.switch,
                        self.primary_election_id)
            self.primary_lost.set()
        if was != now_primary and self.on_primary_change:
            self.on_primary_change(now_primary)

    def _teardown(self) -> None:
        self._closing = True
        if self._requests is not None:
            self._requests.put(None)
        if self._stream is not None:
            self._stream.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.timeout)
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = self._stream = self._thread = self._requests = None
        self._write_raw = None
        self._connected = self._primary = False

    def close(self) -> None:
        """Close the stream and the channel (another client may then become primary)."""
        self._stop.set()
        self._teardown()

    def __enter__(self) -> P4RuntimeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def reconnect(self, require_primary: bool = True,
                  on_attempt: Callable[[int, SwitchError], None] | None = None) -> int:
        """Connect again, retrying with :attr:`backoff`; returns the number of attempts.

        Only an unreachable switch is retried; :class:`NotPrimary` and other errors
        are raised at once, and :class:`SwitchUnavailable` once the budget is spent.
        ``close()`` from another thread cuts the wait short.
        """
        attempts = 0
        t0 = time.monotonic()
        self._stop.clear()
        delays = self.backoff.delays()
        while True:
            attempts += 1
            try:
                self.connect(require_primary)
                self._names = None
                if attempts > 1:
                    log.info("P4Runtime %s: reconnected after %d attempts (%.2fs)",
                             self.switch, attempts, time.monotonic() - t0)
                return attempts
            except SwitchUnavailable as exc:
                if on_attempt is not None:
                    on_attempt(attempts, exc)
                delay = next(delays, None)
                if delay is None or self._stop.is_set():
                    raise SwitchUnavailable(
                        self.switch, f"not reachable after {attempts} attempts over "
                        f"{time.monotonic() - t0:.2f}s (backoff budget {self.backoff.budget}s): "
                        f"{exc}", exc.code) from exc
                log.debug("P4Runtime %s: attempt %d failed, next in %.3fs", self.switch,
                          attempts, delay)
                if self._stop.wait(delay):
                    raise SwitchUnavailable(self.switch, "reconnect cancelled by close()") \
                        from exc

    # ------------------------------------------------------------------ calls
    def _require_stub(self) -> p4runtime_pb2_grpc.P4RuntimeStub:
        stub = self._stub
        if stub is None:
            raise SwitchUnavailable(self.switch, "not connected (call connect())")
        return stub

    def _call(self, rpc: str, fn: Callable, request):
        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise translate(exc, self.switch, rpc) from None

    def set_pipeline(self, p4info: p4info_pb2.P4Info, device_config: bytes | None = None,
                     action: int = _Action.VERIFY_AND_COMMIT) -> int:
        """Push the pipeline; returns its cookie. The running P4Info becomes ``p4info``."""
        config = default_device_config() if device_config is None else device_config
        req = p4runtime_pb2.SetForwardingPipelineConfigRequest(device_id=self.device_id,
                                                               action=action, role=self.role)
        req.election_id.CopyFrom(_uint128(self.election_id))
        req.config.p4info.CopyFrom(p4info)
        req.config.p4_device_config = config
        cookie = pipeline_cookie(p4info, config)
        req.config.cookie.cookie = cookie
        self._call("SetForwardingPipelineConfig", self._require_stub().SetForwardingPipelineConfig,
                   req)
        self._names = P4Names(p4info)
        log.info("P4Runtime %s: pipeline pushed (%s, cookie %016x, device config %d bytes)",
                 self.switch, _Action.Action.Name(action), cookie, len(config))
        return cookie

    def get_pipeline(self) -> p4runtime_pb2.ForwardingPipelineConfig:
        """The running P4Info and cookie; :class:`PipelineMissing` when there is none."""
        R = p4runtime_pb2.GetForwardingPipelineConfigRequest
        req = R(device_id=self.device_id, response_type=R.P4INFO_AND_COOKIE)
        cfg = self._call("GetForwardingPipelineConfig",
                         self._require_stub().GetForwardingPipelineConfig, req).config
        if not cfg.HasField("p4info") or not cfg.p4info.tables:
            raise PipelineMissing(self.switch, "GetForwardingPipelineConfig: no P4Info",
                                  code_pb2.FAILED_PRECONDITION)
        self._names = P4Names(cfg.p4info)
        return cfg

    @property
    def names(self) -> P4Names:
        """Name -> ID resolution from the running pipeline (fetched on first use)."""
        if self._names is None:
            self.get_pipeline()
        return self._names

    def write(self, updates: Sequence[p4runtime_pb2.Update], batch_size: int = 0,
              atomicity: int = p4runtime_pb2.WriteRequest.CONTINUE_ON_ERROR) -> int:
        """Write ``updates`` in order, ``batch_size`` per WriteRequest (0: all in one);
        returns the number of RPCs. On failure raises :class:`WriteError` with the
        failed updates' indices in ``updates`` (later batches are not sent)."""
        if not updates:
            return 0
        self._require_stub()
        step = batch_size if batch_size > 0 else len(updates)
        rpcs = 0
        for off in range(0, len(updates), step):
            chunk = updates[off:off + step]
            try:
                self._write_raw(self._encode_write(chunk, atomicity), timeout=self.timeout)
            except grpc.RpcError as exc:
                failures = None
                if exc.code() == grpc.StatusCode.UNKNOWN:
                    failures = write_failures(exc, chunk, off, self.names.describe)
                if failures is None:
                    raise translate(exc, self.switch, "Write") from None
                raise WriteError(self.switch, failures, len(updates)) from None
            finally:
                rpcs += 1
                self.stats.write_rpcs += 1
            self.stats.updates += len(chunk)
        return rpcs

    def _encode_write(self, updates: Sequence[p4runtime_pb2.Update], atomicity: int) -> bytes:
        """A serialized WriteRequest: each update serialized once and framed as field
        ``updates`` (4), instead of copied into a request message first (the
        pure-Python protobuf that p4runtime 1.4.1 pins makes that copy cost as
        much as the serialization)."""
        head = p4runtime_pb2.WriteRequest(device_id=self.device_id, role=self.role,
                                          atomicity=atomicity)
        head.election_id.CopyFrom(_uint128(self.election_id))
        parts = [head.SerializeToString()]
        for u in updates:
            body = u.SerializeToString()
            parts.append(_UPDATES_TAG + _varint(len(body)))
            parts.append(body)
        return b"".join(parts)

    def read(self, entities: Sequence[p4runtime_pb2.Entity]) -> list[p4runtime_pb2.Entity]:
        """All entities matching ``entities`` (one ReadRequest, streamed answer)."""
        req = p4runtime_pb2.ReadRequest(device_id=self.device_id, role=self.role)
        req.entities.extend(entities)
        stub = self._require_stub()
        self.stats.read_rpcs += 1
        try:
            return [e for resp in stub.Read(req, timeout=self.timeout) for e in resp.entities]
        except grpc.RpcError as exc:
            raise translate(exc, self.switch, "Read") from None

    # ------------------------------------------------------------------ typed reads
    def read_tables(self, tables: Sequence[str], defaults: bool = True) -> list[TableRow]:
        """Entries (and default entries) of ``tables``, decoded, in one Read."""
        names = self.names
        q = [names.table_query(t) for t in tables]
        if defaults:
            q += [names.table_query(t, default=True) for t in tables]
        return [names.decode_table_entry(e.table_entry) for e in self.read(q)
                if e.WhichOneof("entity") == "table_entry"]

    def read_clone_sessions(self) -> dict[int, CloneSpec]:
        out = {}
        for e in self.read([P4Names.clone_session_query()]):
            if e.WhichOneof("entity") == "packet_replication_engine_entry":
                spec = P4Names.decode_clone_session(
                    e.packet_replication_engine_entry.clone_session_entry)
                out[spec.session_id] = spec
        return out

    def read_counters(self, counters: Sequence[str],
                      indices: Sequence[int] | Mapping[str, Sequence[int] | None] | None = None
                      ) -> dict[str, np.ndarray]:
        """Per counter, uint64[size, 2] (packets, bytes), in one Read. With
        ``indices`` (for every counter, or per counter name: None reads it whole),
        only those cells are read and the others stay 0: a port counter is 512
        cells, of which a run uses eight, and every cell is one entity to build,
        send and parse."""
        names = self.names
        out = {c: np.zeros((names.counter_size(c), 2), dtype=np.uint64) for c in counters}
        by_id = {names.counter_id(c): c for c in counters}
        per = indices if isinstance(indices, Mapping) else dict.fromkeys(counters, indices)
        q = []
        for c in counters:
            cells = per.get(c)
            q += [names.counter_query(c)] if cells is None else \
                [names.counter_query(c, int(i)) for i in cells]
        for e in self.read(q) if q else ():
            ce = e.counter_entry
            arr = out.get(by_id.get(ce.counter_id, ""))
            if arr is not None and 0 <= ce.index.index < len(arr):
                arr[ce.index.index] = (ce.data.packet_count, ce.data.byte_count)
        return out
