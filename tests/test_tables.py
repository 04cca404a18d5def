"""The shared TOML table check (fast)."""

from __future__ import annotations

import pytest

from lego.errors import ConfigError
from lego.tables import typed_table

KEYS = {"name": (str, None), "n": (int, 1), "x": ((int, float), 0.5), "on": (bool, False),
        "ports": (list, [])}


def test_defaults_are_filled_and_never_shared():
    a, b = typed_table("t", {"name": "a"}, KEYS), typed_table("t", {"name": "b"}, KEYS)
    assert a == {"name": "a", "n": 1, "x": 0.5, "on": False, "ports": []}
    a["ports"].append(1)
    assert b["ports"] == [] and KEYS["ports"][1] == []


@pytest.mark.parametrize("table,match", [
    ([], r"t: expected a table, got list \[\]"),
    ({}, "t: key 'name' is required"),
    ({"name": "a", "colour": 1}, "t: unknown key 'colour'"),
    ({"name": "a", "n": True}, r"t\.n: expected int, got bool True"),  # a bool is no int
    ({"name": "a", "x": "1"}, r"t\.x: expected int or float, got str '1'"),
    ({"name": "a", "on": 1}, r"t\.on: expected bool, got int 1"),
])
def test_each_problem_names_the_table_and_key(table, match):
    with pytest.raises(ConfigError, match=match):
        typed_table("t", table, KEYS)
