"""Where a new replica goes: fractional cores, in-host first.

Hosts offer a number of cores; each brick replica asks for a fraction of a core
(its measured utilisation, or a configured share). A new replica of a brick type
goes to the host that already runs that graph when it has room (IPC stays on one
host). When that host is full, by configuration either:

- ``graph``: a whole new brick graph on another host (the traffic for the new
  graph is split at the switch; no cross-host hop inside the NF), or
- ``brick``: only the overloaded brick on another host (its batches cross the
  network; uses fractional capacity better).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lego.errors import ConfigError

MODES = ("graph", "brick")


@dataclass
class Host:
    name: str
    cores: float
    used: float = 0.0
    replicas: list[tuple[str, float]] = field(default_factory=list)  # (brick type, share)

    @property
    def free(self) -> float:
        return self.cores - self.used

    def add(self, brick_type: str, share: float) -> None:
        self.replicas.append((brick_type, share))
        self.used += share


@dataclass(frozen=True)
class Placement:
    """What to start: (host, brick type, core share) for each new replica."""

    starts: tuple[tuple[str, str, float], ...]
    mode: str


def place_replica(hosts: list[Host], home: str, brick_type: str, share: float,
                  graph: dict[str, float], mode: str = "brick") -> Placement:
    """Place one more replica of ``brick_type`` (``share`` of a core).

    ``home``: the host running the brick graph; ``graph``: brick type -> share, the
    whole graph, used in ``graph`` mode. Raises ConfigError when nothing fits.
    """
    if mode not in MODES:
        raise ConfigError(f"placement mode: expected one of {MODES}, got {mode!r}")
    if share <= 0:
        raise ConfigError(f"placement: expected a core share > 0, got {share}")
    by_name = {h.name: h for h in hosts}
    if home not in by_name:
        raise ConfigError(f"placement: unknown home host {home!r}; hosts are {sorted(by_name)}")
    if by_name[home].free >= share:
        by_name[home].add(brick_type, share)
        return Placement(((home, brick_type, share),), "in-host")
    others = sorted((h for h in hosts if h.name != home), key=lambda h: (-h.free, h.name))
    if mode == "brick":
        for h in others:
            if h.free >= share:
                h.add(brick_type, share)
                return Placement(((h.name, brick_type, share),), "brick")
    else:
        need = sum(graph.values())
        for h in others:
            if h.free >= need:
                for t, s in graph.items():
                    h.add(t, s)
                return Placement(tuple((h.name, t, s) for t, s in graph.items()), "graph")
    raise ConfigError(f"placement: no host has {share if mode == 'brick' else sum(graph.values())}"
                      f" free cores for {brick_type!r} ({mode} mode); free: "
                      + ", ".join(f"{h.name}={h.free:.2f}" for h in hosts))
