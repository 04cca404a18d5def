"""The software switch end to end: hosts in namespaces, veth pairs, P4Runtime config.

Frames sent by the traffic host come out on the replica that owns their bucket,
with the shim; mirrors go to the destination's owner; malformed frames do not
stop the switch. Needs root and ``ip netns`` (marker ``netns``).
"""

from __future__ import annotations

import zlib

import pytest
from p4.v1 import p4runtime_pb2 as p4r
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lego.p4src.p4info import load_p4info
from lego.switch import pipeline as pl
from lego.switch.netns import NetnsLab, netns_available, recv_until
from lego.switch.small_client import SmallClient
from lego.switch.target import SoftSwitch, SwitchConfig

_why = netns_available()
pytestmark = [pytest.mark.netns, pytest.mark.skipif(_why is not None, reason=f"netns: {_why}")]

TRAFFIC, R1, R2 = 1, 2, 3
MARK = b"lego-netns-test"


def _is_test_frame(data: bytes) -> bool:
    return data[12:14] == b"\x88\xb5" and MARK in data


def _bucket(ip: str) -> int:
    return zlib.crc32(bytes([4]) + bytes(int(x) for x in ip.split(".")) + bytes(12)) % 1024


def _owner(bucket: int) -> int:
    return R1 if bucket % 2 == 0 else R2


@pytest.fixture
def lab_switch():
    with NetnsLab(3) as lab:
        cfg = SwitchConfig(interfaces={TRAFFIC: lab.switch_ifaces[0], R1: lab.switch_ifaces[1],
                                       R2: lab.switch_ifaces[2]},
                           grpc_addr="127.0.0.1:0", p4info=load_p4info())
        sw = SoftSwitch(cfg)
        sw.start()
        try:
            c = SmallClient(sw.server.grpc_addr)
            try:
                c.open_stream()
                c.get_p4info()
                ups = [c.update(p4r.Update.INSERT, {"table_entry": c.table_entry(
                    "LegoIngress.port_role", {"standard_metadata.ingress_port": TRAFFIC},
                    "LegoIngress.role_traffic")})]
                for b in range(pl.N_BUCKETS):
                    for table, key, action in (
                            ("LegoIngress.bucket_owner", "meta.bucket", "LegoIngress.to_replica"),
                            ("LegoIngress.mirror_owner", "meta.mirror_bucket",
                             "LegoIngress.mirror_to")):
                        ups.append(c.update(p4r.Update.INSERT, {"table_entry": c.table_entry(
                            table, {"meta.version": 0, key: b}, action, {"port": _owner(b)})}))
                c.write(ups)
                for port in (R1, R2):
                    c.clone_session(port + pl.CLONE_SESSION_BASE, [port])
                yield lab, sw, c
            finally:
                c.close()
        finally:
            sw.stop()
        assert sw.failure is None


def _pick_hosts():
    """Two addresses owned by different replicas."""
    a = "10.0.0.1"
    for i in range(2, 250):
        b = f"10.0.0.{i}"
        if _owner(_bucket(a)) != _owner(_bucket(b)):
            return a, b
    raise AssertionError("no pair")


def test_frames_reach_their_owner_with_the_shim(lab_switch):
    lab, sw, c = lab_switch
    src, dst = _pick_hosts()
    tx = lab.host_socket(0)
    rx = {R1: lab.host_socket(1), R2: lab.host_socket(2)}
    try:
        frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                      / IP(src=src, dst=dst) / UDP(sport=1, dport=2) / Raw(MARK + b"x" * 40))
        for _ in range(5):
            tx.send(frame)
        owner = _owner(_bucket(src))
        got = recv_until(rx[owner], 5, timeout=10, accept=_is_test_frame)
        assert len(got) == 5
        shim, original = pl.strip_shim(got[0])
        assert original == frame and not shim.mirror and shim.bucket == _bucket(src)
        assert [pl.strip_shim(g)[0].seq for g in got] == sorted(pl.strip_shim(g)[0].seq
                                                                for g in got)
        other = R2 if owner == R1 else R1
        assert recv_until(rx[other], 1, timeout=0.5, accept=_is_test_frame) == []
        assert c.read_counter("LegoIngress.bucket_counter", _bucket(src))[0][1] == 5
    finally:
        tx.close()
        for s in rx.values():
            s.close()


def test_mirror_reaches_the_destination_owner_and_malformed_frames_are_survived(lab_switch):
    lab, sw, c = lab_switch
    c.modify(c.table_entry("LegoIngress.split_group", None, "LegoIngress.set_groups",
                           {"primary": pl.GROUP_SRCIP, "mirror": pl.GROUP_DSTIP, "epoch": 0},
                           default=True))
    src, dst = _pick_hosts()
    tx = lab.host_socket(0)
    rx = {R1: lab.host_socket(1), R2: lab.host_socket(2)}
    try:
        for junk in (b"\x02" * 12 + b"\x08\x00" + b"\x45", b"\x02" * 12 + b"\x86\xdd",
                     b"\xff" * 60):
            tx.send(junk)
        frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                      / IP(src=src, dst=dst) / UDP(sport=1, dport=2) / Raw(MARK + b"y" * 40))
        tx.send(frame)
        prim = recv_until(rx[_owner(_bucket(src))], 1, timeout=10, accept=_is_test_frame)
        mirr = recv_until(rx[_owner(_bucket(dst))], 1, timeout=10, accept=_is_test_frame)
        assert len(prim) == len(mirr) == 1
        ps, pm = pl.strip_shim(prim[0])[0], pl.strip_shim(mirr[0])[0]
        assert not ps.mirror and pm.mirror and ps.seq == pm.seq
        assert pm.bucket == _bucket(dst)
        assert sw.failure is None
        assert c.read_counter("LegoIngress.event_counter", pl.EVENT_MIRROR)[0][1] >= 1
    finally:
        tx.close()
        for s in rx.values():
            s.close()


def test_frames_read_in_one_batch_keep_their_own_arrival_times(lab_switch):
    """The shim's ingress timestamp is each frame's kernel receive time: frames that
    queue while the switch is busy (here: its pipeline held) and are read in one
    batch are still stamped apart, as BMv2 stamps each packet."""
    import time

    lab, sw, c = lab_switch
    src, dst = _pick_hosts()
    tx = lab.host_socket(0)
    rx = lab.host_socket(1 if _owner(_bucket(src)) == R1 else 2)
    gap_s = 0.005
    try:
        frame = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                      / IP(src=src, dst=dst) / UDP(sport=1, dport=2) / Raw(MARK + b"t" * 40))
        with sw.pipeline.lock:  # the forwarding thread waits; the frames queue
            for _ in range(8):
                tx.send(frame)
                time.sleep(gap_s)
        got = recv_until(rx, 8, timeout=10, accept=_is_test_frame)
        assert len(got) == 8
        stamps = [pl.strip_shim(g)[0].ts_us for g in got]
        gaps_us = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]
        assert all(g >= 0.8 * gap_s * 1e6 for g in gaps_us), gaps_us
    finally:
        tx.close()
        rx.close()
