"""The LEGO network in Mininet: traffic host, P4 switch, NF hosts, management bridge.

:class:`LegoNet` builds a :class:`~lego.topo.topology.Topology`:

- one Mininet host per node, each with one dataplane link to the switch port
  the topology names (no OVS: the switch is a :mod:`~lego.topo.switches`
  class, the links plain veth pairs, no netem);
- IPv6 off in every host namespace and on the switch's ports (no router
  solicitations, MLD or DAD frames in the counts), no IPv4 address on
  dataplane interfaces, TX checksum offload off everywhere (DESIGN §9);
- a management network for the northbound: a Linux bridge in the root
  namespace holding the controller's address, and one veth per NF host
  (``<host>-mgmt`` inside, ``lgm-<host>`` on the bridge);
- a :class:`~lego.topo.cleanup.RunState` recording what was made, so a
  later ``make stop`` / ``lego run`` finds it even after a crash.

``stop`` collects nothing and raises nothing: it stops the switch and hosts,
deletes the links and the bridge, and runs the marker cleanup.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import time
from pathlib import Path

from mininet.net import Mininet
from mininet.node import Host

from lego.errors import LegoError
from lego.topo.cleanup import MARKER, STATE_PATH, RunState, cleanup, netns_inode
from lego.topo.switches import SWITCH_CLASSES, P4RuntimeSwitch
from lego.topo.topology import Topology

log = logging.getLogger(__name__)

RUN_SYSCTLS = {"net.core.rmem_default": 8 << 20, "net.core.netdev_max_backlog": 10000}


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise LegoError(f"{what}: {' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def mininet_available() -> str | None:
    """None when a Mininet run can be made here, else the one-line reason why not."""
    if os.geteuid() != 0:
        return "not root (Mininet needs root: sudo make run)"
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        return "Mininet is not importable (tools/setup-host installs and links it)"
    from shutil import which

    for tool in ("mnexec", "ip", "tcpreplay", "ethtool"):
        if which(tool) is None:
            return f"{tool} is not on PATH (tools/setup-host installs it)"
    return None


class LegoHost(Host):
    """A Mininet host with IPv6 off (set before its links exist) and offloads off."""

    def __init__(self, name: str, **params) -> None:
        Host.__init__(self, name, **params)
        self.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                 "net.ipv6.conf.default.disable_ipv6=1")


    def offloads_off(self) -> None:
        for intf in self.intfList():
            if intf.name != "lo":
                self.cmd(f"ethtool -K {intf.name} tx off rx off >/dev/null 2>&1")


class LegoNet:
    """Build, start and stop the network of one topology."""

    def __init__(self, topo: Topology, target: str, workdir: Path,
                 run_id: str | None = None, state_path: Path = STATE_PATH) -> None:
        self.topo = topo
        self.target = target
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id or secrets.token_hex(4)
        self.state_path = state_path
        self.net: Mininet | None = None
        self.state = RunState(self.run_id, os.getpid(), topo.interface_names())
        os.environ[MARKER] = self.run_id  # inherited by every host shell and process

    # ------------------------------------------------------------ lifecycle

    @property
    def switch(self) -> P4RuntimeSwitch:
        return self.net.get(self.topo.switch.name)

    def host(self, name: str) -> LegoHost:
        return self.net.get(name)

    def nf_iface(self, name: str) -> str:
        return f"{name}-eth0"

    @property
    def traffic_iface(self) -> str:
        return f"{self.topo.traffic.host}-eth0"

    def start(self) -> None:
        """Build and start everything; on any failure, undo what was made and raise."""
        # the bricks' AF_PACKET sockets take the default receive buffer (not per
        # namespace here): raise it for the run, restored by cleanup
        for key, want in RUN_SYSCTLS.items():
            path = Path("/proc/sys") / key.replace(".", "/")
            old = int(path.read_text().split()[0])
            if old < want:
                self.state.sysctls.setdefault(key, old)
                path.write_text(str(want))
        self.state.save(self.state_path)
        try:
            self._build()
        except BaseException:
            self.stop()
            raise

    def _build(self) -> None:
        t = self.topo
        cls = SWITCH_CLASSES[self.target]
        net = self.net = Mininet(topo=None, build=False, controller=None, autoSetMacs=False,
                                 host=LegoHost, waitConnected=False)
        sw = net.addSwitch(t.switch.name, cls=cls, device_id=t.switch.device_id,
                           grpc_addr=t.switch.grpc_addr, log_dir=self.workdir)
        tg = net.addHost(t.traffic.host, ip=None, mac=t.traffic.mac)
        net.addLink(tg, sw, port1=0, port2=t.traffic.port)
        for h in t.nf_hosts:
            host = net.addHost(h.name, ip=None)
            net.addLink(host, sw, port1=0, port2=h.port)
        if t.frame_log is not None:  # the switch's frame log, off the NF hosts
            net.addLink(net.addHost(t.frame_log.host, ip=None), sw, port1=0,
                        port2=t.frame_log.port)
        net.build()
        self.state.netns_inodes = [i for i in (netns_inode(hh.pid) for hh in net.hosts) if i]
        self.state.save(self.state_path)
        for intf in sw.intfList():
            if intf.name != "lo":
                _run(["sysctl", "-qw", f"net.ipv6.conf.{intf.name}.disable_ipv6=1"], "ipv6 off")
        for hh in net.hosts:
            hh.offloads_off()
        self._management()
        net.start()  # starts the switch: returns once its gRPC port listens
        self._wait_links_up()

    def _management(self) -> None:
        m = self.topo.management
        br = m.bridge
        _run(["ip", "link", "add", br, "type", "bridge"], "management bridge")
        _run(["sysctl", "-qw", f"net.ipv6.conf.{br}.disable_ipv6=1"], "ipv6 off")
        _run(["ip", "addr", "add", m.address, "dev", br], "management bridge")
        _run(["ip", "link", "set", br, "up"], "management bridge")
        for h in self.topo.nf_hosts:
            host = self.host(h.name)
            outside, inside = f"lgm-{h.name}", f"{h.name}-mgmt"
            _run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside,
                  "netns", str(host.pid)], f"management link of {h.name}")
            _run(["sysctl", "-qw", f"net.ipv6.conf.{outside}.disable_ipv6=1"], "ipv6 off")
            _run(["ip", "link", "set", outside, "master", br, "up"], "management link")
            host.cmd(f"ip addr add {h.mgmt_ip}/{m.prefixlen} dev {inside} && "
                     f"ip link set {inside} up && ip link set lo up && "
                     f"ethtool -K {inside} tx off >/dev/null 2>&1")

    def _wait_links_up(self, timeout: float = 10.0) -> None:
        names = [i.name for i in self.switch.intfList() if i.name != "lo"]
        deadline = time.monotonic() + timeout
        for name in names:
            while True:
                try:
                    state = Path(f"/sys/class/net/{name}/operstate").read_text().strip()
                except FileNotFoundError:
                    state = "absent"
                if state == "up":
                    break
                if time.monotonic() > deadline:
                    raise LegoError(f"switch port {name} is {state} after {timeout:.0f} s")
                time.sleep(0.02)  # polling link state up to a deadline

    def stop(self) -> None:
        """Stop the switch and hosts, delete links and the bridge, clean our processes."""
        net, self.net = self.net, None
        if net is not None:
            try:
                for sw in net.switches:
                    sw.stop_process()
                net.stop()
            except Exception:  # noqa: BLE001 - teardown goes on whatever failed
                log.exception("mininet stop failed; cleaning up by name")
        report = cleanup(self.topo.interface_names(), self.run_id, self.state_path)
        log.info("cleanup: %s", report.describe())
