"""The run's report: events as plain sentences, SLA figures, core-seconds, the
machine's CPU (pure, but for reading /proc/stat)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from lego.cpu_quota import machine_cpu_s
from lego.experiments.elastic.report import (
    core_seconds,
    event_sentence,
    machine_busy,
    machine_figures,
    scaling_events,
    sla_figures,
)
from lego.experiments.elastic.results import lag_figures, window_figures
from lego.topo.status import event_text

EVENTS = [
    {"t": 112.1, "kind": "scale_out", "brick": "fq", "role": "keyed", "port": 3, "host": "nf2",
     "replicas": 2,
     "reason": "utilisation 0.83 > 0.75 for 1.0s", "export_at": {"3": {"x": 1}}},
    {"t": 112.4, "kind": "state_moved", "buckets": 452, "entries": 27944, "held": 12,
     "seconds": 0.25, "lost_buckets": 0},
    {"t": 130.0, "kind": "scale_in", "brick": "fq", "role": "keyed", "port": 3, "replicas": 1,
     "reason": "utilisation 0.10 < 0.3 for 1.2s"},
]


def test_an_event_is_one_plain_sentence_with_its_move():
    rows = scaling_events(EVENTS, 100.0)
    assert [(r["replicas_before"], r["replicas_after"]) for r in rows] == [(1, 2), (2, 1)]
    assert rows[0]["utilisation"] == 0.83 and rows[0]["high"] == 0.75
    text = event_sentence(rows[0])
    assert text == ("12.1 s: feature extraction 1 -> 2 replicas on nf2 (utilisation 0.83 > "
                    "0.75 for 1.0 s); 452 buckets, 27,944 entries moved in 0.25 s, 12 packets "
                    "held, 0 buckets lost")
    one = event_sentence({**rows[0], "buckets": 1, "entries": 1, "held": 1})
    assert one.endswith("1 bucket, 1 entry moved in 0.25 s, 1 packet held, 0 buckets lost")
    boosted = event_sentence({**rows[0], "boost": {"nf1": 0.45}})
    assert boosted.endswith("0 buckets lost (CPU quota while the move waited on them: nf1 "
                            "0.45 cores)")
    for r in rows:
        s = event_sentence(r)
        assert not set("{['") & set(s), s


def test_a_quota_resize_is_a_sentence_of_its_own():
    events = EVENTS + [{"t": 140.0, "kind": "scale_up", "brick": "fq", "role": "keyed",
                        "port": 3, "host": "nf2", "cores_before": 0.1, "cores": 0.2,
                        "reason": "utilisation 0.981 > 0.75 for 0.5s, one bucket 91% of "
                                  "its load"},
                       {"t": 141.0, "kind": "state_moved", "buckets": 9, "entries": 9}]
    rows = scaling_events(events, 100.0)
    assert [r["event"] for r in rows] == ["scale-out", "scale-in", "scale-up"]
    up = rows[-1]
    assert (up["replicas_before"], up["replicas_after"], up["utilisation"]) == \
        (None, None, 0.981)
    assert up["buckets"] == 0  # a later move is not the resize's
    assert event_sentence(up) == ("40.0 s: feature extraction on nf2: CPU quota 0.1 -> 0.2 "
                                  "cores, in place (utilisation 0.981 > 0.75 for 0.5 s, one "
                                  "bucket 91% of its load)")


def test_sla_figures_count_the_peak_seconds_apart():
    rows = [{"t": t, "p99_ms": p} for t, p in enumerate([50, 60, 900, 80, 70, 40])]
    f = sla_figures(rows, 100.0, (2.05, 5.05))  # the replay starts a little after t = 0
    assert f["peak_seconds"] == 3 and f["seconds_within_sla_fraction_peak"] == 0.667
    assert f["p99_latency_ms_peak"] == 900 and f["seconds_within_sla_fraction"] == 0.833
    assert sla_figures([], 100.0, None)["seconds_within_sla_fraction"] is None
    f = sla_figures(rows, 100.0, (2.05, 5.05), attack=(3.05, 6.05))  # the last three
    assert (f["attack_seconds"], f["seconds_within_sla_fraction_attack"],
            f["p99_latency_ms_attack"]) == (3, 1.0, 80)
    assert sla_figures(rows, 100.0, None)["p99_latency_ms_attack"] is None


def test_the_attack_spans_from_its_first_packets_step_to_the_replays_end(tmp_path):
    from lego.experiments.elastic.results import attack_span
    from lego.topo.traffic import Segment

    segs = [Segment(i, 100 * i, 100, 25) for i in range(4)]  # 4 s steps of 100 packets
    labels = tmp_path / "l.csv"
    labels.write_text("\n".join(["0"] * 250 + ["1"] * 150) + "\n")
    assert attack_span(labels, segs, 0.5, 4.0) == (8.5, 16.5)  # packet 250: the third step
    labels.write_text("\n".join(["0"] * 400) + "\n")
    assert attack_span(labels, segs, 0.5, 4.0) is None
    assert attack_span(None, segs, 0.5, 4.0) is None


def test_core_seconds_against_a_static_peak_allocation():
    tl = [{"t": 0.0, "cores": 0.1}, {"t": 10.0, "cores": 0.3}, {"t": 20.0, "cores": 0.1}]
    assert core_seconds(tl) == {"core_seconds": 4.0, "core_seconds_static_peak": 6.0}


def test_machine_figures_cover_the_replay_rows_only():
    """Rows before and after the replay (target 0) and rows without a reading do not
    count; a row at 95 % or more of all cores at normal priority counts as saturated
    for its span (niced time yields, so it does not)."""
    def row(t, target, busy, normal):
        return {"t": t, "target_pps": target, "machine_busy": busy,
                "machine_busy_normal": normal}

    tl = [row(0.0, 0, 0.1, 0.1), row(1.0, 500, 0.5, 0.5), row(3.0, 900, 1.0, 0.96),
          row(4.0, 900, None, None), row(5.0, 500, 1.0, 0.6), row(9.0, 0, 1.0, 1.0)]
    f = machine_figures(tl, 2)
    assert f == {"machine_cores": 2,
                 "machine_cores_busy_replay": round((0.5 + 1.0 * 2 + 1.0) / 4 * 2, 2),
                 "machine_cores_busy_normal_replay": round((0.5 + 0.96 * 2 + 0.6) / 4 * 2, 2),
                 "machine_saturated_s": 2.0, "machine_replay_s": 4.0}
    assert machine_figures(tl[:1], 2)["machine_cores_busy_replay"] is None


def test_the_machine_cpu_is_read_in_seconds_and_split_by_priority():
    before = after = machine_cpu_s()
    deadline = time.monotonic() + 2.0
    while after[0] <= before[0] and time.monotonic() < deadline:
        sum(i * i for i in range(100_000))  # some CPU, at this process's priority, until
        after = machine_cpu_s()  # the kernel's next tick has counted it (10 ms each)
    assert 0 <= before[1] <= before[0] <= before[2] and after[0] > before[0]
    f = machine_busy(before, after)
    assert 0 < f["machine_busy"] <= 1 and 0 <= f["machine_busy_normal"] <= f["machine_busy"]
    assert machine_busy(after, after) == {"machine_busy": None, "machine_busy_normal": None}


def test_any_controller_event_reads_as_plain_words():
    e = {"t": 3.0, "kind": "state_moved", "buckets": 341, "export_at": {"3": {"cut": 26753}},
         "lost_buckets": 0, "transfer": True, "seconds": 0.2193, "ports": [2, 3]}
    text = event_text(e)
    assert text == ("state moved: buckets 341; export at 3 cut 26753; lost buckets 0; "
                    "transfer yes; seconds 0.219; ports 2, 3")
    assert not set("{['") & set(text)


def test_the_dashboard_fits_80_columns_and_prints_no_python_structures():
    from rich.console import Console

    from lego.experiments.elastic.dashboard import render
    from lego.topo.controller import dashboard_status

    ctl = {"graphs": [{"port": 2, "host": "nf1"}],
           "bricks": [{"id": f"{role}-2/0", "host": "nf1", "type": t, "utilisation": 0.83,
                       "queue_depth": 3, "pps": 1500.0, "packets_in": 123456}
                      for role, t in (("fq", "feature_quantization"), ("uln", "uln"))],
           "switch": {"replica_ports": [2, 3, 4]}, "alerts": 12, "scores": 45678,
           "events": [{**EVENTS[1], "export_at": {"3": {"cut": 26753, "hint": 26753}}}]}
    switch = {"ports": {"1": {"in": 5000, "out": 0}, "2": {"in": 0, "out": 3000}},
              "events": {"mirror": 1234}}
    console = Console(width=80, record=True)
    console.print(render(dashboard_status(ctl, switch, 1.0), 5000.0, 8000.0,
                         "replay step 5/9 at 3,859 pkt/s", 18.3, "LEGO"))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "cut 26753, hint 26753" in text and not set("{['") & set(text), text


def test_replay_lag_is_measured_from_the_earliest_frame_against_the_trace_clock():
    trace = 1000.0 + np.arange(6) * 0.01  # the replayed pcap: 10 ms apart
    stamps = 5.0 + np.arange(6) * 0.01  # the switch's clock: another origin
    stamps[3:5] += 0.004  # a late wake-up: two frames 4 ms late, sent together
    seq = np.arange(6)
    lag = lag_figures(seq, stamps, trace)
    assert lag["p50"] == 0.0 and lag["max"] == 4.0 and 2.0 < lag["p99"] <= 4.0, lag
    # frames the replay did not send (the switch numbered more): no figure, not a wrong one
    assert lag_figures(np.arange(7), np.zeros(7), trace) is None
    assert lag_figures(np.zeros(0, np.int64), np.zeros(0), trace) is None


def test_window_figures_time_each_window_by_its_last_fragment():
    lat = {"window_latency": np.array([0.150, 0.420, 1.300]), "open_window_fragments": 7}
    w = window_figures(lat, sla_ms=1000.0)
    assert (w["windows_decided"], w["windows_within_sla_fraction"]) == (3, 0.667)
    assert (w["window_latency_ms_p50"], w["window_latency_ms_max"]) == (420.0, 1300.0)
    assert w["fragments_in_windows_open_at_the_end"] == 7
    assert window_figures(None, 1000.0)["windows_decided"] == 0


def test_nf_options_from_the_command_line_are_typed_and_checked():
    import pytest

    from lego import nfs
    from lego.errors import ConfigError

    lucid = nfs.get("lucid")
    assert lucid.parse_options(["window=1", "packets=5"]) == {"window": 1.0, "packets": 5}
    for bad, why in ((["windo=1"], "KEY one of"), (["window=x"], "expected a float"),
                     (["window=-1"], "seconds > 0"), (["window"], "KEY=VALUE")):
        with pytest.raises(ConfigError, match=why):
            lucid.parse_options(bad)


def test_live_brick_costs_are_the_peaks_over_the_frames_busy_replicas_took():
    from lego.experiments.elastic.results import live_brick_costs

    def snap(t, k, standby_cpu):
        fq_stages = {"receive": 0.05 * k, "logic": 0.1 * k, "send": 0.05 * k}
        return (t, {"src-2/0": ["source", 0.1 * k, 0.05 * k, 500 * k],
                    "fq-2/0": ["keyed", 0.2 * k, 0.1 * k, 500 * k, fq_stages],
                    "src-3/0": ["source", 0.05 * k, 0.0, 500 * k],
                    "dec-3/0": ["sink", 0.05 * k, 0.0, 300 * k],
                    "src-4/0": ["source", standby_cpu, 0.0, 0]})  # a standby: idle
    snaps = [snap(0.0, 1, 0.1), snap(1.0, 2, 0.2), snap(2.0, 3, 0.3), snap(3.0, 4, 0.4)]
    costs = live_brick_costs(snaps, (1.2, 3.5))  # from t = 1 to t = 3: 2,000 frames
    assert costs == {"src": {"cpu_us_per_frame": 150.0, "logic_us_per_frame": 50.0,
                             "stages_us_per_frame": {}},
                     "fq": {"cpu_us_per_frame": 200.0, "logic_us_per_frame": 100.0,
                            "stages_us_per_frame": {"receive": 50.0, "logic": 100.0,
                                                    "send": 50.0}},
                     "dec": {"cpu_us_per_frame": 50.0, "logic_us_per_frame": 0.0,
                             "stages_us_per_frame": {}}}
    assert live_brick_costs(snaps, None) is None and live_brick_costs([], (0, 1)) is None
    assert live_brick_costs(snaps, (5.0, 6.0)) is None  # no snapshot inside


def test_faults_are_sentences_and_events_from_several_reads_count_once():
    from lego.experiments.elastic.report import fault_events, merge_events

    first = [{"t": 110.0, "kind": "brick_died", "host": "nf1", "brick": "fq-2/0", "code": -9,
              "what": "brick died: ..."},
             {"t": 110.1, "kind": "brick_restart", "host": "nf1", "brick": "fq-2/0"}]
    second = first[1:] + [
        {"t": 110.1, "kind": "state_lost", "port": 2, "brick": "fq-2/0", "packets": 1234,
         "reason": "keyed brick died"},
        {"t": 125.5, "kind": "command_failed", "command": "switch_scale_in", "host": "nf4",
         "port": 5, "error": "export_state fq-5/0: no answer within 10.0 s"},
        {"t": 126.0, "kind": "scale_out", "brick": "fq", "port": 3, "replicas": 2}]
    events = merge_events(first, second)
    assert [e["kind"] for e in events] == ["brick_died", "brick_restart", "state_lost",
                                           "command_failed", "scale_out"]
    assert "what" not in events[0]
    faults = fault_events(events, 100.0)
    assert [f["sentence"] for f in faults] == [
        "10.0 s: brick fq-2/0 on nf1 died (exit code -9)",
        "10.1 s: Ray restarted brick fq-2/0 on nf1",
        "10.1 s: the keyed state of port 2 lost (keyed brick died; 1,234 packets had built it)",
        "25.5 s: command switch_scale_in on nf4 port 5 failed: export_state fq-5/0: no "
        "answer within 10.0 s"]
    assert [f["failure"] for f in faults] == [True, False, True, True]
    assert faults[0]["code"] == -9 and faults[0]["t"] == 10.0
    recovered = fault_events([
        {"t": 111.0, "kind": "state_recovered", "port": 2, "brick": "fq-2/0", "entries": 150,
         "position": 1750, "checkpoint_age_s": 0.69, "batches": 6, "frames": 1500,
         "seconds": 0.08},
        {"t": 112.0, "kind": "batches_resent", "port": 2, "brick": "uln-2/0",
         "sender": "fq-2/0", "batches": 1, "from_batch": 12, "seconds": 0.03},
        {"t": 113.0, "kind": "state_recovered", "port": 3, "host": "nf2", "to_port": 5,
         "entries": 316, "checkpoint_age_s": 1.4, "frames": 853, "marks": 2,
         "from_frame_log": True, "buckets": 3, "seconds": 0.44}], 100.0)
    assert [f["sentence"] for f in recovered] == [
        "11.0 s: the keyed state of port 2 rebuilt in fq-2/0: its checkpoint (150 entries, "
        "0.69 s old) + 6 batches (1,500 frames) replayed from its source's log, under way "
        "0.08 s after the restart was seen",
        "12.0 s: 1 batch in flight to uln-2/0 sent again by fq-2/0 (from batch 12), 0.03 s "
        "after the restart was seen",
        "13.0 s: the keyed state of port 3 (lost with host nf2) rebuilt on port 5: its "
        "checkpoint (316 entries, 1.4 s old) + 853 frames and 2 window marks from the "
        "switch's frame log, 3 buckets moved, 0.44 s after the host was lost"]
    assert [f["failure"] for f in recovered] == [False, False, False]


def test_merged_scores_fold_a_lost_hosts_rescoring_and_nothing_else(tmp_path):
    """A packet a lost host's decision wrote (no summary: it died with its host) and
    its successor wrote again is kept once, the successor's, and counted (and
    compared bit for bit); two live decisions scoring one packet stay two rows."""
    from types import SimpleNamespace

    from lego.experiments.elastic.results import merge_scores

    def decision(name, rows, summary=True):
        d = tmp_path / name
        d.mkdir()
        (d / "scores.csv").write_text("seq,score,trained,alert,decided\n" + "".join(
            f"{s},{v!r},0,{int(v > 1)},0\n" for s, v in rows))
        if summary:
            (d / "summary.json").write_text("{}")
        return d

    dirs = [decision("port-2", [(0, 0.5), (3, 0.25)]),
            decision("port-3", [(1, 0.125), (2, 2.5)], summary=False),  # lost
            decision("port-5", [(2, 2.5), (4, 0.75)])]
    stats: dict = {}
    seq, score, alert = merge_scores(SimpleNamespace(score_dirs=lambda: dirs), stats=stats)
    assert seq.tolist() == [0, 1, 2, 3, 4] and score[2] == 2.5 and alert.tolist()[2]
    assert stats == {"rescored": 1, "rescored_differ": 0}
    dirs.append(decision("port-6", [(2, 2.5000000000000004)]))  # a live double: kept
    stats = {}
    seq, _, _ = merge_scores(SimpleNamespace(score_dirs=lambda: dirs), stats=stats)
    assert seq.tolist() == [0, 1, 2, 2, 3, 4] and stats["rescored"] == 1
    (dirs[1] / "scores.csv").write_text("seq,score,trained,alert,decided\n2,2.4,0,1,0\n")
    merge_scores(SimpleNamespace(score_dirs=lambda: dirs[:3]), stats=stats)
    assert stats == {"rescored": 1, "rescored_differ": 1}


def test_the_calibration_measures_the_fused_replica_against_its_processes(tmp_path):
    """The fused calibration graph is one process of the NF's five bricks (a chain
    with the source at its head), and its figures read against the processes'."""
    from lego import nfs
    from lego.bricks.graph import CHAIN, graph_from_dict
    from lego.experiments.elastic.calibrate import (
        FUSED,
        BrickCost,
        Calibration,
        calibration_graph,
    )
    from lego.experiments.elastic.results import fused_figures

    for nf in nfs.builtin_names():
        split = graph_from_dict(calibration_graph(tmp_path / "t.pcap", tmp_path / "m.npz",
                                                  tmp_path / "out", "lego", 256, 20, nf))
        fused = graph_from_dict(calibration_graph(tmp_path / "t.pcap", tmp_path / "m.npz",
                                                  tmp_path / "out", "lego", 256, 20, nf,
                                                  fused=True))
        assert len(split.nodes) >= 4 and CHAIN not in {n.type for n in split.nodes.values()}
        assert list(fused.nodes) == [FUSED] and fused.nodes[FUSED].type == CHAIN
        members = [m["node"] for m in fused.nodes[FUSED].options["members"]]
        assert members == list(split.nodes) and fused.role(FUSED) == "source"
    five = Calibration(pps=1000.0, cores=0.1, packets=6000, seconds=6.0, loop_seconds=2.0,
                       bricks=(BrickCost("src", 10.0, 2.0, {"receive": 1.0, "logic": 1.0,
                                                            "send": 8.0}),
                               BrickCost("fq", 15.0, 3.0, {"receive": 4.0, "logic": 3.0,
                                                           "send": 8.0})))
    assert five.stages() == {"receive": 5.0, "logic": 4.0, "send": 16.0}
    assert five.stage_breakdown().endswith("receive 5.0, logic 4.0, send 16.0 (the "
                                           "runtime's share 84%)")
    one = Calibration(pps=4000.0, cores=0.1, packets=6000, seconds=1.5, loop_seconds=0.5,
                      bricks=(BrickCost(FUSED, 6.5, 6.0),))
    assert fused_figures(five) == {}
    f = fused_figures(replace(five, fused=one))
    assert f["capacity_one_replica_fused_loop_pps"] == 12000
    assert f["capacity_one_replica_loop_pps"] == 3000 and f["fused_cpu_us_per_packet"] == 6.5
    assert "12,000 pkt/s the loop (4.0x the processes')" in f["calibration_fused"]
