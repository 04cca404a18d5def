"""The ``kitsune`` feature semantics (Kitsune-py's AfterImage), compiled.

:class:`KitsuneExtractor` computes the reference's 100 features per packet
(DESIGN §7) with the kernel in ``_afterimage.pyx``: C hash tables over the
reference's key strings, pair lists as C arrays, the packet loop without the
GIL. It performs the operations of the specification
(:mod:`lego.ext.afterimage_spec`) in the same order, so the two agree bit for bit,
and both reproduce the reference's fixture (``fx16k-features.npz``).

State persists across :meth:`~KitsuneExtractor.process` calls: any split of a
trace into batches gives the same features, bit for bit.

Deviations from the reference, both deliberate:

- The mirror flag is ignored: the reference has no mirrors, and its 2-D
  statistics couple a host with every peer, so no split of the traffic is exact
  anyway (DESIGN §7). Every packet is treated as primary and yields a row;
  ``counters()["mirrors"]`` says how many carried the flag.
- ``evict_idle`` (off by default) bounds memory on long traces: a key that no
  packet referred to (as source or destination key) for more than
  ``evict_idle`` seconds of trace time is dropped with all its pairs, checked
  every ``evict_idle`` seconds. The reference keeps every key for ever, and its
  keys carry on from their decayed state; an evicted key that comes back
  restarts from zero (weight 1 after its first packet), and its former peers no
  longer update the dropped pairs. With lambda 0.01 a state idle for 1000 s
  still keeps 2**-10 of its weight, so features can change after an eviction.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from lego.errors import BuildError, ConfigError
from lego.ext import require_built
from lego.ext.afterimage_spec import N_FEATURES, feature_names
from lego.ext.batch import PacketBatch
from lego.ext.features import LAMBDAS, feature_rows

_COLUMNS = ("ts", "frame_len", "eth_src", "eth_dst", "proto", "src_family", "dst_family",
            "src_addr", "dst_addr", "sport", "dport", "mirror")


class KitsuneExtractor:
    """Extractor (see :mod:`lego.ext.features`) of the reference semantics.

    ``evict_idle``: seconds of trace time after which an idle key is dropped
    (None or 0: never, as the reference). One extractor is one state: it is not
    safe to call :meth:`process` on it from two threads at once (the kernel runs
    without the GIL).
    """

    semantics = "kitsune"
    n_features = N_FEATURES

    def __init__(self, *, evict_idle: float | None = None) -> None:
        if evict_idle is None:
            evict_idle = 0.0
        if isinstance(evict_idle, bool) or not isinstance(evict_idle, Real):
            raise ConfigError("KitsuneExtractor.evict_idle: expected seconds (a number >= 0) "
                              f"or None, got {evict_idle!r}")
        if not math.isfinite(evict_idle) or evict_idle < 0:
            raise ConfigError("KitsuneExtractor.evict_idle: expected a finite number >= 0, "
                              f"got {evict_idle!r}")
        self.evict_idle = float(evict_idle)
        kernel = require_built("_afterimage")
        if tuple(kernel.LAMBDAS) != LAMBDAS:
            raise BuildError(f"lego.ext._afterimage was built for lambdas {kernel.LAMBDAS}, "
                             f"expected {LAMBDAS}: rebuild it with `make build`")
        self._state = kernel.AfterImage(self.evict_idle)

    def feature_names(self) -> list[str]:
        """MI_dir_L5_weight ... HpHp_L0.01_pcc: group, then lambda, then statistic."""
        return feature_names()

    def process(self, batch: PacketBatch, out: np.ndarray | None = None) -> np.ndarray:
        """Update the state with every packet of the batch in order; return its
        n x 100 float64 features (one row per packet, mirrors included), written
        into ``out`` when given (C-contiguous float64, shape (n, 100))."""
        if not isinstance(batch, PacketBatch):
            raise TypeError(f"KitsuneExtractor.process: expected a PacketBatch, "
                            f"got {type(batch).__name__}")
        out = feature_rows(out, (len(batch), N_FEATURES), "KitsuneExtractor.process")
        # PacketBatch has checked dtypes and shapes; the kernel needs contiguity
        cols = [np.ascontiguousarray(getattr(batch, c)) for c in _COLUMNS]
        self._state.process(*cols, out)
        return out

    def counters(self) -> dict[str, int]:
        """packets, mirrors, sweeps; per database (mi, h, jit, hphp) keys live and
        keys evicted; for h and hphp pairs live, pairs evicted and pair updates."""
        c = self._state.counters()
        c["keys_live"] = sum(c[f"keys_{d}"] for d in ("mi", "h", "jit", "hphp"))
        c["keys_evicted"] = sum(c[f"keys_evicted_{d}"] for d in ("mi", "h", "jit", "hphp"))
        return c
