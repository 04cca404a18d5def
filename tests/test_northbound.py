"""The northbound gRPC API: generated code, the token guard, the bind rule (fast)."""

from __future__ import annotations

import grpc
import pytest

from lego.control import northbound as nb
from lego.errors import ConfigError

pytestmark = pytest.mark.timeout(60)
TOKEN = "s3cret-token-0123456789abcdef"


class Recording(nb.pb_grpc.ControllerServicer):
    """A Controller servicer that only records what reached it."""

    def __init__(self):
        self.calls = []

    def GetStatus(self, request, context):
        self.calls.append(("GetStatus",))
        return nb.pb.StatusReply(json='{"hosts": 1}')


@pytest.fixture
def server():
    rec = Recording()
    srv = nb.Server("127.0.0.1:0", TOKEN, nb.pb_grpc.add_ControllerServicer_to_server, rec)
    srv.start()
    try:
        yield srv, rec
    finally:
        srv.stop()


def test_generated_code_imports_with_protobufs_c_implementation():
    from google.protobuf.internal import api_implementation

    assert api_implementation.Type() == "upb"
    msg = nb.pb.StatusReply(json='{"hosts": 1}')
    assert nb.pb.StatusReply.FromString(msg.SerializeToString()) == msg
    assert hasattr(nb.pb_grpc, "ControllerStub")


@pytest.mark.parametrize("metadata", [None, ((nb.TOKEN_KEY, "wrong-token-0123456789"),),
                                      ((nb.TOKEN_KEY, TOKEN[:-1]),), (("other", TOKEN),)])
def test_a_caller_without_the_token_is_rejected_and_changes_nothing(server, metadata):
    srv, rec = server
    with grpc.insecure_channel(srv.address) as ch:
        stub = nb.pb_grpc.ControllerStub(ch)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as err:
                stub.GetStatus(nb.pb.StatusRequest(), metadata=metadata, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rec.calls == []
    assert srv.interceptor.rejected == 2


def test_the_right_token_reaches_the_handler(server):
    srv, rec = server
    client = nb.controller_client(srv.address, TOKEN)
    try:
        assert client.call("GetStatus", nb.pb.StatusRequest()).json == '{"hosts": 1}'
    finally:
        client.close()
    assert rec.calls == [("GetStatus",)]


def test_client_errors_become_northbound_errors(server):
    srv, _ = server
    client = nb.controller_client(srv.address, "not-the-token-0123456789")
    try:
        with pytest.raises(nb.NorthboundError, match="UNAUTHENTICATED"):
            client.call("GetStatus", nb.pb.StatusRequest())
    finally:
        client.close()


@pytest.mark.parametrize("bind", ["0.0.0.0:50051", "[::]:50051", "nohost", "1.2.3.4:x"])
def test_wildcard_or_malformed_bind_addresses_are_refused(bind):
    with pytest.raises(ConfigError, match="bind address"):
        nb.check_bind_address(bind)


def test_short_or_missing_token_files_are_refused(tmp_path):
    (tmp_path / "t").write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        nb.read_token(tmp_path / "t")
    with pytest.raises(ConfigError, match="cannot read"):
        nb.read_token(tmp_path / "missing")
    (tmp_path / "ok").write_text(TOKEN + "\n")
    assert nb.read_token(tmp_path / "ok") == TOKEN
