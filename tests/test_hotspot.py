"""The hot spot (DESIGN §8): under a one-host flood a host-keyed split (Kitsune's
SrcIP + DstIP mirror plan) leaves one replica the flood, a flow-keyed split (LUCID's
symmetric 5-tuple) spreads it. Small generated trace: a few seconds."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from lego import cli_experiment, nfs
from lego.experiments.hotspot import hotspot, replica_load
from lego.ext.packets import read_trace
from lego.topo.traffic_synth import generate, write_trace

PACKETS, ATTACK = 4000, 0.5
FLOOD = int(PACKETS * ATTACK) + int(PACKETS * (1 - ATTACK) * 0.6)  # the UDP flood's start


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("hotspot") / "flood.pcap"
    write_trace(generate(seed=2, packets=PACKETS, attack_start=ATTACK), path)
    return path


@pytest.fixture(scope="module")
def flood(trace):
    batch = read_trace(trace)
    return batch.take(slice(FLOOD, len(batch)))


def test_a_host_keyed_split_leaves_one_replica_the_flood(flood):
    kitsune = replica_load(nfs.get("kitsune"), flood, 4)
    lucid = replica_load(nfs.get("lucid"), flood, 4)
    for row in (kitsune, lucid):
        assert len(row.shares) == 4 and sum(row.shares) == pytest.approx(1.0)
        assert row.frames == len(flood)
    assert kitsune.max_share > 0.6 and kitsune.max_share > 2 * lucid.max_share
    assert lucid.imbalance < 1.5 and lucid.mirrored == 0.0
    assert kitsune.mirrored > 0 and kitsune.total > len(flood)  # mirror copies count


def test_every_nf_and_k_gets_a_row(flood):
    rows = hotspot([nfs.get("kitsune"), nfs.get("lucid")], flood, (2, 8))
    assert [(r.nf, r.k) for r in rows] == [("kitsune", 2), ("kitsune", 8), ("lucid", 2),
                                          ("lucid", 8)]
    for r in rows:
        assert sum(r.received) == r.total and np.isclose(sum(r.shares), 1.0)
        assert r.imbalance == pytest.approx(r.k * max(r.shares))


def test_an_nf_without_an_exact_split_is_refused(flood):
    from lego.errors import ConfigError

    with pytest.raises(ConfigError, match="no exact split"):
        replica_load(nfs.get("kitsune"), flood, 4, {"semantics": "kitsune"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lego")
    cli_experiment.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_the_cli_writes_the_table_csv_and_figure(trace, tmp_path, capsys):
    args = _parser().parse_args(["experiment", "hotspot", "--trace", str(trace), "--replicas",
                                 "2,4", "--start", str(FLOOD), "--out", str(tmp_path)])
    assert args.func(args) == 0
    stem = tmp_path / f"hotspot_flood_from{FLOOD}"
    md = stem.with_suffix(".md").read_text()
    assert "every frame counted" in md and "| kitsune | 4 |" in md and "| lucid | 2 |" in md
    assert len(stem.with_suffix(".csv").read_text().splitlines()) == 1 + 2 * (2 + 4)
    assert stem.with_suffix(".png").stat().st_size > 0
    assert "SOCKET_SYM" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--replicas", "2,x"], ["--replicas", "0"],
                                  ["--replicas", "2,2"], ["--nf", "kitsune,"]])
def test_the_cli_refuses_bad_lists(argv):
    with pytest.raises(SystemExit):
        _parser().parse_args(["experiment", "hotspot", *argv])
