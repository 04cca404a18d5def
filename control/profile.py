"""Cost estimation by pre-execution (``lego profile``): each Kitsune brick's
per-packet CPU cost on a trace, and the SLA split into per-brick deadlines.

The brick logics run in this process, in graph order, one batch at a time,
with no IPC: the same logic objects the brick processes run
(:func:`~lego.bricks.catalog.make_logic`), so the costs are those of the
work and not of the transport. Each brick's cost is the CPU time of its
``produce``/``handle`` calls (``time.process_time``: CPU the work used, BLAS
threads included, not time other processes took) divided by the trace's packets, so the
costs add up to the pipeline's per-packet cost, whatever rows a brick sees
(mirrors reach only the extractor; only primaries are scored).

The controller takes a profile as its initial costs (``[sla].profile``) and
updates them from live load reports (an exponential average,
:func:`update_cost`); deadlines split the SLA in proportion
(:func:`~lego.control.policy_scaling.brick_deadlines`).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lego.control.policy_scaling import brick_deadlines
from lego.errors import ConfigError

# graph role -> brick type, in graph order (the controller's role names)
ROLES = (("src", "packet_batching"), ("fq", "feature_quantization"),
         ("fm", "feature_mapping"), ("uln", "uln"), ("dec", "decision"))
LIVE_WEIGHT = 0.2  # weight of one live report in the exponential average


@dataclass
class Profile:
    trace: str
    model: str
    semantics: str
    batch: int
    packets: int
    batches: int
    cost_us: dict[str, float]  # role -> CPU microseconds per trace packet
    sla_ms: float
    deadlines_ms: dict[str, float]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def batch_costs_ms(self, batch: int) -> dict[str, float]:
        """Per-batch costs for batches of ``batch`` packets (the live reports' unit)."""
        return {r: c * batch / 1e3 for r, c in self.cost_us.items()}


def profile_trace(trace: str | Path, model: str | Path, semantics: str = "lego",
                  sla_ms: float = 100.0, batch: int = 1024,
                  limit: int | None = None) -> Profile:
    """Run the five Kitsune brick logics over ``trace`` in process; time each."""
    from lego.bricks.catalog import make_logic
    from lego.bricks.runtime import BrickId

    if sla_ms <= 0:
        raise ConfigError(f"profile: --sla-ms: expected > 0, got {sla_ms}")
    if batch < 1:
        raise ConfigError(f"profile: --batch: expected >= 1, got {batch}")
    common = {"semantics": semantics, "model": str(model)}
    src_opts: dict = {"trace": str(trace), "batch": batch}
    if limit is not None:
        src_opts["limit"] = limit
    with tempfile.TemporaryDirectory(prefix="lego-profile-") as out:
        options = {"src": src_opts, "fq": {"semantics": semantics}, "fm": common,
                   "uln": common, "dec": {**common, "out": out, "write_scores": False,
                                          "write_alerts": False}}
        logics = {role: make_logic(kind, options[role], BrickId(role, 0))
                  for role, kind in ROLES}
        cpu = dict.fromkeys(logics, 0.0)
        packets = batches = 0
        produce = logics["src"].produce()
        chain = [logics[r] for r in ("fq", "fm", "uln", "dec")]
        names = ("fq", "fm", "uln", "dec")
        while True:
            t = time.process_time()
            msg = next(produce, None)
            cpu["src"] += time.process_time() - t
            if msg is None:
                break
            packets += msg.n
            batches += 1
            msgs = [msg]
            for role, logic in zip(names, chain, strict=True):
                t = time.process_time()
                msgs = [o for m in msgs for o in logic.handle(m)]
                cpu[role] += time.process_time() - t
        logics["dec"].finish({"batches": batches})
    if not packets:
        raise ConfigError(f"profile: trace {trace}: no packets")
    cost_us = {r: 1e6 * cpu[r] / packets for r, _ in ROLES}
    deadlines = brick_deadlines(sla_ms / 1e3, cost_us)
    return Profile(str(trace), str(model), semantics, batch, packets, batches, cost_us,
                   sla_ms, {r: v * 1e3 for r, v in deadlines.items()})


def load_profile(path: str | Path) -> Profile:
    """A profile written by ``lego profile --out`` (ConfigError names the file)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        p = Profile(**data)
    except FileNotFoundError:
        raise ConfigError(f"[sla].profile: {path}: no such file (write it with "
                          "`lego profile --out`)") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[sla].profile: {path}: not a profile written by "
                          f"`lego profile`: {exc}") from None
    known = {r for r, _ in ROLES}
    if set(p.cost_us) - known or any(not isinstance(v, int | float) or v < 0
                                     for v in p.cost_us.values()):
        raise ConfigError(f"[sla].profile: {path}: cost_us: expected non-negative costs for "
                          f"{sorted(known)}, got {p.cost_us}")
    return p


def update_cost(costs: dict[str, float], role: str, live_ms: float,
                weight: float = LIVE_WEIGHT) -> None:
    """Fold one live per-batch cost into ``costs`` (exponential average; the first
    live value of a role without a profile cost is taken as is)."""
    if live_ms <= 0:
        return
    old = costs.get(role)
    costs[role] = live_ms if old is None else (1.0 - weight) * old + weight * live_ms


def table_lines(p: Profile) -> list[str]:
    """The profile as a short table (pure; the CLI prints it)."""
    total = sum(p.cost_us.values())
    lines = [f"profile of {p.packets} packets ({p.batches} batches of {p.batch}), "
             f"semantics {p.semantics}, SLA {p.sla_ms:g} ms",
             f"  {'brick':<6} {'type':<22} {'us/packet':>10} {'share':>7} {'deadline ms':>12}"]
    for role, kind in ROLES:
        c = p.cost_us[role]
        lines.append(f"  {role:<6} {kind:<22} {c:>10.3f} {c / total:>7.1%} "
                     f"{p.deadlines_ms[role]:>12.3f}")
    lines.append(f"  {'total':<6} {'':<22} {total:>10.3f} {1:>7.0%} {p.sla_ms:>12.3f}")
    return lines
