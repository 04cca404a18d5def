"""The brick types a graph may use, described as data, and their factories.

The framework's own types are here (sources, fusion, the transport benchmark's);
each NF declares its own in its package (``lego.nfs.<name>``, ``brick_types``),
found by :func:`brick_type`.

Each type names its logic class (imported when a brick process starts), its role
in a graph (``source``: no input; ``worker``; ``sink``: no output) and how it may
be replicated:

- ``stateless``: any number of replicas, fed round robin (or by key);
- ``keyed``: replicas only behind a key-routed edge, where each key's state lives
  on one replica (an NF's feature extractor, split by the switch's owner buckets);
- ``single``: one replica (a source reading one trace, the merging decision).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from lego.bricks.errors import BrickError

ROLES = ("source", "worker", "sink")
REPLICATION = ("stateless", "keyed", "single")


@dataclass(frozen=True)
class BrickType:
    name: str
    factory: str  # "module:Class"; Class(options, brick_id) -> logic
    role: str
    replication: str
    help: str = ""


BRICK_TYPES: dict[str, BrickType] = {t.name: t for t in (
    BrickType("packet_batching", "lego.bricks.source:PacketBatching", "source",
              "single", "reads a trace or an interface in batches; strips the LEGO shim"),
    BrickType("frame_feed", "lego.bricks.feed:FrameFeed", "source", "single",
              "packet_batching fed frames over ZeroMQ (a test playing the switch port)"),
    BrickType("sequence_merge", "lego.bricks.merge:SequenceMerge", "sink", "single",
              "merges (seq, score) rows in switch order; alerts above a threshold"),
    BrickType("chain", "lego.bricks.chain:make_chain", "worker", "stateless",
              "bricks of one group fused into one process (graph key `group`)"),
    BrickType("noop_source", "lego.bricks.noop:NoopSource", "source", "single",
              "replays pre-built batches (transport benchmark)"),
    BrickType("noop_relay", "lego.bricks.noop:NoopRelay", "worker", "stateless",
              "forwards each batch unchanged (transport benchmark)"),
    BrickType("noop_sink", "lego.bricks.noop:NoopSink", "sink", "single",
              "counts batches (transport benchmark)"),
)}


def brick_type(type_name: str, nf: str | None = None) -> BrickType | None:
    """The framework's type ``type_name``, else that of the NF ``nf`` (an
    ``lego.nfs`` name or module; any NF that declares it when ``nf`` is None)."""
    if type_name in BRICK_TYPES:
        return BRICK_TYPES[type_name]
    from lego import nfs

    if nf:
        return next((t for t in nfs.get(nf).brick_types if t.name == type_name), None)
    return nfs.brick_type(type_name)


def known_types(nf: str | None = None) -> list[str]:
    """Every brick type a graph may name (the framework's, and the NFs')."""
    from lego import nfs

    found = nfs.all_builtin() + ([nfs.get(nf)] if nf else [])
    return sorted(set(BRICK_TYPES) | {t.name for n in found for t in n.brick_types})


def make_logic(type_name: str, options: dict[str, Any], brick_id: Any) -> Any:
    """Instantiate the logic of a brick type (an NF's: ``options["nf"]`` names it)."""
    t = brick_type(type_name, options.get("nf"))
    if t is None:
        raise BrickError(f"brick type: expected one of {known_types(options.get('nf'))}, "
                         f"got {type_name!r}")
    module, cls = t.factory.split(":")
    return getattr(importlib.import_module(module), cls)(options, brick_id)
