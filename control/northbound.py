"""The northbound gRPC edge: token check, binding, channels.

The controller's status service (``control/proto/lego_northbound.proto``) runs
behind this guard:

- bound to one management address (a wildcard such as ``0.0.0.0`` is refused:
  the NF must not be drivable from the data or traffic networks);
- every RPC carries the shared secret as metadata :data:`TOKEN_KEY`; the server
  compares it in constant time (``hmac.compare_digest``) before the handler runs,
  and answers ``UNAUTHENTICATED`` without calling it otherwise.

Transport errors become :class:`NorthboundError` at this boundary.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from lego.control.northbound_proto import load
from lego.errors import ConfigError, LegoError

log = logging.getLogger(__name__)

TOKEN_KEY = "x-lego-token"
MIN_TOKEN = 16  # characters
MAX_MESSAGE = 64 * 2**20  # a status with every brick and event fits
OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE),
           ("grpc.max_receive_message_length", MAX_MESSAGE)]

pb, pb_grpc = load()


class NorthboundError(LegoError):
    """A northbound call failed: names the peer, the RPC and the gRPC status."""

    def __init__(self, peer: str, rpc: str, code: grpc.StatusCode | None, detail: str):
        self.peer, self.rpc, self.code = peer, rpc, code
        super().__init__(f"northbound {rpc} to {peer}: {code.name if code else 'error'}: "
                         f"{detail}")


def read_token(path: str | Path) -> str:
    """The shared secret from a token file (stripped; at least :data:`MIN_TOKEN` chars)."""
    path = Path(path)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"token file {path}: cannot read it ({exc.strerror})") from None
    if len(token) < MIN_TOKEN:
        raise ConfigError(f"token file {path}: expected a secret of at least {MIN_TOKEN} "
                          f"characters, got {len(token)}")
    return token


def check_bind_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` with a concrete host (never a wildcard); port 0 picks one."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host:
        raise ConfigError(f"northbound bind address: expected HOST:PORT, got {address!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None  # a host name: resolved by gRPC, bound to what it names
    if ip is not None and ip.is_unspecified:
        raise ConfigError(f"northbound bind address: expected the management address, got "
                          f"the wildcard {host!r} (it would expose the API on every network)")
    return host, int(port)


# ---------------------------------------------------------------- server side


class TokenInterceptor(grpc.ServerInterceptor):
    """Rejects every call whose metadata lacks the token (constant-time compare)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self.rejected = 0

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong northbound token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        got = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == TOKEN_KEY:
                got = value.encode() if isinstance(value, str) else bytes(value)
        if hmac.compare_digest(got, self._token):
            return continuation(handler_call_details)
        self.rejected += 1
        log.warning("northbound: rejected %s (bad or missing token)",
                    handler_call_details.method)
        return self._deny


class Server:
    """A gRPC server for one servicer, on one management address, behind the token."""

    def __init__(self, bind: str, token: str, add: Callable[[Any, grpc.Server], None],
                 servicer: Any, max_workers: int = 16) -> None:
        self.host, port = check_bind_address(bind)
        self.interceptor = TokenInterceptor(token)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                              thread_name_prefix="northbound"),
                                   interceptors=[self.interceptor], options=OPTIONS)
        add(servicer, self._server)
        self._started = False
        self.port = self._server.add_insecure_port(f"{_bracket(self.host)}:{port}")
        if self.port == 0:
            raise LegoError(f"northbound: cannot bind {bind}")

    @property
    def address(self) -> str:
        return f"{_bracket(self.host)}:{self.port}"

    def start(self, timeout: float = 10.0) -> str:
        """Start; return once the port accepts connections (polled up to ``timeout``).
        Idempotent."""
        if not self._started:
            self._server.start()
            self._started = True
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self.address
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise LegoError(f"northbound server did not listen on {self.address} "
                                    f"within {timeout} s: {exc}") from exc
                time.sleep(0.01)

    def stop(self, grace: float = 0.2) -> None:
        self._server.stop(grace).wait(grace + 2)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------- client side


class Client:
    """A stub with the token on every call; errors become :class:`NorthboundError`."""

    def __init__(self, address: str, token: str, stub_class: type, timeout: float = 5.0):
        self.address = address
        self.timeout = timeout
        self._metadata = ((TOKEN_KEY, token),)
        self.channel = grpc.insecure_channel(address, options=OPTIONS)
        self.stub = stub_class(self.channel)

    def call(self, rpc: str, request: Any, timeout: float | None = None) -> Any:
        try:
            return getattr(self.stub, rpc)(request, metadata=self._metadata,
                                           timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            raise NorthboundError(self.address, rpc, code, detail or "") from None

    def close(self) -> None:
        self.channel.close()


def controller_client(address: str, token: str, timeout: float = 2.0) -> Client:
    return Client(address, token, pb_grpc.ControllerStub, timeout)
