"""The controller's scaling decisions: ULN and FE scale-out and scale-in, where a
new replica goes, and the periodic rebalance of buckets between FE replicas.

:class:`ElasticDecisions` is the middle layer of
:class:`~lego.control.core.ControllerCore` (events in, commands out, ``now``
passed in): it reads and changes the registry below it and returns
:class:`~lego.control.registry.Command` records; *when* to scale is
:class:`~lego.control.policy_scaling.ScalingPolicy`'s call, *where* is
:func:`~lego.control.policy_placement.place_replica`'s. The core's docstring
tells the whole policy (ULN, FE, rebalance, faults).
"""

from __future__ import annotations

import math

from lego.control.config import Config
from lego.control.graph_specs import host_ip, remote_replica_spec, replica_spec, tcp_port
from lego.control.policy_placement import Host, place_replica
from lego.control.policy_scaling import Action, ScalingConfig, ScalingPolicy, brick_deadlines
from lego.control.registry import BrickRec, Command, GraphRec, Registry, brick_name
from lego.errors import ConfigError

#: the scaling policy's name for the FE replicas (whole graphs)
FE = "fe"
#: a hot host's quota grows at least by this factor (a saturated host's utilisation,
#: about 1, hides how much more it needs)
RESIZE_STEP = 1.5
#: quotas are whole multiples of this (cores)
RESIZE_GRAIN = 0.05


def _on_grain(cores: float, rounding=math.ceil) -> float:
    """``cores`` rounded to a whole number of grains (up, or ``math.floor``); the
    float noise of ``cores / grain`` is taken off first."""
    return round(RESIZE_GRAIN * rounding(round(cores / RESIZE_GRAIN, 4)), 3)


class ElasticDecisions(Registry):
    """Scale-out, scale-in and rebalance over the registry."""

    def __init__(self, cfg: Config, costs: dict[str, float] | None = None) -> None:
        super().__init__(cfg)
        sc = cfg.scaling
        self.policy = ScalingPolicy(ScalingConfig(
            high=sc["high"], low=sc["low"], dwell=sc["dwell"], cooldown=sc["cooldown"],
            max_replicas=sc["max_replicas"]))
        self.deadlines: dict[str, float] = {}
        self.costs: dict[str, float] = dict(costs or {})
        # rebalance: the last load window (start, end, load per replica port), switch
        # commands issued and not yet done, when the last one ended, the next check
        self.bucket_window: tuple[float, float, dict[int, float]] | None = None
        self.switch_busy = 0
        self.last_move_t: float | None = None
        self.next_rebalance = 0.0
        self.window_used = float("-inf")
        # resize: each port's heaviest bucket's share of its load (last window), and
        # per host: since when it has been hot / cold, its last resize, one under way
        self.hot_share: dict[int, float] = {}
        self.size_since: dict[str, tuple[str, float]] = {}
        self.last_resize: dict[str, float] = {}
        self.resizing: set[str] = set()
        self.no_room: set[str] = set()  # hosts told "no capacity" in this hot spell

    def _keep_fe_standby(self, now: float, prefer: str | None = None) -> list[Command]:
        """Start a warm FE standby graph on a free port unless one exists (or FE
        scaling or the standby is off, or no host has a free port and the cores)."""
        sc = self.cfg.scaling
        if not (sc["fe"] and sc["fe_standby"]) or self.standby_graphs():
            return []
        for host, port in self.free_ports(prefer=prefer):
            if self._fits_graph(host):
                return self._add_graph(now, host, port, base=-1, fe_standby=True)
        return []

    # ------------------------------------------------------------ rebalance

    def on_bucket_loads(self, start: float, end: float, loads: dict[int, float],
                        heaviest: dict[int, float] | None = None) -> None:
        """The FE replicas' loads (packets, mirrors weighted) over [start, end], by
        switch port, under the assignment the switch held then; ``heaviest``: the
        load of each port's heaviest bucket."""
        self.bucket_window = (start, end, {int(p): float(v) for p, v in loads.items()})
        self.hot_share = {int(p): float(h) / loads[p] for p, h in (heaviest or {}).items()
                          if loads.get(p, 0) > 0}

    def on_switch_done(self, now: float, kind: str, moved: int = 0) -> None:
        """The I/O finished (or failed) a switch command: the rebalance's and the FE
        policy's cooldowns start now."""
        self.switch_busy = max(0, self.switch_busy - 1)
        self.last_move_t = now
        self.policy.hold(FE, now)

    def _rebalance(self, now: float) -> list[Command]:
        sc = self.cfg.scaling
        if sc["rebalance_s"] <= 0 or self.switch_busy or now < self.next_rebalance \
                or self.bucket_window is None:
            return []
        start, end, loads = self.bucket_window
        if end <= self.window_used:
            return []  # this window was judged already
        if self.last_move_t is not None and (start < self.last_move_t or
                                             now - self.last_move_t < sc["cooldown"]):
            return []  # measured (partly) under an older assignment, or cooling down
        live = {g.port for g in self.live_graphs()}
        if len(loads) < 2 or not set(loads) <= live or any(g.draining for g in self.graphs.values()
                                                           if g.port in loads):
            return []  # a single replica, or a scale operation under way
        self.window_used = end
        self.next_rebalance = now + sc["rebalance_s"]
        total = sum(loads.values())
        mean = total / len(loads)
        hi = max(loads, key=lambda p: (loads[p], -p))
        if total <= 0 or loads[hi] <= (1.0 + sc["rebalance_tolerance"]) * mean:
            return []
        self.switch_busy += 1
        self.event(now, "rebalance", port=hi, ratio=round(loads[hi] / mean, 3),
                   loads={str(p): round(v, 1) for p, v in sorted(loads.items())})
        return [Command("switch_rebalance", self.graphs[hi].host, hi,
                        {"tolerance": sc["rebalance_tolerance"]})]

    # ------------------------------------------------------------ ULN (per graph)

    def _update_deadlines(self) -> None:
        """SLA split by per-batch cost: the profile's at first (``lego profile``),
        folded with each live report since (exponential average, on_heartbeat)."""
        if self.costs and sum(self.costs.values()) > 0:
            self.deadlines = brick_deadlines(self.cfg.sla["latency_ms"] / 1e3, self.costs)

    def _scale_uln(self, now: float, g: GraphRec) -> list[Command]:
        ulns = [b for b in self.graph_bricks(g.port, self.chain.stateless)
                if not b.standby and not b.retired]
        if not ulns or any(not b.load for b in ulns):
            return []
        growth = sum(b.depth_growth for b in ulns)
        d = self.policy.observe(f"uln@{g.port}", now, [b.util for b in ulns], growth)
        if d is None:
            return []
        fm = self.bricks[brick_name(self.chain.router, g.port)]
        out = fm.spec["outlets"][0]
        dec = brick_name(self.chain.sink, g.port)
        if d.action is Action.SCALE_OUT:
            spare = [b for b in self.graph_bricks(g.port, self.chain.stateless) if b.standby]
            cmds, warm = [], bool(spare)
            if not spare:
                if self._used(g.host) + 1.0 > self.hosts[g.host].cores + 1e-9:
                    return self._uln_elsewhere(now, g, d.reason)
                spec = self._uln_spec(g)
                b = self.bricks[f"{spec['node']}/{spec['serial']}"] = BrickRec(
                    f"{spec['node']}/{spec['serial']}", g.host, g.port, self.chain.stateless, spec,
                    last_seen=now)
                cmds.append(Command("start", g.host, g.port, {"specs": [spec]}))
                spare = [b]
            new = spare[0]
            new.standby = False
            out["addresses"] = out["addresses"] + [new.spec["inlet"]]
            cmds += [Command("control", g.host, g.port, {"brick": dec, "cmd": {
                         "op": "add_upstream", "n": 1}}),
                     Command("control", g.host, g.port, {"brick": fm.id, "cmd": {
                         "op": "route", "target": out["target"],
                         "addresses": out["addresses"]}}, )]
            self.event(now, "scale_out", brick=self.chain.stateless, port=g.port,
                       replicas=len(ulns) + 1, reason=d.reason, t_detect=now, replica=new.id,
                       warm=warm)
            if self.cfg.scaling["standby"] and self._used(g.host) + 1.0 <= \
                    self.hosts[g.host].cores + 1e-9:
                spec = self._uln_spec(g)
                self.bricks[f"{spec['node']}/{spec['serial']}"] = BrickRec(
                    f"{spec['node']}/{spec['serial']}", g.host, g.port, self.chain.stateless, spec,
                    last_seen=now, standby=True)
                cmds.append(Command("start", g.host, g.port, {"specs": [spec]}))
            return cmds
        return self._retire_uln(now, g, ulns[-1], d.reason)

    def _retire_uln(self, now: float, g: GraphRec, victim: BrickRec,
                    reason: str) -> list[Command]:
        """Scale-in: the mapping brick stops routing to ``victim`` and sends it an
        end marker (it finishes its queue, sends its end to the decision, ends),
        on this host or another (``brick`` placement) alike."""
        fm = self.bricks[brick_name(self.chain.router, g.port)]
        out = fm.spec["outlets"][0]
        victim.retired = True
        out["addresses"] = [a for a in out["addresses"] if a != victim.spec["inlet"]]
        self.event(now, "scale_in", brick=self.chain.stateless, port=g.port, host=victim.host,
                   replicas=len(out["addresses"]), reason=reason, replica=victim.id)
        return [Command("control", g.host, g.port, {"brick": fm.id, "cmd": {
            "op": "route", "target": out["target"], "addresses": out["addresses"],
            "retire": [victim.spec["inlet"]]}})]

    def _next_uln(self, g: GraphRec) -> tuple[dict, int]:
        """A ULN replica's spec to copy and the serial of the next one of graph ``g``."""
        g.next_uln += 1
        return next(b.spec for b in self.graph_bricks(g.port, self.chain.stateless)), g.next_uln - 1

    def _uln_spec(self, g: GraphRec) -> dict:
        template, serial = self._next_uln(g)
        return replica_spec(template, g.port, serial, self.hosts[g.host].workdir)

    # ------------------------------------------------------------ capacity

    def _used(self, host: str) -> float:
        """Cores in use on a host: one per ULN or FE replica, the rest share one."""
        n = sum(1 for b in self.bricks.values() if b.host == host and not b.retired
                and b.role in (self.chain.stateless, self.chain.keyed))
        return n + 0.5 * len([g for g in self.graphs.values() if g.host == host])

    def _fits_graph(self, host: str) -> bool:
        """Room for one more graph: a host's first graph always fits (it gets the
        whole host, a quota of a fraction of a core included), a further one needs
        two free cores."""
        return not any(g.host == host for g in self.graphs.values()) or \
            self._used(host) + 2.0 <= self.hosts[host].cores + 1e-9

    def fe_util(self, g: GraphRec) -> float:
        """An FE replica's load: its host's CPU over its quota when the host has one
        (the graph's bricks share that quota, so that is what runs out), else the
        feature brick's busy fraction."""
        a = self.hosts[g.host]
        if a.quota and sum(1 for h in self.live_graphs() if h.host == g.host) == 1:
            return a.util
        return self.bricks[brick_name(self.chain.keyed, g.port)].util

    # ------------------------------------------------------------ resize (one host)

    def _resize(self, now: float) -> list[Command]:
        """A host's CPU quota up when its load cannot be split (its heaviest bucket
        alone keeps it above the high watermark: no move or new replica can take it
        off), while the quota budget has room; back down, never below the host's
        own cores, when it is cold. A host with no live graph goes back at once."""
        sc = self.cfg.scaling
        if not sc["resize"]:
            return []
        cmds: list[Command] = []
        live = self.live_graphs()
        for host, a in self.hosts.items():
            base = self.cfg.host(host).cores
            mine = [g for g in live if g.host == host]
            if host in self.resizing or not a.quota or not a.alive:
                continue
            if not mine:
                if a.cores > base + 1e-9:
                    cmds += self._resize_to(now, host, None, base, "no live graph")
                continue
            if len(mine) == 1:
                cmds += self._resize_one(now, mine[0], base)
        return cmds

    def _resize_one(self, now: float, g: GraphRec, base: float) -> list[Command]:
        sc, a = self.cfg.scaling, self.hosts[g.host]
        share = self.hot_share.get(g.port, 0.0)
        state = "hot" if a.util > sc["high"] and self._one_bucket_holds(g, a.util) else \
            "cold" if a.util < sc["low"] and a.cores > base + 1e-9 else ""
        kind, since = self.size_since.get(g.host, ("", now))
        if state != kind:
            self.size_since[g.host] = (state, now)
            self.no_room.discard(g.host)
            return []
        if not state or now - since < sc["dwell"] or \
                now - self.last_resize.get(g.host, float("-inf")) < sc["cooldown"]:
            return []
        target = (sc["high"] + sc["low"]) / 2
        held = f"{now - since:.1f} s"
        if state == "hot":
            want = a.cores * max(RESIZE_STEP, a.util / target)
            room = self._quota_room(g.host)
            cores = min(_on_grain(want), _on_grain(room, math.floor))
            if cores <= a.cores + 1e-9:
                self.last_resize[g.host] = now
                if g.host in self.no_room:
                    return []
                self.no_room.add(g.host)  # said once per hot spell
                self.event(now, "no_capacity", brick=self.chain.keyed, port=g.port,
                           host=g.host, reason=f"one bucket holds {share:.0%} of the load and "
                           f"the quota budget ({sc['quota_budget']:g} cores) is spent")
                return []
            reason = (f"utilisation {a.util:.3f} > {sc['high']} for {held}, "
                      f"one bucket {share:.0%} of its load")
        else:
            cores = max(base, _on_grain(a.cores * a.util / target))
            if cores >= a.cores - 1e-9:
                return []
            reason = f"utilisation {a.util:.3f} < {sc['low']} for {held}"
        return self._resize_to(now, g.host, g.port, cores, reason)

    def _resize_to(self, now: float, host: str, port: int | None, cores: float,
                   reason: str) -> list[Command]:
        a = self.hosts[host]
        # the host's actor to write its cgroup: a brick not on its way out (a draining
        # graph's exit), the keyed one first
        draining = {g.port for g in self.graphs.values() if g.draining}
        actors = sorted((b for b in self.bricks.values() if b.host == host and not b.retired
                         and b.port not in draining),
                        key=lambda b: (b.role != self.chain.keyed, b.id))
        if not actors:
            return []
        self.resizing.add(host)
        self.last_resize[host] = now
        self.size_since.pop(host, None)
        self.event(now, "scale_up" if cores > a.cores else "scale_down",
                   brick=self.chain.keyed, host=host, port=port if port is not None else -1,
                   cores_before=a.cores, cores=cores, reason=reason, t_detect=now)
        return [Command("resize", host, port if port is not None else -1,
                        {"cores": cores, "brick": actors[0].id})]

    def _resize_answers(self, live: list[GraphRec], util: dict[int, float]) -> bool:
        """Every FE replica over the high watermark is held there by one bucket and
        its host's quota may still grow: the resize (:meth:`_resize`) is the answer,
        not a scale-out. A new replica would not take that bucket's load off (it
        cannot be split), and its state move would wait behind the saturated
        replica's backlog for seconds (measured: 1.95 s, 3,269 packets held)."""
        sc = self.cfg.scaling
        over = [g for g in live if util[g.port] > sc["high"]]
        return bool(sc["resize"] and over) and all(
            self._resizable(g, live) and self._one_bucket_holds(g, util[g.port])
            and _on_grain(self._quota_room(g.host), math.floor) > self.hosts[g.host].cores + 1e-9
            for g in over)

    def _resizable(self, g: GraphRec, live: list[GraphRec]) -> bool:
        """``g``'s host is one :meth:`_resize` resizes: a quota, alive, ``g`` its only
        live graph (one under way counts: it answers too)."""
        a = self.hosts[g.host]
        return bool(a.quota) and a.alive and sum(1 for h in live if h.host == g.host) == 1

    def _one_bucket_holds(self, g: GraphRec, util: float) -> bool:
        """Its heaviest bucket alone keeps ``g``'s host over the high watermark."""
        return self.hot_share.get(g.port, 0.0) * util > self.cfg.scaling["high"]

    def _quota_room(self, host: str) -> float:
        """The most cores ``host``'s quota may have: the budget less the others'."""
        others = sum(a.cores for h, a in self.hosts.items() if h != host and a.alive)
        return self.cfg.scaling["quota_budget"] - others

    def move_boost(self, hosts: list[str]) -> dict[str, float]:
        """Quotas for ``hosts`` while a state move waits on them (pure; ``resize``
        on): what the quota budget leaves, shared among them. An old owner exports
        only once it has processed every packet the switch sent it before the
        write, and the new owner holds the moved buckets' packets until then: a
        saturated old owner's backlog (seconds under a 0.1-core quota) is the
        move's time, and every held packet's wait. The hosts stay in ``resizing``
        (no policy resize) until :meth:`on_resized` gives each its quota back."""
        sc = self.cfg.scaling
        mine = [h for h in dict.fromkeys(hosts) if h in self.hosts and self.hosts[h].quota
                and self.hosts[h].alive and h not in self.resizing]
        if not sc["resize"] or not mine:
            return {}
        used = sum(a.cores for a in self.hosts.values() if a.alive)
        share = _on_grain((sc["quota_budget"] - used) / len(mine), math.floor)
        if share <= 0:
            return {}
        self.resizing.update(mine)
        return {h: round(self.hosts[h].cores + share, 3) for h in mine}

    def on_resized(self, now: float, host: str, cores: float | None,
                   settled: bool = True) -> None:
        """The I/O resized ``host``'s quota to ``cores`` (None: it failed); its
        utilisation is read against the new quota from now on. ``settled``: the
        host leaves ``resizing`` (a move's boost keeps it until its quota is back)."""
        if settled:
            self.resizing.discard(host)
        a = self.hosts.get(host)
        if a is not None and cores is not None:  # the same CPU over the new quota
            a.util, a.cores = a.util * a.cores / cores, cores

    # ------------------------------------------------------------ FE (whole graphs)

    def _scale_fe(self, now: float) -> list[Command]:
        live = self.live_graphs()
        fqs = [self.bricks.get(brick_name(self.chain.keyed, g.port)) for g in live]
        if not fqs or any(b is None or not b.load for b in fqs):
            return []
        if self.switch_busy:  # a state move under way: its replicas' load is the move's
            return []
        util = {g.port: self.fe_util(g) for g in live}
        d = self.policy.observe(FE, now, list(util.values()))
        if d is None:
            return []
        if d.action is Action.SCALE_OUT:
            if self._resize_answers(live, util):
                return []
            return self._fe_scale_out(now, live[0].host, d.reason, len(fqs) + 1)
        victim = min(live, key=lambda g: (util[g.port], -g.port))
        base = self.cfg.host(victim.host).cores
        # a resized host's quota goes back while its bricks are there to write it
        back = self._resize_to(now, victim.host, victim.port, base, "scaled in") \
            if self.cfg.scaling["resize"] and self.hosts[victim.host].cores > base + 1e-9 \
            and victim.host not in self.resizing else []
        victim.draining = True
        self.event(now, "scale_in", brick=self.chain.keyed, port=victim.port, replicas=len(fqs) - 1,
                   reason=d.reason)
        return back + [Command("switch_scale_in", victim.host, victim.port, {"transfer": True}),
                Command("drain", victim.host, victim.port,
                        {"brick": brick_name(self.chain.source, victim.port)})]

    def _fe_scale_out(self, now: float, home: str, reason: str, replicas: int,
                      away: bool = False, brick: str | None = None) -> list[Command]:
        """One more FE replica (a whole graph): the warm standby if any, else a graph
        on a free port, ``home``'s first (``away``: never on ``home``, it is full)."""
        brick = brick or self.chain.keyed
        spare = [g for g in self.standby_graphs(prefer=home) if not (away and g.host == home)]
        if spare:  # warm: the switch write and the state move only
            g = spare[0]
            g.standby = False
            self.event(now, "scale_out", brick=brick, port=g.port, host=g.host,
                       replicas=replicas, reason=reason, t_detect=now, warm=True, graph=True)
            return [Command("switch_scale_out", g.host, g.port, {"transfer": True})] + \
                self._keep_fe_standby(now, prefer=home)
        free = [(h, p) for h, p in self.free_ports(prefer=home) if not (away and h == home)]
        if self.cfg.placement["mode"] == "graph" or away:
            free = [(h, p) for h, p in free
                    if self._fits_graph(h) or h == home]
        if not free:
            self.event(now, "no_capacity", brick=brick, reason="no free switch port"
                       + (" on a host with room" if away else ""))
            return []
        host, port = free[0]
        self.event(now, "scale_out", brick=brick, port=port, host=host,
                   replicas=replicas, reason=reason, t_detect=now, warm=False, graph=True)
        return self._add_graph(now, host, port, base=-1) + [
            Command("switch_scale_out", host, port, {"transfer": True})]

    # ------------------------------------------------------------ ULN on a full host

    def _uln_elsewhere(self, now: float, g: GraphRec, reason: str) -> list[Command]:
        """ULN overload on a full host, by ``[placement].mode``: ``graph``: a whole
        new graph on another host (the FE scale-out path: the switch splits the
        traffic); ``brick``: one ULN replica on the other host with the most free
        cores (:meth:`_uln_remote`, batches and scores over tcp); when no host
        has a core for it, reported (``placement_fallback``) and as ``graph``."""
        if self.cfg.placement["mode"] == "brick":
            hosts = [Host(a.host, a.cores, self._used(a.host)) for a in self.hosts.values()
                     if a.alive]
            try:
                target = place_replica(hosts, g.host, self.chain.stateless, 1.0, {},
                                       "brick").starts[0][0]
            except ConfigError:
                target = None
            if target is not None and target != g.host:
                return self._uln_remote(now, g, target, reason)
            self.event(now, "placement_fallback", brick=self.chain.stateless, port=g.port,
                       host=g.host, mode="brick", target=target, to="graph",
                       reason="no other host has a free core for a ULN replica")
        if not (self.cfg.scaling["fe"] and self.cfg.splits_exactly):
            self.event(now, "no_capacity", host=g.host, brick=self.chain.stateless, port=g.port,
                       reason="host full and FE scaling off: no new graph")
            return []
        return self._fe_scale_out(now, g.host, reason, len(self.live_graphs()) + 1,
                                  away=True, brick=self.chain.stateless)

    def _uln_remote(self, now: float, g: GraphRec, target: str, reason: str) -> list[Command]:
        """``brick`` placement: one ULN replica of ``g`` on host ``target``.

        Its inlet is ``tcp://<target host's address>:<port>`` (copying transport: no
        shared memory across hosts), its control socket and report address are
        ipc in ``target``'s work directory. The graph's
        decision brick binds one tcp address more on its input queue (control op
        ``bind``, once per graph, kept in its spec so that a restart binds it
        again): the remote ULN sends its scores there, the local ULNs go on over
        ipc, and the decision merges both in batch order as before. Then the
        decision waits for one more ``end`` and the mapping brick adds the tcp
        address to its round robin. Scale-in retires it like a local one (the
        mapping brick sends it an end marker; it finishes its queue and ends).

        Ports are fixed per (graph port, serial) (:func:`tcp_port`): the pure core
        cannot ask a remote host for a free one; a bind that fails (the port taken)
        fails the command (``command_failed``)."""
        fm = self.bricks[brick_name(self.chain.router, g.port)]
        dec = self.bricks[brick_name(self.chain.sink, g.port)]
        out = fm.spec["outlets"][0]
        dec_tcp = f"tcp://{host_ip(self.hosts[g.host].address)}:{tcp_port(g.port, 0)}"
        cmds = []
        if dec_tcp not in dec.spec.get("binds", []):
            dec.spec["binds"] = dec.spec.get("binds", []) + [dec_tcp]
            cmds.append(Command("control", g.host, g.port, {"brick": dec.id, "cmd": {
                "op": "bind", "address": dec_tcp}}))
        template, serial = self._next_uln(g)
        there = self.hosts[target]
        spec = remote_replica_spec(template, g.port, serial, there.workdir, there.address, dec_tcp)
        name = f"{spec['node']}/{serial}"
        self.bricks[name] = BrickRec(name, target, g.port, self.chain.stateless, spec,
                                     last_seen=now)
        out["addresses"] = out["addresses"] + [spec["inlet"]]
        cmds += [Command("start", target, g.port, {"specs": [spec]}),
                 Command("control", g.host, g.port, {"brick": dec.id, "cmd": {
                     "op": "add_upstream", "n": 1}}),
                 Command("control", g.host, g.port, {"brick": fm.id, "cmd": {
                     "op": "route", "target": out["target"], "addresses": out["addresses"]}})]
        replicas = len([b for b in self.graph_bricks(g.port, self.chain.stateless)
                        if not b.standby and not b.retired])
        self.event(now, "scale_out", brick=self.chain.stateless, port=g.port, host=target,
                   replicas=replicas, reason=reason, t_detect=now, replica=name, warm=False,
                   placement="brick", inlet=spec["inlet"])
        return cmds
