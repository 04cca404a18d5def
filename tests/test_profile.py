"""``lego profile``: per-brick costs by pre-execution on a trace, the SLA split, and
the controller taking them as initial costs then folding in live reports (~10 s:
trains a small model)."""

from __future__ import annotations

import json

import pytest

from lego.control.config import config_from_dict
from lego.control.core import ControllerCore
from lego.control.profile import LIVE_WEIGHT, load_profile, profile_trace
from lego.control.runtime import initial_costs
from lego.errors import ConfigError
from lego.nfs.kitsune.graph import train_model
from lego.topo.traffic_synth import generate, write_trace

N = 4000


@pytest.fixture(scope="module")
def trace_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("profile")
    pcap = d / "trace.pcap"
    write_trace(generate(seed=5, packets=N), pcap)
    return pcap, train_model(pcap, d / "model.npz", "lego", fm=300, ad=2000)


def _opts(model) -> dict:
    return {"semantics": "lego", "model": str(model)}


def test_profile_costs_each_brick_and_splits_the_sla_in_proportion(trace_model, tmp_path):
    pcap, model = trace_model
    p = profile_trace(pcap, "kitsune", _opts(model), sla_ms=50.0, batch=512)
    assert p.packets == N and p.batches == -(-N // 512)
    assert list(p.cost_us) == list(p.types) == ["src", "fq", "fm", "uln", "dec"]
    assert p.types["fq"] == "feature_quantization"
    assert all(c > 0 for c in p.cost_us.values())
    assert sum(p.deadlines_ms.values()) == pytest.approx(50.0)
    total = sum(p.cost_us.values())
    for r, c in p.cost_us.items():
        assert p.deadlines_ms[r] == pytest.approx(50.0 * c / total)
    (tmp_path / "p.json").write_text(p.to_json())
    assert load_profile(tmp_path / "p.json") == p
    assert p.batch_costs_ms(1000)["fq"] == pytest.approx(p.cost_us["fq"])


def test_profile_cli_prints_the_table_and_writes_the_json(trace_model, tmp_path, capsys):
    from lego.cli import main

    pcap, model = trace_model
    out = tmp_path / "results" / "profile.json"
    assert main(["profile", "--trace", str(pcap), "--model", str(model), "--sla-ms", "20",
                 "--limit", "1500", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for role, kind in (("src", "packet_batching"), ("fq", "feature_quantization"),
                       ("fm", "feature_mapping"), ("uln", "uln"), ("dec", "decision")):
        assert role in text and kind in text
    data = json.loads(out.read_text())
    assert data["packets"] == 1500 and data["sla_ms"] == 20.0
    with pytest.raises(SystemExit) as exc:  # strict argument types: a usage error
        main(["profile", "--trace", str(pcap), "--model", str(model), "--sla-ms", "0"])
    assert exc.value.code == 2 and "milliseconds > 0" in capsys.readouterr().err


def _cfg(tmp_path, profile: str = "", semantics: str = "lego"):
    return config_from_dict({
        "switch": {"traffic_ports": [1]}, "northbound": {"token_file": "t"},
        "nf": {"model": "m.npz", "source": "feed", "semantics": semantics},
        "graph": {"batch": 256},
        "sla": {"latency_ms": 40.0, "profile": profile},
        "scaling": {"fe": False, "standby": False},
        "hosts": [{"name": "nf1", "ports": [2], "cores": 8}],
    }, "<profile test>", tmp_path)


def test_controller_starts_from_the_profile_then_averages_live_reports(trace_model, tmp_path):
    pcap, model = trace_model
    p = profile_trace(pcap, "kitsune", _opts(model), batch=256, limit=2000)
    (tmp_path / "profile.json").write_text(p.to_json())
    cfg = _cfg(tmp_path, "profile.json")
    costs = initial_costs(cfg)
    assert costs == pytest.approx(p.batch_costs_ms(256))
    core = ControllerCore(cfg, costs)
    core.on_host_joined(0.0, "nf1", "nf1:1", "/tmp/nf1", 8, "inc", [])
    core.start(0.0, [])
    core.tick(0.0)
    total = sum(costs.values())
    assert core.deadlines["uln"] == pytest.approx(0.040 * costs["uln"] / total)
    live = 10 * costs["uln"]
    for t in (0.25, 0.5):  # two reports of one ULN replica, 10x the profiled cost
        assert core.on_heartbeat(t, "nf1", "inc", [{"brick": "uln-2/0", "now": t,
                                                    "busy_s": 0.0, "queue_depth": 0,
                                                    "batch_latency_ms": live}])
    w = LIVE_WEIGHT
    want = (1 - w) * ((1 - w) * costs["uln"] + w * live) + w * live
    assert core.costs["uln"] == pytest.approx(want)
    core.tick(0.5)
    assert core.deadlines["uln"] > 0.040 * costs["uln"] / total
    assert sum(core.deadlines.values()) == pytest.approx(0.040)
    assert core.status(0.5)["costs_ms"]["uln"] == pytest.approx(want, rel=1e-3)


def test_a_missing_foreign_or_malformed_profile_is_refused(trace_model, tmp_path):
    pcap, model = trace_model
    with pytest.raises(ConfigError, match="no such file"):
        initial_costs(_cfg(tmp_path, "nope.json"))
    (tmp_path / "bad.json").write_text('{"cost_us": 3}')
    with pytest.raises(ConfigError, match="not a profile"):
        load_profile(tmp_path / "bad.json")
    p = profile_trace(pcap, "kitsune", _opts(model), batch=512, limit=600)
    (tmp_path / "p.json").write_text(p.to_json())
    with pytest.raises(ConfigError, match="measured with NF 'kitsune'"):
        initial_costs(_cfg(tmp_path, "p.json", semantics="kitsune"))
    with pytest.raises(ConfigError, match="sla-ms"):
        profile_trace(pcap, "kitsune", _opts(model), sla_ms=0)
