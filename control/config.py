"""The controller's configuration file (TOML), declared as data and checked first.

    [switch]
    address = "127.0.0.1:9559"
    device_id = 0
    election_id = 1
    traffic_ports = [1]

    [northbound]
    bind = "10.0.0.254:50051"      # the management address (never a wildcard)
    token_file = "token"

    [nf]
    name = "..."                   # the NF (lego.nfs.<name>, or a module path; lego.nfs.DEFAULT)
    semantics = "lego"             # ... and the keys that NF declares (its options)
    model = "model.npz"
    results = "results"            # one folder per feature-extraction replica (port)
    source = "interface"           # interface (AF_PACKET on the host) | feed (tests)
    fe_initial = 1                 # feature-extraction replicas at start

    [graph]                        # the brick graph template of one replica
    batch = 1024
    flush_ms = 20
    hwm = 8
    window = 256
    stateless = 1                  # stateless replicas per graph at the start
    fuse = false                   # a graph's bricks in one process (lego.bricks.chain)

    [sla]
    latency_ms = 100.0
    profile = "results/profile.json"   # optional: `lego profile --out`, the initial costs

    [scaling]
    high = 0.8
    low = 0.3
    dwell = 1.0
    cooldown = 2.0
    max_replicas = 4
    period = 0.25
    standby = true                 # keep a warm ULN replica per graph (scale out = a route)
    fe = true                      # scale feature extraction (graphs on more switch ports)
    fe_standby = true              # keep one warm graph owning no buckets (scale out = a move)
    stateless = true               # scale the stateless replicas of each graph
    host_timeout = 0.7            # a host unheard this long (its Ray node gone) is lost
    rebalance_s = 5.0              # check the FE replicas' bucket loads this often (0: never)
    rebalance_tolerance = 0.2      # rebalance when the busiest > (1 + this) x the mean

    [placement]
    mode = "graph"                 # graph | brick

    [ray]                          # the cluster engine: one Ray node per NF host
    address = "10.0.0.254:6380"    # the head (GCS); "" = a local Ray started here
    namespace = "lego"             # the bricks' named actors live here
    workdir = "/tmp/lego-bricks"   # each host's bricks' sockets and logs: workdir/<host>
    max_restarts = 3               # Ray restarts a dead brick this often

    [recovery]                     # exact recovery of a dead brick (lego.bricks.recovery)
    checkpoint_s = 1.0             # checkpoint each FE brick this often (0: never)
    log_mib = 32.0                 # each source keeps what it sent since, up to this
    output_log_mib = 16.0          # each FE brick keeps its last outputs, up to this
    frame_log = ""                 # the switch's frame log (lego.switch.framelog), e.g.
                                   # "ipc:///tmp/lego/framelog.sock" ("": none): a lost
                                   # host's state is rebuilt from it and a checkpoint
    log_port = -1                  # the switch port behind it (-1: none)

    [[hosts]]
    name = "nf1"
    ports = [2]                    # its dataplane switch port(s); each can own buckets
    interfaces = ["nf1-eth1"]      # the interface behind each port (source = interface)
    cores = 2.0

Unknown keys and wrong types are refused before the domain rules
(:func:`load_config`); every error names the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lego import nfs
from lego.errors import ConfigError
from lego.tables import read_toml, typed_table

_SECTIONS: dict[str, dict[str, tuple[Any, Any]]] = {
    "switch": {"address": (str, "127.0.0.1:9559"), "device_id": (int, 0),
               "election_id": (int, 1), "traffic_ports": (list, None),
               "forward": (dict, {}), "truncate": (int, 0)},
    "northbound": {"bind": (str, "127.0.0.1:50051"), "token_file": (str, None)},
    "nf": {"name": (str, nfs.DEFAULT), "results": (str, "results"),
           "source": (str, "interface"), "fe_initial": (int, 1)},
    "graph": {"batch": (int, 1024), "flush_ms": (int, 20), "hwm": (int, 8),
              "window": (int, 256), "stateless": (int, 1), "write_scores": (bool, True),
              "shm": (bool, False), "fuse": (bool, False)},
    "sla": {"latency_ms": ((int, float), 100.0), "profile": (str, "")},
    "scaling": {"high": ((int, float), 0.8), "low": ((int, float), 0.3),
                "dwell": ((int, float), 1.0), "cooldown": ((int, float), 2.0),
                "max_replicas": (int, 4), "period": ((int, float), 0.25),
                "standby": (bool, True), "host_timeout": ((int, float), 0.7),
                "fe": (bool, True), "fe_standby": (bool, True), "stateless": (bool, True),
                "adopt_grace": ((int, float), 2.0), "rebalance_s": ((int, float), 5.0),
                "rebalance_tolerance": ((int, float), 0.2), "resize": (bool, False),
                "quota_budget": ((int, float), 0.0)},
    "placement": {"mode": (str, "graph")},
    "recovery": {"checkpoint_s": ((int, float), 0.0), "log_mib": ((int, float), 32.0),
                 "output_log_mib": ((int, float), 16.0), "frame_log": (str, ""),
                 "log_port": (int, -1)},
    "ray": {"address": (str, ""), "namespace": (str, "lego"), "workdir": (str, "/tmp/lego-bricks"),
            "max_restarts": (int, 3)},
}
_HOST_KEYS: dict[str, tuple[Any, Any]] = {"name": (str, None), "ports": (list, None),
                                          "interfaces": (list, []), "cores": ((int, float), 1.0)}


@dataclass(frozen=True)
class HostConfig:
    name: str
    ports: tuple[int, ...]
    interfaces: tuple[str, ...] = ()
    cores: float = 1.0


@dataclass(frozen=True)
class Config:
    switch: dict[str, Any]
    northbound: dict[str, Any]
    nf: dict[str, Any]
    graph: dict[str, Any]
    sla: dict[str, Any]
    scaling: dict[str, Any]
    placement: dict[str, Any]
    ray: dict[str, Any]
    recovery: dict[str, Any] = field(default_factory=lambda: {
        "checkpoint_s": 0.0, "log_mib": 32.0, "output_log_mib": 16.0, "frame_log": "",
        "log_port": -1})
    hosts: tuple[HostConfig, ...] = field(default_factory=tuple)
    where: str = "<config>"

    def host_of_port(self, port: int) -> HostConfig:
        for h in self.hosts:
            if port in h.ports:
                return h
        raise ConfigError(f"{self.where}: port {port} belongs to no [[hosts]] entry")

    def host(self, name: str) -> HostConfig:
        for h in self.hosts:
            if h.name == name:
                return h
        raise ConfigError(f"{self.where}: no [[hosts]] entry named {name!r}")

    def workdir(self, host: str) -> str:
        """Where ``host``'s bricks keep their sockets and logs (on that host)."""
        return str(Path(self.ray["workdir"]) / host)

    def interface_of(self, port: int) -> str:
        h = self.host_of_port(port)
        i = h.ports.index(port)
        if i >= len(h.interfaces):
            raise ConfigError(f"{self.where}: hosts {h.name!r}: no interface for port {port} "
                              f"(interfaces = {list(h.interfaces)})")
        return h.interfaces[i]

    @property
    def nf_options(self) -> dict[str, Any]:
        """The ``[nf]`` keys the NF declares (its own options)."""
        own = nfs.get(self.nf["name"]).options
        return {k: v for k, v in self.nf.items() if k in own}

    @property
    def splits_exactly(self) -> bool:
        """Algorithm 1 gives the NF an exact split: its keyed brick may be replicated."""
        return nfs.get(self.nf["name"]).splits_exactly(self.nf_options)

    @property
    def recovers(self) -> bool:
        """Exact recovery is on ([recovery].checkpoint_s) and the NF's keyed state can
        be exported by bucket (its split is exact): a checkpoint is that export."""
        return self.recovery["checkpoint_s"] > 0 and self.splits_exactly

    @property
    def recovers_hosts(self) -> bool:
        """A lost host's keyed state is rebuilt too: the switch keeps a frame log."""
        return self.recovers and bool(self.recovery["frame_log"])

    @property
    def all_ports(self) -> list[int]:
        return [p for h in self.hosts for p in h.ports]


def _typed(where: str, table: Any, keys: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """A checked table, numbers (int or float keys) as floats."""
    out = typed_table(where, table, keys)
    return {k: float(v) if keys[k][0] == (int, float) else v for k, v in out.items()}


def _nf_keys(table: Any, where: str) -> dict[str, tuple[Any, Any]]:
    """The ``[nf]`` keys: the framework's, and those the named NF declares."""
    keys = _SECTIONS["nf"]
    name = table.get("name", keys["name"][1]) if isinstance(table, dict) else keys["name"][1]
    if not isinstance(name, str):
        raise ConfigError(f"{where}: [nf].name: expected str, got {name!r}")
    try:
        nf = nfs.get(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: [nf].name: {exc}") from exc
    return {**keys, **nf.options}


def config_from_dict(data: dict, where: str = "<config>", base: Path | None = None) -> Config:
    """Check a parsed config (keys and types, then the domain rules)."""
    top = set(_SECTIONS) | {"hosts"}
    unknown = sorted(set(data) - top)
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r} (expected one of "
                          f"{', '.join(sorted(top))})")
    sections = {**_SECTIONS, "nf": _nf_keys(data.get("nf", {}), where)}
    sec = {name: _typed(f"{where}: [{name}]", data.get(name, {}), keys)
           for name, keys in sections.items() if name in data or
           all(d is not None for _, d in keys.values())}
    for name in _SECTIONS:
        if name not in sec:
            raise ConfigError(f"{where}: section [{name}] is required")
    hosts_raw = data.get("hosts")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise ConfigError(f"{where}: expected at least one [[hosts]] entry")
    hosts = []
    for i, h in enumerate(hosts_raw):
        t = _typed(f"{where}: hosts[{i}]", h, _HOST_KEYS)
        if not t["ports"] or not all(isinstance(p, int) and 0 <= p <= 510 for p in t["ports"]):
            raise ConfigError(f"{where}: hosts[{i}].ports: expected ports in 0..510, "
                              f"got {t['ports']!r}")
        if t["cores"] <= 0:
            raise ConfigError(f"{where}: hosts[{i}].cores: expected > 0, got {t['cores']}")
        hosts.append(HostConfig(t["name"], tuple(t["ports"]), tuple(t["interfaces"]),
                                float(t["cores"])))
    cfg = Config(**sec, hosts=tuple(hosts), where=where)
    _rules(cfg, base)
    return cfg


def _rules(cfg: Config, base: Path | None) -> None:
    w = cfg.where
    ports = cfg.all_ports
    if len(set(ports)) != len(ports):
        raise ConfigError(f"{w}: a port is listed by two hosts: {ports}")
    if len({h.name for h in cfg.hosts}) != len(cfg.hosts):
        raise ConfigError(f"{w}: two [[hosts]] have the same name")
    if set(cfg.switch["traffic_ports"]) & set(ports):
        raise ConfigError(f"{w}: [switch].traffic_ports {cfg.switch['traffic_ports']} overlap "
                          f"the NF hosts' ports {ports}")
    nf = nfs.get(cfg.nf["name"])
    nf.resolve(cfg.nf_options, f"{w}: [nf]")
    if cfg.nf["source"] not in ("interface", "feed"):
        raise ConfigError(f"{w}: [nf].source: expected interface or feed, got "
                          f"{cfg.nf['source']!r}")
    if not 1 <= cfg.nf["fe_initial"] <= len(ports):
        raise ConfigError(f"{w}: [nf].fe_initial: expected 1..{len(ports)} (the ports), got "
                          f"{cfg.nf['fe_initial']}")
    if (cfg.nf["fe_initial"] > 1 or cfg.scaling["fe"]) and not cfg.splits_exactly:
        raise ConfigError(f"{w}: [nf]: {nf.name} with {cfg.nf_options} has no exact split "
                          f"(Algorithm 1: {nf.plan(cfg.nf_options).describe()}): set "
                          "[nf].fe_initial = 1 and [scaling].fe = false")
    if cfg.placement["mode"] not in ("graph", "brick"):
        raise ConfigError(f"{w}: [placement].mode: expected graph or brick, got "
                          f"{cfg.placement['mode']!r}")
    if not 0 <= cfg.scaling["low"] < cfg.scaling["high"] <= 1:
        raise ConfigError(f"{w}: [scaling]: expected 0 <= low < high <= 1, got "
                          f"low={cfg.scaling['low']} high={cfg.scaling['high']}")
    if cfg.ray["max_restarts"] < 0:
        raise ConfigError(f"{w}: [ray].max_restarts: expected >= 0")
    if cfg.scaling["quota_budget"] < 0:
        raise ConfigError(f"{w}: [scaling].quota_budget: expected >= 0 cores (0: the "
                          "hosts' own cores, no room to resize)")
    if cfg.scaling["rebalance_s"] < 0 or cfg.scaling["rebalance_tolerance"] < 0:
        raise ConfigError(f"{w}: [scaling].rebalance_s and .rebalance_tolerance: expected >= 0")
    r = cfg.recovery
    if r["checkpoint_s"] < 0 or r["log_mib"] <= 0 or r["output_log_mib"] <= 0:
        raise ConfigError(f"{w}: [recovery]: expected checkpoint_s >= 0 (0: off), log_mib "
                          f"and output_log_mib > 0, got {r}")
    if bool(r["frame_log"]) != (r["log_port"] >= 0):
        raise ConfigError(f"{w}: [recovery]: frame_log and log_port go together (the "
                          f"frame log's address and its switch port), got frame_log="
                          f"{r['frame_log']!r} log_port={r['log_port']}")
    taken = {*ports, *cfg.switch["traffic_ports"], *(int(k) for k in cfg.switch["forward"]),
             *cfg.switch["forward"].values()}
    if r["log_port"] in taken:
        raise ConfigError(f"{w}: [recovery].log_port: {r['log_port']} is an NF host's, a "
                          "traffic or a forwarded port")
    if r["frame_log"] and not cfg.recovers:
        raise ConfigError(f"{w}: [recovery].frame_log: needs checkpoints (checkpoint_s > 0) "
                          f"of an NF with an exact split, got checkpoint_s="
                          f"{r['checkpoint_s']} for {cfg.nf['name']}")
    if r["frame_log"] and cfg.nf["source"] != "interface":
        raise ConfigError(f"{w}: [recovery].frame_log: the lost port's frames go to its "
                          f"successor's interface source; [nf].source is "
                          f"{cfg.nf['source']!r}")
    if cfg.graph["stateless"] < 1 or cfg.graph["batch"] < 1:
        raise ConfigError(f"{w}: [graph].stateless and .batch: expected >= 1")
    if cfg.graph["fuse"] and (cfg.graph["stateless"] != 1 or cfg.scaling["stateless"]
                              or cfg.scaling["standby"] or cfg.placement["mode"] != "graph"):
        raise ConfigError(f"{w}: [graph].fuse: a graph's bricks run as one process, so its "
                          "stateless brick is not replicated alone: set [graph].stateless = 1, "
                          "[scaling].stateless = false, [scaling].standby = false and "
                          f"[placement].mode = \"graph\", got stateless={cfg.graph['stateless']}"
                          f", scaling.stateless={cfg.scaling['stateless']}, standby="
                          f"{cfg.scaling['standby']}, mode={cfg.placement['mode']!r}")
    if cfg.nf["source"] == "interface":
        for p in ports:
            cfg.interface_of(p)
    if base is not None:
        for sec, key in (("nf", "model"), ("nf", "results"), ("northbound", "token_file"),
                         ("sla", "profile"), ("ray", "workdir")):
            v = getattr(cfg, sec).get(key)  # an NF's model path, where it has one
            if v and not Path(v).is_absolute():
                getattr(cfg, sec)[key] = str(base / v)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    data = read_toml(path, "controller config", ConfigError)
    return config_from_dict(data, str(path), path.parent)
