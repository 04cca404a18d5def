"""Figure 4's machinery: how cores are shared out, and one short curve end to end
(~15 s; the throughput figures themselves are `lego experiment bricks`' job)."""

from __future__ import annotations

import csv
import os

import pytest

from lego.experiments.figure4 import figure4_curve, split_cores, write_curve


@pytest.mark.parametrize("k,fq_us,scorer_us,semantics,want", [
    (1, 0.5, 1.5, "lego", (1, 0)),  # one core: the extractor and its inline scorer
    (2, 0.5, 1.5, "lego", (1, 1)),
    (16, 0.5, 1.5, "lego", (4, 12)),  # 4 extractors keep up with 16 cores' packets
    (16, 0.5, 1.5, "kitsune", (1, 15)),  # no exact split: one extractor
    (2, 3.0, 1.0, "lego", (1, 1)),  # at least one scorer process
    (4, 3.0, 1.0, "lego", (3, 1)),
])
def test_cores_are_shared_out_by_cpu_per_packet(k, fq_us, scorer_us, semantics, want):
    assert split_cores(k, fq_us, scorer_us, semantics) == want


def test_a_short_curve_runs_every_core_count_and_writes_its_files(shared_data, tmp_path):
    cpus = sorted(os.sched_getaffinity(0))[:2]
    points = figure4_curve(shared_data / "kitsune_mirai_first38363.tsv", tmp_path / "out",
                           "lego", 1, cpus, tmp_path / "w", trials=1)
    assert [k for k, _ in points] == list(range(1, len(cpus) + 1))
    for k, (mono, bricks, whole) in points:
        assert mono.setup.startswith("monolith") and mono.ratio == 1.0
        assert bricks.packets == mono.packets == whole.packets == 38363
        assert bricks.pps > 0 and bricks.ratio == pytest.approx(bricks.pps / mono.pps)
        assert "inline" in bricks.setup and f"fm+uln x{k - 1} |" in bricks.setup
    stem = tmp_path / "out" / "curve"
    write_curve(points, stem, "test")
    rows = list(csv.DictReader(open(stem.with_suffix(".csv"))))
    assert len(rows) == 3 * len(points)
    assert stem.with_suffix(".png").stat().st_size > 0
    assert stem.with_suffix(".md").read_text().count("\n| ") == len(points) + 1
