"""Feature extraction, ``kitsune`` semantics: the Cython kernel vs its Python spec.

Rows (packets/s of ``KitsuneExtractor.process`` on one core, best of a few runs,
each from an empty state, whole input as one batch):

- benign: the first 20,000 packets of the real Mirai capture prefix
  (``kitsune_mirai_first38363.tsv``); the spec runs on its first 3,000 packets.
- scan: the attack part of the reference fixture (``fx16k.tsv`` from packet
  13,337), timed after both extractors have processed the benign part before
  it (untimed); the spec runs on the same attack packets.
- generated scan: ``lego.topo.traffic_batches.mixed_traffic`` with a port scan of one host
  to 1,000 addresses (the reference couples a host with every peer, so each
  probe updates every earlier pair: cost grows with the fan-out); the spec runs
  on the same packets.

Each ratio is kernel packets/s over spec packets/s, measured in the same run.
Without the shared data, the first two rows fall back to generated traffic.
"""

from __future__ import annotations

from bench.common import SHARED_DATA, Row, timed
from lego.ext.afterimage import KitsuneExtractor
from lego.ext.afterimage_spec import KitsuneSpecExtractor
from lego.ext.batch import PacketBatch
from lego.topo.traffic_batches import mixed_traffic

TARGET_BENIGN_PPS = 50_000.0
ATTACK_START = 13_337


def _fresh(cls, batch: PacketBatch) -> None:
    cls().process(batch)


def _row(name: str, batch: PacketBatch, spec_batch: PacketBatch, spec_label: str,
         target: float = 0.0, warm: PacketBatch | None = None, repeat: int = 3) -> Row:
    """Time the kernel on ``batch`` and the spec on ``spec_batch`` (after both
    processed ``warm``, untimed, when given)."""
    if warm is None:
        seconds, _ = timed(_fresh, KitsuneExtractor, batch, repeat=repeat)
        spec_seconds, _ = timed(_fresh, KitsuneSpecExtractor, spec_batch)
    else:
        seconds = float("inf")
        for _ in range(repeat):
            ext = KitsuneExtractor()
            ext.process(warm)
            s, _ = timed(ext.process, batch)
            seconds = min(seconds, s)
        spec = KitsuneSpecExtractor()
        spec.process(warm)
        spec_seconds, _ = timed(spec.process, spec_batch)
    return Row(name=name, packets=len(batch), seconds=seconds,
               baseline=f"Python spec, {spec_label}",
               baseline_pps=len(spec_batch) / spec_seconds, target_pps=target)


def run(quick: bool) -> list[Row]:
    from lego.ext.packets import read_trace

    rows: list[Row] = []
    n_benign, n_spec = (5_000, 1_000) if quick else (20_000, 3_000)
    mirai = SHARED_DATA / "kitsune_mirai_first38363.tsv"
    fixture = SHARED_DATA / "kitsune-reference" / "fx16k.tsv"

    if mirai.is_file():
        benign = read_trace(mirai, limit=n_benign)
        source = f"mirai first {len(benign):,}"
    else:
        benign = mixed_traffic(n_benign, seed=1, scan_packets=0)
        source = f"generated {len(benign):,}"
    rows.append(_row(f"fe kitsune benign ({source})", benign,
                     benign.take(slice(0, n_spec)), f"first {n_spec:,} packets",
                     target=TARGET_BENIGN_PPS))

    if fixture.is_file():
        fx = read_trace(fixture)
        warm, attack = fx.take(slice(0, ATTACK_START)), fx.take(slice(ATTACK_START, None))
        if quick:
            attack = attack.take(slice(0, 1_000))
        rows.append(_row(f"fe kitsune scan (fx16k attack, {len(attack):,} after "
                         f"{ATTACK_START:,} benign)", attack, attack, "same packets",
                         warm=warm))

    probes = 300 if quick else 1_000
    scan = mixed_traffic(200, seed=1, scan_packets=probes)
    rows.append(_row(f"fe kitsune generated scan ({probes:,} probes)", scan, scan,
                     "same packets", repeat=3))
    return rows
