"""The ``lego`` feature extractor: 115 features that split exactly by address owner.

The semantics are defined by :mod:`lego.ext.legostats_spec` (read its docstring);
this wrapper checks each batch once and runs the compiled kernel
(``_legostats.pyx``), whose rows are bit-identical to the specification's. State
persists between calls, so any split of a stream into batches gives the same rows.

Cost per packet is constant: five keyed lookups for a primary packet (MI, H,
jitter, channel pair, socket pair), two for a mirror, and no pair other than the
packet's own is touched, whatever the number of peers.
"""

from __future__ import annotations

import os

import numpy as np

from lego.errors import ConfigError
from lego.ext import require_built
from lego.ext.batch import ADDR_BYTES, PacketBatch
from lego.ext.legostats_spec import N_FEATURES, feature_names

_FIELDS = {
    "ts": np.float64,
    "frame_len": np.uint32,
    "eth_src": np.uint64,
    "eth_dst": np.uint64,
    "proto": np.uint8,
    "src_family": np.uint8,
    "dst_family": np.uint8,
    "src_addr": np.uint8,
    "dst_addr": np.uint8,
    "sport": np.uint16,
    "dport": np.uint16,
    "mirror": np.uint8,
}


class LegoExtractor:
    """Compiled ``lego`` semantics.

    Options:
        evict_idle: seconds; a key idle for longer starts afresh at its next packet
            and is freed in the background (``keys_evicted``). ``None``: keys live
            forever. Splits stay exact when timestamps do not decrease.
        sweep_budget: entries per table the background sweep examines per packet.
        hash_seed: seed of the table hash (random by default, against collision
            flooding); it changes memory layout only, never a feature value.
    """

    semantics = "lego"
    n_features = N_FEATURES

    def __init__(self, evict_idle: float | None = None, sweep_budget: int = 2,
                 hash_seed: int | None = None) -> None:
        if evict_idle is not None and not (isinstance(evict_idle, (int, float))
                                           and evict_idle > 0):
            raise ConfigError(f"LegoExtractor.evict_idle: expected seconds > 0 or None, "
                              f"got {evict_idle!r}")
        if not (isinstance(sweep_budget, int) and sweep_budget >= 1):
            raise ConfigError(f"LegoExtractor.sweep_budget: expected an int >= 1, "
                              f"got {sweep_budget!r}")
        if hash_seed is None:
            hash_seed = int.from_bytes(os.urandom(8), "little")
        if not (isinstance(hash_seed, int) and 0 <= hash_seed < 2**64):
            raise ConfigError(f"LegoExtractor.hash_seed: expected an int in [0, 2**64), "
                              f"got {hash_seed!r}")
        kernel = require_built("_legostats")
        self.evict_idle = evict_idle
        self._state = kernel.LegoState(hash_seed, float(evict_idle or 0.0), sweep_budget)

    def feature_names(self) -> list[str]:
        return feature_names()

    def process(self, batch: PacketBatch) -> np.ndarray:
        """Update state with every packet in order; return float64[n_primary, 115]."""
        arrays = {}
        n = len(batch.ts)
        for name, dtype in _FIELDS.items():
            arr = getattr(batch, name)
            shape = (n, ADDR_BYTES) if name.endswith("_addr") else (n,)
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype:
                raise TypeError(f"PacketBatch.{name}: expected numpy {np.dtype(dtype)}, "
                                f"got {getattr(arr, 'dtype', type(arr).__name__)}")
            if arr.shape != shape:
                raise ValueError(f"PacketBatch.{name}: expected shape {shape}, got {arr.shape}")
            arrays[name] = np.ascontiguousarray(arr)
        n_rows = n - int(np.count_nonzero(arrays["mirror"]))
        out = np.empty((n_rows, N_FEATURES), dtype=np.float64)
        self._state.process(**arrays, out=out)
        return out

    def counters(self) -> dict[str, int]:
        """packets, mirrors, rows, keys_live, keys_created, keys_evicted, and per
        table ``<table>_<keys|created|evicted|updates|probes|moved>`` (probes:
        index slots examined; moved: entries re-inserted when an index grew)."""
        s = self._state
        tables = s.table_counters()
        res = {"packets": s.packets, "mirrors": s.mirrors, "rows": s.rows,
               "keys_live": sum(t["keys"] for t in tables.values()),
               "keys_created": sum(t["created"] for t in tables.values()),
               "keys_evicted": sum(t["evicted"] for t in tables.values())}
        for name, t in tables.items():
            for k, v in t.items():
                res[f"{name}_{k}"] = int(v)
        return res

    def table_arrays(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the live state of table ``name`` (MI, H, channel, jitter,
        socket): keys uint64[n, kw], values float64[n, vw], flags uint8[n]."""
        return self._state.table_arrays(name)
