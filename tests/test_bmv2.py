"""The same semantic cases against BMv2 (simple_switch_grpc running lego.p4).

Each crafted frame of ``test_pipeline.CASES`` is sent through BMv2 and through
the model (:mod:`lego.switch.pipeline`) configured identically over P4Runtime;
egress ports and output bytes must agree, except the shim's timestamp (each
switch's own clock). Marker ``bmv2``: skipped, with the reason, unless
``simple_switch_grpc`` and ``p4c`` are on PATH and namespaces can be made.
Never run in CI here (no BMv2 in any registry); written to run where they exist.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from p4.v1 import p4runtime_pb2 as p4r

from lego.p4src.p4info import P4_SOURCE, load_p4info
from lego.switch import pipeline as pl
from lego.switch.netns import NetnsLab, netns_available, recv_until
from lego.switch.small_client import SmallClient

_missing = [t for t in ("simple_switch_grpc", "p4c") if shutil.which(t) is None]
_why = (f"BMv2 tools not on PATH: {', '.join(_missing)} (install p4c and BMv2 to run)"
        if _missing else netns_available())
pytestmark = [pytest.mark.bmv2, pytest.mark.skipif(_why is not None, reason=f"bmv2: {_why}")]

TRAFFIC, R1, R2 = 1, 2, 3


def _ts_masked(frame: bytes) -> bytes:
    """The frame with the shim's 48-bit timestamp zeroed (bytes 14+12 .. 14+18)."""
    return frame[:26] + bytes(6) + frame[32:]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("p4c")
    subprocess.run(["p4c", "--target", "bmv2", "--arch", "v1model", "-o", str(out),
                    "--p4runtime-files", str(out / "lego.p4info.txtpb"), str(P4_SOURCE)],
                   check=True, capture_output=True, timeout=300)
    return out / "lego.json", out / "lego.p4info.txtpb"


def _configure(c: SmallClient, primary: int, mirror: int) -> None:
    ups = [c.update(p4r.Update.INSERT, {"table_entry": c.table_entry(
        "LegoIngress.port_role", {"standard_metadata.ingress_port": TRAFFIC},
        "LegoIngress.role_traffic")})]
    for b in range(pl.N_BUCKETS):
        port = R1 if b % 2 == 0 else R2
        ups.append(c.update(p4r.Update.INSERT, {"table_entry": c.table_entry(
            "LegoIngress.bucket_owner", {"meta.version": 0, "meta.bucket": b},
            "LegoIngress.to_replica", {"port": port})}))
        ups.append(c.update(p4r.Update.INSERT, {"table_entry": c.table_entry(
            "LegoIngress.mirror_owner", {"meta.version": 0, "meta.mirror_bucket": b},
            "LegoIngress.mirror_to", {"port": port})}))
    c.write(ups)
    c.modify(c.table_entry("LegoIngress.split_group", None, "LegoIngress.set_groups",
                           {"primary": primary, "mirror": mirror, "epoch": 0},
                           default=True))
    for port in (R1, R2):
        c.clone_session(port + pl.CLONE_SESSION_BASE, [port])


@pytest.mark.parametrize("groups", [(pl.GROUP_SRCIP, pl.GROUP_DSTIP),
                                    (pl.GROUP_SOCKET, pl.GROUP_NONE),
                                    (pl.GROUP_SRCMAC_SRCIP, pl.GROUP_SRCIP_DSTIP)])
def test_bmv2_agrees_with_the_model(compiled, groups):
    from tests.test_pipeline import CASES  # the same crafted frames as the model's tests

    json_path, p4info_path = compiled
    with NetnsLab(3) as lab:
        proc = subprocess.Popen(
            ["simple_switch_grpc", "--device-id", "0",
             "-i", f"{TRAFFIC}@{lab.switch_ifaces[0]}", "-i", f"{R1}@{lab.switch_ifaces[1]}",
             "-i", f"{R2}@{lab.switch_ifaces[2]}", str(json_path), "--",
             "--grpc-server-addr", "127.0.0.1:50071"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        c = SmallClient("127.0.0.1:50071")
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    c.stub.Capabilities(p4r.CapabilitiesRequest(), timeout=1)
                    break
                except Exception:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
            c.open_stream()
            c.set_pipeline(load_p4info(p4info_path))
            _configure(c, *groups)
            model = pl.Pipeline()
            # the model, configured the same way by name
            pl.apply_entry(model.state, pl.T_PORT_ROLE,
                           {"standard_metadata.ingress_port": TRAFFIC}, pl.A_ROLE_TRAFFIC, {})
            pl.apply_default(model.state, pl.T_SPLIT_GROUP, pl.A_SET_GROUPS,
                             {"primary": groups[0], "mirror": groups[1], "epoch": 0})
            for b in range(pl.N_BUCKETS):
                port = R1 if b % 2 == 0 else R2
                model.state.bucket_owner[0, b] = model.state.mirror_owner[0, b] = port
            for port in (R1, R2):
                pl.set_clone_session(model.state, port + pl.CLONE_SESSION_BASE, [port], 0)
            tx = lab.host_socket(0)
            rx = {R1: lab.host_socket(1), R2: lab.host_socket(2)}
            for name in sorted(CASES):
                frame = bytes(CASES[name][0])
                want = model.process([frame], TRAFFIC, 0)
                tx.send(frame)
                for port, data in want:
                    got = recv_until(rx[port], 1, 5, accept=lambda d: d[12:14] == b"\x88\xb5")
                    assert got and _ts_masked(got[0]) == _ts_masked(data), (name, port)
        finally:
            c.close()
            proc.terminate()
            proc.wait(timeout=10)
