"""The Kitsune brick graph as OS processes over ZeroMQ ipc: exact against the
monolith, and loud but lossless-in-accounting when a brick dies (~20 s)."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest

from lego.bricks.agent import BrickAgent
from lego.bricks.shm import run_id, segment_names
from lego.nfs.kitsune.graph import kitsune_graph, monolith_scores, read_scores, train_model

LIMIT = 6000
BATCH = 512


@pytest.fixture(scope="module")
def models(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    trace = shared_data / "kitsune_mirai_first38363.tsv"
    return trace, {s: train_model(trace, d / f"{s}.npz", s, fm=300, ad=2000)
                   for s in ("lego", "kitsune")}


def _run(graph, workdir, timeout=60.0):
    agent = BrickAgent(graph, workdir)
    try:
        agent.start()
        agent.go()
        agent.wait(timeout)
    finally:
        agent.stop()
    return agent


@pytest.mark.parametrize("semantics,fq,uln", [
    ("lego", 1, 1), ("lego", 2, 2), ("lego", 2, 3),
    ("kitsune", 1, 1), ("kitsune", 1, 2), ("kitsune", 1, 3)])
def test_brick_graph_scores_equal_monolith_bit_for_bit(models, tmp_path, semantics, fq, uln):
    trace, model = models[0], models[1][semantics]
    out = tmp_path / "out"
    graph = kitsune_graph(trace, model, out, semantics=semantics, fq=fq, uln=uln,
                          batch=BATCH, limit=LIMIT)
    agent = _run(graph, tmp_path / "w")
    assert set(agent.exit_codes().values()) == {0}, agent.events
    _assert_monolith_scores(trace, model, out, semantics)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lost_batches"] == 0 and summary["rows"] == LIMIT


@pytest.mark.parametrize("layout,shm,uln", [
    ({"src": "front", "fq": "front", "fm": "scorer", "uln": "scorer"}, True, 2),
    ({"src": "front", "fq": "front", "fm": "scorer", "uln": "scorer"}, False, 2),
    ({"src": "front", "fq": "front", "fm": "front"}, True, 3)])
def test_fused_layouts_give_the_monoliths_scores_bit_for_bit(models, tmp_path, layout, shm, uln):
    trace, model = models[0], models[1]["lego"]
    out = tmp_path / "out"
    graph = kitsune_graph(trace, model, out, semantics="lego", uln=uln, batch=BATCH,
                          limit=LIMIT, groups=layout, shm=shm, preload=True)
    assert len(graph.nodes) == 5 - len(layout) + len(set(layout.values()))
    agent = _run(graph, tmp_path / "w")
    assert set(agent.exit_codes().values()) == {0}, agent.events
    _assert_monolith_scores(trace, model, out, "lego")
    members = {m for r in agent.board.latest.values()
               for m in (r.get("extra") or {}).get("members_cpu_s", {})}
    assert members == set(layout)  # each fused brick's CPU is reported
    assert segment_names(run_id(tmp_path / "w")) == []


def test_a_brick_run_only_inline_has_no_process_and_scores_exactly(models, tmp_path):
    trace, model = models[0], models[1]["lego"]
    out = tmp_path / "out"
    layout = {"src": "front", "fq": "front", "fm": "scorer", "uln": "scorer"}
    graph = kitsune_graph(trace, model, out, semantics="lego", uln=0, batch=BATCH,
                          limit=LIMIT, groups=layout, preload=True, inline=True)
    agent = _run(graph, tmp_path / "w")
    assert agent.exit_codes() == {"front/0": 0, "dec/0": 0}, agent.events
    _assert_monolith_scores(trace, model, out, "lego")
    assert agent.board.latest["front/0"]["extra"]["inline"]["packets"] == LIMIT
    assert agent.board.latest["dec/0"]["ended_from"] == ["scorer/0"]


@pytest.mark.parametrize("shm", [True, False])
def test_inline_replica_takes_the_overflow_and_scores_stay_exact(models, tmp_path, shm):
    """front (source+fq) runs a scorer replica inline; the one scorer process
    gets what it has room for. Both replicas score, exactly, nothing lost."""
    trace, model = models[0], models[1]["lego"]
    out = tmp_path / "out"
    layout = {"src": "front", "fq": "front", "fm": "scorer", "uln": "scorer"}
    graph = kitsune_graph(trace, model, out, semantics="lego", uln=1, batch=BATCH, hwm=1,
                          limit=LIMIT, groups=layout, shm=shm, preload=True, inline=True)
    assert sorted(graph.nodes) == ["dec", "front", "scorer"]
    agent = _run(graph, tmp_path / "w")
    assert set(agent.exit_codes().values()) == {0}, agent.events
    _assert_monolith_scores(trace, model, out, "lego")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lost_batches"] == 0 and summary["rows"] == LIMIT
    inline = agent.board.latest["front/0"]["extra"]["inline"]
    remote = agent.board.latest["scorer/0"]["packets_in"]
    assert inline["brick"] == "scorer/1"
    assert inline["packets"] > 0 and remote > 0  # a one-slot queue overflows
    assert inline["packets"] + remote == LIMIT
    assert sorted(agent.board.latest["dec/0"]["ended_from"]) == ["scorer/0", "scorer/1"]
    assert segment_names(run_id(tmp_path / "w")) == []


def _assert_monolith_scores(trace, model, out, semantics):
    seq, score = read_scores(out / "scores.csv")
    want_seq, want_score = monolith_scores(trace, model, semantics, limit=LIMIT)
    assert np.array_equal(seq, want_seq)
    assert np.array_equal(score.view(np.uint64), want_score.view(np.uint64))  # bit for bit


def _wait_for_scores(agent, timeout=20.0):
    deadline = time.monotonic() + timeout
    while agent.board.latest.get("dec/0", {}).get("packets_in", 0) == 0:
        assert time.monotonic() < deadline, "no batch reached the decision"
        agent.poll(0.05)


def _covered(seq, summary):
    """Seqs scored plus every seq inside a batch recorded as lost."""
    have = set(seq.tolist())
    for lost in summary["lost"]:
        hi = lost["seq1"] if lost["seq1"] is not None else summary["source"]["seq_end"]
        have.update(range(lost["seq0"], hi))
    return have


def test_crashing_brick_is_reported_with_its_exit_code_and_losses_counted(models, tmp_path):
    trace, model = models[0], models[1]["lego"]
    out = tmp_path / "out"
    graph = kitsune_graph(trace, model, out, semantics="lego", uln=2, batch=BATCH, limit=LIMIT,
                          window=4, uln_options={"fail_after": 2, "fail_serial": 1})
    agent = _run(graph, tmp_path / "w")
    died = [e for e in agent.events if e.kind == "died"]
    assert [(e.brick, e.code) for e in died] == [("uln/1", 1)]
    assert "failing on purpose" in died[0].detail["error"]
    assert "Traceback" in agent.log_tail("uln/1")  # a dead worker makes noise
    summary = json.loads((out / "summary.json").read_text())
    seq, score = read_scores(out / "scores.csv")
    assert summary["lost_batches"] >= 1  # uln/1 took a third batch and died with it
    assert _covered(seq, summary) >= set(range(LIMIT))  # nothing lost silently
    want_seq, want_score = monolith_scores(trace, model, "lego", limit=LIMIT)
    pos = np.searchsorted(want_seq, seq)
    assert np.array_equal(score, want_score[pos])  # what arrived is exact


def test_killed_brick_reported_within_one_second_and_no_batch_silently_lost(models, tmp_path):
    trace, model = models[0], models[1]["lego"]
    out = tmp_path / "out"
    graph = kitsune_graph(trace, model, out, semantics="lego", uln=2, batch=BATCH, limit=LIMIT,
                          window=4, source_options={"pps": 4000})  # paced: ~1.5 s
    agent = BrickAgent(graph, tmp_path / "w")
    try:
        agent.start()
        agent.go()
        _wait_for_scores(agent)
        killed_at = time.monotonic()
        os.kill(agent.pid("uln/1"), signal.SIGKILL)
        while not any(e.kind == "died" for e in agent.events):
            assert time.monotonic() - killed_at < 5, "death not reported"
            agent.poll(0.05)
        died = [e for e in agent.events if e.kind == "died"][0]
        assert died.brick == "uln/1" and died.code == -signal.SIGKILL
        assert died.t - killed_at < 1.0
        agent.wait(30)
    finally:
        agent.stop()
    summary = json.loads((out / "summary.json").read_text())
    seq, _ = read_scores(out / "scores.csv")
    assert summary["batches_total"] == -(-LIMIT // BATCH)
    assert _covered(seq, summary) >= set(range(LIMIT))
    codes = agent.exit_codes()
    assert codes.pop("uln/1") == -signal.SIGKILL and set(codes.values()) == {0}
    assert segment_names(run_id(tmp_path / "w")) == []  # no shared memory left behind


def test_killed_host_of_an_inline_replica_drains_the_graph(models, tmp_path):
    """The front dies with the scorer replica it runs inline: the agent ends both
    for their next hops, so the scorer process and the decision finish."""
    trace, model = models[0], models[1]["lego"]
    out = tmp_path / "out"
    layout = {"src": "front", "fq": "front", "fm": "scorer", "uln": "scorer"}
    graph = kitsune_graph(trace, model, out, semantics="lego", uln=1, batch=BATCH, limit=LIMIT,
                          groups=layout, inline=True, source_options={"pps": 4000})
    agent = BrickAgent(graph, tmp_path / "w")
    try:
        agent.start()
        agent.go()
        _wait_for_scores(agent)
        os.kill(agent.pid("front/0"), signal.SIGKILL)
        agent.wait(30)
    finally:
        agent.stop()
    codes = agent.exit_codes()
    assert codes.pop("front/0") == -signal.SIGKILL and set(codes.values()) == {0}
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["rows"] < LIMIT  # what was scored before the kill, no hang
    seq, score = read_scores(out / "scores.csv")
    want_seq, want_score = monolith_scores(trace, model, "lego", limit=LIMIT)
    assert np.array_equal(score, want_score[np.searchsorted(want_seq, seq)])
    assert segment_names(run_id(tmp_path / "w")) == []


def test_the_example_graph_file_runs_from_the_cli_and_scores_exactly(shared_data, tmp_path):
    """nfs/kitsune/kitsune_2cores.toml, as its header says to use it (the trace
    path made absolute, the model trained next to it)."""
    from pathlib import Path

    from lego.cli import main

    example = Path(__file__).resolve().parents[1] / "nfs" / "kitsune" / "kitsune_2cores.toml"
    trace = shared_data / "kitsune_mirai_first38363.tsv"
    text = example.read_text().replace("../../../shared/data/kitsune_mirai_first38363.tsv",
                                       str(trace))
    text = text.replace("cpus = [1]", f"cpus = [{max(os.sched_getaffinity(0))}]")
    graph = tmp_path / "kitsune_2cores.toml"
    graph.write_text(text)
    assert main(["kitsune", "train", "--pcap", str(trace), "--semantics", "lego", "--fm", "300",
                 "--ad", "2000", "-q", "-o", str(tmp_path / "model.npz")]) == 0
    assert main(["bricks", "check", str(graph)]) == 0
    assert main(["bricks", "run", str(graph), "--workdir", str(tmp_path / "w")]) == 0
    seq, score = read_scores(tmp_path / "out" / "scores.csv")
    want_seq, want_score = monolith_scores(trace, tmp_path / "model.npz", "lego")
    assert np.array_equal(seq, want_seq)
    assert np.array_equal(score.view(np.uint64), want_score.view(np.uint64))


def test_a_decision_on_a_reused_port_keeps_the_earlier_graphs_results(tmp_path):
    """A standby graph started on the port of a graph scaled in writes to the same
    port-N directory: the finished graph's results move aside to port-N.1, .2 ...
    (a make run lost 29,363 scores when the new decision truncated them)."""
    from lego.bricks.merge import keep_earlier

    out = tmp_path / "port-2"
    keep_earlier(out)  # nothing there yet
    assert not out.exists()
    out.mkdir()
    (out / "scores.csv").write_text("seq,score\n1,0.5\n")
    keep_earlier(out)  # running (no summary yet): a restart of the same graph stays put
    assert (out / "scores.csv").is_file()
    (out / "summary.json").write_text("{}")
    keep_earlier(out)
    assert not out.exists() and (tmp_path / "port-2.1" / "scores.csv").read_text().endswith(
        "1,0.5\n")
    out.mkdir()
    (out / "summary.json").write_text("{}")
    keep_earlier(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["port-2.1", "port-2.2"]
