"""The controller's P4Runtime errors: one hierarchy, built at the gRPC boundary.

Every failure of a P4Runtime call becomes a :class:`SwitchError` (a
:class:`~lego.errors.LegoError`) that names the switch and the RPC:

- :class:`SwitchUnavailable`: the switch cannot be reached or the connection
  was lost (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, or no arbitration reply);
- :class:`NotPrimary`: this client is not (or no longer) the primary
  (PERMISSION_DENIED, or arbitration answered ALREADY_EXISTS);
- :class:`PipelineMissing`: the device has no forwarding pipeline
  (FAILED_PRECONDITION), e.g. after a switch restart;
- :class:`WriteError`: a Write whose updates failed, each reported as an
  :class:`UpdateFailure` (index in the caller's list, canonical code, message,
  and what the update was), from the ``p4.v1.Error`` details of the status;
- :class:`P4RuntimeCallError`: any other RPC status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from google.rpc import code_pb2, status_pb2
from p4.v1 import p4runtime_pb2

from lego.errors import LegoError


def code_name(code: int) -> str:
    try:
        return code_pb2.Code.Name(code)
    except ValueError:
        return str(code)


class SwitchError(LegoError):
    """A P4Runtime call to one switch failed."""

    def __init__(self, switch: str, message: str, code: int | None = None):
        self.switch = switch
        self.code = code
        super().__init__(f"switch {switch}: {message}")


class SwitchUnavailable(SwitchError):
    """The switch cannot be reached, or the connection to it was lost."""


class NotPrimary(SwitchError):
    """This client is not the primary controller of the switch (for its role)."""

    def __init__(self, switch: str, message: str, primary_election_id: int | None = None,
                 code: int | None = code_pb2.PERMISSION_DENIED):
        self.primary_election_id = primary_election_id
        super().__init__(switch, message, code)


class PipelineMissing(SwitchError):
    """The device has no forwarding pipeline config (it was restarted, or never set)."""


class P4RuntimeCallError(SwitchError):
    """Any other failed P4Runtime RPC (its canonical code is ``code``)."""


@dataclass(frozen=True)
class UpdateFailure:
    index: int  # in the list of updates the caller passed to write()
    code: int  # google.rpc canonical code
    message: str
    update: str  # what the update was, e.g. "INSERT LegoIngress.bucket_owner meta.bucket=5"

    def __str__(self) -> str:
        what = f" ({self.update})" if self.update else ""
        return f"update #{self.index}{what}: {code_name(self.code)} {self.message}"


class WriteError(SwitchError):
    """A Write in which one or more updates failed; ``failures`` lists each."""

    def __init__(self, switch: str, failures: Sequence[UpdateFailure], total: int):
        self.failures = list(failures)
        self.total = total
        shown = "; ".join(str(f) for f in self.failures[:5])
        more = f"; and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
        super().__init__(switch, f"Write: {len(self.failures)} of {total} updates failed: "
                                 f"{shown}{more}", code_pb2.UNKNOWN)

    @property
    def indices(self) -> list[int]:
        return [f.index for f in self.failures]


_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED}


def rpc_code(exc: grpc.RpcError) -> grpc.StatusCode:
    code = exc.code() if hasattr(exc, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def translate(exc: grpc.RpcError, switch: str, rpc: str) -> SwitchError:
    """The domain error for a failed RPC (not for a Write's per-update errors)."""
    code = rpc_code(exc)
    details = exc.details() if hasattr(exc, "details") else str(exc)
    msg = f"{rpc}: {code.name} {details or ''}".rstrip()
    canonical = code.value[0]
    if code in _UNAVAILABLE:
        return SwitchUnavailable(switch, msg, canonical)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return NotPrimary(switch, msg)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return PipelineMissing(switch, msg, canonical)
    return P4RuntimeCallError(switch, msg, canonical)


def write_failures(exc: grpc.RpcError, chunk: Sequence[p4runtime_pb2.Update], offset: int,
                   describe: Callable[[p4runtime_pb2.Update], str]) -> list[UpdateFailure] | None:
    """Per-update failures of a Write's UNKNOWN status (``grpc-status-details-bin``
    holding one ``p4.v1.Error`` per update); None when the status carries none."""
    for key, value in exc.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        out = []
        for i, detail in enumerate(status.details):
            err = p4runtime_pb2.Error()
            if not detail.Unpack(err):
                continue
            if err.canonical_code != code_pb2.OK:
                what = describe(chunk[i]) if i < len(chunk) else ""
                out.append(UpdateFailure(offset + i, err.canonical_code, err.message, what))
        return out
    return None
