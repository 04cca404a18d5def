"""The synthetic IoT LAN + Mirai trace (fast: 6,000 packets, < 5 s)."""

from __future__ import annotations

import numpy as np
import pytest

from lego.ext.batch import Family, Proto
from lego.ext.packets import format_addr, read_trace
from lego.topo.traffic_synth import default_trace, generate, labels_path, write_trace

scapy_all = pytest.importorskip("scapy.all")

N = 6000


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    trace = generate(seed=5, packets=N)
    d = tmp_path_factory.mktemp("synth")
    write_trace(trace, d / "t.pcap", d / "t.csv")
    return trace, d / "t.pcap", d / "t.csv", read_trace(d / "t.pcap")


def test_deterministic(synth, tmp_path):
    _, pcap, labels, _ = synth
    again = generate(seed=5, packets=N)
    write_trace(again, tmp_path / "a.pcap", tmp_path / "a.csv")
    assert (tmp_path / "a.pcap").read_bytes() == pcap.read_bytes()
    assert (tmp_path / "a.csv").read_bytes() == labels.read_bytes()
    other = generate(seed=6, packets=N)
    assert other.frames != again.frames


def test_labels_align(synth):
    trace, _, labels, batch = synth
    lines = labels.read_text().split()
    assert len(lines) == len(batch) == N
    lab = np.array(lines, dtype=np.int8)
    assert np.array_equal(lab, trace.labels)
    start = trace.attack_start
    assert 0.6 * N < start < 0.8 * N
    assert not lab[:start].any() and lab[start] == 1
    assert lab[start:].mean() > 0.5  # the attack dominates its phase
    assert np.array_equal(batch.ts, trace.ts) and np.all(np.diff(batch.ts) >= 0)


def test_scapy_parses_frames_with_valid_checksums(synth):
    _, pcap, _, batch = synth
    packets = scapy_all.rdpcap(str(pcap))
    assert len(packets) == N
    IP, TCP, UDP, ICMP = scapy_all.IP, scapy_all.TCP, scapy_all.UDP, scapy_all.ICMP
    for i in range(0, N, 7):
        pkt = packets[i]
        if IP in pkt and not pkt[IP].haslayer(scapy_all.IPerror):
            ip = pkt[IP]
            rebuilt = IP(bytes(ip))
            del rebuilt.chksum
            assert IP(bytes(rebuilt)).chksum == ip.chksum, i
            for layer in (TCP, UDP, ICMP):
                if layer in ip:
                    fresh = ip.copy()
                    del fresh[layer].chksum
                    assert IP(bytes(fresh))[layer].chksum == ip[layer].chksum, (i, layer)
            assert format_addr(batch.src_family[i], batch.src_addr[i]) == ip.src


def test_protocol_mix(synth):
    trace, _, _, batch = synth
    benign = batch.take(slice(0, trace.attack_start))
    counts = np.bincount(benign.proto, minlength=len(Proto))
    for proto in Proto:  # every kind of frame appears in the benign part
        assert counts[proto] > 0, proto.name
    assert (benign.src_family == Family.IPV6).any()  # link-local IPv6
    dports = set(benign.dport[benign.proto == Proto.UDP].tolist())
    assert {53, 123, 1900, 5353, 67} <= dports
    # ICMP port-unreachable from the gateway carries the quoted SSDP ports
    assert ((benign.proto == Proto.UDP) & (benign.frame_len == 70)
            & (benign.sport != 0)).any()


def test_attack_phase(synth):
    trace, _, _, batch = synth
    lab = trace.labels.astype(bool)
    attack = batch.take(lab)
    infected = np.array([int(x) for x in trace.infected_ip.split(".")], dtype=np.uint8)
    from_infected = (attack.src_addr[:, :4] == infected).all(axis=1)
    syn_scan = attack.take(from_infected & (attack.proto == Proto.TCP)
                           & np.isin(attack.dport, (23, 2323)))
    targets = {bytes(a[:4]) for a in syn_scan.dst_addr}
    assert len(targets) > 300  # the scanner contacts many distinct addresses
    assert (attack.dport == 2323).any() and (attack.dport == 23).any()
    # telnet brute force against LAN devices, C&C beacons, a UDP flood at the end
    lan = {bytes(a[:3]) for a in syn_scan.dst_addr} & {bytes([192, 168, 2])}
    assert lan
    flood = attack.take(from_infected & (attack.proto == Proto.UDP))
    assert len(flood) > 0.1 * len(attack)
    assert len({bytes(a[:4]) for a in flood.dst_addr}) == 1
    assert (attack.proto == Proto.ARP).any()  # scanning the LAN needs ARP


def test_default_trace_caches(tmp_path):
    path = default_trace(tmp_path, seed=2, packets=500)
    assert path.is_file() and labels_path(path).is_file()
    mtime = path.stat().st_mtime_ns
    assert default_trace(tmp_path, seed=2, packets=500) == path
    assert path.stat().st_mtime_ns == mtime


def test_cli_synth_and_info(tmp_path, capsys):
    import argparse

    from lego import cli_trace

    parser = argparse.ArgumentParser()
    cli_trace.register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "c.pcap"
    args = parser.parse_args(["trace", "synth", "--seed", "4", "--packets", "800", "-o",
                              str(out), "--labels", str(tmp_path / "c.csv")])
    assert args.func(args) == 0
    args = parser.parse_args(["trace", "info", str(out)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "packets      800" in text and "pcap" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["trace", "synth", "--packets", "0", "-o", str(out)])
