"""A small second NF that lives in the tests: per-host packet counters and a
one-layer numpy model, plugged in through the NF boundary (``lego.nfs``) and
nothing else (docs/adding-an-nf.md walks through it).

Per packet, for its source host (the derived address: IPv4, IPv6, ARP sender,
else MAC): packets and bytes sent so far, and seconds since its last packet. The
model standardises those three features with the training prefix's mean and
spread and scores ``sigmoid(mean(z))``. Its state is keyed by the source host
only, so Algorithm 1 splits it on SrcIP with no mirror; a mirror copy (sent to
the destination's owner by a splitter that mirrors) updates nothing.

Configs name it by module path: ``[nf] name = "tests.support.flowcount"``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lego.bricks import moves
from lego.bricks.catalog import BrickType
from lego.bricks.wire import Message
from lego.control.granularity import StateGroup
from lego.ext.batch import PacketBatch
from lego.nfs import NetworkFunction

NAME = __name__  # what configs and graph files call it
FIELDS = ("ts", "frame_len", "src_family", "src_addr", "mirror", "seq")
N_FEATURES = 3
KEY = np.dtype((np.void, 17))  # address family + 16 address bytes
ALERT = 0.9  # a score above it is an alert


def host_keys(family: np.ndarray, addr: np.ndarray) -> np.ndarray:
    """One opaque 17-byte key per derived source address."""
    raw = np.empty((len(family), 17), dtype=np.uint8)
    raw[:, 0] = family
    raw[:, 1:] = addr
    return raw.view(KEY).ravel()


class HostTable:
    """The keyed state: host key -> [packets, bytes, last timestamp]."""

    def __init__(self) -> None:
        self.hosts: dict[bytes, list[float]] = {}

    def update(self, arrays: Mapping[str, np.ndarray], idx: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(seq, features) of the primaries among rows ``idx``, in order."""
        keys = host_keys(arrays["src_family"][idx], arrays["src_addr"][idx])
        ts, length = arrays["ts"][idx], arrays["frame_len"][idx]
        primary = arrays["mirror"][idx] == 0
        x = np.zeros((int(primary.sum()), N_FEATURES))
        row = 0
        for i in np.flatnonzero(primary).tolist():
            h = self.hosts.setdefault(keys[i].tobytes(), [0.0, 0.0, float(ts[i])])
            gap = float(ts[i]) - h[2]
            h[0] += 1.0
            h[1] += float(length[i])
            h[2] = float(ts[i])
            x[row] = (h[0], h[1], gap)
            row += 1
        return arrays["seq"][idx][primary], x


def _owner_buckets(keys: list[bytes]) -> np.ndarray:
    """The switch's SrcIP bucket of each host key (lego.p4's crc32 over the group)."""
    from lego.p4src.contract import GROUP_SRCIP
    from lego.switch.parser import records_from_batch
    from lego.switch.pipeline import group_buckets

    raw = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 17)
    n = len(raw)
    batch = PacketBatch.empty(n)
    batch.src_family[:] = raw[:, 0]
    batch.src_addr[:] = raw[:, 1:]
    return group_buckets(records_from_batch(batch), GROUP_SRCIP)


class Model:
    """Standardise, average, squash: one layer, numpy only."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean, self.scale = mean, scale

    @classmethod
    def load(cls, path: str | Path) -> Model:
        with np.load(path) as z:
            return cls(z["mean"], z["scale"])

    def score(self, x: np.ndarray) -> np.ndarray:
        z = (np.log1p(np.abs(x)) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-z.mean(axis=1)))


# ---------------------------------------------------------------- the bricks


class HostCounter(moves.KeyedBrick):
    """Keyed brick: the host table, moved between replicas by owner bucket (and
    rebuilt exactly after a crash: lego.bricks.recovery)."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.state = HostTable()
        self.moves = moves.MoveState()
        self.recover = bool(options.get("recover", False))

    def take_batch(self, msg: Message) -> list[Message]:
        if self.moves.active:
            return moves.handle(self, msg)
        self.moves.processed += msg.n  # the move protocol cuts at a packet count
        seq, x = self.rows(msg, np.arange(msg.n))
        return [msg.with_arrays({"seq": seq, "x": x})]

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return moves.flush(self)

    # lego.nfs.KeyedState
    def rows(self, msg: Message, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.state.update(msg.arrays, idx)

    def row_buckets(self, msg: Message, idx: np.ndarray) -> list[np.ndarray]:
        a = msg.arrays
        keys = host_keys(a["src_family"][idx], a["src_addr"][idx])
        return [_owner_buckets([k.tobytes() for k in keys]) if len(keys) else
                np.zeros(0, np.int64)]

    def _in(self, buckets: np.ndarray) -> list[bytes]:
        keys = list(self.state.hosts)
        if not keys:
            return []
        inside = np.isin(_owner_buckets(keys), buckets)
        return [k for k, hit in zip(keys, inside.tolist(), strict=True) if hit]

    def export_buckets(self, buckets: np.ndarray, exclude: np.ndarray | None = None
                       ) -> tuple[bytes, int]:
        keys = self._in(np.asarray(buckets))
        buf = io.BytesIO()
        np.savez(buf, keys=np.array(keys, dtype="S17"),
                 values=np.array([self.state.hosts[k] for k in keys]).reshape(-1, 3))
        return buf.getvalue(), len(keys)

    def import_buckets(self, blob: bytes) -> tuple[int, int]:
        with np.load(io.BytesIO(blob)) as z:
            keys, values = z["keys"], z["values"]
        imported = 0
        for k, v in zip(keys.tolist(), values.tolist(), strict=True):
            k = k.ljust(17, b"\0")  # numpy strips trailing zero bytes of S17
            if k not in self.state.hosts:
                self.state.hosts[k] = list(v)
                imported += 1
        return imported, len(keys) - imported

    def drop_buckets(self, keep: np.ndarray) -> int:
        keep = np.asarray(keep)
        owned = np.flatnonzero(keep) if keep.dtype == bool else keep
        kept = set(self._in(owned))
        gone = [k for k in self.state.hosts if k not in kept]
        for k in gone:
            del self.state.hosts[k]
        return len(gone)


class Scorer:
    """Stateless brick: feature rows -> scores."""

    def __init__(self, options: dict[str, Any], brick_id: Any) -> None:
        self.state = Model.load(options["model"])

    def handle(self, msg: Message) -> list[Message]:
        return [msg.with_arrays({"seq": msg.arrays["seq"],
                                 "score": self.state.score(msg.arrays["x"])})]

    def finish(self, meta: dict[str, Any]) -> list[Message]:
        return []


# ---------------------------------------------------------------- the declaration


class Instance:
    """One offline instance: the host table and the model in one object."""

    def __init__(self, model: str | Path | None, options: Mapping[str, Any]) -> None:
        self.table = HostTable()
        self.model = Model.load(model) if model else None

    def features(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        arrays = {f: getattr(batch, f) for f in FIELDS}
        return self.table.update(arrays, np.arange(len(batch)))

    def process(self, batch: PacketBatch) -> tuple[np.ndarray, np.ndarray]:
        seq, x = self.features(batch)
        return seq, self.model.score(x)


def train(trace: str | Path, out: str | Path, options: Mapping[str, Any],
          packets: int) -> Path:
    """The model's mean and spread of log1p(features) over the trace's first packets."""
    from lego.ext.packets import open_trace

    one, xs, seen = Instance(None, options), [], 0
    for b in open_trace(trace).batches(4096):
        b = b.take(slice(0, max(0, packets - seen)))
        seen += len(b)
        xs.append(np.log1p(np.abs(one.features(b)[1])))
        if seen >= packets:
            break
    x = np.concatenate(xs)
    np.savez(out, mean=x.mean(axis=0), scale=np.maximum(x.std(axis=0), 1e-9))
    return Path(out)


def graph(*, source: Mapping[str, Any], options: Mapping[str, Any],
          replicas: Mapping[str, int] | None = None, sink: Mapping[str, Any] | None = None,
          name: str | None = None) -> dict:
    replicas = dict(replicas or {})
    edges = [{"from": "src", "to": "count",
              "route": "key" if replicas.get("count", 1) > 1 else "round_robin"},
             {"from": "count", "to": "score"}, {"from": "score", "to": "sink"}]
    params = {"nf": NAME, **({"model": str(options["model"])} if options.get("model") else {})}
    return {"graph": {"name": name or "flowcount"}, "params": params,
            "bricks": {"src": {"type": source["type"],
                               "options": dict(source.get("options", {}))},
                       "count": {"type": "flowcount_counter",
                                 "replicas": replicas.get("count", 1)},
                       "score": {"type": "flowcount_scorer",
                                 "replicas": replicas.get("score", 1)},
                       "sink": {"type": "sequence_merge",  # the framework's merge sink
                                "options": {"threshold": ALERT, **dict(sink or {})}}},
            "edges": edges}


NF = NetworkFunction(
    name=NAME,
    state_groups=lambda options: [StateGroup("host", {"src_ip"},
                                             features=("packets", "bytes", "gap"))],
    graph=graph,
    brick_types=(
        BrickType("flowcount_counter", f"{NAME}:HostCounter", "worker", "keyed",
                  "per-host packet and byte counters (keyed by the source host)"),
        BrickType("flowcount_scorer", f"{NAME}:Scorer", "worker", "stateless",
                  "one numpy layer over the counters"),
    ),
    packet_fields=FIELDS,
    options={"model": (str, "")},
    merge="sequence",
    train=train,
    instance=Instance,
    help="a per-host packet counter with a one-layer numpy model (a test NF)",
)
