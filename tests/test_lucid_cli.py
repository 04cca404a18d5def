"""``lego lucid``: the features file in the reference fixture's layout, training and
scoring through the CLI, and the refusals (fast, a few seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lego.cli import main
from lego.errors import ConfigError
from lego.nfs.lucid.detect import parse_pairs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FIXTURE = SHARED / "lucid-reference" / "cic-synflood-10t10n.npz"
SYNFLOOD = SHARED / "cic-ddos2019" / "synflood.pcap"


@pytest.mark.skipif(not FIXTURE.is_file(), reason="../shared/data is absent")
def test_features_writes_the_reference_layout(tmp_path):
    out = tmp_path / "f.npz"
    assert main(["lucid", "features", "--input", str(SYNFLOOD), "--pair",
                 "172.16.0.5:192.168.50.4", "-o", str(out)]) == 0
    got, want = np.load(out), np.load(FIXTURE)
    assert set(want.files) <= set(got.files)
    for name in want.files:
        assert np.array_equal(got[name], want[name]), name


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    from lego.topo.traffic_synth import generate, labels_path, write_trace

    path = tmp_path_factory.mktemp("lucid_cli") / "s.pcap"
    write_trace(generate(seed=4, packets=6000, attack_start=0.5), path, labels_path(path))
    return path, labels_path(path)


def test_train_then_score_through_the_cli(small, tmp_path, capsys):
    trace, labels = small
    model = tmp_path / "m.npz"
    assert main(["lucid", "train", "--input", str(trace), "--labels", str(labels),
                 "--filters", "8", "--epochs", "5", "-o", str(model)]) == 0
    decisions = tmp_path / "d.csv"
    assert main(["lucid", "score", "--input", str(trace), "--model", str(model),
                 "--labels", str(labels), "--decisions", str(decisions)]) == 0
    lines = decisions.read_text().splitlines()
    assert lines[0].startswith("src,sport,dst,dport,proto,window,probability,decision")
    assert len(lines) > 100
    assert "accuracy" in capsys.readouterr().err


def test_contradictions_and_bad_pairs_are_refused(small, tmp_path):
    trace, labels = small
    with pytest.raises(SystemExit, match="give one way to label"):
        main(["lucid", "features", "--input", str(trace), "--labels", str(labels), "--pair",
              "10.0.0.1:10.0.0.2", "-o", str(tmp_path / "f.npz")])
    with pytest.raises(SystemExit, match="1 --test-labels for 2 --test"):
        main(["lucid", "run", "--train", str(trace), "--labels", str(labels), "--test",
              str(trace), str(trace), "--test-labels", str(labels)])
    with pytest.raises(ConfigError, match="ATTACKER:VICTIM"):
        parse_pairs(["10.0.0.1:foo"])
    assert main(["lucid", "features", "--input", str(trace), "--window", "0",
                 "-o", str(tmp_path / "f.npz")]) != 0


def test_the_offline_run_scores_every_fragment_with_a_given_model(small, tmp_path):
    from lego import nfs
    from lego.nfs.lucid.cnn import train
    from lego.nfs.lucid.detect import samples

    trace, labels = small
    frags, y = samples(trace, 10.0, 10, labels)
    train(frags.X, y, k=8, epochs=5, seed=0)[0].save(tmp_path / "m.npz")
    nf = nfs.get("lucid")
    summary = nf.offline(trace, nf.resolve({"model": str(tmp_path / "m.npz")}), 0, tmp_path,
                         labels, True)
    assert summary["fragments"] == len(y)
    rows = (tmp_path / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == len(y)
    alerts = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(alerts) == summary["malicious fragments"] == sum(r.endswith(",1") for r in rows)
    assert 0.0 <= summary["accuracy"] <= 1.0


def test_an_nf_without_a_live_run_is_refused_before_anything_starts(tmp_path):
    """The framework's check, on an NF that declares no model preparation."""
    from dataclasses import replace

    from lego import cli_run, nfs
    from lego.cli import build_parser

    args = build_parser().parse_args(["run", "--nf", "lucid", "--results", str(tmp_path)])
    offline_only = replace(nfs.get("lucid"), train=None)
    with pytest.raises(ConfigError, match="'lucid' has no live run yet"):
        cli_run._check_live(offline_only, args)
    cli_run._check_live(nfs.get("lucid"), args)  # LUCID's own declaration passes
    assert not any(tmp_path.iterdir())  # nothing written, nothing started
