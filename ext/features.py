"""Feature extraction: one interface over the two semantics of DESIGN §7.

- ``kitsune``: the reference AfterImage behaviour, value-exact (100 features).
- ``lego``: the Kitsune paper's definition built to split exactly (115 features).

Both take :class:`~lego.ext.batch.PacketBatch` batches and keep their state
between calls, so a trace can be fed in any batch sizes with the same result.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from lego.errors import ConfigError
from lego.ext.batch import PacketBatch

LAMBDAS = (5.0, 3.0, 1.0, 0.1, 0.01)
SEMANTICS = ("kitsune", "lego")


def feature_rows(out: np.ndarray | None, shape: tuple[int, int], who: str) -> np.ndarray:
    """The array an extractor writes its rows into: ``out`` when given (checked:
    a writeable C-contiguous float64 array of ``shape``), else a new one."""
    if out is None:
        return np.empty(shape, dtype=np.float64)
    if (not isinstance(out, np.ndarray) or out.dtype != np.float64 or out.shape != shape
            or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"{who}: out must be a writeable C-contiguous float64 array of "
                         f"shape {shape}, got {getattr(out, 'dtype', type(out).__name__)} "
                         f"{getattr(out, 'shape', '')}")
    return out


class Extractor(Protocol):
    semantics: str
    n_features: int

    def feature_names(self) -> list[str]: ...

    def process(self, batch: PacketBatch) -> np.ndarray:
        """Update state with every packet of the batch in order; return the
        float64 feature matrix of its non-mirror packets, one row each, in order."""
        ...

    def counters(self) -> dict[str, int]:
        """Monotonic counters: packets, mirrors, keys live, keys evicted, ..."""
        ...


def make_extractor(semantics: str, *, spec: bool = False, **options) -> Extractor:
    """Build the extractor for ``semantics``; ``spec=True`` gives the pure-Python
    specification instead of the Cython kernel (slow; for tests and baselines)."""
    if semantics == "kitsune":
        if spec:
            from lego.ext.afterimage_spec import KitsuneSpecExtractor as cls
        else:
            from lego.ext.afterimage import KitsuneExtractor as cls
    elif semantics == "lego":
        if spec:
            from lego.ext.legostats_spec import LegoSpecExtractor as cls
        else:
            from lego.ext.legostats import LegoExtractor as cls
    else:
        raise ConfigError(f"feature semantics: expected one of {SEMANTICS}, got {semantics!r}")
    return cls(**options)


def state_groups(semantics: str) -> list:
    """What each semantics' state is keyed by, declared for Algorithm 1
    (:mod:`lego.control.granularity`). Header fields are the derived ones of DESIGN §7."""
    from lego.control.granularity import StateGroup

    names = make_extractor(semantics).feature_names()

    def named(prefix: str, stats: tuple[str, ...] = ()) -> tuple[str, ...]:
        return tuple(n for n in names if n.startswith(prefix)
                     and (not stats or n.rsplit("_", 1)[1] in stats))

    socket = {"src_ip", "dst_ip", "src_port", "dst_port", "proto"}
    if semantics == "lego":
        return [
            StateGroup("MI", {"src_mac", "src_ip"}, features=named("MI_")),
            StateGroup("H", {"src_ip"}, features=named("H_")),
            StateGroup("jitter", {"src_ip", "dst_ip"}, features=named("jitter_")),
            # 2-D statistics couple a directed stream with its reverse only
            StateGroup("channel", {"src_ip", "dst_ip"}, symmetric=True,
                       features=named("channel_")),
            StateGroup("socket", socket, symmetric=True, features=named("socket_")),
        ]
    two_d = ("radius", "magnitude", "covariance", "pcc")
    return [
        StateGroup("MI", {"src_mac", "src_ip"}, features=named("MI_dir_")),
        # every insert into a host's stream updates its pair with every peer it has
        # met, and each pair reads (and decays) that peer's own outbound stream
        StateGroup("HH", {"src_ip"}, peer_coupled=True, features=named("HH_L", two_d)),
        StateGroup("HH_jit", {"src_ip", "dst_ip"}, features=named("HH_jit_")),
        StateGroup("HpHp", {"src_ip", "src_port"}, peer_coupled=True,
                   features=named("HpHp_", two_d)),
    ]
