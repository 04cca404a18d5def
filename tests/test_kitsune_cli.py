"""The Kitsune NF end to end through the `lego kitsune` CLI, against the reference.

fx16k: the reference Kitsune (AfterImage + KitNET, FM 1000, AD 10000) scored this
trace; our CLI must give the same per-packet scores from the raw TSV.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lego.cli import main

FM, AD = 1000, 10000


@pytest.fixture(scope="module")
def fx16k(shared_data):
    ref = shared_data / "kitsune-reference"
    if not (ref / "fx16k.tsv").exists():
        pytest.skip(f"reference fixture missing under {ref}")
    return ref


def _read_scores(path):
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    return table[:, 0].astype(np.int64), table[:, 1], table[:, 2].astype(bool), table[:, 3]


def test_run_reproduces_reference_scores(fx16k, tmp_path, capsys):
    out, alerts, model = tmp_path / "scores.csv", tmp_path / "alerts.jsonl", tmp_path / "m.npz"
    status = main(["kitsune", "run", "--pcap", str(fx16k / "fx16k.tsv"), "--fm", str(FM),
                   "--ad", str(AD), "-o", str(out), "--alerts", str(alerts),
                   "--labels", str(fx16k / "fx16k.labels"), "--save-model", str(model), "-q"])
    assert status == 0
    seq, score, trained, alert = _read_scores(out)
    want = np.load(fx16k / "fx16k-kitnet.npz")["rmse"]
    assert np.array_equal(seq, np.arange(len(want)))
    assert not trained[: FM + AD + 1].any() and trained[FM + AD + 1:].all()
    np.testing.assert_allclose(score, want, rtol=1e-9, atol=1e-12)
    # alerts.jsonl lists exactly the alerting packets, with their scores
    lines = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert [x["seq"] for x in lines] == list(np.flatnonzero(alert))
    err = capsys.readouterr().err
    assert "auc = " in err and "tpr@1%fpr" in err
    assert model.exists()


def test_train_then_score_matches_run(fx16k, tmp_path):
    tsv = str(fx16k / "fx16k.tsv")
    model, scored, ran = tmp_path / "m.npz", tmp_path / "s.csv", tmp_path / "r.csv"
    assert main(["kitsune", "train", "--pcap", tsv, "--fm", str(FM), "--ad", str(AD),
                 "-o", str(model), "-q"]) == 0
    assert main(["kitsune", "score", "--pcap", tsv, "--model", str(model), "-o", str(scored),
                 "-q"]) == 0
    assert main(["kitsune", "run", "--pcap", tsv, "--fm", str(FM), "--ad", str(AD),
                 "-o", str(ran), "-q"]) == 0
    _, s_score, s_trained, s_alert = _read_scores(scored)
    _, r_score, r_trained, r_alert = _read_scores(ran)
    assert s_trained.all()  # a loaded model scores from the first packet
    past = r_trained
    np.testing.assert_array_equal(s_score[past], r_score[past])
    np.testing.assert_array_equal(s_alert[past], r_alert[past])


@pytest.mark.parametrize("semantics,width", [("kitsune", 100), ("lego", 115)])
def test_features_shape(fx16k, tmp_path, semantics, width):
    out = tmp_path / "f.npy"
    assert main(["kitsune", "features", "--input", str(fx16k / "fx16k.tsv"), "--semantics",
                 semantics, "--limit", "500", "-o", str(out), "-q"]) == 0
    x = np.load(out)
    assert x.shape == (500, width) and x.dtype == np.float64 and np.isfinite(x).all()


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "empty.pcap"
    bad.write_bytes(b"")
    assert main(["kitsune", "features", "--input", str(bad), "-o", str(tmp_path / "x.npy"),
                 "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lego: error:") and "empty.pcap" in err[0]


def test_run_on_too_short_trace_is_an_error(fx16k, tmp_path, capsys):
    assert main(["kitsune", "run", "--pcap", str(fx16k / "fx16k.tsv"), "--fm", "5000",
                 "--ad", "50000", "-q"]) == 1
    assert "ended before KitNET finished training" in capsys.readouterr().err
