"""Checked TOML tables: what every config-file reader (brick graphs, the
controller's config, Mininet topologies) does with its file (:func:`read_toml`)
and with one table before its own rules: unknown keys refused, required keys
present, each value of its declared type, defaults filled in."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lego.errors import ConfigError


def read_toml(path: Path, what: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict; ``error`` naming the file (a ``what``)
    when it is missing or not TOML."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from exc


#: key -> (type or tuple of types, default); a default of None makes the key required
Keys = Mapping[str, tuple[Any, Any]]


def typed_table(where: str, table: Any, keys: Keys,
                error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """A checked copy of ``table``; ``error`` (naming ``where`` and the key) for
    the first problem. A bool is only ever a bool (never an int); a default is
    copied, so no two results share a mutable one."""
    if not isinstance(table, dict):
        raise error(f"{where}: expected a table, got {type(table).__name__} {table!r}")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise error(f"{where}: unknown key {unknown[0]!r} (expected one of "
                    f"{', '.join(sorted(keys))})")
    out: dict[str, Any] = {}
    for key, (kind, default) in keys.items():
        if key not in table:
            if default is None:
                raise error(f"{where}: key {key!r} is required")
            out[key] = copy.copy(default)
            continue
        value = table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise error(f"{where}.{key}: expected {' or '.join(k.__name__ for k in kinds)}, "
                        f"got {type(value).__name__} {value!r}")
        out[key] = value
    return out
