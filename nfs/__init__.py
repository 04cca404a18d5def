"""The NF boundary: everything the framework needs from an ANN-based NF, in one object.

An NF is one package (``lego.nfs.<name>``, or any module a user names as
``package.module``) whose module-level ``NF`` is a :class:`NetworkFunction`. It
declares:

- its **state groups** for Algorithm 1 (:mod:`lego.control.granularity`), which
  give the split the switch installs (:meth:`NetworkFunction.plan`), and any
  **global state** no header keys (a window clock shared by all flows), with
  where it lives (held by the switch, or not: then no split is exact);
- the **packet fields** its extractor reads (columns of
  :class:`~lego.ext.batch.PacketBatch`);
- its **brick types** (logic classes, each with a role and a replication, the
  catalog's vocabulary) and its **graph template**: one chain
  ``source -> keyed -> ... -> stateless (x R) -> sink`` parameterised by replicas
  and options (:meth:`NetworkFunction.graph`), from which the controller, the
  graph files, the calibration and the experiments build their graphs;
- how its **outputs merge** (by switch sequence, or by another key such as a time
  window) and where they are written;
- its **options** (the ``[nf]`` keys beyond the framework's, e.g. Kitsune's feature
  semantics), checked before anything starts;
- **model preparation** (:attr:`NetworkFunction.train`) and the **offline
  reference** (:attr:`NetworkFunction.instance`, :meth:`NetworkFunction.reference`:
  one instance over a stream, whose outputs the live system must equal).

The keyed brick exports, imports and drops its state by switch bucket
(:class:`KeyedState`); the framework's move protocol (:mod:`lego.bricks.moves`)
drives it without knowing what the state is.

The framework (``control/``, ``switch/``, ``bricks/``, ``topo/``) refers to an NF
only through this module: by name, as configs and the CLI give it
(``[nf] name = "kitsune"``, ``--nf kitsune``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lego.errors import ConfigError

#: the NF a config or command that names none runs (the first one LEGO shipped)
DEFAULT = "kitsune"
#: how a sink merges its replicas' outputs
MERGES = ("sequence", "window")
#: the packet field of an NF that reads each frame's bytes as captured (its own
#: dissector), rather than PacketBatch columns
FRAME = "frame"


def chain_template(nodes: Sequence[tuple[str, str | None]], source: Mapping[str, Any],
                   replicas: Mapping[str, int], sink: Mapping[str, Any] | None
                   ) -> tuple[dict[str, dict[str, Any]], list[dict[str, str]]]:
    """The bricks and edges of a chain graph template (graph-file layout): ``nodes``
    (name, brick type) from the source, whose type and options ``source`` gives, to
    the sink, whose options are ``sink``; ``replicas`` per node (default 1)."""
    bricks: dict[str, dict[str, Any]] = {nodes[0][0]: {
        "type": source["type"], "options": dict(source.get("options", {}))}}
    for node, kind in nodes[1:]:
        bricks[node] = {"type": kind, "replicas": replicas.get(node, 1), "options": {}}
    bricks[nodes[-1][0]]["options"] = dict(sink or {})
    order = [n for n, _ in nodes]
    return bricks, [{"from": a, "to": b} for a, b in zip(order, order[1:], strict=False)]


class Instance(Protocol):
    """One offline instance of an NF: its whole pipeline in one object."""

    def process(self, batch) -> tuple[np.ndarray, np.ndarray]: ...  # (seq, score) of
    # the batch's primaries; mirror copies (batch.mirror == 1) only update state
    # optional: ``finish() -> (seq, score)``, what it holds at the end of the stream
    # (an NF that answers per time window: the windows still open)


class KeyedState(Protocol):
    """What the keyed brick's logic offers the move protocol (lego.bricks.moves),
    beside a ``moves`` attribute (a :class:`lego.bricks.moves.MoveState`, whose
    ``processed`` it advances by the rows it handles outside a move: an export
    cuts at a packet count) and an optional ``hold_state(on)``. Buckets are the
    switch's owner buckets (``lego.p4src.contract.N_BUCKETS``)."""

    def rows(self, msg, idx) -> tuple: ...  # (seq, x) of the primaries among rows idx
    def row_buckets(self, msg, idx) -> list: ...  # buckets each row's update touches
    def export_buckets(self, buckets, exclude) -> tuple[bytes, int]: ...  # (blob, entries);
    # ``exclude``: buckets whose pairs the destination holds already
    def import_buckets(self, blob: bytes) -> tuple[int, int]: ...  # (imported, skipped)
    def drop_buckets(self, keep) -> int: ...  # entries dropped (those not in ``keep``)


@dataclass(frozen=True)
class NetworkFunction:
    """One NF, as the framework sees it. Callables take plain data (options dicts,
    paths) so that an NF module stays importable without its kernels built."""

    name: str
    #: ``options`` -> the state groups Algorithm 1 reads (lego.control.granularity)
    state_groups: Callable[[Mapping[str, Any]], list]
    #: the graph template: ``graph(source, options, replicas, sink) -> graph-file dict``
    #: (the layout :func:`lego.bricks.graph.graph_from_dict` reads), a linear chain
    graph: Callable[..., dict]
    #: ``lego.bricks.catalog.BrickType`` records of this NF's brick types
    brick_types: tuple = ()
    #: state no header group keys (lego.control.granularity.GlobalState): where it
    #: lives (the switch, or nowhere that keeps a split exact)
    global_state: tuple = ()
    #: PacketBatch columns the extractor reads, or (FRAME,): the frames' bytes
    packet_fields: tuple[str, ...] = ()
    #: ``[nf]`` keys of this NF: key -> (type, default)
    options: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    #: ``check(options, where)``: the NF's domain rules on its options (raises ConfigError)
    check: Callable[[Mapping[str, Any], str], None] | None = None
    #: how the sink merges replica outputs: ``sequence`` (switch order) or ``window``
    merge: str = "sequence"
    #: ``train(trace, out, options, packets) -> model path``: prepared on a prefix
    train: Callable[..., Path] | None = None
    #: ``instance(model, options) -> Instance``: one offline instance of the NF with a
    #: prepared model: the reference the live system and K replicas must equal
    instance: Callable[..., Instance] | None = None
    #: ``run(trace, options, packets) -> (seq, score, scored)``: one fresh instance,
    #: prepared on the trace's first ``packets`` packets, then scoring the rest
    run: Callable[..., tuple] | None = None
    #: ``offline(trace, options, packets, results, labels, quiet) -> summary``: ``lego
    #: run --offline``, one instance over a trace writing results/ (no switch, no bricks)
    offline: Callable[..., dict] | None = None
    #: ``split_experiment(trace, replicas, out, model) -> rows``: ``lego experiment split
    #: --nf <name>``, the NF's own table of K replicas against one instance (None: the
    #: framework's per-packet table, lego.experiments.table2)
    split_experiment: Callable[..., list] | None = None
    #: whether ``train`` reads the replayed trace's first packets (an unsupervised NF
    #: that learns the network it guards); a run scores detection after them
    prefix_training: bool = True
    #: the score above which the NF decides "attack", where the NF fixes one (None:
    #: the model's own threshold)
    decision_threshold: float | None = None
    #: ``window_clock(options) -> seconds``: the period of the window clock the switch
    #: holds for this NF (its switch-held global state), None: no clock
    window_clock: Callable[[Mapping[str, Any]], float] | None = None
    #: the module of the NF's ``lego <name>`` subcommand (``register(subparsers)``)
    cli: str | None = None
    help: str = ""

    def __post_init__(self) -> None:
        if self.merge not in MERGES:
            raise ConfigError(f"NF {self.name!r}: merge: expected one of {MERGES}, "
                              f"got {self.merge!r}")

    def reference(self, batches: Iterable, model: str | Path | None,
                  options: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One offline instance over ``batches`` (in switch order, mirrors included:
        PacketBatch, or frames for an NF that reads them): the (seq, score) of its
        outputs, in the order it gives them."""
        one = self.instance(model, self.resolve(options))
        seqs, scores = [], []
        for b in batches:
            seq, score = one.process(b)
            seqs.append(seq)
            scores.append(score)
        if hasattr(one, "finish"):
            seq, score = one.finish()
            seqs.append(seq)
            scores.append(score)
        if not seqs:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(seqs).astype(np.int64), np.concatenate(scores)

    def defaults(self) -> dict[str, Any]:
        return {k: d for k, (_, d) in self.options.items()}

    def resolve(self, options: Mapping[str, Any] | None = None,
                where: str = "<nf>") -> dict[str, Any]:
        """Defaults, then ``options`` (unknown keys and wrong types refused), then
        the NF's own rules."""
        out = self.defaults()
        for k, v in (options or {}).items():
            if k not in self.options:
                raise ConfigError(f"{where}: unknown option {k!r} for NF {self.name!r} "
                                  f"(expected one of {sorted(self.options)})")
            kind = self.options[k][0]
            if v is not None and not isinstance(v, kind):
                raise ConfigError(f"{where}: {k}: expected {getattr(kind, '__name__', kind)}, "
                                  f"got {v!r}")
            out[k] = v
        if self.check is not None:
            self.check(out, where)
        return out

    def parse_options(self, pairs: Iterable[str], where: str = "--nf-option") -> dict[str, Any]:
        """``KEY=VALUE`` strings (a command line's) -> options of this NF, each value
        read as its declared type; ConfigError for an unknown key or a bad value, and
        for ``semantics``, which has its own flag. A ``model`` given so is the NF's
        prepared model (a run copies it into its work directory)."""
        out: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if key == "semantics":
                raise ConfigError(f"{where} {pair!r}: give the semantics with --semantics")
            if not sep or key not in self.options:
                raise ConfigError(f"{where} {pair!r}: expected KEY=VALUE with KEY one of "
                                  f"{sorted(self.options)} ({self.name}'s options)")
            kind = self.options[key][0]
            try:
                out[key] = kind(value)
            except ValueError as exc:
                raise ConfigError(f"{where} {pair!r}: expected a {kind.__name__} for {key}, "
                                  f"got {value!r}") from exc
        self.resolve(out, where)  # the NF's own rules, before anything starts
        return out

    def pick(self, **given: Any) -> dict[str, Any]:
        """The options among ``given`` this NF declares (None left out), resolved: how
        the framework passes on what a user gave (``semantics=``, ``model=``) to
        whichever NF runs."""
        return self.resolve({k: v for k, v in given.items()
                             if k in self.options and v is not None})

    def plan(self, options: Mapping[str, Any] | None = None):
        """Algorithm 1's split for these options (lego.control.granularity.SplitPlan)."""
        from lego.control.granularity import plan_split

        return plan_split(self.state_groups(self.resolve(options)), self.global_state)

    def source_options(self) -> dict[str, Any]:
        """What the framework's source brick must send this NF: the frames' bytes
        (``frames``) for an NF that reads them, else parsed columns."""
        return {"frames": True} if FRAME in self.packet_fields else {}

    def window_us(self, options: Mapping[str, Any] | None = None) -> int:
        """The period of the switch's window clock for these options, in microseconds
        (the switch plan's ``window_us``; 0: the NF declares no clock)."""
        if self.window_clock is None:
            return 0
        return round(self.window_clock(self.resolve(options)) * 1e6)

    def splits_exactly(self, options: Mapping[str, Any] | None = None) -> bool:
        """Whether K replicas of the keyed brick give one instance's answers."""
        from lego.control.granularity import Verdict

        return self.plan(options).verdict is not Verdict.NO_EXACT_SPLIT


_loaded: dict[str, NetworkFunction] = {}


@functools.cache
def builtin_names() -> tuple[str, ...]:
    """The NF packages under ``lego.nfs``, by name (found once: brick-type lookups ask)."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))


def get(name: str) -> NetworkFunction:
    """The NF called ``name``: a package of ``lego.nfs``, or a dotted module path
    (``mypkg.mynf``) whose ``NF`` attribute is the declaration."""
    if name in _loaded:
        return _loaded[name]
    module = f"{__name__}.{name}" if name in builtin_names() else name
    try:
        nf = importlib.import_module(module).NF
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"NF {name!r}: expected one of {list(builtin_names())} or an importable "
                          f"module with an NF declaration ({exc})") from exc
    if not isinstance(nf, NetworkFunction):
        raise ConfigError(f"NF {name!r}: {module}.NF is not a lego.nfs.NetworkFunction")
    _loaded[name] = _loaded[nf.name] = nf
    return nf


def all_builtin() -> list[NetworkFunction]:
    return [get(n) for n in builtin_names()]


def owner(type_name: str) -> NetworkFunction | None:
    """The loaded or built-in NF that declares brick type ``type_name`` (None if none)."""
    for nf in list(_loaded.values()) + all_builtin():
        if any(t.name == type_name for t in nf.brick_types):
            return nf
    return None


def brick_type(type_name: str):
    """The brick type ``type_name`` of a loaded or built-in NF (None if none has it)."""
    nf = owner(type_name)
    return None if nf is None else next(t for t in nf.brick_types if t.name == type_name)
