"""The ``lego`` feature extractor: 115 features that split exactly by address owner.

The semantics are defined by :mod:`lego.ext.legostats_spec` (read its docstring);
this wrapper checks each batch once and runs the compiled kernel
(``_legostats.pyx``), whose rows are bit-identical to the specification's. State
persists between calls, so any split of a stream into batches gives the same rows.

Cost per packet is constant: five keyed lookups for a primary packet (MI, H,
jitter, channel pair, socket pair), two for a mirror, and no pair other than the
packet's own is touched, whatever the number of peers.

State moves between replicas (west-east): :meth:`LegoExtractor.export_state`,
:meth:`~LegoExtractor.import_state` and :meth:`~LegoExtractor.drop_state` work by
owner bucket (the switch's bucket of an address) and carry state as a
:class:`StateBlob`, a versioned container of raw arrays that serialises to bytes.
The spec defines which entries and which words (``legostats_spec`` docstring).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lego.errors import ConfigError, LegoError
from lego.ext import require_built
from lego.ext.batch import ADDR_BYTES, FIELD_DTYPES, PacketBatch
from lego.ext.features import feature_rows
from lego.ext.legostats_spec import N_FEATURES, OWNER_BUCKETS, STATE_LAYOUT, feature_names

STATE_MAGIC = b"LGST"
STATE_VERSION = 1
PAIR_TABLES = ("channel", "socket")
# header: magic, version, tables, buckets, reserved, evict_idle (0: off); then the
# bucket bitmap; per table a header (index, key words, value words, entries), keys,
# values, flags padded to 8 bytes; then the CRC-32 of everything before it
_HEAD = struct.Struct("<4sHHIId")
_TABLE_HEAD = struct.Struct("<BBHI")
_CRC = struct.Struct("<I")


class StateError(LegoError):
    """A state move failed."""


class StateFormatError(StateError):
    """Bytes or arrays that are not a valid state blob (names the field, the
    expected and the received value)."""


class StateConflictError(StateError):
    """An imported entry differs from the one this replica already holds."""


class ImportResult(NamedTuple):
    imported: int  # entries inserted
    skipped: int  # entries already present and identical (replicated pairs)


class TableState(NamedTuple):
    keys: np.ndarray  # uint64[n, key words]
    vals: np.ndarray  # float64[n, value words]
    flags: np.ndarray  # uint8[n]: pairs, bit s when side s exists; 0 for streams


def bucket_mask(buckets) -> np.ndarray:
    """bool[OWNER_BUCKETS] from a boolean mask of that length or bucket numbers."""
    arr = np.asarray(buckets if buckets is not None else ())
    if arr.dtype == np.bool_:
        if arr.shape != (OWNER_BUCKETS,):
            raise ConfigError(f"buckets: expected a bool mask of shape ({OWNER_BUCKETS},), "
                              f"got shape {arr.shape}")
        return arr.copy()
    arr = arr.ravel()
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0
                     or arr.max() >= OWNER_BUCKETS):
        raise ConfigError(f"buckets: expected integers in [0, {OWNER_BUCKETS}), got "
                          f"{arr.dtype} in [{arr.min()}, {arr.max()}]")
    mask = np.zeros(OWNER_BUCKETS, dtype=bool)
    mask[arr.astype(np.int64)] = True
    return mask


def address_buckets(family: np.ndarray, addr: np.ndarray) -> np.ndarray:
    """Owner bucket (int64[n]) of each derived address: the switch's
    ``crc32([family][16 bytes]) % 1024`` (``family`` uint8[n], ``addr`` uint8[n, 16])."""
    family = np.ascontiguousarray(family, dtype=np.uint8)
    addr = np.ascontiguousarray(addr, dtype=np.uint8)
    out = np.empty(len(family), dtype=np.int64)
    require_built("_legostats").address_buckets(family, addr, out)
    return out


def _increasing(keys: np.ndarray) -> bool:
    """Rows strictly increasing in lexicographic order."""
    if len(keys) < 2:
        return True
    a, b = keys[:-1], keys[1:]
    diff = a != b
    first = np.argmax(diff, axis=1)
    rows = np.arange(len(a))
    return bool(diff.any(axis=1).all() and (b[rows, first] > a[rows, first]).all())


def _fail(field: str, expected, got) -> StateFormatError:
    return StateFormatError(f"state blob {field}: expected {expected}, got {got}")


@dataclass(frozen=True)
class StateBlob:
    """A consistent snapshot of the entries of some owner buckets, raw and exact.

    ``buckets``: bool[OWNER_BUCKETS], the buckets exported; ``evict_idle``: the
    exporter's option (0.0: off), which the importer must share; ``tables``: per
    table of ``STATE_LAYOUT``, in its order, keys sorted (:class:`TableState`).
    Build one with :meth:`build`, send :meth:`to_bytes`, read :meth:`from_bytes`.
    """

    buckets: np.ndarray
    evict_idle: float
    tables: dict[str, TableState]
    version: int = STATE_VERSION

    @classmethod
    def build(cls, buckets, evict_idle: float, tables: dict) -> StateBlob:
        """Sort each table's rows by key and check shapes, dtypes and flags."""
        out = {}
        for name in STATE_LAYOUT:
            keys, vals, flags = (np.asarray(x) for x in tables[name])
            order = np.lexsort(keys.T[::-1]) if len(keys) > 1 else np.arange(len(keys))
            out[name] = TableState(np.ascontiguousarray(keys[order], dtype=np.uint64),
                                   np.ascontiguousarray(vals[order], dtype=np.float64),
                                   np.ascontiguousarray(flags[order], dtype=np.uint8))
        blob = cls(bucket_mask(buckets), float(evict_idle), out)
        blob.validate()
        return blob

    @property
    def n_entries(self) -> int:
        return sum(len(t.keys) for t in self.tables.values())

    def entries(self) -> dict[str, int]:
        return {name: len(t.keys) for name, t in self.tables.items()}

    def validate(self) -> None:
        """Raise StateFormatError unless this is a well-formed blob."""
        if self.version != STATE_VERSION:
            raise _fail("version", STATE_VERSION, self.version)
        if self.buckets.shape != (OWNER_BUCKETS,) or self.buckets.dtype != np.bool_:
            raise _fail("buckets", f"bool[{OWNER_BUCKETS}]",
                        f"{self.buckets.dtype}{list(self.buckets.shape)}")
        if not (math.isfinite(self.evict_idle) and self.evict_idle >= 0):
            raise _fail("evict_idle", "seconds >= 0 (0: off)", self.evict_idle)
        if list(self.tables) != list(STATE_LAYOUT):
            raise _fail("tables", list(STATE_LAYOUT), list(self.tables))
        for name, (kw, vw) in STATE_LAYOUT.items():
            keys, vals, flags = self.tables[name]
            n = len(keys)
            for field, arr, dtype, shape in (("keys", keys, np.uint64, (n, kw)),
                                             ("vals", vals, np.float64, (n, vw)),
                                             ("flags", flags, np.uint8, (n,))):
                if arr.dtype != dtype or arr.shape != shape:
                    raise _fail(f"table {name} {field}", f"{np.dtype(dtype)}{list(shape)}",
                                f"{arr.dtype}{list(arr.shape)}")
            if not _increasing(keys):
                raise _fail(f"table {name} keys", "strictly increasing (sorted, unique)",
                            "rows out of order or repeated")
            ok = np.isin(flags, (1, 2, 3)) if name in PAIR_TABLES else flags == 0
            if not ok.all():
                raise _fail(f"table {name} flags", "1..3 for pairs, 0 for streams",
                            int(flags[~ok][0]))

    def to_bytes(self) -> bytes:
        parts = [_HEAD.pack(STATE_MAGIC, self.version, len(self.tables), OWNER_BUCKETS, 0,
                            self.evict_idle),
                 np.packbits(self.buckets, bitorder="little").tobytes()]
        for i, (name, (keys, vals, flags)) in enumerate(self.tables.items()):
            kw, vw = STATE_LAYOUT[name]
            parts += [_TABLE_HEAD.pack(i, kw, vw, len(keys)),
                      keys.astype("<u8", copy=False).tobytes(),
                      vals.astype("<f8", copy=False).tobytes(),
                      flags.tobytes(), bytes(-len(flags) % 8)]
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> StateBlob:
        """Parse and validate (structure, CRC, order, flags); the arrays are
        read-only views of ``data`` where it is aligned."""
        buf = memoryview(data).cast("B")
        size = len(buf)
        nbits = OWNER_BUCKETS // 8
        if size < _HEAD.size + nbits + _CRC.size:
            raise _fail("length", f">= {_HEAD.size + nbits + _CRC.size} bytes", size)
        magic, version, n_tables, n_buckets, reserved, evict = _HEAD.unpack_from(buf)
        if magic != STATE_MAGIC:
            raise _fail("magic", STATE_MAGIC, magic)
        if version != STATE_VERSION:
            raise _fail("version", STATE_VERSION, version)
        if n_tables != len(STATE_LAYOUT) or n_buckets != OWNER_BUCKETS or reserved != 0:
            raise _fail("header (tables, buckets, reserved)",
                        (len(STATE_LAYOUT), OWNER_BUCKETS, 0), (n_tables, n_buckets, reserved))
        (crc,) = _CRC.unpack_from(buf, size - _CRC.size)
        if zlib.crc32(buf[:size - _CRC.size]) != crc:
            raise _fail("CRC-32", f"{zlib.crc32(buf[:size - _CRC.size]):#010x}", f"{crc:#010x}")
        off = _HEAD.size
        buckets = np.unpackbits(np.frombuffer(buf, np.uint8, nbits, off),
                                bitorder="little").astype(bool)
        off += nbits
        tables = {}

        def take(dtype, count: int) -> np.ndarray:
            nonlocal off
            nbytes = count * np.dtype(dtype).itemsize
            if off + nbytes > size - _CRC.size:
                raise _fail("length", f">= {off + nbytes + _CRC.size} bytes", size)
            arr = np.frombuffer(buf, dtype, count, off)
            off += nbytes
            return arr if arr.flags.aligned else arr.copy()

        for i, (name, (kw, vw)) in enumerate(STATE_LAYOUT.items()):
            if off + _TABLE_HEAD.size > size - _CRC.size:
                raise _fail("length", f"> {off + _TABLE_HEAD.size + _CRC.size} bytes", size)
            index, got_kw, got_vw, n = _TABLE_HEAD.unpack_from(buf, off)
            if (index, got_kw, got_vw) != (i, kw, vw):
                raise _fail(f"table {name} header (index, key words, value words)",
                            (i, kw, vw), (index, got_kw, got_vw))
            off += _TABLE_HEAD.size
            keys = take("<u8", n * kw).reshape(n, kw).astype(np.uint64, copy=False)
            vals = take("<f8", n * vw).reshape(n, vw).astype(np.float64, copy=False)
            flags = take(np.uint8, n)
            off += -n % 8
            tables[name] = TableState(keys, vals, flags)
        if off != size - _CRC.size:
            raise _fail("length", off + _CRC.size, size)
        blob = cls(buckets, float(evict), tables, version)
        blob.validate()
        return blob


def check_blob(blob: StateBlob, evict_idle: float | None) -> None:
    """Validate a blob for an importer whose option is ``evict_idle``."""
    if not isinstance(blob, StateBlob):
        raise StateFormatError(f"import_state: expected a StateBlob, got {type(blob).__name__}")
    blob.validate()
    if blob.evict_idle != float(evict_idle or 0.0):
        raise ConfigError(f"import_state: the exporter's evict_idle is {blob.evict_idle} "
                          f"(0: off), this extractor's {evict_idle}: both must be equal")

# the batch fields the kernel reads (every field but the sequence number)
_FIELDS = {k: v for k, v in FIELD_DTYPES.items() if k != "seq"}


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
        self._moves = {"state_exported": 0, "state_imported": 0, "state_skipped": 0,
                       "state_dropped": 0, "state_conflicts": 0}

    def feature_names(self) -> list[str]:
        return feature_names()

    def process(self, batch: PacketBatch, out: np.ndarray | None = None) -> np.ndarray:
        """Update state with every packet in order; return float64[n_primary, 115],
        written into ``out`` when given (C-contiguous float64 of that shape: e.g.
        a shared-memory slot the features travel in without a copy)."""
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
        out = feature_rows(out, (n_rows, N_FEATURES), "LegoExtractor.process")
        self._state.process(**arrays, out=out)
        return out

    def counters(self) -> dict[str, int]:
        """packets, mirrors, rows, keys_live, keys_created, keys_evicted, the state
        moves' ``state_<exported|imported|skipped|dropped|conflicts>`` (entries), and
        per table ``<table>_<keys|created|evicted|updates|probes|moved|imported|
        dropped>`` (probes: index slots examined; moved: entries re-inserted when
        an index grew)."""
        s = self._state
        tables = s.table_counters()
        res = {"packets": s.packets, "mirrors": s.mirrors, "rows": s.rows,
               "keys_live": sum(t["keys"] for t in tables.values()),
               "keys_created": sum(t["created"] for t in tables.values()),
               "keys_evicted": sum(t["evicted"] for t in tables.values())}
        res.update(self._moves)
        for name, t in tables.items():
            for k, v in t.items():
                res[f"{name}_{k}"] = int(v)
        return res

    def table_arrays(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copies of the live state of table ``name`` (MI, H, channel, jitter,
        socket): keys uint64[n, kw], values float64[n, vw], flags uint8[n]."""
        return self._state.table_arrays(name)

    # ------------------------------------------------------------ state moves ----

    def export_state(self, buckets, exclude=()) -> StateBlob:
        """A snapshot (call it between batches) of every entry with an owner bucket
        in ``buckets`` and none in ``exclude`` (bucket numbers or a bool mask):
        ``exclude`` names what the importer already holds, e.g. its own buckets."""
        sel, exc = bucket_mask(buckets), bucket_mask(exclude)
        tables = {name: self._state.export_entries(k, sel.view(np.uint8), exc.view(np.uint8))
                  for k, name in enumerate(STATE_LAYOUT)}
        blob = StateBlob.build(sel, float(self.evict_idle or 0.0), tables)
        self._moves["state_exported"] += blob.n_entries
        return blob

    def import_state(self, blob: StateBlob) -> ImportResult:
        """Insert the blob's entries that are absent here. One already present must
        be bitwise identical (a pair replicated at the owner of its other end) and
        is skipped; if any differs, StateConflictError is raised and nothing is
        imported."""
        check_blob(blob, self.evict_idle)
        names = list(STATE_LAYOUT)
        conflicts = []
        for k, name in enumerate(names):
            t = blob.tables[name]
            _, _, bad, first = self._state.import_entries(k, t.keys, t.vals, t.flags, False)
            if bad:
                conflicts.append((name, bad, [int(x) for x in t.keys[first]]))
        if conflicts:
            total = sum(c[1] for c in conflicts)
            self._moves["state_conflicts"] += total
            name, _, key = conflicts[0]
            raise StateConflictError(f"import_state: {total} entries differ from this "
                                     f"replica's (first: table {name}, key {key}); "
                                     "nothing imported")
        imported = skipped = 0
        for k, name in enumerate(names):
            t = blob.tables[name]
            absent, same, _, _ = self._state.import_entries(k, t.keys, t.vals, t.flags, True)
            imported += absent
            skipped += same
        self._moves["state_imported"] += imported
        self._moves["state_skipped"] += skipped
        return ImportResult(imported, skipped)

    def drop_state(self, keep_buckets) -> int:
        """Forget every entry none of whose owner buckets is in ``keep_buckets``;
        their memory is freed (a table under a quarter full shrinks). Returns how
        many entries were dropped."""
        keep = bucket_mask(keep_buckets)
        dropped = sum(self._state.drop_entries(k, keep.view(np.uint8))
                      for k in range(len(STATE_LAYOUT)))
        self._moves["state_dropped"] += dropped
        return dropped

    def pause_sweep(self, paused: bool = True) -> None:
        """Stop (or restart) the background freeing of idle keys. A replica that
        holds packets during a state move pauses it until the held packets have
        run: they run after later ones, so a sweep at the later times could free
        a key that is not idle at theirs (lookups still start idle keys afresh)."""
        self._state.sweep_paused = bool(paused)

    def memory_bytes(self) -> int:
        """Bytes the tables hold allocated (entry stores at capacity and indexes)."""
        return sum(self._state.memory_bytes().values())
