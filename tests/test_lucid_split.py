"""LUCID split over K replicas (the switch's rule in the split simulator): Algorithm 1's
symmetric 5-tuple with the switch-held window clock gives one instance's fragments,
byte for byte, for K = 2..8; replica-local clocks and other single groups do not.
Generated trace and the CIC SYN flood; a few seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lego import nfs
from lego.experiments.split_sim import GRANULARITIES, plan_config
from lego.ext.packets import read_trace
from lego.nfs.lucid.features import load_capture
from lego.nfs.lucid.split import as_sent, split_experiment, split_rows

SYNFLOOD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cic-ddos2019" / \
    "synflood.pcap"


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    from lego.topo.traffic_synth import generate, labels_path, write_trace

    path = tmp_path_factory.mktemp("lucid_split") / "g.pcap"
    write_trace(generate(seed=5, packets=12000, attack_start=0.5), path, labels_path(path))
    return path


def test_algorithm1_splits_lucid_on_the_symmetric_socket_with_the_switch_clock():
    plan = nfs.get("lucid").plan()
    assert plan.primary.name == "SOCKET_SYM" and plan.mirror is None
    assert plan.switch_held == ("window clock",)


def traces(generated):
    return [generated] + ([SYNFLOOD] if SYNFLOOD.is_file() else [])


def test_k_replicas_give_one_instances_fragments_byte_for_byte(generated):
    config = plan_config(nfs.get("lucid").plan())
    for trace in traces(generated):
        cap = load_capture(trace)
        one, rows = split_rows(cap, as_sent(cap, read_trace(trace)), 10.0, 10, [config],
                               range(2, 9))
        assert len(one.first) > 100
        for row in rows:
            assert row.identical == 1.0 and row.fragments == len(one.first), (trace, row)
            assert row.mirrored == 0.0


def test_replica_clocks_and_other_groups_change_fragments(generated):
    cap = load_capture(generated)
    batch = as_sent(cap, read_trace(generated))
    config = plan_config(nfs.get("lucid").plan())
    _, local = split_rows(cap, batch, 10.0, 10, [config], [3], local_clock=True)
    _, others = split_rows(cap, batch, 10.0, 10, GRANULARITIES, [3])
    assert local[0].identical < 1.0
    assert all(row.identical < 1.0 for row in others)


def test_the_experiment_writes_its_table(generated, tmp_path):
    from lego.nfs.lucid.cnn import train
    from lego.nfs.lucid.detect import samples
    from lego.topo.traffic_synth import labels_path

    frags, y = samples(generated, 10.0, 10, labels_path(generated))
    model = train(frags.X, y, k=8, epochs=3, seed=0)[0]
    model.save(tmp_path / "m.npz")
    rows = split_experiment(generated, 3, tmp_path, tmp_path / "m.npz")
    table = (tmp_path / f"split_lucid_{generated.stem}.md").read_text()
    assert "SOCKET_SYM" in table and "| 8 |" in table
    assert [r.k for r in rows[:7]] == list(range(2, 9))
    assert all(r.identical == 1.0 and r.decisions_changed == 0.0 for r in rows[:7])
    assert all(r.identical < 1.0 and r.decisions_changed is not None for r in rows[7:])


def test_a_capture_without_frames_splits_into_nothing(tmp_path):
    from lego.ext.packets import write_pcap

    write_pcap(tmp_path / "empty.v2.pcap", [], [])
    cap = load_capture(tmp_path / "empty.v2.pcap")
    one, rows = split_rows(cap, as_sent(cap, read_trace(tmp_path / "empty.v2.pcap")), 10.0,
                           10, [plan_config(nfs.get("lucid").plan())], [2])
    assert len(one.first) == 0 and rows[0].fragments == 0 and rows[0].identical == 1.0
