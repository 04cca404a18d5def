"""The controller's I/O edge: northbound server, agents' clients, the switch, the loop.

:class:`ControllerRuntime` feeds :class:`~lego.control.controller.ControllerCore`
with northbound events (under one lock) and executes its commands on one
thread, in order: agents over gRPC, the switch through
:class:`~lego.control.switch_manager.SwitchManager`, whose move hooks
(:class:`LiveMoves`) run :mod:`lego.control.state_move`'s protocol on the live
feature-extraction bricks:

- ``on_buckets_moving``: each destination's FE brick holds the packets of its
  incoming buckets (closure rule) and acknowledges before the switch is written;
- ``on_buckets_moved(moves, seq_hint)``: each source FE brick processes the
  packets the switch sent it before the write (``seq_hint`` minus what the port
  carried before the brick's source started), exports each transfer (excluding
  the pairs the destination already holds) and drops what it no longer owns; the
  destination imports the blobs and releases the held packets in order.

Scale-out and scale-in plan the bucket moves on the per-bucket loads a
background thread reads every :data:`LOADS_EVERY_S` (a read of every bucket
counter takes about 0.2 s on the software target: off the critical path, so a
warm scale-out is the hold, one Write and the state move).

The same windows drive the periodic rebalance: each read (after the first)
gives the core the load per replica port over the window (from the start of
the previous read to the end of this one, so a window never hides a move), and
a ``switch_rebalance`` plans the moves on the last window's per-bucket loads
and applies them through the same hooks (the keyed state moves exactly).

Start-up (and a controller restart): read the switch's assignment, wait up to
``adopt_grace`` for the agents to re-register with what they run, start a graph
for each owned port that has none (a graph running on a port that owns no
buckets is the warm FE standby), and ``sync`` (which adopts a correct
assignment and writes nothing). A port whose agent has not registered by then
gets its graph when the agent does (``ControllerCore.pending``).

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
- A restarted source or decision brick (``ControllerCore.on_death``) numbers its
  batches from 0 again. After a source restart the decision brick, already past
  those numbers, counts the new batches as duplicates and drops them; after a
  decision restart it waits for batch 0, which its new upstream never sends
  again, so it releases nothing until ``window`` batches pile up and then
  records each missing number as lost. Feature, mapping and ULN restarts are
  unaffected (they keep no numbering). Fix, not built: start the new source at
  a ``batch0`` past every number the old one may have used and tell the decision
  brick (a control op) to close the old numbering once ``window`` newer batches
  have arrived; a new decision brick takes its first batch number from the first
  batch it receives.
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
from lego.control.controller import Command, ControllerCore, brick_name
from lego.control.controller_config import Config
from lego.control.p4rt_client import P4RuntimeClient
from lego.control.p4rt_errors import SwitchError, SwitchUnavailable
from lego.control.state_move import plan_move
from lego.control.switch_manager import SwitchManager
from lego.control.switch_rebalance import CounterDeltas, bucket_loads, plan_moves, replica_load
from lego.control.switch_state import SwitchPlan
from lego.errors import LegoError
from lego.p4src import pipeline as pl

log = logging.getLogger(__name__)

LOADS_EVERY_S = 2.0  # per-bucket load window for scale-out/in (background reads)


class LiveMoves:
    """SwitchManager hooks: the state-move protocol on live FE bricks."""

    def __init__(self, rt: ControllerRuntime) -> None:
        self.rt = rt
        self.transfer = True
        self._before: np.ndarray | None = None
        self.log: list[dict[str, Any]] = []

    def _fq(self, port: int) -> tuple[nb.Client, str] | None:
        core = self.rt.core
        g = core.graphs.get(port)
        if g is None or core.agents.get(g.host) is None or not core.agents[g.host].alive:
            return None
        return self.rt.agent(g.host), brick_name("fq", port)

    def on_buckets_moving(self, moves) -> None:
        self._before = self.rt.manager.owners.copy()
        self._engaged = []
        if not self.transfer:
            return
        incoming: dict[int, list[int]] = {}
        for m in moves:
            incoming.setdefault(m.new_port, []).append(m.bucket)
        # sources stop at the write, so they export exactly the state before it
        sources = sorted({m.old_port for m in moves if m.old_port >= 0})
        commands = [(port, {"op": "prepare"}) for port in sources]
        commands += [(port, {"op": "hold", "buckets": b}) for port, b in incoming.items()]
        for port, cmd in commands:
            fq = self._fq(port)
            if fq is None:
                continue
            client, brick = fq
            reply = client.call("Control", nb.pb.BrickControl(
                brick=brick, command_json=json.dumps(cmd), wait_ack=True, timeout_s=5.0),
                timeout=10.0)
            if not reply.ok:
                raise LegoError(f"{cmd['op']} on {brick}: {reply.reply_json}")
            self._engaged.append(port)

    def cancel(self) -> None:
        """The switch write failed: every engaged FE brick goes on as before."""
        for port in dict.fromkeys(getattr(self, "_engaged", [])):
            fq = self._fq(port)
            if fq is not None:
                client, brick = fq
                client.call("Control", nb.pb.BrickControl(
                    brick=brick, command_json=json.dumps({"op": "cancel"}), wait_ack=True,
                    timeout_s=5.0), timeout=10.0)
        self._engaged = []

    def on_buckets_moved(self, moves, seq_hint: dict[int, int]) -> None:
        t0 = time.monotonic()
        old = self._before
        new = self.rt.manager.owners
        record: dict[str, Any] = {"buckets": len(moves), "transfers": 0, "entries": 0,
                                  "bytes": 0, "lost_buckets": 0}
        blobs: dict[int, list[bytes]] = {}
        transfers = plan_move(np.where(old < 0, new, old), new)
        by_src: dict[int, list] = {}
        for t in transfers:
            by_src.setdefault(t.src, []).append(t)
        for src, ts in by_src.items():
            fq = self._fq(src) if self.transfer else None
            if fq is None:
                record["lost_buckets"] += int(sum(t.buckets.sum() for t in ts))
                continue
            client, brick = fq
            base = self.rt.core.graphs[src].base
            after = max(0, seq_hint.get(src, 0) - base) if base >= 0 else 0
            for i, t in enumerate(ts):
                cmd = {"buckets": np.flatnonzero(t.buckets).tolist(),
                       "exclude": np.flatnonzero(t.exclude).tolist(), "after": after,
                       "epoch": self.rt.manager.epoch}
                if i == len(ts) - 1:
                    cmd["keep"] = np.flatnonzero(new == src).tolist()
                reply = client.call("ExportState", nb.pb.ExportRequest(
                    brick=brick, command_json=json.dumps(cmd), timeout_s=10.0), timeout=15.0)
                info = json.loads(reply.reply_json or "{}")
                if not info.get("ok"):
                    raise LegoError(f"export from {brick}: {info}")
                blobs.setdefault(t.dst, []).append(reply.blob)
                record["transfers"] += 1
                record["entries"] += info.get("entries", 0)
                record["bytes"] += len(reply.blob)
                # where the source cut its stream: the write (by epoch), vs the count hint
                record.setdefault("export_at", {})[src] = {"cut": info.get("exported_at"),
                                                           "hint": after}
        for dst in sorted({m.new_port for m in moves}):
            fq = self._fq(dst)
            if fq is None or not self.transfer:
                continue
            client, brick = fq
            reply = client.call("ImportState", nb.pb.ImportRequest(
                brick=brick, blobs=blobs.get(dst, []), timeout_s=10.0), timeout=15.0)
            if not reply.ok:
                raise LegoError(f"import into {brick}: {reply.reply_json}")
        record["seconds"] = round(time.monotonic() - t0, 4)
        self.log.append(record)
        with self.rt.lock:
            self.rt.core.counters["moves"] += 1
            self.rt.core.counters["state_lost_buckets"] += record["lost_buckets"]
            self.rt.core.event(time.monotonic(), "state_moved", **record)


class ControllerRuntime:
    """The controller process: ``start()``, then ``run(stop)`` or ``close()``."""

    def __init__(self, cfg: Config, token: str) -> None:
        self.cfg = cfg
        self.token = token
        self.core = ControllerCore(cfg, initial_costs(cfg))
        self.lock = threading.RLock()
        self.commands: queue.Queue[Command] = queue.Queue()
        self._agents: dict[str, nb.Client] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        self.hooks = LiveMoves(self)
        self.client: P4RuntimeClient | None = None
        self.manager: SwitchManager | None = None
        self.server = nb.Server(cfg.northbound["bind"], token,
                                nb.pb_grpc.add_ControllerServicer_to_server,
                                _ControllerService(self))
        self.executed: list[tuple[float, Command]] = []
        self.bucket_loads: np.ndarray | None = None  # the last window's, or None
        self.timeline: list[dict[str, Any]] = []

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
        deadline = time.monotonic() + self.cfg.scaling["adopt_grace"]
        wanted = {self.cfg.host_of_port(p).name for p in owned} or \
            {h.name for h in self.cfg.hosts}
        while time.monotonic() < deadline:
            with self.lock:
                if wanted <= {h for h, a in self.core.agents.items() if a.alive}:
                    break
            time.sleep(0.02)
        with self.lock:
            self.core.mark_standby(time.monotonic(), owned)
            if not owned and not any(a.alive for a in self.core.agents.values()):
                # no agent yet: the first fe_initial ports, started when their agents come
                owned = self.cfg.all_ports[:self.cfg.nf["fe_initial"]]
            cmds = self.core.start(time.monotonic(), owned)
            ports = owned or [c.port for c in cmds if c.kind == "start_graph"
                              and not c.args.get("fe_standby")]
        groups = _split_plan(self.cfg)
        plan = SwitchPlan.from_split(groups, self.cfg.switch["traffic_ports"], ports or
                                     [self.cfg.all_ports[0]],
                                     forward={int(k): v for k, v in
                                              self.cfg.switch["forward"].items()},
                                     truncate=self.cfg.switch["truncate"])
        self.manager = SwitchManager(self.client, plan, hooks=self.hooks)
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

    def close(self) -> None:
        self._stop.set()
        for t in (self._thread, getattr(self, "_loads_thread", None)):
            if t is not None:
                t.join(5.0)
        self.server.stop()
        for c in self._agents.values():
            c.close()
        if self.client is not None:
            self.client.close()

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

    def agent(self, host: str) -> nb.Client:
        a = self.core.agents[host]
        c = self._agents.get(host)
        if c is None or c.address != a.address:
            if c is not None:
                c.close()
            c = self._agents[host] = nb.agent_client(a.address, self.token)
        return c

    # ------------------------------------------------------------ loop

    def _loop_guarded(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a dead worker makes noise
            log.exception("controller loop died")
            self.failure = exc

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
                cmds = self.core.tick(time.monotonic())
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
                with self.lock:
                    self.core.on_bucket_loads(began, t1, replica_load(owners, loads, replicas))
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
        try:
            return m.apply(m.plan.with_replicas(replicas), new, moves)
        except Exception:
            self.hooks.cancel()
            raise

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
        try:
            return m.apply(m.plan, new, moves)
        except Exception:
            self.hooks.cancel()
            raise

    def _read_switch(self) -> None:
        try:
            if not self.client.connected:
                raise SwitchUnavailable(self.client.switch, "stream lost")
            c = self.client.read_counters([pl.C_PORT_IN, pl.C_PORT_OUT])
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
                        fq = self.core.bricks.get(brick_name("fq", g.port))
                        g.base = -int(fq.load.get("packets_in", 0)) if fq else 0
            with self.lock:
                self.core.event(time.monotonic(), "switch_resync", changes=report.changes,
                                pipeline_pushed=report.pipeline_pushed)
            return
        ports = {}
        for p in self.cfg.switch["traffic_ports"] + self.cfg.all_ports:
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
        self.executed.append((time.monotonic(), c))
        try:
            self._do(c)
        except (LegoError, KeyError) as exc:
            log.error("command %s on %s port %s failed: %s", c.kind, c.host, c.port, exc)
            with self.lock:
                self.core.event(time.monotonic(), "command_failed", command=c.kind, host=c.host,
                                port=c.port, error=str(exc)[:300])
        finally:
            if c.kind.startswith("switch_"):  # the rebalance cooldown starts now
                with self.lock:
                    self.core.on_switch_done(time.monotonic(), c.kind)

    def _do(self, c: Command) -> None:
        if c.kind == "start_graph":
            base = self._port_out(c.port)
            specs = c.args["specs"]
            for s in specs:
                if s["type"] == "feature_quantization":
                    s["options"]["port_base"] = base
            with self.lock:
                self.core.graphs[c.port].base = base
            self._start(c.host, specs)
            src = next(s for s in specs if s["inlet"] is None)
            self._control(c.host, f"{src['node']}/0", {"op": "go"})
        elif c.kind == "start":
            self._start(c.host, c.args["specs"])
        elif c.kind == "go":
            self._control(c.host, c.args["brick"], {"op": "go"})
        elif c.kind == "control":
            self._control(c.host, c.args["brick"], c.args["cmd"])
        elif c.kind == "drain":
            self.agent(c.host).call("Stop", nb.pb.StopBricks(bricks=[c.args["brick"]],
                                                             drain=True))
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
        elif c.kind == "event":
            pass
        else:
            raise LegoError(f"unknown command {c.kind!r}")

    def _start(self, host: str, specs: list[dict]) -> None:
        reply = self.agent(host).call("Start", nb.pb.StartBricks(
            spec_json=[json.dumps(s) for s in specs], timeout_s=30.0), timeout=40.0)
        if not reply.ok:
            raise LegoError(f"start on {host}: {reply.detail}")

    def _control(self, host: str, brick: str, cmd: dict) -> None:
        reply = self.agent(host).call("Control", nb.pb.BrickControl(
            brick=brick, command_json=json.dumps(cmd), wait_ack=True, timeout_s=5.0),
            timeout=10.0)
        if not reply.ok:
            raise LegoError(f"control {cmd.get('op')} to {brick} on {host}: {reply.reply_json}")

    def status(self) -> dict[str, Any]:
        with self.lock:
            st = self.core.status(time.monotonic())
        st["moves"] = self.hooks.log[-20:]
        return st


def initial_costs(cfg: Config) -> dict[str, float]:
    """Per-batch costs (ms) per role from ``[sla].profile`` (none without one)."""
    from lego.control.profile import load_profile
    from lego.errors import ConfigError

    if not cfg.sla["profile"]:
        return {}
    prof = load_profile(cfg.sla["profile"])
    if prof.semantics != cfg.nf["semantics"]:
        raise ConfigError(f"{cfg.where}: [sla].profile {cfg.sla['profile']} was measured "
                          f"with semantics {prof.semantics!r}, [nf].semantics is "
                          f"{cfg.nf['semantics']!r}")
    return prof.batch_costs_ms(cfg.graph["batch"])


def _split_plan(cfg: Config):
    from lego.control.granularity import plan_split
    from lego.ext.features import state_groups

    return plan_split(state_groups(cfg.nf["semantics"]))


class _ControllerService:
    """The ``Controller`` gRPC service: events into the core, commands queued."""

    def __init__(self, rt: ControllerRuntime) -> None:
        self.rt = rt

    def Register(self, request, context):
        bricks = [{"id": b.id, "type": b.type, "spec": json.loads(b.spec_json), "pid": b.pid,
                   "state": b.state} for b in request.bricks]
        with self.rt.lock:
            cmds = self.rt.core.on_register(time.monotonic(), request.host, request.address,
                                            request.workdir, request.cores,
                                            request.incarnation, bricks)
        for c in cmds:
            self.rt.commands.put(c)
        return nb.pb.RegisterReply(controller="lego", heartbeat_s=0.25)

    def Heartbeat(self, request, context):
        loads = [nb.load_from_pb(m) for m in request.loads]
        with self.rt.lock:
            known = self.rt.core.on_heartbeat(time.monotonic(), request.host,
                                              request.incarnation, loads,
                                              (request.now, request.cpu_s)
                                              if request.quota else None)
        return nb.pb.HeartbeatReply(known=known)

    def ReportLoads(self, request, context):
        with self.rt.lock:
            a = self.rt.core.agents.get(request.host)
            if a is not None:
                self.rt.core.on_heartbeat(time.monotonic(), request.host, a.incarnation,
                                          [nb.load_from_pb(m) for m in request.loads])
        return nb.pb.Ack(ok=True)

    def ReportDeath(self, request, context):
        with self.rt.lock:
            cmds = self.rt.core.on_death(time.monotonic(), request.host, request.brick,
                                         request.code)
        for c in cmds:
            self.rt.commands.put(c)
        return nb.pb.Ack(ok=True)

    def GetStatus(self, request, context):
        return nb.pb.StatusReply(json=json.dumps(self.rt.status(), default=str))
