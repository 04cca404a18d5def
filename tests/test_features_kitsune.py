"""The ``kitsune`` feature semantics: spec vs the reference fixture, kernel vs spec.

Fast (a few seconds): the reference fixture is 16,000 packets and the generated
traffic a few thousand.
"""

from __future__ import annotations

import numpy as np
import pytest

from lego.errors import ConfigError
from lego.ext.afterimage import KitsuneExtractor
from lego.ext.afterimage_spec import KitsuneSpecExtractor
from lego.ext.batch import ADDR_BYTES, Family, PacketBatch, Proto
from lego.ext.features import make_extractor
from lego.topo.traffic_batches import mixed_traffic

RTOL = ATOL = 1e-9
NAMES = KitsuneSpecExtractor().feature_names()


def col(name: str) -> int:
    return NAMES.index(name)


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """|got - want| <= 1e-9 * |want| + 1e-9 everywhere; names the first miss."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    bad = ~np.isclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        pytest.fail(f"{what}: {int(bad.sum())} values off; first: packet {i}, feature "
                    f"{NAMES[j]}: got {got[i, j]!r}, expected {want[i, j]!r}")


def assert_bitwise(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert_close(got, want, what)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    if not same.all():
        i, j = np.argwhere(~same)[0]
        pytest.fail(f"{what}: {int((~same).sum())} values differ in their bits; first: "
                    f"packet {i}, feature {NAMES[j]}: {got[i, j]!r} vs {want[i, j]!r}")


# ---------------------------------------------------------------- the reference fixture

@pytest.fixture(scope="module")
def fx16k(shared_data):
    from lego.ext.packets import read_trace

    ref = shared_data / "kitsune-reference"
    if not (ref / "fx16k.tsv").is_file():
        pytest.skip(f"the Kitsune reference fixture is not in {ref}")
    batch = read_trace(ref / "fx16k.tsv")
    with np.load(ref / "fx16k-features.npz") as npz:
        X = npz["X"]
    return batch, X


def test_spec_reproduces_reference_features(fx16k):
    batch, X = fx16k
    assert_close(KitsuneSpecExtractor().process(batch), X, "spec vs Kitsune-py")


def test_kernel_reproduces_reference_features(fx16k):
    batch, X = fx16k
    assert_close(KitsuneExtractor().process(batch), X, "kernel vs Kitsune-py")


def test_kernel_equals_spec_on_the_fixture_attack(fx16k):
    batch, _ = fx16k
    spec = KitsuneSpecExtractor().process(batch)
    ext = KitsuneExtractor()
    got = np.concatenate([ext.process(b) for b in batch.split(4000)])
    assert_bitwise(got, spec, "kernel vs spec, fx16k")


# ---------------------------------------------------------------- generated traffic

@pytest.mark.parametrize("seed", [1, 2, 7, 11])
def test_kernel_equals_spec_on_mixed_traffic(seed):
    batch = mixed_traffic(2500, seed=seed)
    assert_bitwise(KitsuneExtractor().process(batch), KitsuneSpecExtractor().process(batch),
                   f"kernel vs spec, mixed_traffic seed {seed}")


@pytest.mark.parametrize("size", [1, 7, 256])
def test_any_batch_split_gives_the_same_bits(size):
    batch = mixed_traffic(1500, seed=3)
    whole = KitsuneExtractor().process(batch)
    ext = KitsuneExtractor()
    parts = np.concatenate([ext.process(b) for b in batch.split(size)])
    assert np.array_equal(parts, whole)
    assert ext.counters()["packets"] == len(batch)


def test_results_land_in_the_callers_buffer():
    batch = mixed_traffic(300, seed=5)
    out = np.full((len(batch), 100), np.nan)
    got = KitsuneExtractor().process(batch, out=out)
    assert got is out
    assert np.array_equal(out, KitsuneExtractor().process(batch))
    with pytest.raises(ValueError, match="out must be"):
        KitsuneExtractor().process(batch, out=np.empty((len(batch), 99)))


def test_mirror_flag_is_ignored_and_counted():
    batch = mixed_traffic(500, seed=4)
    mirrored = batch.take(slice(None))
    mirrored.mirror[::3] = 1
    ext = KitsuneExtractor()
    assert np.array_equal(ext.process(mirrored), KitsuneExtractor().process(batch))
    assert ext.counters()["mirrors"] == int(np.count_nonzero(mirrored.mirror))


def test_empty_batch():
    out = KitsuneExtractor().process(PacketBatch.empty(0))
    assert out.shape == (0, 100)


# ---------------------------------------------------------------- crafted packets

def _ipv4(text: str) -> bytes:
    return bytes(int(x) for x in text.split(".")) + bytes(ADDR_BYTES - 4)


def crafted(rows: list[tuple]) -> PacketBatch:
    """rows of (t, len, src MAC, dst MAC, proto, src IPv4, dst IPv4, sport, dport)."""
    b = PacketBatch.empty(len(rows))
    for i, (t, n, smac, dmac, proto, sip, dip, sp, dp) in enumerate(rows):
        b.ts[i], b.frame_len[i], b.eth_src[i], b.eth_dst[i], b.proto[i] = t, n, smac, dmac, proto
        b.src_family[i] = b.dst_family[i] = Family.IPV4
        b.src_addr[i] = np.frombuffer(_ipv4(sip), dtype=np.uint8)
        b.dst_addr[i] = np.frombuffer(_ipv4(dip), dtype=np.uint8)
        b.sport[i], b.dport[i] = sp, dp
    return b


def both(batch: PacketBatch, **options) -> tuple[np.ndarray, dict[str, int]]:
    """Kernel features (checked bit for bit against the spec) and kernel counters."""
    ext = KitsuneExtractor(**options)
    got = ext.process(batch)
    if not options:
        assert_bitwise(got, KitsuneSpecExtractor().process(batch), "kernel vs spec")
    return got, ext.counters()


def test_concatenated_keys_collide_as_in_the_reference():
    # '192.168.2.1' + '23' == '192.168.2.12' + '3': one socket stream (HpHp);
    # '1.1.1.11' + '1.1.1.1' == '1.1.1.1' + '11.1.1.1': one jitter stream
    got, c = both(crafted([
        (0.0, 100, 1, 9, Proto.TCP, "192.168.2.1", "10.0.0.1", 23, 80),
        (0.0, 100, 2, 9, Proto.TCP, "192.168.2.12", "10.0.0.1", 3, 80),
        (1.0, 100, 3, 9, Proto.UDP, "1.1.1.11", "1.1.1.1", 5, 6),
        (1.0, 100, 4, 9, Proto.UDP, "1.1.1.1", "11.1.1.1", 5, 6),
    ]))
    assert got[1, col("HpHp_L5_weight")] == 2.0  # the second packet joins the first's stream
    assert got[1, col("HH_L5_weight")] == 1.0  # but the hosts differ
    assert got[3, col("HH_jit_L5_weight")] == 2.0
    # 192.168.2.123, 10.0.0.180, 1.1.1.115, 1.1.1.16, 1.1.1.15, 11.1.1.16
    assert c["keys_hphp"] == 6


def test_self_pair_is_listed_twice():
    a = "192.168.2.100"
    got, c = both(crafted([
        (0.0, 100, 1, 1, Proto.UDP, a, a, 5000, 5000),
        (1.0, 50, 1, 1, Proto.UDP, a, a, 5000, 5000),
        (1.5, 70, 1, 1, Proto.UDP, a, a, 5000, 5000),
    ]))
    assert c["pairs_h"] == 1 and c["pairs_hphp"] == 1
    # packet 1: one update at registration; later: twice from the insert (the
    # pair is in the list twice) and once more from update_get_1D2D
    assert c["pair_updates_h"] == 1 + 3 + 3
    assert np.isfinite(got).all()


def test_self_lookup_returns_the_first_pair():
    # the reference looks for a pair of A that holds the stream A: any pair of A
    # does, so A -> A after A -> B reuses the pair (A, B) instead of a self-pair
    a, b = "192.168.2.100", "192.168.2.101"
    _, c = both(crafted([
        (0.0, 100, 1, 2, Proto.ICMP, a, b, 0, 0),
        (0.5, 100, 1, 1, Proto.ICMP, a, a, 0, 0),
    ]))
    assert c["pairs_h"] == 1


def test_arp_pairs_the_macs():
    got, c = both(crafted([
        (0.0, 60, 0x0200000000AA, 0xFFFFFFFFFFFF, Proto.ARP, "192.168.2.5", "192.168.2.1", 0, 0),
        (0.1, 60, 0x0200000000AA, 0xFFFFFFFFFFFF, Proto.ARP, "192.168.2.6", "192.168.2.1", 0, 0),
    ]))
    assert got[1, col("HpHp_L5_weight")] > 1.0  # one MAC stream despite two sender IPs
    assert got[1, col("HH_L5_weight")] == 1.0


def test_key_text_is_the_specs():
    from lego.ext import _afterimage
    from lego.ext.afterimage_spec import addr_str, port_str

    rng = np.random.default_rng(0)
    addrs = [bytes(16), bytes(15) + b"\x01", bytes(10) + b"\xff\xff\x01\x02\x03\x04",
             bytes(12) + b"\x01\x02\x03\x04", bytes.fromhex("20010db8000000000001000000000001")]
    addrs += [rng.integers(0, 256, 16, dtype=np.uint8).tobytes() for _ in range(200)]
    addrs += [bytes(rng.integers(0, 2, 16, dtype=np.uint8)) for _ in range(200)]  # zero runs
    for raw in addrs:
        arr = np.frombuffer(raw, dtype=np.uint8)
        for family in Family:
            for proto, port in ((Proto.TCP, int(rng.integers(0, 65536))), (Proto.UDP, 0),
                                (Proto.ARP, 0), (Proto.ICMP, 0), (Proto.IP, 0), (Proto.L2, 0)):
                want = addr_str(family, raw) + port_str(proto, port)
                assert _afterimage.key_text(family, arr, proto, port) == want
    assert addr_str(Family.IPV6, addrs[2]) == "::ffff:1.2.3.4"  # inet_ntop, as tshark


# ---------------------------------------------------------------- eviction

def test_eviction_drops_idle_keys_and_counts_them():
    rows = [
        (0.0, 100, 1, 2, Proto.TCP, "10.0.0.1", "10.0.0.2", 1000, 80),
        (100.0, 100, 3, 4, Proto.TCP, "10.0.0.3", "10.0.0.4", 1000, 80),
        (200.0, 100, 1, 2, Proto.TCP, "10.0.0.1", "10.0.0.2", 1000, 80),
    ]
    kept, c0 = both(crafted(rows))
    evicted, c1 = both(crafted(rows), evict_idle=10.0)
    assert c0["keys_evicted"] == 0
    assert c1["keys_evicted"] > 0 and c1["keys_evicted_h"] == 4
    assert c1["pairs_evicted_h"] == 2 and c1["pairs_evicted_hphp"] == 2
    assert c1["sweeps"] == 2
    w = col("MI_dir_L0.01_weight")
    assert evicted[2, w] == 1.0  # back from zero
    assert kept[2, w] == pytest.approx(1.0 + 2 ** -2)  # the reference's decayed state
    assert np.array_equal(evicted[:2], kept[:2])


def test_eviction_is_batch_invariant_and_off_by_default():
    batch = mixed_traffic(2000, seed=9)
    ref = KitsuneExtractor().process(batch)
    assert np.array_equal(KitsuneExtractor(evict_idle=1e9).process(batch), ref)
    whole = KitsuneExtractor(evict_idle=2.0)
    a = whole.process(batch)
    assert whole.counters()["keys_evicted"] > 0
    split = KitsuneExtractor(evict_idle=2.0)
    b = np.concatenate([split.process(x) for x in batch.split(97)])
    assert np.array_equal(a, b)
    assert split.counters() == whole.counters()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "10", True])
def test_bad_eviction_setting_is_refused(bad):
    with pytest.raises(ConfigError, match="evict_idle"):
        KitsuneExtractor(evict_idle=bad)


# ---------------------------------------------------------------- interface

def test_make_extractor_and_names():
    ext = make_extractor("kitsune")
    spec = make_extractor("kitsune", spec=True)
    assert isinstance(ext, KitsuneExtractor) and isinstance(spec, KitsuneSpecExtractor)
    assert ext.semantics == spec.semantics == "kitsune"
    names = ext.feature_names()
    assert len(names) == len(set(names)) == ext.n_features == 100
    assert names[0] == "MI_dir_L5_weight" and names[-1] == "HpHp_L0.01_pcc"
    assert names[15:22] == ["HH_L5_weight", "HH_L5_mean", "HH_L5_variance", "HH_L5_radius",
                            "HH_L5_magnitude", "HH_L5_covariance", "HH_L5_pcc"]
