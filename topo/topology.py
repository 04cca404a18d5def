"""Topology files (TOML) for the Mininet system: parse, validate, freeze.

A file names the switch (target ``auto | soft | bmv2``, device id, P4Runtime
address), the management network (a Linux bridge in the root namespace that
carries the northbound API), the traffic host (its switch port and the replay
profile) and the NF hosts (switch port, core budget, management address). Each
host has one dataplane link, to the switch port it names. See
``topo/default.toml``.

Keys and types are declared as data and checked first (unknown keys, wrong
types), then the domain rules; every error is a :class:`TopologyError` that
names the file and the key, the expected value and the one received.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lego.errors import ConfigError
from lego.p4src.contract import MAX_REPLICA_PORT
from lego.tables import read_toml, typed_table

DEFAULT_TOPOLOGY = Path(__file__).resolve().with_name("default.toml")
TARGETS = ("auto", "soft", "bmv2")
PROFILES = ("ramp", "fixed", "capacity")
MAX_PORT = 510
#: an NF host's port: its clone session (port + 1) below the frame log's and the marks'
MAX_NF_PORT = MAX_REPLICA_PORT
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # + "-eth0" / "-mgmt" stays within IFNAMSIZ
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_ADDR = re.compile(r"^([\w.\-]+):(\d{1,5})$")


class TopologyError(ConfigError):
    """A topology file is invalid (names the file, the key, expected and received)."""


# key -> (type, default); default None = required
_SWITCH = {"name": (str, "s1"), "target": (str, "auto"), "device_id": (int, 0),
           "grpc_addr": (str, "127.0.0.1:9559")}
_MGMT = {"bridge": (str, "lgmgmt0"), "address": (str, "10.99.0.1/24"),
         "northbound_port": (int, 50051)}
_TRAFFIC = {"host": (str, "tg"), "port": (int, 1), "mac": (str, "02:00:00:00:00:01"),
            "profile": (str, "ramp"), "pps": (list, []), "load": (list, []),
            "step_s": ((int, float), 4.0)}
_NF = {"name": (str, None), "port": (int, None), "cores": ((int, float), 1.0),
       "mgmt_ip": (str, None)}
_NF_DEFAULTS = {"replicas": (int, 1)}
_FRAME_LOG = {"host": (str, "lg"), "port": (int, None), "mib": ((int, float), 64.0)}
_TOP = {"switch": _SWITCH, "management": _MGMT, "traffic": _TRAFFIC,
        "nf_defaults": _NF_DEFAULTS, "frame_log": _FRAME_LOG}


@dataclass(frozen=True)
class SwitchSpec:
    name: str
    target: str
    device_id: int
    grpc_addr: str

    @property
    def grpc_port(self) -> int:
        return int(self.grpc_addr.rsplit(":", 1)[1])


@dataclass(frozen=True)
class ManagementSpec:
    bridge: str
    address: str  # CIDR of the root namespace on the bridge
    northbound_port: int

    @property
    def controller_ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_interface(self.address).network.prefixlen

    @property
    def northbound(self) -> str:
        return f"{self.controller_ip}:{self.northbound_port}"


@dataclass(frozen=True)
class TrafficSpec:
    host: str
    port: int
    mac: str
    profile: str
    pps: tuple[int, ...]  # ramp | fixed: the replay's packets/s
    load: tuple[float, ...] = ()  # capacity: each step's rate in replica capacities
    step_s: float = 4.0  # capacity: seconds per step


@dataclass(frozen=True)
class NFHostSpec:
    name: str
    port: int
    cores: float
    mgmt_ip: str


@dataclass(frozen=True)
class FrameLogSpec:
    """The switch's frame log: a host on its own switch port, off the NF hosts, that
    keeps a copy of every frame sent to a replica (lego.switch.framelog)."""

    host: str
    port: int
    mib: float


@dataclass(frozen=True)
class Topology:
    switch: SwitchSpec
    management: ManagementSpec
    traffic: TrafficSpec
    nf_hosts: tuple[NFHostSpec, ...]
    replicas: int  # NF hosts that own buckets at the start
    where: str = "<topology>"
    frame_log: FrameLogSpec | None = None

    def nf(self, name: str) -> NFHostSpec:
        for h in self.nf_hosts:
            if h.name == name:
                return h
        raise TopologyError(f"{self.where}: no NF host named {name!r} "
                            f"(hosts: {', '.join(h.name for h in self.nf_hosts)})")

    @property
    def active(self) -> tuple[NFHostSpec, ...]:
        """The NF hosts that hold buckets at the start."""
        return self.nf_hosts[:self.replicas]

    def host_names(self) -> list[str]:
        log = [self.frame_log.host] if self.frame_log else []
        return [self.traffic.host, *(h.name for h in self.nf_hosts), *log]

    def interface_names(self) -> list[str]:
        """Every interface this topology creates in the root namespace (cleanup)."""
        s = self.switch.name
        names = [f"{s}-eth{self.traffic.port}", *(f"{s}-eth{h.port}" for h in self.nf_hosts)]
        names += [f"{s}-eth{self.frame_log.port}"] if self.frame_log else []
        names += [f"{self.management.bridge}", *(f"lgm-{h.name}" for h in self.nf_hosts)]
        return names

    def with_replicas(self, replicas: int) -> Topology:
        check_replicas(replicas, len(self.nf_hosts), f"{self.where}: replicas")
        return dataclasses.replace(self, replicas=replicas)

    def with_target(self, target: str) -> Topology:
        if target not in TARGETS:
            raise TopologyError(f"{self.where}: switch.target: expected one of {TARGETS}, "
                                f"got {target!r}")
        return dataclasses.replace(self, switch=dataclasses.replace(self.switch, target=target))


# ---------------------------------------------------------------- parsing


def load_topology(path: str | Path | None = None) -> Topology:
    """Read and check a topology file (default: ``topo/default.toml``)."""
    path = Path(path) if path is not None else DEFAULT_TOPOLOGY
    data = read_toml(path, "topology file", TopologyError)
    return topology_from_dict(data, str(path))


def _typed(where: str, table: Any, keys: Mapping[str, tuple[Any, Any]]) -> dict[str, Any]:
    return typed_table(where, table, keys, TopologyError)


def check_replicas(replicas: int, hosts: int, where: str) -> None:
    if not 1 <= replicas <= hosts:
        raise TopologyError(f"{where}: expected 1..{hosts} (the NF hosts in the topology), "
                            f"got {replicas}")


def topology_from_dict(data: Mapping[str, Any], where: str = "<topology>") -> Topology:
    """A checked, frozen Topology from parsed TOML (or an equivalent dict)."""
    unknown = sorted(set(data) - set(_TOP) - {"nf"})
    if unknown:
        raise TopologyError(f"{where}: unknown table {unknown[0]!r} (expected "
                            f"{', '.join(sorted([*_TOP, 'nf']))})")
    sw = _typed(f"{where}: switch", data.get("switch", {}), _SWITCH)
    mg = _typed(f"{where}: management", data.get("management", {}), _MGMT)
    tr = _typed(f"{where}: traffic", data.get("traffic", {"pps": [1000]}), _TRAFFIC)
    nd = _typed(f"{where}: nf_defaults", data.get("nf_defaults", {}), _NF_DEFAULTS)
    raw_nf = data.get("nf", [])
    if not isinstance(raw_nf, list) or not raw_nf:
        raise TopologyError(f"{where}: nf: expected at least one [[nf]] host table, "
                            f"got {raw_nf!r}")
    nfs = [_typed(f"{where}: nf[{i}]", t, _NF) for i, t in enumerate(raw_nf)]

    # ---- domain rules
    if sw["target"] not in TARGETS:
        raise TopologyError(f"{where}: switch.target: expected one of {TARGETS}, "
                            f"got {sw['target']!r}")
    m = _ADDR.match(sw["grpc_addr"])
    if not m or not 0 < int(m.group(2)) < 65536:
        raise TopologyError(f"{where}: switch.grpc_addr: expected HOST:PORT, "
                            f"got {sw['grpc_addr']!r}")
    if sw["device_id"] < 0:
        raise TopologyError(f"{where}: switch.device_id: expected >= 0, got {sw['device_id']}")
    try:
        mgmt_if = ipaddress.ip_interface(mg["address"])
    except ValueError:
        raise TopologyError(f"{where}: management.address: expected an address/prefix such "
                            f"as 10.99.0.1/24, got {mg['address']!r}") from None
    if mgmt_if.version != 4 or mgmt_if.network.prefixlen == 32:
        raise TopologyError(f"{where}: management.address: expected an IPv4 address with a "
                            f"network prefix (e.g. /24), got {mg['address']!r}")
    if not 0 < mg["northbound_port"] < 65536:
        raise TopologyError(f"{where}: management.northbound_port: expected 1..65535, "
                            f"got {mg['northbound_port']}")
    if not mg["bridge"].startswith("lg") or len(mg["bridge"]) > 15:
        raise TopologyError(f"{where}: management.bridge: expected a name starting with 'lg' "
                            f"(cleanup finds it by that) of at most 15 characters, "
                            f"got {mg['bridge']!r}")
    if tr["profile"] not in PROFILES:
        raise TopologyError(f"{where}: traffic.profile: expected one of {PROFILES}, "
                            f"got {tr['profile']!r}")
    pps = tr["pps"]
    if tr["profile"] == "capacity":
        load = tr["load"]
        if not load or not all(isinstance(x, int | float) and not isinstance(x, bool) and x > 0
                               for x in load):
            raise TopologyError(f"{where}: traffic.load: expected a list of rates > 0 in "
                                f"replica capacities (e.g. [0.5, 1.5, 2.6]), got {load!r}")
        if not 0 < tr["step_s"] <= 600:
            raise TopologyError(f"{where}: traffic.step_s: expected seconds in (0, 600], "
                                f"got {tr['step_s']}")
    elif not pps or not all(isinstance(p, int) and not isinstance(p, bool) and p > 0
                          for p in pps):
        raise TopologyError(f"{where}: traffic.pps: expected a list of packets/s > 0, "
                            f"got {pps!r}")
    if tr["profile"] == "fixed" and len(pps) != 1:
        raise TopologyError(f"{where}: traffic.pps: a fixed profile takes one rate, "
                            f"got {pps!r}")
    if not _MAC.match(tr["mac"]):
        raise TopologyError(f"{where}: traffic.mac: expected aa:bb:cc:dd:ee:ff, "
                            f"got {tr['mac']!r}")
    fl = _typed(f"{where}: frame_log", data["frame_log"], _FRAME_LOG) \
        if "frame_log" in data else None
    if fl is not None and not 0 < fl["mib"] <= 4096:
        raise TopologyError(f"{where}: frame_log.mib: expected MiB in (0, 4096], "
                            f"got {fl['mib']}")
    names = [sw["name"], tr["host"], *(n["name"] for n in nfs),
             *([fl["host"]] if fl else [])]
    for i, name in enumerate(names):
        key = "switch.name" if i == 0 else "traffic.host" if i == 1 else \
            "frame_log.host" if fl and i == len(names) - 1 else f"nf[{i - 2}].name"
        if not _NAME.match(name):
            raise TopologyError(f"{where}: {key}: expected a lowercase name of 1-8 letters "
                                f"and digits starting with a letter, got {name!r}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TopologyError(f"{where}: node name {dup[0]!r} is used twice")
    ports = [tr["port"], *(n["port"] for n in nfs), *([fl["port"]] if fl else [])]
    for i, p in enumerate(ports):
        nf_port = 0 < i <= len(nfs)
        key = "traffic.port" if i == 0 else f"nf[{i - 1}].port" if nf_port \
            else "frame_log.port"
        top = MAX_NF_PORT if nf_port else MAX_PORT
        if not 1 <= p <= top:
            raise TopologyError(f"{where}: {key}: expected a switch port in 1..{top}, "
                                f"got {p}")
    dup_p = sorted({p for p in ports if ports.count(p) > 1})
    if dup_p:
        raise TopologyError(f"{where}: switch port {dup_p[0]} is given to two hosts")
    seen_ips = {str(mgmt_if.ip)}
    for i, n in enumerate(nfs):
        if not 0 < n["cores"] <= 64:
            raise TopologyError(f"{where}: nf[{i}].cores: expected a core budget in (0, 64], "
                                f"got {n['cores']}")
        try:
            ip = ipaddress.ip_address(n["mgmt_ip"])
        except ValueError:
            raise TopologyError(f"{where}: nf[{i}].mgmt_ip: expected an IPv4 address, "
                                f"got {n['mgmt_ip']!r}") from None
        if ip not in mgmt_if.network or ip in (mgmt_if.network.network_address,
                                               mgmt_if.network.broadcast_address):
            raise TopologyError(f"{where}: nf[{i}].mgmt_ip: expected a host address in the "
                                f"management network {mgmt_if.network}, got {n['mgmt_ip']}")
        if str(ip) in seen_ips:
            raise TopologyError(f"{where}: nf[{i}].mgmt_ip: {ip} is already taken")
        seen_ips.add(str(ip))
    check_replicas(nd["replicas"], len(nfs), f"{where}: nf_defaults.replicas")
    return Topology(
        SwitchSpec(sw["name"], sw["target"], sw["device_id"], sw["grpc_addr"]),
        ManagementSpec(mg["bridge"], mg["address"], mg["northbound_port"]),
        TrafficSpec(tr["host"], tr["port"], tr["mac"], tr["profile"], tuple(pps),
                    tuple(float(x) for x in tr["load"]), float(tr["step_s"])),
        tuple(NFHostSpec(n["name"], n["port"], float(n["cores"]), n["mgmt_ip"]) for n in nfs),
        nd["replicas"], where,
        FrameLogSpec(fl["host"], fl["port"], float(fl["mib"])) if fl else None)
