"""Differential: the software target against BMv2, same program, writes and frames.

Both switches run ``lego.p4`` (BMv2 the committed ``lego.json``, the software
target its model) on their own veth ports, each configured by its own
:class:`~lego.control.switch_manager.SwitchManager` exactly as the controller
configures a switch: the initial install, a scale-out (a new owner port, a new
assignment epoch, a new clone session) and a scale-in. A corpus of real and
crafted frames (the Mirai capture, the synthetic LAN with ARP, IPv6, ICMP and
spanning tree, VLAN and QinQ tags, truncated and malformed frames) goes through
both, a third before each change. For every accepted input frame (its shim
sequence number) the multiset of (egress port, frame bytes) must be equal, the
shim's timestamp masked; then every P4Runtime read (entries, defaults, clone
sessions, counters) must be equal. The same again under LUCID's plan (the
symmetric Socket group and the window clock): bursts of frames a period apart, so
that both switches open each window at the same frame, must give the same frames,
windows and window marks. Marker ``bmv2``: skipped, with the reason, where
``simple_switch_grpc`` or the committed ``lego.json`` is missing.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from p4.v1 import p4runtime_pb2 as p4r

from lego.p4src.p4info import BMV2_JSON_PATH, load_p4info
from lego.switch import pipeline as pl
from lego.switch.netns import NetnsLab, netns_available
from lego.switch.parser import ETHERTYPE_LEGO
from lego.topo.switches import BMV2_BINARY, switch_argv

_why = (f"{BMV2_BINARY} is not on PATH (build BMv2 with PI to run)"
        if shutil.which(BMV2_BINARY) is None
        else f"{BMV2_JSON_PATH.name} is missing: run `make p4`"
        if not BMV2_JSON_PATH.is_file() else netns_available())
pytestmark = [pytest.mark.bmv2, pytest.mark.slow,
              pytest.mark.skipif(_why is not None, reason=f"bmv2: {_why}")]

TRAFFIC, R1, R2, R3, LOG = 1, 2, 3, 4, 5
PORTS = (TRAFFIC, R1, R2, R3, LOG)
KINDS = ("bmv2", "soft")
MIRAI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitsune_mirai_first2000.pcap"
SHIM_TS = slice(14 + 2 + 12, 14 + 2 + 18)  # the shim's 48-bit timestamp (after its type)


def corpus(seed: int = 7) -> list[bytes]:
    """At least 2,000 frames: real, synthetic, tagged, truncated and malformed."""
    from lego.ext.packets import open_trace
    from lego.topo.traffic_synth import generate
    from tests.test_pipeline import CASES

    rng = random.Random(seed)
    frames: list[bytes] = []
    if MIRAI.is_file():
        for raw in open_trace(MIRAI).raw_batches(2000):
            frames += [raw.frame(i) for i in range(min(len(raw), 800))]
            break
    synth = generate(seed, 1200, attack_start=0.6).frames
    frames += synth
    frames += [bytes(c[0]) for c in CASES.values()] * 4
    for f in rng.sample(synth, 150):  # 802.1Q-tagged copies
        frames.append(f[:12] + b"\x81\x00" + rng.randrange(1, 4095).to_bytes(2, "big") + f[12:])
    for f in rng.sample(synth, 150):  # cut short anywhere past the Ethernet header
        frames.append(f[:rng.randrange(14, max(15, len(f)))])
    for f in rng.sample(synth, 60):  # flipped bytes in the IP header
        b = bytearray(f)
        for _ in range(3):
            b[rng.randrange(14, min(len(b), 40))] = rng.randrange(256)
        frames.append(bytes(b))
    rng.shuffle(frames)
    return frames


class Switch:
    """One switch process on a lab's ports, its manager and its output collectors."""

    def __init__(self, kind: str, lab: NetnsLab, addr: str, workdir: Path):
        self.kind, self.lab, self.addr = kind, lab, addr
        ifaces = dict(zip(PORTS, lab.switch_ifaces, strict=True))
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = open(workdir / f"{kind}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(switch_argv(kind, ifaces, 0, addr), stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.out: list[tuple[int, bytes]] = []
        self._stop = threading.Event()
        self.tx = lab.host_socket(0)
        self._rx = [threading.Thread(target=self._collect, args=(p, lab.host_socket(i)),
                                     daemon=True) for i, p in enumerate(PORTS) if p != TRAFFIC]
        for t in self._rx:
            t.start()

    def _collect(self, port: int, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(65536)
            except (TimeoutError, BlockingIOError):
                continue
            if addr[2] != 4:  # not PACKET_OUTGOING
                self.out.append((port, data))
        sock.close()

    def manager(self, split=None, window_us: int = 0, log_port: int | None = None):
        from lego.control.granularity import plan_split
        from lego.control.p4rt_client import P4RuntimeClient
        from lego.control.switch_manager import SwitchManager
        from lego.control.switch_state import SwitchPlan
        from lego.ext.features import state_groups

        self.client = P4RuntimeClient(self.addr, 0, election_id=10, timeout=10.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.reconnect()
                break
            except Exception:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.2)
        plan = SwitchPlan.from_split(split or plan_split(state_groups("lego")), [TRAFFIC],
                                     [R1, R2], window_us=window_us, log_port=log_port)
        return SwitchManager(self.client, plan)

    def send(self, frames: list[bytes], gap_s: float = 0.0005) -> None:
        for f in frames:
            self.tx.send(f)
            time.sleep(gap_s)

    def settle(self, quiet_s: float = 1.0, timeout: float = 60.0) -> None:
        """Until no output arrived for ``quiet_s``."""
        deadline = time.monotonic() + timeout
        n = -1
        while n != len(self.out) and time.monotonic() < deadline:
            n = len(self.out)
            time.sleep(quiet_s)

    def stop(self) -> None:
        self._stop.set()
        for t in self._rx:
            t.join(2)
        self.tx.close()
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def per_input(out: list[tuple[int, bytes]]) -> dict[int, Counter]:
    """Outputs grouped by the input they came from (the shim's sequence number):
    each a multiset of (egress port, frame with the timestamp masked)."""
    groups: dict[int, Counter] = {}
    for port, data in out:
        if data[12:14] != ETHERTYPE_LEGO.to_bytes(2, "big"):
            groups.setdefault(-1, Counter())[(port, data)] += 1  # no shim: forwarded as is
            continue
        seq = pl.strip_shim(data)[0].seq
        masked = data[:SHIM_TS.start] + bytes(6) + data[SHIM_TS.stop:]
        groups.setdefault(seq, Counter())[(port, masked)] += 1
    return groups


def assert_logged(out: list[tuple[int, bytes]]) -> None:
    """The frame log's port got each frame sent to a replica, byte for byte, once
    (a window mark, the same to every replica, once in all)."""
    def logged_once(f: bytes) -> bool:
        return pl.strip_shim(f)[0].mark

    sent = Counter(f for p, f in out if p != LOG)
    sent.update({f: 1 - n for f, n in sent.items() if logged_once(f)})
    logged = Counter(f for p, f in out if p == LOG)
    assert sum(sent.values()) > 0 and logged == sent, (
        f"{sum(sent.values())} frames to replicas, {sum(logged.values())} to the log, "
        f"{sum((sent - logged).values())} missing, {sum((logged - sent).values())} extra")


def describe(seq: int, a: Counter | None, b: Counter | None) -> str:
    """One difference in a line: each switch's (port, length) outputs, and the first
    byte where their frames for one port part."""
    def outs(c: Counter | None) -> list[tuple[int, int]]:
        return sorted((p, len(f)) for (p, f), n in (c or {}).items() for _ in range(n))

    where = ""
    for (pa, fa) in (a or {}):
        fb = next((f for (p, f) in (b or {}) if p == pa), None)
        if fb is not None and fa != fb:
            k = next((i for i, (x, y) in enumerate(zip(fa, fb, strict=False)) if x != y),
                     min(len(fa), len(fb)))
            where = f", port {pa} parts at byte {k}: {fa[k:k + 6].hex()} / {fb[k:k + 6].hex()}"
            break
    return f"input {seq}: bmv2 {outs(a)}, soft {outs(b)}{where}"


def reads(client, p4info) -> dict[str, list[bytes]]:
    """Every entry, default, clone session and counter the switch holds, canonical."""
    out: dict[str, list[bytes]] = {}

    def read(name: str, entity: p4r.Entity) -> None:
        got = client.read([entity])
        for e in got:  # a clone session's replicas, in instance order (BMv2: by port)
            cs = e.packet_replication_engine_entry.clone_session_entry
            reps = sorted(cs.replicas, key=lambda r: r.instance)
            del cs.replicas[:]
            cs.replicas.extend(reps)
        out[name] = sorted(e.SerializeToString(deterministic=True) for e in got)

    for t in p4info.tables:
        read(f"table {t.preamble.name}", p4r.Entity(table_entry=p4r.TableEntry(
            table_id=t.preamble.id)))
        read(f"default {t.preamble.name}", p4r.Entity(table_entry=p4r.TableEntry(
            table_id=t.preamble.id, is_default_action=True)))
    for c in p4info.counters:
        read(f"counter {c.preamble.name}", p4r.Entity(counter_entry=p4r.CounterEntry(
            counter_id=c.preamble.id)))
    read("clone sessions", p4r.Entity(packet_replication_engine_entry=p4r.
                                      PacketReplicationEngineEntry(
                                          clone_session_entry=p4r.CloneSessionEntry())))
    return out


def test_software_target_equals_bmv2_frame_for_frame_and_read_for_read(tmp_path):
    frames = corpus()
    assert len(frames) >= 2000
    thirds = [frames[i::3] for i in range(3)]
    switches = []
    with NetnsLab(5, prefix="lb") as lab_b, NetnsLab(5, prefix="ls") as lab_s:
        try:
            switches = [Switch(KINDS[0], lab_b, "127.0.0.1:50081", tmp_path / "a"),
                        Switch(KINDS[1], lab_s, "127.0.0.1:50082", tmp_path / "b")]
            managers = [s.manager(log_port=LOG) for s in switches]
            for m in managers:
                m.sync()
            steps = [lambda m: None, lambda m: m.scale_out(R3, now=time.monotonic()),
                     lambda m: m.scale_in(R1, now=time.monotonic())]
            for part, change in zip(thirds, steps, strict=True):
                for m in managers:
                    change(m)
                for s in switches:
                    s.send(part)
                for s in switches:
                    s.settle()
            got = [per_input(s.out) for s in switches]
            differ = sorted(k for k in set(got[0]) | set(got[1])
                            if got[0].get(k) != got[1].get(k))
            assert len(got[1]) > 1500, f"only {len(got[1])} inputs came out of the target"
            for sw in switches:  # (the mirrors through their sessions, primaries by E2E)
                assert_logged([(p, f) for p, f in sw.out if f[12:14] == b"\x88\xb5"])
            assert not differ, (f"{len(differ)} of {len(got[0])} inputs differ; first: "
                                + "; ".join(describe(k, got[0].get(k), got[1].get(k))
                                            for k in differ[:5]))
            p4info = load_p4info()
            r_b, r_s = (reads(m.client, p4info) for m in managers)
            bad = [k for k in r_b if r_b[k] != r_s.get(k)]
            assert not bad, f"reads differ: {bad}"
        finally:
            for s in switches:
                s.stop()


@pytest.mark.parametrize("log", [False, True], ids=["no-log", "frame-log"])
def test_window_clock_and_symmetric_split_agree_with_bmv2(tmp_path, log):
    """LUCID's plan on both switches: bursts a window period apart (the first frame
    of each opens a window on both), a scale-out between two of them; with the
    frame log, each frame and window mark a replica gets is at the log port too."""
    from lego import nfs

    period_s, bursts = 0.8, 4
    frames = corpus(seed=11)[:bursts * 120]
    switches = []
    with NetnsLab(5, prefix="wb") as lab_b, NetnsLab(5, prefix="ws") as lab_s:
        try:
            switches = [Switch(KINDS[0], lab_b, "127.0.0.1:50084", tmp_path / "a"),
                        Switch(KINDS[1], lab_s, "127.0.0.1:50085", tmp_path / "b")]
            managers = [s.manager(nfs.get("lucid").plan(), int(period_s * 1e6),
                                  LOG if log else None) for s in switches]
            for m in managers:
                m.sync()
            for i in range(bursts):
                if i == 2:
                    for m in managers:
                        m.scale_out(R3, now=time.monotonic())
                sent = time.monotonic()
                for s in switches:
                    s.send(frames[i::bursts], gap_s=0.0002)
                assert time.monotonic() - sent < period_s, "a burst outlasted the period"
                time.sleep(1.5 * period_s)
            for s in switches:
                s.settle()
            got = [per_input(s.out) for s in switches]
            differ = sorted(k for k in set(got[0]) | set(got[1])
                            if got[0].get(k) != got[1].get(k))
            assert not differ, (f"{len(differ)} of {len(got[0])} inputs differ; first: "
                                + "; ".join(describe(k, got[0].get(k), got[1].get(k))
                                            for k in differ[:5]))
            shims = [pl.strip_shim(f)[0] for c in got[1].values() for (p, f), n in c.items()
                     if f[12:14] == ETHERTYPE_LEGO.to_bytes(2, "big") and p != LOG]
            assert {s.window for s in shims} == set(range(1, bursts + 1))
            marks = Counter(s.window for s in shims if s.mark)
            assert marks == {1: 2, 2: 2, 3: 3, 4: 3}  # every replica port, R3 from window 3
            for sw in switches:
                out = [(p, f) for p, f in sw.out if f[12:14] == b"\x88\xb5"]
                if log:
                    assert_logged(out)
                else:
                    assert not any(p == LOG for p, _ in out)
        finally:
            for s in switches:
                s.stop()


def test_p4runtime_shell_reads_bmv2_while_the_controller_is_primary(tmp_path):
    """The README's inspection recipe, unchanged, against BMv2."""
    from tests.support.p4rt import shell_reads

    with NetnsLab(5, prefix="lp") as lab:
        sw = Switch(KINDS[0], lab, "127.0.0.1:50083", tmp_path)
        try:
            sw.manager().sync()  # the controller's install, as primary (election id 10)
            out = shell_reads(sw.addr)
        finally:
            sw.stop()
    assert out["default"] == ["LegoIngress.set_groups"]
    assert out["owners"] == pl.N_BUCKETS
    assert out["sessions"] == [R1 + pl.CLONE_SESSION_BASE, R2 + pl.CLONE_SESSION_BASE]
    assert out["port_in"] > 0 and out["write"] != "accepted"  # a backup cannot write
