"""Controller policies: bucket balance, scaling with hysteresis, SLA split, placement."""

import numpy as np
import pytest

from lego.control.policy_buckets import initial_assignment, moved, rebalance, replica_loads
from lego.control.policy_placement import Host, place_replica
from lego.control.policy_scaling import Action, ScalingConfig, ScalingPolicy, brick_deadlines
from lego.errors import ConfigError

B = 1024


def _spread(owners, loads, replicas):
    per = replica_loads(owners, loads, replicas)
    return max(per.values()) / (sum(per.values()) / len(replicas))


def test_initial_assignment_is_round_robin():
    owners = initial_assignment(B, [5, 6, 7])
    assert list(owners[:4]) == [5, 6, 7, 5] and np.bincount(owners)[5:].tolist() == [342, 341, 341]


def test_rebalance_evens_a_skewed_load_with_few_moves():
    rng = np.random.default_rng(1)
    loads = rng.pareto(1.5, B) * 100  # heavy-tailed, like hub-shaped traffic
    owners = initial_assignment(B, [1, 2, 3])
    assert _spread(owners, loads, [1, 2, 3]) > 1.3  # round robin is far off
    after = rebalance(owners, loads, [1, 2, 3], tolerance=0.05)
    assert _spread(after, loads, [1, 2, 3]) <= 1.05
    assert len(moved(owners, after)) <= 10


def test_balanced_load_moves_nothing():
    owners = initial_assignment(B, [1, 2])
    assert len(moved(owners, rebalance(owners, np.ones(B), [1, 2]))) == 0


def test_heavy_bucket_stays_put():
    loads = np.ones(B)
    loads[7] = 10 * B  # one source that alone outweighs everything
    owners = initial_assignment(B, [1, 2])
    after = rebalance(owners, loads, [1, 2])
    assert after[7] == owners[7]
    per = replica_loads(after, loads, [1, 2])
    assert per[int(owners[7])] > per[int(3 - owners[7])]  # the light buckets left it


def test_scale_out_moves_about_a_third_to_the_new_replica():
    loads = np.ones(B)
    owners = initial_assignment(B, [1, 2])
    after = rebalance(owners, loads, [1, 2, 3], tolerance=0.02)
    n_new = int((after == 3).sum())
    assert abs(n_new - B / 3) <= 0.03 * B
    assert len(moved(owners, after)) == n_new  # only buckets given to the new replica move


def test_scale_in_reassigns_only_the_leavers_buckets():
    loads = np.ones(B)
    owners = initial_assignment(B, [1, 2, 3])
    after = rebalance(owners, loads, [1, 2], tolerance=0.02)
    assert not (after == 3).any()
    assert set(moved(owners, after)) == set(np.flatnonzero(owners == 3))


def test_rebalance_rejects_bad_input():
    with pytest.raises(ConfigError, match="at least one replica"):
        rebalance(np.zeros(4), np.ones(4), [])
    with pytest.raises(ConfigError, match="differ"):
        rebalance(np.zeros(4), np.ones(5), [0])


def test_sustained_overload_scales_out_after_the_dwell_time():
    p = ScalingPolicy(ScalingConfig(high=0.8, low=0.3, dwell=1.0, cooldown=2.0))
    assert p.observe("uln", 0.0, [0.95]) is None
    assert p.observe("uln", 0.5, [0.95]) is None
    d = p.observe("uln", 1.0, [0.95])
    assert d.action is Action.SCALE_OUT and d.replicas_before == 1
    assert p.observe("uln", 1.5, [0.95, 0.95]) is None  # cooldown


def test_an_action_taking_effect_restarts_the_cooldown_and_the_dwell():
    p = ScalingPolicy(ScalingConfig(high=0.8, low=0.3, dwell=1.0, cooldown=2.0))
    assert p.observe("fe", 0.0, [0.1, 0.1]) is None
    assert p.observe("fe", 1.0, [0.1, 0.1]).action is Action.SCALE_IN
    p.observe("fe", 2.0, [0.99])  # the state import loads the replica left...
    p.hold("fe", 4.0)  # ...until the move ends (nothing is judged meanwhile)
    assert p.observe("fe", 4.0, [0.99]) is None
    assert p.observe("fe", 5.9, [0.99]) is None  # cooling down from the move's end
    assert p.observe("fe", 6.0, [0.99]).action is Action.SCALE_OUT
    q = ScalingPolicy(ScalingConfig(high=0.8, low=0.3, dwell=1.0, cooldown=2.0))
    q.observe("fe", 0.0, [0.1, 0.1])
    q.observe("fe", 1.0, [0.1, 0.1])
    q.observe("fe", 2.0, [0.99])  # without the hold: the import reads as overload
    assert q.observe("fe", 3.0, [0.99]).action is Action.SCALE_OUT


def test_a_dip_resets_the_dwell_clock():
    p = ScalingPolicy(ScalingConfig(dwell=1.0))
    p.observe("fe", 0.0, [0.9])
    p.observe("fe", 0.6, [0.5])
    assert p.observe("fe", 1.2, [0.9]) is None


def test_load_oscillating_around_the_threshold_does_not_flap():
    p = ScalingPolicy(ScalingConfig(high=0.8, low=0.3, dwell=1.0, cooldown=2.0))
    decisions = []
    replicas = 2
    for step in range(600):  # 60 s of reports every 100 ms, crossing 0.8 every 300 ms
        now = step * 0.1
        u = 0.8 + (0.05 if (step // 3) % 2 else -0.05)
        d = p.observe("uln", now, [u * 2 / replicas] * replicas)
        if d:
            decisions.append(d)
            replicas += 1 if d.action is Action.SCALE_OUT else -1
    assert decisions == []


def test_scale_in_only_when_the_rest_can_absorb_the_load():
    p = ScalingPolicy(ScalingConfig(high=0.8, low=0.3, dwell=0.5, cooldown=0))
    p.observe("uln", 0.0, [0.29, 0.29])
    d = p.observe("uln", 0.5, [0.29, 0.29])
    assert d.action is Action.SCALE_IN
    q = ScalingPolicy(ScalingConfig(high=0.5, low=0.3, dwell=0.5, cooldown=0))
    q.observe("uln", 0.0, [0.29, 0.29])
    assert q.observe("uln", 0.5, [0.29, 0.29]) is None  # one replica would run at 0.58 > 0.5
    r = ScalingPolicy(ScalingConfig(dwell=0, cooldown=0, min_replicas=1))
    assert r.observe("uln", 0.0, [0.0]) is None  # never below min_replicas


@pytest.mark.parametrize("kwargs", [dict(high=0.3, low=0.5), dict(dwell=-1),
                                    dict(min_replicas=0), dict(min_replicas=3, max_replicas=2)])
def test_bad_scaling_config(kwargs):
    with pytest.raises(ConfigError):
        ScalingConfig(**kwargs)


def test_deadlines_are_proportional_to_costs():
    d = brick_deadlines(0.010, {"batching": 1.0, "fe": 3.0, "uln": 6.0})
    assert d == pytest.approx({"batching": 0.001, "fe": 0.003, "uln": 0.006})
    with pytest.raises(ConfigError):
        brick_deadlines(0, {"a": 1.0})
    with pytest.raises(ConfigError):
        brick_deadlines(1, {})


def test_placement_in_host_first_then_by_mode():
    graph = {"fe": 0.5, "uln": 1.0}
    hosts = [Host("h1", 2.0, used=1.5), Host("h2", 4.0), Host("h3", 1.0)]
    p = place_replica(hosts, "h1", "fe", 0.5, graph)
    assert p.mode == "in-host" and p.starts == (("h1", "fe", 0.5),)
    p = place_replica(hosts, "h1", "uln", 1.0, graph, mode="brick")
    assert p.starts == (("h2", "uln", 1.0),)
    p = place_replica(hosts, "h1", "uln", 1.0, graph, mode="graph")
    assert p.mode == "graph" and {s[0] for s in p.starts} == {"h2"} and len(p.starts) == 2
    with pytest.raises(ConfigError, match="no host has"):
        place_replica([Host("h1", 1.0, used=1.0)], "h1", "uln", 0.5, graph)
    with pytest.raises(ConfigError, match="placement mode"):
        place_replica(hosts, "h1", "uln", 1.0, graph, mode="spread")
