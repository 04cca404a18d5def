"""The brick types a graph may use, described as data, and their factories.

Each type names its logic class (imported when a brick process starts), its role
in a graph (``source``: no input; ``worker``; ``sink``: no output) and how it may
be replicated:

- ``stateless``: any number of replicas, fed round robin (or by key);
- ``keyed``: replicas only behind a key-routed edge, where each key's state lives
  on one replica (the feature extractor, split by address owner);
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
    BrickType("packet_batching", "lego.bricks.kitsune.source:PacketBatching", "source",
              "single", "reads a trace or an interface in batches; strips the LEGO shim"),
    BrickType("frame_feed", "lego.bricks.feed:FrameFeed", "source", "single",
              "packet_batching fed frames over ZeroMQ (a test playing the switch port)"),
    BrickType("feature_quantization", "lego.bricks.kitsune.detector:FeatureQuantization",
              "worker", "keyed", "the damped-statistics feature extractor (stateful)"),
    BrickType("feature_mapping", "lego.bricks.kitsune.detector:FeatureMapping", "worker",
              "stateless", "feature rows -> per-autoencoder normalised inputs"),
    BrickType("uln", "lego.bricks.kitsune.detector:UnsupervisedLearningNetwork", "worker",
              "stateless", "the autoencoder ensemble + output layer (inference)"),
    BrickType("decision", "lego.bricks.kitsune.detector:Decision", "sink", "single",
              "merges scores in sequence order; alerts, scores, lost batches"),
    BrickType("chain", "lego.bricks.chain:make_chain", "worker", "stateless",
              "bricks of one group fused into one process (graph key `group`)"),
    BrickType("noop_source", "lego.bricks.noop:NoopSource", "source", "single",
              "replays pre-built batches (transport benchmark)"),
    BrickType("noop_relay", "lego.bricks.noop:NoopRelay", "worker", "stateless",
              "forwards each batch unchanged (transport benchmark)"),
    BrickType("noop_sink", "lego.bricks.noop:NoopSink", "sink", "single",
              "counts batches (transport benchmark)"),
)}


def make_logic(type_name: str, options: dict[str, Any], brick_id: Any) -> Any:
    """Instantiate the logic of a brick type."""
    t = BRICK_TYPES.get(type_name)
    if t is None:
        raise BrickError(f"brick type: expected one of {sorted(BRICK_TYPES)}, got {type_name!r}")
    module, cls = t.factory.split(":")
    return getattr(importlib.import_module(module), cls)(options, brick_id)
