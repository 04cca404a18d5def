"""The controller's I/O edge: the bricks on Ray, the switch, the status server, the loop.

:class:`ControllerRuntime` feeds :class:`~lego.control.core.ControllerCore`
with what Ray tells (live NF nodes, the bricks' load reports, bricks Ray
restarted) under one lock, and executes its commands on one thread, in order:
brick actors through :class:`~lego.control.ray_bricks.RayBricks`, the switch through
:class:`~lego.control.switch_manager.SwitchManager`, whose move hooks
(:class:`~lego.control.live_moves.LiveMoves`) move the keyed state of the live
feature-extraction bricks with the buckets.

Scale-out and scale-in plan the bucket moves on the per-bucket loads a
background thread reads every :data:`LOADS_EVERY_S` (a read of every bucket
counter takes about 0.2 s on the software target: off the critical path, so a
warm scale-out is the hold, one Write and the state move).

The same windows drive the periodic rebalance: each read (after the first)
gives the core the load per replica port over the window (from the start of
the previous read to the end of this one, so a window never hides a move), and
a ``switch_rebalance`` plans the moves on the last window's per-bucket loads
and applies them through the same hooks (the keyed state moves exactly).

Start-up (and a controller restart): read the switch's assignment, adopt the
brick actors already running (detached, named: a restarted controller finds
them), wait up to ``adopt_grace`` for the NF hosts' Ray nodes, start a graph for
each owned port that has none (a graph running on a port that owns no buckets is
the warm FE standby), and ``sync`` (which adopts a correct assignment and writes
nothing). A port whose node has not joined by then gets its graph when it does
(``ControllerCore.pending``).

Every :data:`WATCH_S` the watch thread reads Ray's node table and every brick's
load (one actor call each): a host whose node is alive heartbeats with its
bricks' loads (queue depths computed here from the senders' counts) and its
quota group's CPU time; a host whose node Ray declared dead is lost at once
(:data:`~lego.control.ray_bricks.HEALTH_CHECK`: Ray's health checks of the
raylets, tightened; calls to a dead node's actors hang rather than fail, so the
bricks' silence is no faster evidence); a brick whose incarnation changed was
restarted by Ray and
goes to ``ControllerCore.on_death`` (its upstream re-routed, a lost FE state
recorded); a finished brick is told to exit once its next hops took its end;
an actor the core no longer knows (a drained graph) is killed.

Known limits (measured on nothing: reasoned from the protocol):

- After a switch restart the port-out counters start again at 0, so each
  graph's ``base`` is re-based to minus its feature brick's last *reported*
  ``packets_in`` (:meth:`ControllerRuntime._read_switch`). An export's
  ``after`` is then exact only if that brick had taken every frame the old
  switch sent it when it last reported (up to one report period, 0.25 s, plus
  its queue, before the restart). Otherwise ``after`` is too small by the frames
  still in flight, the export runs before the brick has processed them, and
  those frames' updates to the moved buckets stay on the old owner (their
  scores differ from a run without moves; nothing is lost or reordered). Exact
  fix, not built: let the brick count its frames per switch epoch (the shim
  sequence number starts again at 0 after a restart, so the first row whose
  ``seq`` is lower than the previous row's opens an epoch) and send ``after``
  with the epoch it counts in; that needs an epoch id the brick sees even when
  no frame reached the port before the restart (a boot id in the shim).
- A restarted source or decision (``ControllerCore.on_death``; Ray restarted it)
  carries on: a source numbers its batches from a new epoch
  (:data:`lego.bricks.wire.EPOCH_BITS`) and the decision follows it; a decision
  appends to the dead one's outputs and starts at the lowest batch pending once
  a reorder window has arrived (its logic's ``resume``).
  What the dead brick held (a source's socket buffer, a decision's unreleased
  batches) is lost and shows in the run's accounting, not in a decision's
  ``lost`` list, which cannot know it. What the dead one last reported (a
  source's intake, a decision's scores) stays in the status totals; what it did
  after its last report (up to 0.25 s) is missing from them.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

import numpy as np

from lego.control import northbound as nb
from lego.control.config import Config
from lego.control.core import ControllerCore
from lego.control.graph_specs import node_of
from lego.control.live_moves import LiveMoves
from lego.control.p4rt_client import P4RuntimeClient
from lego.control.p4rt_errors import SwitchError, SwitchUnavailable
from lego.control.ray_bricks import RayBricks
from lego.control.recovery import Recovery
from lego.control.registry import Command, brick_name, parse_name
from lego.control.switch_manager import SwitchManager
from lego.control.switch_rebalance import CounterDeltas, bucket_loads, plan_moves, replica_load
from lego.control.switch_state import SwitchPlan
from lego.errors import LegoError
from lego.p4src import contract as pl

log = logging.getLogger(__name__)

LOADS_EVERY_S = 2.0  # per-bucket load window for scale-out/in (background reads)
WATCH_S = 0.25  # Ray's nodes and the bricks' loads read this often (the heartbeat)


class ControllerRuntime:
    """The controller process: ``start()``, then ``run(stop)`` or ``close()``."""

    def __init__(self, cfg: Config, token: str) -> None:
        self.cfg = cfg
        self.token = token
        self.core = ControllerCore(cfg, initial_costs(cfg))
        self.lock = threading.RLock()
        self.commands: queue.Queue[Command] = queue.Queue()
        ray = cfg.ray
        self.engine = RayBricks(ray["address"], ray["namespace"], ray["max_restarts"],
                                local_hosts={h.name: list(h.ports) for h in cfg.hosts})
        self._released: set[str] = set()  # finished bricks told to exit
        self.nodes: dict[str, dict] = {}  # Ray's live NF nodes, by host
        self.frozen = False  # draining at the end: the policy decides nothing more
        self._executing = False  # a command is under way (on the command thread)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loads_thread: threading.Thread | None = None
        self._watch_thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        # the ports whose counters the status reads: their cells only (of 512 each)
        self._ports = list(dict.fromkeys(cfg.switch["traffic_ports"] + cfg.all_ports))
        self._port_cells = pl.port_cells(self._ports)
        self.hooks = LiveMoves(self)
        self.client: P4RuntimeClient | None = None
        self.manager: SwitchManager | None = None
        self.server = nb.Server(cfg.northbound["bind"], token,
                                nb.pb_grpc.add_ControllerServicer_to_server,
                                _ControllerService(self))
        self.executed: list[tuple[float, Command]] = []
        self.bucket_loads: np.ndarray | None = None  # the last window's, or None
        self.timeline: list[dict[str, Any]] = []
        self.recovery = Recovery(self)  # checkpoints, and a dead brick's part rebuilt
        self._checkpoint_thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> None:
        self.server.start()
        sw = self.cfg.switch
        self.client = P4RuntimeClient(sw["address"], sw["device_id"], sw["election_id"],
                                      timeout=3.0)
        self.client.reconnect()
        owned = self._switch_owners()
        self.engine.connect()
        adopted = self.engine.adopt()
        deadline = time.monotonic() + self.cfg.scaling["adopt_grace"]
        wanted = {self.cfg.host_of_port(p).name for p in owned} or \
            {h.name for h in self.cfg.hosts}
        while True:
            self._join_nodes(adopted)
            with self.lock:
                if wanted <= {h for h, a in self.core.hosts.items() if a.alive}:
                    break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        with self.lock:
            self.core.mark_standby(time.monotonic(), owned)
            if not owned and not any(a.alive for a in self.core.hosts.values()):
                # no host yet: the first fe_initial ports, started when their hosts join
                owned = self.cfg.all_ports[:self.cfg.nf["fe_initial"]]
            cmds = self.core.start(time.monotonic(), owned)
            ports = owned or [c.port for c in cmds if c.kind == "start_graph"
                              and not c.args.get("fe_standby")]
        groups = _split_plan(self.cfg)
        plan = SwitchPlan.from_split(groups, self.cfg.switch["traffic_ports"], ports or
                                     [self.cfg.all_ports[0]],
                                     forward={int(k): v for k, v in
                                              self.cfg.switch["forward"].items()},
                                     truncate=self.cfg.switch["truncate"],
                                     window_us=_window_us(self.cfg),
                                     log_port=(self.cfg.recovery["log_port"]
                                               if self.cfg.recovers_hosts else None))
        self.manager = SwitchManager(self.client, plan, hooks=self.hooks)
        # the hosts heartbeat while the first graphs start (seconds: new Ray workers)
        self._watch_thread = threading.Thread(target=self._guarded(self._watch_loop),
                                              name="bricks", daemon=True)
        self._watch_thread.start()
        for c in cmds:
            self._execute(c)
        report = self.manager.sync()
        with self.lock:
            self.core.event(time.monotonic(), "switch_sync", changes=report.changes,
                            adopted=report.adopted, pipeline_pushed=report.pipeline_pushed)
        self.sync_report = report
        self._thread = threading.Thread(target=self._loop_guarded, name="controller",
                                        daemon=True)
        self._thread.start()
        self._loads_thread = threading.Thread(target=self._loads_loop, name="bucket-loads",
                                              daemon=True)
        self._loads_thread.start()
        if self.cfg.recovers:
            self._checkpoint_thread = threading.Thread(
                target=self._guarded(self.recovery.checkpoint_loop), name="checkpoints",
                daemon=True)
            self._checkpoint_thread.start()

    def close(self, stop_bricks: bool = False) -> None:
        """Stop the controller; the brick actors keep running (a new controller adopts
        them) unless ``stop_bricks``."""
        self._stop.set()
        for t in (self._thread, self._loads_thread, self._watch_thread,
                  self._checkpoint_thread):
            if t is not None:
                t.join(5.0)
        if stop_bricks:
            self.engine.kill_all()
        if self.recovery.frame_log is not None:
            self.recovery.frame_log.close()
        self.server.stop()
        if self.client is not None:
            self.client.close()

    def drain_all(self) -> list[int]:
        """The end of the NF: no more policy; every graph's source ends its input and the
        graph drains behind it (each decision brick writes its summary). Returns the
        ports drained."""
        with self.lock:
            self.frozen = True
        deadline = time.monotonic() + 30.0  # a move under way finishes first
        while self._executing and time.monotonic() < deadline:
            time.sleep(0.01)
        with self.lock:
            ports = [g.port for g in self.core.graphs.values()
                     if g.host in self.nodes and not g.draining]
        for port in ports:
            try:
                self.engine.send(brick_name(self.core.chain.source, port), {"op": "drain"})
            except LegoError as exc:
                log.warning("drain of port %d: %s", port, exc)
        return ports

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            if self.failure is not None:
                raise LegoError(f"controller loop died: {self.failure}")

    def _switch_owners(self) -> list[int]:
        """Ports owning buckets on the switch now (a correct assignment is adopted)."""
        try:
            from lego.control.switch_state import MANAGED_TABLES, state_from_rows

            rows = self.client.read_tables(MANAGED_TABLES)
            owners = state_from_rows(rows, self.client.read_clone_sessions()).owners()
        except (SwitchError, LegoError) as exc:
            log.info("switch has no readable assignment (%s)", exc)
            return []
        ports = sorted(set(owners.tolist()))
        if (owners >= 0).all() and set(ports) <= set(self.cfg.all_ports):
            return ports
        return []

    # ------------------------------------------------------------ bricks on Ray

    def _join_nodes(self, adopted: list[dict] = ()) -> None:
        """Ray's live NF nodes into the core: a node it has not seen (or one with a new
        node id: restarted) registers, with the adopted bricks that run on it."""
        nodes = self.engine.nodes()
        by_node = {n["node_id"]: h for h, n in nodes.items()}
        with self.lock:
            for host, n in nodes.items():
                a = self.core.hosts.get(host)
                if host not in {h.name for h in self.cfg.hosts} or \
                        (a is not None and a.incarnation == n["node_id"]):
                    continue
                bricks = [b for b in adopted if by_node.get(b["node_id"]) == host]
                self.core.on_host_joined(time.monotonic(), host, n["ip"], self.cfg.workdir(host),
                                      self.cfg.host(host).cores, n["node_id"],
                                      bricks)
            self.nodes = nodes

    def _watch_loop(self) -> None:
        while not self._stop.wait(WATCH_S):
            self._join_nodes()
            now = time.monotonic()  # what this round reads is as of now
            loads = self.engine.poll(timeout=WATCH_S)
            with self.lock:
                cmds: list[Command] = []
                by_host: dict[str, list[dict]] = {}
                for name, rep in loads.items():
                    b = self.core.bricks.get(name)
                    if b is not None and "now" in rep:  # it has reported once
                        by_host.setdefault(b.host, []).append(
                            {**rep, "queue_depth": queue_depth(self.core, name, loads)})
                while self.engine.restarted:  # first: the dead one's last load is b.load
                    r = self.engine.restarted.pop(0)
                    b = self.core.bricks.get(r["brick"])
                    if b is not None:
                        cmds += self.core.on_death(now, b.host, r["brick"], r["code"])
                for host, a in self.core.hosts.items():  # Ray says the node died
                    if a.alive and host not in self.nodes:
                        cmds += self.core.on_host_lost(now, host, reason="Ray node dead")
                for host, n in self.nodes.items():
                    a = self.core.hosts.get(host)
                    if a is None:
                        continue
                    reps = by_host.get(host, [])
                    cpu = next((r["host_cpu"] for r in reps if r.get("host_cpu")), None)
                    self.core.on_heartbeat(now, host, n["node_id"], reps,
                                           tuple(cpu) if cpu else None)
                gone = [n for n in self.engine.handles if n not in self.core.bricks]
                self.core.heard_until = now  # this round is complete
            for c in cmds:
                self.commands.put(c)
            for name in gone:  # drained graphs: their actors end for good
                self.engine.kill(name)
                self._released.discard(name)
            self._release_finished(loads)

    def _release_finished(self, loads: dict[str, dict]) -> None:
        """A finished brick may exit once each next hop has taken its end marker (or
        is done): closing a PUSH socket earlier can lose what is in flight."""
        with self.lock:
            specs = {n: b.spec for n, b in self.core.bricks.items()}
        by_inlet = {s["inlet"]: n for n, s in specs.items() if s.get("inlet")}
        for name, rep in loads.items():
            if rep.get("state") != "done" or name in self._released or name not in specs:
                continue
            nxt = [by_inlet[a] for o in specs[name]["outlets"] for a in o["addresses"]
                   if a in by_inlet]
            if all(loads.get(n, {}).get("state") in ("done", "exited", None) or
                   name in loads.get(n, {}).get("ended_from", []) for n in nxt):
                self._released.add(name)
                try:
                    self.engine.send(name, {"op": "exit"})
                except LegoError as exc:
                    log.debug("exit to %s: %s", name, exc)

    # ------------------------------------------------------------ loop

    def _guarded(self, fn):
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # a dead worker makes noise
                log.exception("controller thread %s died", threading.current_thread().name)
                self.failure = exc
        return run

    def _loop_guarded(self) -> None:
        self._guarded(self._loop)()

    def _loop(self) -> None:
        period = self.cfg.scaling["period"]
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                cmd = self.commands.get(timeout=max(0.0, next_tick - time.monotonic()))
                self._execute(cmd)
                continue
            except queue.Empty:
                pass
            next_tick = time.monotonic() + period
            self._read_switch()
            with self.lock:
                cmds = [] if self.frozen else self.core.tick(time.monotonic())
            for c in cmds:
                self._execute(c)

    def _loads_loop(self) -> None:
        """Per-bucket loads over the last window, read off the command thread."""
        deltas = CounterDeltas()
        wait = 0.0
        began: float | None = None  # when the previous read started
        while not self._stop.wait(wait):
            wait = LOADS_EVERY_S
            t0 = time.monotonic()
            try:
                c = self.client.read_counters([pl.C_BUCKET, pl.C_MIRROR_BUCKET])
            except (SwitchError, LegoError) as exc:
                log.debug("bucket loads not read (%s)", exc)
                deltas.reset()
                began = None
                continue
            t1 = time.monotonic()
            d = deltas.update(c, t1)
            loads = bucket_loads(d[pl.C_BUCKET], d[pl.C_MIRROR_BUCKET],
                                 self.manager.mirror_weight)
            self.bucket_loads = loads
            m = self.manager
            owners, replicas = m.owners, m.plan.replica_ports
            if began is not None and owners is not None and owners.shape == loads.shape:
                heaviest = {p: float(loads[owners == p].max(initial=0.0)) for p in replicas}
                with self.lock:
                    self.core.on_bucket_loads(began, t1, replica_load(owners, loads, replicas),
                                              heaviest)
            began = t0

    def _reassign(self, port: int, out: bool) -> list:
        """Add (``out``) or remove replica ``port``, moving as few buckets as the
        last load window needs (bucket counts evened when none was read yet)."""
        m = self.manager
        have = m.plan.replica_ports
        if out and port in have:
            raise LegoError(f"scale out: port {port} is already a replica {list(have)}")
        if not out and (port not in have or len(have) == 1):
            raise LegoError(f"scale in: port {port} is not a replica or the last one "
                            f"{list(have)}")
        replicas = have + (port,) if out else tuple(p for p in have if p != port)
        if m.owners is None:
            m.sync()
        loads = self.bucket_loads
        if loads is None or loads.shape != m.owners.shape:
            loads = np.zeros(len(m.owners))
        new, moves = plan_moves(m.owners, loads, replicas, m.tolerance, m.max_moves)
        return self._apply(m.plan.with_replicas(replicas), new, moves)

    def _apply(self, plan, owners, moves=None) -> list:
        """The switch manager's write; a failed one cancels the move's hooks."""
        try:
            return self.manager.apply(plan, owners, moves)
        except Exception:
            self.hooks.cancel()
            raise

    def move_port(self, lost: int, to: int, rebuilt: bool) -> tuple[list[int], int]:
        """Every bucket of replica ``lost`` (its host gone) to replica ``to``, without
        a state transfer (``rebuilt``: its state is rebuilt at ``to``, not lost).
        Returns the buckets and the assignment epoch that moved them."""
        m = self.manager
        if m.owners is None:
            m.sync()
        owners = m.owners.copy()
        buckets = np.flatnonzero(owners == lost)
        owners[buckets] = to
        replicas = tuple(p for p in m.plan.replica_ports if p != lost)
        replicas += () if to in replicas else (to,)
        self.hooks.transfer, self.hooks.rebuilt = False, rebuilt
        try:
            self._apply(m.plan.with_replicas(replicas), owners)
        finally:
            self.hooks.transfer, self.hooks.rebuilt = True, False
        with self.lock:
            now = time.monotonic()
            self.core.event(now, "port_taken_over", port=lost, to_port=to,
                            buckets=len(buckets), rebuilt=rebuilt)
            self.core.switch["replica_ports"] = list(m.plan.replica_ports)
            self.core.on_switch_done(now, "port_taken_over")  # the cooldown starts now
        return buckets.tolist(), m.epoch

    def _rebalance(self, tolerance: float) -> list:
        """Even the replicas' loads of the last window (none moved without one)."""
        m = self.manager
        loads = self.bucket_loads
        if m.owners is None or loads is None or loads.shape != m.owners.shape or \
                loads.sum() <= 0:
            return []
        new, moves = plan_moves(m.owners, loads, m.plan.replica_ports, tolerance, m.max_moves)
        if not moves:
            return []
        return self._apply(m.plan, new, moves)

    def _read_switch(self) -> None:
        try:
            if not self.client.connected:
                raise SwitchUnavailable(self.client.switch, "stream lost")
            c = self.client.read_counters([pl.C_PORT_IN, pl.C_PORT_OUT],
                                          self._port_cells)
        except (SwitchUnavailable, SwitchError) as exc:
            log.warning("switch unavailable (%s): recovering", exc)
            with self.lock:
                self.core.event(time.monotonic(), "switch_recover", reason=str(exc)[:200])
            try:
                report = self.manager.recover()
            except LegoError as exc2:
                log.warning("switch recovery failed: %s", exc2)
                return
            if report.pipeline_pushed:  # counters restart at 0: rebase each port
                with self.lock:
                    for g in self.core.graphs.values():
                        fq = self.core.bricks.get(brick_name(self.core.chain.keyed, g.port))
                        g.base = -int(fq.load.get("packets_in", 0)) if fq else 0
            with self.lock:
                self.core.event(time.monotonic(), "switch_resync", changes=report.changes,
                                pipeline_pushed=report.pipeline_pushed)
            return
        ports = {}
        for p in self._ports:
            ports[str(p)] = {"packets_in": int(c[pl.C_PORT_IN][p % pl.N_PORTS, 0]),
                             "packets_out": int(c[pl.C_PORT_OUT][p % pl.N_PORTS, 0])}
        with self.lock:
            self.core.switch = {"address": self.cfg.switch["address"], "ports": ports,
                                "replica_ports": list(self.manager.plan.replica_ports)}

    def _port_out(self, port: int) -> int:
        try:
            c = self.client.read_counters([pl.C_PORT_OUT], [port])
            return int(c[pl.C_PORT_OUT][port % pl.N_PORTS, 0])
        except (SwitchError, LegoError):
            return 0

    # ------------------------------------------------------------ commands

    def _execute(self, c: Command) -> None:
        if self.frozen:  # draining at the end: nothing more is done
            return
        self.executed.append((time.monotonic(), c))
        self._executing = True
        try:
            self._do(c)
        except (LegoError, KeyError) as exc:
            log.error("command %s on %s port %s failed: %s", c.kind, c.host, c.port, exc)
            with self.lock:
                self.core.event(time.monotonic(), "command_failed", command=c.kind, host=c.host,
                                port=c.port, error=str(exc)[:300])
        finally:
            self._executing = False
            if c.kind.startswith("switch_"):  # the rebalance cooldown starts now
                with self.lock:
                    self.core.on_switch_done(time.monotonic(), c.kind)
                    # the assignment the status shows is the switch's from now on, not
                    # from the next switch read (after the commands queued behind this
                    # one: a standby graph's start takes seconds)
                    self.core.switch["replica_ports"] = list(self.manager.plan.replica_ports)

    def _do(self, c: Command) -> None:
        if c.kind == "start_graph":
            self.recovery.forget(c.port)
            base = self._port_out(c.port)
            specs = c.args["specs"]
            for s in specs:
                if node_of(s) == self.core.chain.keyed:
                    s["options"]["port_base"] = base
            with self.lock:
                self.core.graphs[c.port].base = base
            self._start(c.host, specs)
            src = next(s for s in specs if s["inlet"] is None)
            self._control(f"{src['node']}/0", {"op": "go"})
        elif c.kind == "start":
            self._start(c.host, c.args["specs"])
        elif c.kind == "go":
            self._control(c.args["brick"], {"op": "go"})
        elif c.kind == "control":
            self._control(c.args["brick"], c.args["cmd"])
        elif c.kind == "drain":
            self.engine.send(c.args["brick"], {"op": "drain"})
        elif c.kind in ("switch_scale_out", "switch_scale_in"):
            self.hooks.transfer = bool(c.args.get("transfer", True))
            moves = self._reassign(c.port, c.kind == "switch_scale_out")
            with self.lock:
                self.core.event(time.monotonic(), c.kind, port=c.port, buckets=len(moves),
                                transfer=self.hooks.transfer)
        elif c.kind == "switch_rebalance":
            self.hooks.transfer = True
            moves = self._rebalance(float(c.args.get("tolerance", self.manager.tolerance)))
            with self.lock:
                self.core.event(time.monotonic(), c.kind, port=c.port, buckets=len(moves))
        elif c.kind == "resize":
            cores = None
            try:
                cores = self.engine.set_cores(c.args["brick"], float(c.args["cores"]))
            finally:
                with self.lock:
                    self.core.on_resized(time.monotonic(), c.host, cores)
        elif c.kind == "recover":
            self.recovery.recover(c)
        elif c.kind == "recover_port":
            self.recovery.recover_port(c)
        elif c.kind == "resend":
            self.recovery.resend(c)
        elif c.kind == "event":
            pass
        else:
            raise LegoError(f"unknown command {c.kind!r}")

    def _start(self, host: str, specs: list[dict]) -> None:
        """Brick actors on ``host``: pinned to their graph's switch port where the host
        owns it, else (a ULN placed on another host) to the host."""
        by_port: dict[int | None, list[dict]] = {}
        for s in specs:
            port = parse_name(s["node"])[1]
            by_port.setdefault(port if self.cfg.host_of_port(port).name == host else None,
                               []).append(s)
        for port, group in by_port.items():
            for s in group:
                self._released.discard(f"{s['node']}/{s['serial']}")
            self.engine.start(host, port, group, self.cfg.workdir(host))

    def _control(self, brick: str, cmd: dict) -> None:
        reply = self.engine.request(brick, cmd)
        if not reply.get("ok", True):
            raise LegoError(f"control {cmd.get('op')} to {brick}: {reply}")

    def status(self) -> dict[str, Any]:
        with self.lock:
            st = self.core.status(time.monotonic())
        st["moves"] = self.hooks.log[-20:]
        st["checkpoints"] = dict(self.recovery.stats)
        return st


def initial_costs(cfg: Config) -> dict[str, float]:
    """Per-batch costs (ms) per role from ``[sla].profile`` (none without one)."""
    from lego.control.profile import load_profile
    from lego.errors import ConfigError

    if not cfg.sla["profile"]:
        return {}
    prof = load_profile(cfg.sla["profile"])
    def same(options: dict) -> dict:  # the model may differ: its cost is the NF's
        return {k: v for k, v in options.items() if k != "model"}

    if (prof.nf, same(prof.options)) != (cfg.nf["name"], same(cfg.nf_options)):
        raise ConfigError(f"{cfg.where}: [sla].profile {cfg.sla['profile']} was measured "
                          f"with NF {prof.nf!r} {prof.options}, [nf] is {cfg.nf['name']!r} "
                          f"{cfg.nf_options}")
    return prof.batch_costs_ms(cfg.graph["batch"])


def _split_plan(cfg: Config):
    from lego import nfs

    return nfs.get(cfg.nf["name"]).plan(cfg.nf_options)


def _window_us(cfg: Config) -> int:
    from lego import nfs

    return nfs.get(cfg.nf["name"]).window_us(cfg.nf_options)


class _ControllerService:
    """The ``Controller`` gRPC service (token-protected): the status, for dashboards and
    ``lego controller status``; the end-of-run drain."""

    def __init__(self, rt: ControllerRuntime) -> None:
        self.rt = rt

    def GetStatus(self, request, context):
        return nb.pb.StatusReply(json=json.dumps(self.rt.status(), default=str))

    def Drain(self, request, context):
        self.rt.drain_all()
        return nb.pb.StatusReply(json=json.dumps(self.rt.status(), default=str))


def queue_depth(core: ControllerCore, brick: str, loads: dict[str, dict]) -> int:
    """Batches sent to ``brick`` and not yet taken by it: what its upstream bricks
    report sent to its inlet, minus what it reports taken (ZeroMQ and the rings do
    not expose queue lengths)."""
    b = core.bricks.get(brick)
    inlet = b.spec.get("inlet") if b is not None else None
    if not inlet:
        return 0
    sent = 0
    for name, rep in loads.items():
        up = core.bricks.get(name)
        if up is None:
            continue
        for o in up.spec["outlets"]:
            if inlet in o["addresses"]:
                i = o["addresses"].index(inlet)
                counts = rep.get("sent", {}).get(o["target"], [])
                sent += counts[i] if i < len(counts) else 0
    return max(0, sent - loads.get(brick, {}).get("batches_in", 0))
