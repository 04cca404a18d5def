"""When to replicate or merge a brick type: watermarks, dwell time, hysteresis.

Pure logic (STYLE: logic turns events into decisions and never acts; time comes
in as ``now``). Each brick type is judged on its replicas' mean utilisation (busy
CPU time per wall second, 0..1 per replica) and on its queue growth:

- scale out when utilisation stays above ``high`` (or the queues keep growing)
  for ``dwell`` seconds;
- scale in when utilisation stays below ``low`` for ``dwell`` seconds and the
  remaining replicas would still be under ``high`` after absorbing the load;
- after any decision for a type, nothing more for ``cooldown`` seconds, so the
  new replica's effect is measured before the next step (no flapping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from lego.errors import ConfigError


class Action(Enum):
    SCALE_OUT = "scale out"
    SCALE_IN = "scale in"


@dataclass(frozen=True)
class Decision:
    brick_type: str
    action: Action
    replicas_before: int
    reason: str


@dataclass(frozen=True)
class ScalingConfig:
    high: float = 0.80
    low: float = 0.30
    dwell: float = 1.0  # seconds a condition must hold
    cooldown: float = 2.0  # seconds after a decision for the same type
    min_replicas: int = 1
    max_replicas: int = 16
    queue_growth: float = 0.0  # batches/s; > 0 enables the queue-growth trigger

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 1.0:
            raise ConfigError(f"scaling: expected 0 <= low < high <= 1, got low={self.low} "
                              f"high={self.high}")
        if self.dwell < 0 or self.cooldown < 0:
            raise ConfigError("scaling: dwell and cooldown must be >= 0")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(f"scaling: expected 1 <= min_replicas <= max_replicas, got "
                              f"{self.min_replicas}, {self.max_replicas}")


@dataclass
class _TypeState:
    above_since: float | None = None
    below_since: float | None = None
    last_decision: float = float("-inf")


@dataclass
class ScalingPolicy:
    config: ScalingConfig = field(default_factory=ScalingConfig)
    _state: dict[str, _TypeState] = field(default_factory=dict)

    def observe(self, brick_type: str, now: float, utilisation: list[float],
                queue_growth: float = 0.0) -> Decision | None:
        """One load report round for a brick type (one utilisation per replica)."""
        if not utilisation:
            raise ConfigError(f"scaling {brick_type!r}: a report needs at least one replica")
        c = self.config
        s = self._state.setdefault(brick_type, _TypeState())
        k = len(utilisation)
        mean = sum(utilisation) / k
        hot = mean > c.high or (c.queue_growth > 0 and queue_growth > c.queue_growth)
        # scale in only if k - 1 replicas would stay below the high watermark
        cold = mean < c.low and k > c.min_replicas and mean * k / (k - 1) < c.high
        s.above_since = (s.above_since if s.above_since is not None else now) if hot else None
        s.below_since = (s.below_since if s.below_since is not None else now) if cold else None
        if now - s.last_decision < c.cooldown:
            return None
        if hot and now - s.above_since >= c.dwell and k < c.max_replicas:
            return self._decide(s, now, Decision(
                brick_type, Action.SCALE_OUT, k,
                f"utilisation {mean:.3f} > {c.high} for {now - s.above_since:.1f}s"
                if mean > c.high else f"queues growing {queue_growth:.1f} batches/s"))
        if cold and now - s.below_since >= c.dwell:
            return self._decide(s, now, Decision(
                brick_type, Action.SCALE_IN, k,
                f"utilisation {mean:.3f} < {c.low} for {now - s.below_since:.1f}s"))
        return None

    def hold(self, brick_type: str, now: float) -> None:
        """An action for ``brick_type`` took effect at ``now`` (a state move ended):
        its cooldown and dwell start again. What its replicas showed during the
        move measured the move (a state import at a small quota is seconds of
        busy CPU), not the load they are left with."""
        s = self._state.setdefault(brick_type, _TypeState())
        s.last_decision = now
        s.above_since = s.below_since = None

    @staticmethod
    def _decide(s: _TypeState, now: float, decision: Decision) -> Decision:
        s.last_decision = now
        s.above_since = s.below_since = None
        return decision


def brick_deadlines(sla_seconds: float, costs: dict[str, float]) -> dict[str, float]:
    """Split an end-to-end latency target among bricks in proportion to their
    measured per-batch costs (the paper's §III-C)."""
    if sla_seconds <= 0:
        raise ConfigError(f"SLA: expected a latency > 0 s, got {sla_seconds}")
    total = sum(costs.values())
    if not costs or total <= 0 or any(v < 0 for v in costs.values()):
        raise ConfigError(f"SLA: expected non-negative brick costs with a positive sum, "
                          f"got {costs}")
    return {name: sla_seconds * cost / total for name, cost in costs.items()}
