"""The NF boundary (``lego.nfs``): an NF is found by name, declares its options,
state groups and graph template, and the framework's packages name no NF."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lego import nfs
from lego.control.config import config_from_dict
from lego.control.granularity import Verdict
from lego.control.graph_specs import graph_specs, nf_chain
from lego.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
#: the framework's packages: none of their modules may name an NF, import an NF's
#: kernels or name its brick types
FRAMEWORK = ("control", "switch", "bricks", "topo", "experiments/elastic")
NF_NAMES = re.compile(r"kitsune|afterimage|kitnet|lego\.ext\.(features|kitnet|legostats|afterimage)"
                      r"|\"(feature_quantization|feature_mapping|uln|decision)\"", re.IGNORECASE)


def _cfg(tmp_path, **nf):
    return config_from_dict({
        "switch": {"traffic_ports": [1]}, "northbound": {"token_file": "t"},
        "nf": {"source": "feed", **nf}, "scaling": {"fe": False},
        "hosts": [{"name": "nf1", "ports": [2], "cores": 2}],
    }, "<nf test>", tmp_path)


def test_the_framework_names_no_nf():
    found = []
    for pkg in FRAMEWORK:
        for path in sorted((REPO / pkg).glob("*.py")):
            found += [f"{path.relative_to(REPO)}:{i}" for i, line in
                      enumerate(path.read_text().splitlines(), 1) if NF_NAMES.search(line)]
    found += [f"p4src/{p.name}" for p in (REPO / "p4src").glob("*.py")
              if NF_NAMES.search(p.read_text())]
    assert not found, f"framework modules that name an NF: {found}"


def test_an_nf_is_found_by_name_and_unknown_names_are_refused():
    assert "kitsune" in nfs.builtin_names()
    nf = nfs.get("kitsune")
    assert nf is nfs.get("kitsune") and nf.name == "kitsune"
    assert nfs.brick_type("feature_quantization").replication == "keyed"
    assert nfs.owner("uln") is nf and nfs.owner("no_such_type") is None
    with pytest.raises(ConfigError, match="expected one of"):
        nfs.get("no_such_nf")


def test_options_are_checked_against_the_nf_declaration():
    nf = nfs.get("kitsune")
    assert nf.resolve({})["semantics"] == "lego"
    with pytest.raises(ConfigError, match="unknown option 'window'"):
        nf.resolve({"window": 10})
    with pytest.raises(ConfigError, match="semantics: expected str"):
        nf.resolve({"semantics": 3})
    with pytest.raises(ConfigError, match="expected one of kitsune or lego"):
        nf.resolve({"semantics": "other"})


def test_algorithm1_decides_whether_the_keyed_brick_splits():
    nf = nfs.get("kitsune")
    assert nf.plan({"semantics": "lego"}).verdict is Verdict.SPLIT_AND_MIRROR
    assert nf.splits_exactly({"semantics": "lego"})
    assert not nf.splits_exactly({"semantics": "kitsune"})


def test_the_config_takes_the_nf_and_its_options(tmp_path):
    cfg = _cfg(tmp_path, name="kitsune", semantics="lego", model="m.npz")
    assert cfg.nf_options == {"semantics": "lego", "model": str(tmp_path / "m.npz")}
    with pytest.raises(ConfigError, match=r"\[nf\].name"):
        _cfg(tmp_path, name="no_such_nf")
    with pytest.raises(ConfigError, match="unknown key 'window'|window"):
        _cfg(tmp_path, name="kitsune", window=3)
    with pytest.raises(ConfigError, match="no exact split"):
        config_from_dict({
            "switch": {"traffic_ports": [1]}, "northbound": {"token_file": "t"},
            "nf": {"source": "feed", "semantics": "kitsune", "model": "m.npz"},
            "hosts": [{"name": "nf1", "ports": [2], "cores": 2}]}, "<nf test>", tmp_path)


def test_the_controller_reads_the_roles_off_the_template(tmp_path):
    cfg = _cfg(tmp_path, semantics="lego", model="m.npz")
    chain = nf_chain(cfg)
    assert chain.nodes == ("src", "fq", "fm", "uln", "dec")
    assert (chain.source, chain.keyed, chain.router, chain.stateless, chain.sink) == \
        ("src", "fq", "fm", "uln", "dec")
    specs = graph_specs(cfg, 2, str(tmp_path), 7, replicas=2, standby=1)
    by = {f"{s['node']}/{s['serial']}": s for s in specs}
    assert sorted(by) == ["dec-2/0", "fm-2/0", "fq-2/0", "src-2/0", "uln-2/0", "uln-2/1",
                          "uln-2/2"]
    assert by["fq-2/0"]["options"]["port_base"] == 7
    assert by["fq-2/0"]["options"]["nf"] == "kitsune"
    assert by["dec-2/0"]["upstream"] == 2  # the routed replicas, not the standby
    assert len(by["fm-2/0"]["outlets"][0]["addresses"]) == 2
    assert by["src-2/0"]["inlet"] is None and by["src-2/0"]["type"] == "frame_feed"


def test_every_nf_reads_only_packet_batch_columns():
    from dataclasses import fields

    from lego.ext.batch import PacketBatch
    from tests.support import flowcount

    columns = {f.name for f in fields(PacketBatch)}
    for nf in nfs.all_builtin() + [nfs.get(flowcount.NAME)]:
        assert nf.packet_fields, nf.name
        assert set(nf.packet_fields) <= columns or nf.packet_fields == (nfs.FRAME,), nf.name


def test_lego_run_offline_runs_the_named_nf_through_its_declaration(tmp_path, capsys):
    from lego.cli import main
    from lego.topo.traffic_synth import generate, write_trace
    from tests.support import flowcount

    trace = tmp_path / "t.pcap"
    write_trace(generate(seed=3, packets=3000), trace)
    out = tmp_path / "results"
    assert main(["run", "--offline", "--trace", str(trace), "--train-packets", "1500",
                 "--results", str(out), "-q"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["packets"] == 3000 and summary["training packets"] == 1500
    assert len((out / "scores.csv").read_text().splitlines()) == 3001
    assert main(["run", "--offline", "--nf", flowcount.NAME, "--trace", str(trace),
                 "--results", str(out)]) == 1
    assert "declares no offline run" in capsys.readouterr().err
