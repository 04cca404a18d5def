"""A P4Runtime gRPC server (official ``p4.v1`` protos) for the software target.

It serves one device running ``lego.p4``'s model (:mod:`lego.switch.pipeline`):

- ``SetForwardingPipelineConfig`` accepts a P4Info only if it describes
  ``lego.p4`` (same objects, names and widths; IDs may differ, e.g. p4c's), and
  commits it with fresh state; ``GetForwardingPipelineConfig`` returns it;
- ``Write`` / ``Read`` of table entries (default entries included), clone
  sessions and counters (:mod:`lego.switch.entities`);
- ``StreamChannel`` arbitration (:mod:`lego.switch.arbitration`);
- ``Capabilities``.

Request-level errors are the RPC status: FAILED_PRECONDITION before a pipeline
is set, NOT_FOUND for another device id, PERMISSION_DENIED when a Write or
SetForwardingPipelineConfig does not carry the primary's election id. Update-level
errors make ``Write`` fail with UNKNOWN and one ``p4.v1.Error`` per update in the
``grpc-status-details-bin`` trailer (OK for those that succeeded), as the spec
says. ``ROLLBACK_ON_ERROR`` and ``DATAPLANE_ATOMIC`` batches apply all or
nothing (under the pipeline lock, so no frame sees half a batch); then the
updates that did not fail report ABORTED.
"""

from __future__ import annotations

import collections
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
from google.rpc import code_pb2, status_pb2
from p4.config.v1 import p4info_pb2
from p4.v1 import p4runtime_pb2, p4runtime_pb2_grpc

from lego.errors import LegoError
from lego.p4src.p4info import P4_SOURCE, check_ids, compare, parse_p4_source
from lego.switch import pipeline as pl
from lego.switch.arbitration import Arbitration, election_id
from lego.switch.entities import CounterCells, P4RuntimeError, ReadPart, TableStore

log = logging.getLogger(__name__)

API_VERSION = "1.4.1"
READ_CHUNK = 1000
_GRPC_CODES = {sc.value[0]: sc for sc in grpc.StatusCode}


def read_responses(parts: list[ReadPart]) -> Iterator[p4runtime_pb2.ReadResponse]:
    """The read's entities, ``READ_CHUNK`` per response (one empty response for
    none), counter cells built straight into the response."""
    resp, n = p4runtime_pb2.ReadResponse(), 0
    for part in parts:
        if isinstance(part, CounterCells):
            start = 0
            while start < len(part):
                if n == READ_CHUNK:
                    yield resp
                    resp, n = p4runtime_pb2.ReadResponse(), 0
                stop = min(len(part), start + READ_CHUNK - n)
                part.add_to(resp.entities, start, stop)
                n += stop - start
                start = stop
            continue
        if n == READ_CHUNK:
            yield resp
            resp, n = p4runtime_pb2.ReadResponse(), 0
        resp.entities.append(part)
        n += 1
    yield resp


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")),
              grpc.Status):
    pass


def _abort(context: grpc.ServicerContext, code: int, message: str) -> None:
    context.abort(_GRPC_CODES.get(code, grpc.StatusCode.UNKNOWN), message)


def verify_p4info(p4info: p4info_pb2.P4Info) -> list[str]:
    """Why this P4Info is not one of ``lego.p4`` (empty: it is)."""
    return check_ids(p4info) + compare(p4info, _program())


_PROGRAM = None


def _program():
    global _PROGRAM
    if _PROGRAM is None:
        _PROGRAM = parse_p4_source(P4_SOURCE.read_text())
    return _PROGRAM


class _Stream:
    def __init__(self) -> None:
        self.out: queue.Queue = queue.Queue()


class P4RuntimeService(p4runtime_pb2_grpc.P4RuntimeServicer):
    """The RPC handlers; all device state lives in ``pipeline`` and ``store``."""

    def __init__(self, pipeline: pl.Pipeline, device_id: int,
                 p4info: p4info_pb2.P4Info | None):
        self.pipeline = pipeline
        self.device_id = device_id
        self.arbitration = Arbitration(device_id)
        self.config: p4runtime_pb2.ForwardingPipelineConfig | None = None
        self.saved: p4runtime_pb2.ForwardingPipelineConfig | None = None
        self.store: TableStore | None = None
        self._lock = threading.Lock()
        if p4info is not None:
            cfg = p4runtime_pb2.ForwardingPipelineConfig()
            cfg.p4info.CopyFrom(p4info)
            self._commit(cfg, keep_state=False)

    # ------------------------------------------------------------------ helpers
    def _commit(self, cfg: p4runtime_pb2.ForwardingPipelineConfig, keep_state: bool) -> None:
        with self.pipeline.lock:
            if not keep_state or self.store is None:
                self.pipeline.state.__dict__.update(pl.PipelineState().__dict__)
                self.store = TableStore(cfg.p4info, self.pipeline.state)
            else:
                old = self.store
                self.store = TableStore(cfg.p4info, self.pipeline.state)
                self.store.entries, self.store.defaults = old.entries, old.defaults
                self.store.clone_sessions = old.clone_sessions
            self.config = cfg

    def _require(self, context: grpc.ServicerContext, device_id: int) -> TableStore:
        if device_id != self.device_id:
            _abort(context, code_pb2.NOT_FOUND,
                   f"device id {device_id} is not this switch's ({self.device_id})")
        store = self.store
        if store is None:
            _abort(context, code_pb2.FAILED_PRECONDITION, "no forwarding pipeline config is set")
        return store

    def _require_primary(self, context, eid: p4runtime_pb2.Uint128, role: str) -> None:
        if not self.arbitration.is_primary(election_id(eid), role):
            _abort(context, code_pb2.PERMISSION_DENIED,
                   f"election id {election_id(eid)} is not the primary's for role {role!r}")

    # ------------------------------------------------------------------ RPCs
    def Capabilities(self, request, context):
        return p4runtime_pb2.CapabilitiesResponse(p4runtime_api_version=API_VERSION)

    def SetForwardingPipelineConfig(self, request, context):
        if request.device_id != self.device_id:
            _abort(context, code_pb2.NOT_FOUND,
                   f"device id {request.device_id} is not this switch's ({self.device_id})")
        self._require_primary(context, request.election_id, request.role)
        act = request.action
        A = p4runtime_pb2.SetForwardingPipelineConfigRequest
        if act == A.UNSPECIFIED:
            _abort(context, code_pb2.INVALID_ARGUMENT, "action is UNSPECIFIED")
        with self._lock:
            if act == A.COMMIT:
                if self.saved is None:
                    _abort(context, code_pb2.FAILED_PRECONDITION, "no saved config to commit")
                self._commit(self.saved, keep_state=False)
                self.saved = None
                return p4runtime_pb2.SetForwardingPipelineConfigResponse()
            problems = verify_p4info(request.config.p4info)
            if problems:
                _abort(context, code_pb2.INVALID_ARGUMENT,
                       f"P4Info is not lego.p4's: {problems[0]}"
                       + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
            if act == A.VERIFY_AND_SAVE:
                self.saved = request.config
            elif act == A.VERIFY_AND_COMMIT:
                self._commit(request.config, keep_state=False)
            elif act == A.RECONCILE_AND_COMMIT:
                self._commit(request.config, keep_state=True)
            log.info("pipeline config %s", A.Action.Name(act))
        return p4runtime_pb2.SetForwardingPipelineConfigResponse()

    def GetForwardingPipelineConfig(self, request, context):
        if request.device_id != self.device_id:
            _abort(context, code_pb2.NOT_FOUND,
                   f"device id {request.device_id} is not this switch's ({self.device_id})")
        cfg = self.config
        if cfg is None:
            _abort(context, code_pb2.FAILED_PRECONDITION, "no forwarding pipeline config is set")
        R = p4runtime_pb2.GetForwardingPipelineConfigRequest
        out = p4runtime_pb2.ForwardingPipelineConfig()
        out.cookie.CopyFrom(cfg.cookie)
        if request.response_type in (R.ALL, R.P4INFO_AND_COOKIE):
            out.p4info.CopyFrom(cfg.p4info)
        if request.response_type in (R.ALL, R.DEVICE_CONFIG_AND_COOKIE):
            out.p4_device_config = cfg.p4_device_config
        return p4runtime_pb2.GetForwardingPipelineConfigResponse(config=out)

    def Write(self, request, context):
        store = self._require(context, request.device_id)
        self._require_primary(context, request.election_id, request.role)
        atomic = request.atomicity != p4runtime_pb2.WriteRequest.CONTINUE_ON_ERROR
        results: list[tuple[int, str]] = []
        with self.pipeline.lock:
            snap = store.snapshot() if atomic else None
            failed = False
            for u in request.updates:
                if failed and atomic:
                    results.append((code_pb2.ABORTED, "not applied: an earlier update failed"))
                    continue
                try:
                    store.write(u)
                    results.append((code_pb2.OK, ""))
                except P4RuntimeError as exc:
                    results.append((exc.code, exc.message))
                    failed = True
            if failed and atomic:
                store.restore(snap)
                results = [(code_pb2.ABORTED, "rolled back: another update failed")
                           if c == code_pb2.OK else (c, m) for c, m in results]
        if failed:
            status = status_pb2.Status(code=code_pb2.UNKNOWN,
                                       message="one or more updates failed")
            for c, m in results:
                status.details.add().Pack(p4runtime_pb2.Error(canonical_code=c, message=m))
            msg = "; ".join(f"#{i}: {code_pb2.Code.Name(c)} {m}"
                            for i, (c, m) in enumerate(results) if c != code_pb2.OK)
            context.abort_with_status(_Status(
                grpc.StatusCode.UNKNOWN, msg,
                (("grpc-status-details-bin", status.SerializeToString()),)))
        return p4runtime_pb2.WriteResponse()

    def Read(self, request, context):
        store = self._require(context, request.device_id)
        try:
            with self.pipeline.lock:  # copies only: the entities are built after
                parts = [part for q in request.entities for part in store.read(q)]
        except P4RuntimeError as exc:
            _abort(context, exc.code, exc.message)
        yield from read_responses(parts)

    def StreamChannel(self, request_iterator, context):
        stream = _Stream()

        def deliver(notes) -> None:
            for s, upd in notes:
                s.out.put(p4runtime_pb2.StreamMessageResponse(arbitration=upd))

        def reader() -> None:
            try:
                for req in request_iterator:
                    kind = req.WhichOneof("update")
                    if kind == "arbitration":
                        try:
                            deliver(self.arbitration.arbitrate(stream, req.arbitration))
                        except P4RuntimeError as exc:
                            stream.out.put(exc)
                            return
                    else:
                        log.debug("StreamChannel: ignoring %s (not supported)", kind)
            except grpc.RpcError:
                pass
            except Exception:  # a dead reader must make noise
                log.exception("StreamChannel reader failed")
            finally:
                deliver(self.arbitration.remove(stream))
                stream.out.put(None)

        context.add_callback(lambda: stream.out.put(None))
        threading.Thread(target=reader, name="p4rt-stream", daemon=True).start()
        while True:
            msg = stream.out.get()
            if msg is None:
                return
            if isinstance(msg, P4RuntimeError):
                _abort(context, msg.code, msg.message)
            yield msg


class P4RuntimeServer:
    """The gRPC server around :class:`P4RuntimeService`; ``start`` returns once it listens."""

    def __init__(self, pipeline: pl.Pipeline, device_id: int = 0,
                 p4info: p4info_pb2.P4Info | None = None, address: str = "127.0.0.1:0",
                 max_workers: int = 16):
        self.service = P4RuntimeService(pipeline, device_id, p4info)
        self.address = address
        self.port = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="p4rt"))
        p4runtime_pb2_grpc.add_P4RuntimeServicer_to_server(self.service, self._server)

    def start(self, timeout: float = 10.0) -> int:
        """Bind, start, and wait (polling up to ``timeout``) until the port accepts."""
        host = self.address.rsplit(":", 1)[0]
        try:
            self.port = self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise LegoError(f"P4Runtime server: cannot bind {self.address}: {exc}") from exc
        if self.port == 0:
            raise LegoError(f"P4Runtime server: cannot bind {self.address}")
        self._server.start()
        probe = host.strip("[]")
        if probe in ("0.0.0.0", "", "::"):
            probe = "127.0.0.1"
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((probe, self.port), timeout=0.5):
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LegoError(f"P4Runtime server did not listen on port {self.port} "
                                    f"within {timeout}s: {exc}") from exc
                time.sleep(0.01)
        log.info("P4Runtime server listening on %s:%d (device %d)", host, self.port,
                 self.service.device_id)
        return self.port

    @property
    def grpc_addr(self) -> str:
        host = self.address.rsplit(":", 1)[0]
        if host in ("0.0.0.0", "", "[::]"):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    def stop(self, grace: float = 0.5) -> None:
        self._server.stop(grace).wait(grace + 2)

    def wait(self) -> None:
        self._server.wait_for_termination()
