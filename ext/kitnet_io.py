"""KitNET model files: a versioned ``.npz`` written atomically, validated on load.

The file holds the hyper-parameters, counters, the feature map, each autoencoder's
W, biases and min/max norms, the output layer, the threshold if one is set, and
free-form string metadata (``meta_json``). Every load error is a ModelError that
names the field, what was expected and what was found.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from lego.errors import ConfigError, ModelError
from lego.ext.kitnet import FORMAT_KIND, FORMAT_VERSION, THRESHOLD_METHODS, KitNET


def save_model(m: KitNET, path: str | os.PathLike) -> None:
    arrays = _to_arrays(m)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_model(path: str | os.PathLike) -> KitNET:
    return _from_arrays(_read_npz(Path(path)), str(path))


_SCALARS = {  # name -> dtype kind of the 0-d array
    "format_version": "i", "n_features": "i", "max_ae": "i", "fm_grace": "i", "ad_grace": "i",
    "lr": "f", "hidden_ratio": "f", "n_trained": "i", "n_executed": "i",
}
_AE_FIELDS = ("W", "hbias", "vbias", "norm_min", "norm_max")


def _ae_name(a: int, k: int) -> str:
    return "out" if a == k else f"ae{a}"


def _to_arrays(m: KitNET) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "kind": np.array(FORMAT_KIND),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "n_features": np.array(m.n_features, dtype=np.int64),
        "max_ae": np.array(m.max_ae, dtype=np.int64),
        "fm_grace": np.array(m.fm_grace, dtype=np.int64),
        "ad_grace": np.array(m.ad_grace, dtype=np.int64),
        "lr": np.array(m.lr, dtype=np.float64),
        "hidden_ratio": np.array(m.hidden_ratio, dtype=np.float64),
        "n_trained": np.array(m.n_trained, dtype=np.int64),
        "n_executed": np.array(m.n_executed, dtype=np.int64),
    }
    if m.threshold is not None:
        arrays["threshold"] = np.array(m.threshold, dtype=np.float64)
        arrays["threshold_method"] = np.array(m.threshold_method or "")
    if m.meta:
        arrays["meta_json"] = np.array(json.dumps(m.meta, sort_keys=True))
    if m._map is None:
        arrays.update(fm_c=m._c, fm_c_r=m._c_r, fm_c_rs=m._c_rs, fm_C=m._C)
        return arrays
    k = len(m._map)
    arrays["map_features"] = m._feat_idx.copy()
    arrays["map_sizes"] = np.array([len(c) for c in m._map], dtype=np.int64)
    for a in range(k + 1):
        vs, hs, _ = m._ae_slices(a)
        name = _ae_name(a, k)
        arrays[f"{name}_W"] = m._W_of(a).copy()
        arrays[f"{name}_hbias"] = m._hbias[hs].copy()
        arrays[f"{name}_vbias"] = m._vbias[vs].copy()
        arrays[f"{name}_norm_min"] = m._norm_min[vs].copy()
        arrays[f"{name}_norm_max"] = m._norm_max[vs].copy()
    return arrays


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: no such model file") from exc
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{path}: not a KitNET model file (.npz): {exc}") from exc


class _Fields:
    """Typed access to a model file's arrays; every error names the field."""

    def __init__(self, arrays: dict[str, np.ndarray], where: str):
        self.arrays = arrays
        self.where = where

    def fail(self, name: str, expected: str, got: str) -> ModelError:
        return ModelError(f"{self.where}: field '{name}': expected {expected}, got {got}")

    def get(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise self.fail(name, "an array (the format requires it)", "none (missing)")
        return self.arrays[name]

    def scalar(self, name: str, kind: str) -> int | float:
        arr = self.get(name)
        want = "an integer scalar" if kind == "i" else "a float scalar"
        if arr.shape != () or arr.dtype.kind not in (("i", "u") if kind == "i" else ("f",)):
            raise self.fail(name, want, f"dtype {arr.dtype} shape {arr.shape}")
        value = arr.item()
        if kind == "f" and not math.isfinite(value):
            raise self.fail(name, "a finite value", repr(value))
        return value

    def array(self, name: str, shape: tuple[int, ...], allow_inf: bool = False) -> np.ndarray:
        arr = self.get(name)
        if arr.dtype != np.float64 or arr.shape != shape:
            raise self.fail(name, f"float64 of shape {shape}", f"{arr.dtype} of shape {arr.shape}")
        bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            what = "NaN" if allow_inf else "NaN or inf"
            raise self.fail(name, f"no {what}", f"{int(bad.sum())} such values (first at {first})")
        return np.ascontiguousarray(arr)


def _read_meta(f: _Fields) -> dict[str, str]:
    raw = f.get("meta_json")
    try:
        meta = json.loads(str(raw)) if raw.shape == () and raw.dtype.kind == "U" else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise f.fail("meta_json", "a JSON object of strings", repr(raw.tolist())[:80])
    return meta


def _from_arrays(arrays: dict[str, np.ndarray], where: str) -> KitNET:
    f = _Fields(arrays, where)
    kind = f.get("kind")
    if kind.shape != () or kind.dtype.kind != "U" or str(kind) != FORMAT_KIND:
        raise f.fail("kind", repr(FORMAT_KIND), repr(kind.tolist()))
    version = f.scalar("format_version", "i")
    if version != FORMAT_VERSION:
        raise f.fail("format_version", str(FORMAT_VERSION), str(version))
    v = {name: f.scalar(name, kind) for name, kind in _SCALARS.items() if name != "format_version"}
    try:
        m = KitNET(v["n_features"], v["max_ae"], v["fm_grace"], v["ad_grace"], v["lr"],
                   v["hidden_ratio"])
    except ConfigError as exc:
        raise ModelError(f"{where}: hyper-parameters: {exc}") from exc
    for name in ("n_trained", "n_executed"):
        if v[name] < 0:
            raise f.fail(name, "an int >= 0", str(v[name]))
    m.n_trained, m.n_executed = v["n_trained"], v["n_executed"]
    if "threshold" in arrays:
        m.threshold = f.scalar("threshold", "f")
        method = f.get("threshold_method")
        if method.shape != () or str(method) not in THRESHOLD_METHODS:
            raise f.fail("threshold_method", f"one of {THRESHOLD_METHODS}", repr(method.tolist()))
        m.threshold_method = str(method)
    if "meta_json" in arrays:
        m.meta = _read_meta(f)
    n = m.n_features
    if "map_sizes" not in arrays:  # saved during phase 'fm'
        if m.n_trained > m.fm_grace:
            raise f.fail("map_sizes", f"a feature map (n_trained {m.n_trained} > fm_grace "
                         f"{m.fm_grace})", "none (missing)")
        m._c = f.array("fm_c", (n,))
        m._c_r = f.array("fm_c_r", (n,))
        m._c_rs = f.array("fm_c_rs", (n,))
        m._C = f.array("fm_C", (n, n))
        return m
    sizes = f.get("map_sizes")
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or sizes.size == 0 or (sizes < 1).any():
        raise f.fail("map_sizes", "1-D integers >= 1", f"{sizes.dtype} {sizes.tolist()!r}")
    feats = f.get("map_features")
    if feats.shape != (int(sizes.sum()),) or feats.dtype.kind not in "iu":
        raise f.fail("map_features", f"integers of shape ({int(sizes.sum())},)",
                     f"{feats.dtype} of shape {feats.shape}")
    if feats.size and (feats.min() < 0 or feats.max() >= n):
        raise f.fail("map_features", f"feature ids in [0, {n})",
                     f"ids from {feats.min()} to {feats.max()}")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    m._set_map([feats[bounds[a]:bounds[a + 1]].tolist() for a in range(sizes.size)])
    k = sizes.size
    for a in range(k + 1):
        vs, hs, ws = m._ae_slices(a)
        nv, nh = m._nv[a], m._nh[a]
        name = _ae_name(a, k)
        m._W[ws] = f.array(f"{name}_W", (nv, nh)).ravel()
        m._hbias[hs] = f.array(f"{name}_hbias", (nh,))
        m._vbias[vs] = f.array(f"{name}_vbias", (nv,))
        m._norm_min[vs] = f.array(f"{name}_norm_min", (nv,), allow_inf=True)
        m._norm_max[vs] = f.array(f"{name}_norm_max", (nv,), allow_inf=True)
    return m
