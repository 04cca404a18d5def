"""The committed P4Info of ``lego.p4``: load it, resolve IDs by name, check it.

The P4Info (``lego.p4info.txtpb``) is kept by hand where p4c is absent. Its header
comment records the sha256 of the ``lego.p4`` it describes; :func:`check` fails
when that is stale or when the P4Info's tables, match fields, actions, counters
and registers disagree with the program.

The program side is read by :func:`parse_p4_source`, a deliberately small parser
for the subset of P4_16 that ``lego.p4`` uses (documented there), not a
compiler front end. Run ``python -m lego.p4src.p4info --stamp`` after editing
``lego.p4`` and the P4Info together, to record the new sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from google.protobuf import text_format
from p4.config.v1 import p4info_pb2

from lego.errors import ConfigError

P4SRC_DIR = Path(__file__).resolve().parent
P4_SOURCE = P4SRC_DIR / "lego.p4"
P4INFO_PATH = P4SRC_DIR / "lego.p4info.txtpb"
_SHA_LINE = re.compile(r"^# sha256\(lego\.p4\): ([0-9a-f]{64})\s*$", re.M)


class P4Type(Enum):
    """The kinds of P4 object the project uses, with their P4Info list and ID prefix."""

    TABLE = ("tables", p4info_pb2.P4Ids.TABLE)
    ACTION = ("actions", p4info_pb2.P4Ids.ACTION)
    COUNTER = ("counters", p4info_pb2.P4Ids.COUNTER)
    REGISTER = ("registers", p4info_pb2.P4Ids.REGISTER)

    @property
    def p4info_name(self) -> str:
        return self.value[0]

    @property
    def prefix(self) -> int:
        return self.value[1]


def source_sha256(path: Path = P4_SOURCE) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def recorded_sha256(text: str) -> str | None:
    """The sha256 recorded in a P4Info text file's header comment, or None."""
    m = _SHA_LINE.search(text)
    return m.group(1) if m else None


def load_p4info(path: Path = P4INFO_PATH) -> p4info_pb2.P4Info:
    """Parse a P4Info text file (protobuf text format)."""
    msg = p4info_pb2.P4Info()
    try:
        text_format.Parse(Path(path).read_text(), msg)
    except (OSError, text_format.ParseError) as exc:
        raise ConfigError(f"P4Info {path}: {exc}") from exc
    return msg


class P4InfoIndex:
    """Name <-> ID lookups over one P4Info (full names and aliases both resolve)."""

    def __init__(self, p4info: p4info_pb2.P4Info):
        self.p4info = p4info
        self._by_name: dict[tuple[P4Type, str], object] = {}
        self._by_id: dict[int, tuple[P4Type, object]] = {}
        for kind in P4Type:
            for obj in getattr(p4info, kind.p4info_name):
                pre = obj.preamble
                self._by_id[pre.id] = (kind, obj)
                self._by_name[(kind, pre.name)] = obj
                if pre.alias:
                    self._by_name.setdefault((kind, pre.alias), obj)

    def get(self, kind: P4Type, name: str):
        try:
            return self._by_name[(kind, name)]
        except KeyError:
            raise ConfigError(f"P4Info has no {kind.name.lower()} named {name!r}") from None

    def id(self, kind: P4Type, name: str) -> int:
        return self.get(kind, name).preamble.id

    def by_id(self, kind: P4Type, obj_id: int):
        """The object of that kind with that ID, or None."""
        found = self._by_id.get(obj_id)
        if found is None or found[0] is not kind:
            return None
        return found[1]

    def name(self, obj_id: int) -> str:
        found = self._by_id.get(obj_id)
        if found is None:
            raise ConfigError(f"P4Info has no object with id {obj_id}")
        return found[1].preamble.name

    def match_field(self, table_name: str, field_name: str):
        for mf in self.get(P4Type.TABLE, table_name).match_fields:
            if mf.name == field_name:
                return mf
        raise ConfigError(f"table {table_name!r} has no match field {field_name!r}")

    def param(self, action_name: str, param_name: str):
        for p in self.get(P4Type.ACTION, action_name).params:
            if p.name == param_name:
                return p
        raise ConfigError(f"action {action_name!r} has no parameter {param_name!r}")


# --------------------------------------------------------------------------- source


@dataclass
class SourceTable:
    name: str
    keys: list[tuple[str, int, str]] = field(default_factory=list)  # (field, width, match)
    actions: list[tuple[str, bool]] = field(default_factory=list)  # (action, defaultonly)
    size: int = 0


@dataclass
class SourceProgram:
    tables: dict[str, SourceTable] = field(default_factory=dict)
    actions: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # name -> params
    counters: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (size, unit)
    registers: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (size, width)


# v1model's standard_metadata fields a key may use
_STANDARD_METADATA = {"ingress_port": 9, "egress_spec": 9, "egress_port": 9,
                      "instance_type": 32, "packet_length": 32}
_UNITS = {"packets": "PACKETS", "bytes": "BYTES", "packets_and_bytes": "BOTH"}


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _block(text: str, start: int) -> tuple[str, int]:
    """The text inside the brace block opening at or after ``start``; and its end."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j], j + 1
    raise ConfigError("lego.p4: unbalanced braces")


def _int(expr: str, consts: dict[str, int]) -> int:
    expr = expr.strip()
    if expr in consts:
        return consts[expr]
    m = re.fullmatch(r"(?:\d+w)?(0x[0-9a-fA-F]+|\d+)", expr)
    if not m:
        raise ConfigError(f"lego.p4: cannot evaluate {expr!r}")
    return int(m.group(1), 0)


def parse_p4_source(text: str) -> SourceProgram:
    """Read table, action, counter and register declarations out of ``lego.p4``.

    The subset understood (what ``lego.p4`` uses, and all a check needs):

    - ``const bit<N> NAME = VALUE;`` (decimal or hex) for sizes;
    - ``struct`` / ``header`` bodies of ``[@annotation(..)] bit<N> name;`` fields,
      so a key ``meta.x`` gets the width of field ``x`` of the struct whose
      instance the controls name ``meta`` (``metadata_t``), and
      ``standard_metadata.x`` the v1model width;
    - in each ``control NAME(...) { ... }``: ``counter(SIZE, CounterType.U) n;``,
      ``register<bit<W>>(SIZE) n;``, ``action n(bit<W> p, ...) {...}`` and
      ``table n { key = { f: exact; } actions = { [@defaultonly] a; }
      default_action = ...; size = N; }``.

    Names come out as p4c writes them in a P4Info: ``Control.object``. Only
    actions that some table lists are kept (p4c leaves directly-called actions out).
    """
    text = _strip_comments(text)
    consts = {m.group(2): int(m.group(3), 0) for m in re.finditer(
        r"const\s+bit<(\d+)>\s+(\w+)\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*;", text)}
    structs: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"\b(?:struct|header)\s+(\w+)\s*\{", text):
        body, _ = _block(text, m.start())
        structs[m.group(1)] = {f.group(2): int(f.group(1)) for f in re.finditer(
            r"bit<(\d+)>\s+(\w+)\s*;", body)}
    meta_fields = structs.get("metadata_t", {})

    def key_width(expr: str) -> int:
        obj, _, fname = expr.partition(".")
        if obj == "standard_metadata" and fname in _STANDARD_METADATA:
            return _STANDARD_METADATA[fname]
        if obj == "meta" and fname in meta_fields:
            return meta_fields[fname]
        raise ConfigError(f"lego.p4: cannot find the width of key field {expr!r}")

    prog = SourceProgram()
    all_actions: dict[str, list[tuple[str, int]]] = {}
    for m in re.finditer(r"\bcontrol\s+(\w+)\s*\(", text):
        ctl = m.group(1)
        # the body starts at the first '{' after the parameter list closes
        depth, i = 0, m.end() - 1
        while True:
            if text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
                if depth == 0:
                    break
            i += 1
        body, _ = _block(text, i)
        for c in re.finditer(r"counter\(\s*(\w+)\s*,\s*CounterType\.(\w+)\s*\)\s*(\w+)\s*;", body):
            prog.counters[f"{ctl}.{c.group(3)}"] = (_int(c.group(1), consts), _UNITS[c.group(2)])
        for r in re.finditer(r"register<bit<(\d+)>>\(\s*(\w+)\s*\)\s*(\w+)\s*;", body):
            prog.registers[f"{ctl}.{r.group(3)}"] = (_int(r.group(2), consts), int(r.group(1)))
        for a in re.finditer(r"\baction\s+(\w+)\s*\(([^)]*)\)", body):
            params = []
            for p in filter(None, (s.strip() for s in a.group(2).split(","))):
                pm = re.fullmatch(r"(?:in\s+)?bit<(\d+)>\s+(\w+)", p)
                if not pm:
                    raise ConfigError(f"lego.p4: cannot read action parameter {p!r}")
                params.append((pm.group(2), int(pm.group(1))))
            all_actions[f"{ctl}.{a.group(1)}"] = params
        for t in re.finditer(r"\btable\s+(\w+)\s*\{", body):
            tbody, _ = _block(body, t.start())
            table = SourceTable(f"{ctl}.{t.group(1)}")
            km = re.search(r"\bkey\s*=\s*\{([^}]*)\}", tbody)
            if km:
                for k in re.finditer(r"([\w.]+)\s*:\s*(\w+)\s*;", km.group(1)):
                    table.keys.append((k.group(1), key_width(k.group(1)), k.group(2).upper()))
            am = re.search(r"\bactions\s*=\s*\{([^}]*)\}", tbody)
            for a in filter(None, (s.strip() for s in (am.group(1) if am else "").split(";"))):
                defaultonly = a.startswith("@defaultonly")
                table.actions.append((f"{ctl}.{a.split()[-1]}", defaultonly))
            sm = re.search(r"\bsize\s*=\s*(\w+)\s*;", tbody)
            table.size = _int(sm.group(1), consts) if sm else 0
            prog.tables[table.name] = table
    for table in prog.tables.values():
        for a, _ in table.actions:
            if a not in all_actions:
                raise ConfigError(f"lego.p4: table {table.name} lists unknown action {a}")
            prog.actions[a] = all_actions[a]
    return prog


# --------------------------------------------------------------------------- check


def check(p4info_path: Path = P4INFO_PATH, source_path: Path = P4_SOURCE) -> list[str]:
    """Every disagreement between the P4Info and the program; empty when none."""
    problems: list[str] = []
    text = Path(p4info_path).read_text()
    want = source_sha256(source_path)
    got = recorded_sha256(text)
    if got != want:
        problems.append(f"{Path(p4info_path).name}: recorded sha256 {got} is stale: "
                        f"{Path(source_path).name} has sha256 {want}")
    info = load_p4info(p4info_path)
    problems += check_ids(info)
    problems += compare(info, parse_p4_source(Path(source_path).read_text()))
    return problems


def check_ids(info: p4info_pb2.P4Info) -> list[str]:
    """IDs unique, with their kind's prefix; every reference resolves."""
    problems = []
    seen: dict[int, str] = {}
    for kind in P4Type:
        for obj in getattr(info, kind.p4info_name):
            pre = obj.preamble
            if pre.id in seen:
                problems.append(f"id {pre.id} used by both {seen[pre.id]} and {pre.name}")
            seen[pre.id] = pre.name
            if pre.id >> 24 != kind.prefix:
                problems.append(f"{pre.name}: id 0x{pre.id:08x} lacks the "
                                f"{kind.name.lower()} prefix 0x{kind.prefix:02x}")
    actions = {a.preamble.id for a in info.actions}
    for t in info.tables:
        for ref in t.action_refs:
            if ref.id not in actions:
                problems.append(f"{t.preamble.name}: action_ref {ref.id} is not an action")
        if t.HasField("initial_default_action") and \
                t.initial_default_action.action_id not in actions:
            problems.append(f"{t.preamble.name}: initial default action is not an action")
    return problems


def compare(info: p4info_pb2.P4Info, prog: SourceProgram) -> list[str]:
    """Names, widths, sizes and scopes of the P4Info against the program."""
    problems = []
    idx = P4InfoIndex(info)

    def names(kind: P4Type) -> set[str]:
        return {o.preamble.name for o in getattr(info, kind.p4info_name)}

    for kind, src in ((P4Type.TABLE, prog.tables), (P4Type.ACTION, prog.actions),
                      (P4Type.COUNTER, prog.counters), (P4Type.REGISTER, prog.registers)):
        for missing in sorted(set(src) - names(kind)):
            problems.append(f"{kind.name.lower()} {missing} is in lego.p4 but not in the P4Info")
        for extra in sorted(names(kind) - set(src)):
            problems.append(f"{kind.name.lower()} {extra} is in the P4Info but not in lego.p4")
    for name, table in prog.tables.items():
        if name not in names(P4Type.TABLE):
            continue
        t = idx.get(P4Type.TABLE, name)
        got_keys = [(mf.name, mf.bitwidth, p4info_pb2.MatchField.MatchType.Name(mf.match_type))
                    for mf in t.match_fields]
        if got_keys != table.keys:
            problems.append(f"table {name}: match fields {got_keys}, lego.p4 has {table.keys}")
        got_actions = sorted((idx.name(r.id), r.scope == p4info_pb2.ActionRef.DEFAULT_ONLY)
                             for r in t.action_refs)
        if got_actions != sorted(table.actions):
            problems.append(f"table {name}: actions {got_actions}, lego.p4 has "
                            f"{sorted(table.actions)}")
        if t.size != table.size:
            problems.append(f"table {name}: size {t.size}, lego.p4 has {table.size}")
    for name, params in prog.actions.items():
        if name in names(P4Type.ACTION):
            got = [(p.name, p.bitwidth) for p in idx.get(P4Type.ACTION, name).params]
            if got != params:
                problems.append(f"action {name}: params {got}, lego.p4 has {params}")
    for name, (size, unit) in prog.counters.items():
        if name in names(P4Type.COUNTER):
            c = idx.get(P4Type.COUNTER, name)
            got = (c.size, p4info_pb2.CounterSpec.Unit.Name(c.spec.unit))
            if got != (size, unit):
                problems.append(f"counter {name}: (size, unit) {got}, lego.p4 has {(size, unit)}")
    for name, (size, width) in prog.registers.items():
        if name in names(P4Type.REGISTER):
            r = idx.get(P4Type.REGISTER, name)
            got = (r.size, r.type_spec.bitstring.bit.bitwidth)
            if got != (size, width):
                problems.append(f"register {name}: (size, width) {got}, lego.p4 has "
                                f"{(size, width)}")
    return problems


def stamp(p4info_path: Path = P4INFO_PATH, source_path: Path = P4_SOURCE) -> str:
    """Record the source's sha256 in the P4Info header; returns it."""
    text = Path(p4info_path).read_text()
    sha = source_sha256(source_path)
    new, n = _SHA_LINE.subn(f"# sha256(lego.p4): {sha}", text)
    if n != 1:
        raise ConfigError(f"{p4info_path}: no '# sha256(lego.p4): ...' header line")
    Path(p4info_path).write_text(new)
    return sha


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lego.p4src.p4info",
                                     description="Check (default) or stamp the P4Info.")
    parser.add_argument("--stamp", action="store_true",
                        help="record the sha256 of lego.p4 in the P4Info header, then check")
    args = parser.parse_args(argv)
    if args.stamp:
        stamp()
    problems = check()
    for p in problems:
        print(f"p4info: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
