"""The committed P4Info against lego.p4: sha256, names, widths, scopes, IDs."""

from __future__ import annotations

import re
import shutil

import pytest

from lego.errors import ConfigError
from lego.p4src.p4info import (
    BMV2_JSON_PATH,
    P4_SOURCE,
    P4INFO_PATH,
    P4InfoIndex,
    P4Type,
    check,
    load_p4info,
    parse_p4_source,
    recorded_sha256,
    source_sha256,
    stamp,
)
from lego.switch import pipeline as pl


@pytest.fixture
def copies(tmp_path):
    src = tmp_path / "lego.p4"
    info = tmp_path / "lego.p4info.txtpb"
    shutil.copy(P4_SOURCE, src)
    shutil.copy(P4INFO_PATH, info)
    return src, info


def test_committed_p4info_describes_lego_p4():
    assert check(json_path=BMV2_JSON_PATH) == []
    assert recorded_sha256(P4INFO_PATH.read_text()) == source_sha256()


def test_stale_sha256_fails(copies):
    src, info = copies
    src.write_text(src.read_text() + "\n/* an edit */\n")
    problems = check(info, src)
    assert len(problems) == 1 and "stale" in problems[0]
    stamp(info, src)
    assert check(info, src) == []


def test_key_width_disagreement_fails(copies):
    src, info = copies
    src.write_text(src.read_text().replace("bit<16>  bucket;", "bit<12>  bucket;"))
    stamp(info, src)
    problems = check(info, src)
    assert any("LegoIngress.bucket_owner" in p and "meta.bucket" in p for p in problems)


def test_param_width_and_missing_action_fail(copies):
    src, info = copies
    text = src.read_text().replace("action mirror_to(bit<9> port)", "action mirror_to(bit<8> port)")
    text = text.replace("actions = { role_traffic; role_forward; role_drop; }",
                        "actions = { role_traffic; role_drop; }")
    src.write_text(text.replace("action role_forward(", "action role_fwd("))
    stamp(info, src)
    problems = "\n".join(check(info, src))
    assert "action LegoIngress.mirror_to" in problems
    assert "table LegoIngress.port_role: actions" in problems
    assert "LegoIngress.role_forward is in the P4Info but not in lego.p4" in problems


def test_counter_size_and_defaultonly_scope_fail(copies):
    src, info = copies
    text = info.read_text().replace("size: 8\n", "size: 16\n", 1)
    text = text.replace('    annotations: "@defaultonly"\n    scope: DEFAULT_ONLY\n', "", 1)
    info.write_text(text)
    problems = "\n".join(check(info, src))
    assert "counter LegoIngress.event_counter" in problems
    assert "table LegoIngress.split_group: actions" in problems


def test_duplicate_or_misprefixed_ids_fail(copies):
    src, info = copies
    p4info = load_p4info(info)
    counter, table = p4info.counters[0].preamble.id, p4info.tables[0].preamble.id
    info.write_text(info.read_text().replace(f"id: {counter}", f"id: {table}"))
    problems = "\n".join(check(info, src))
    assert "used by both" in problems and "lacks the counter prefix" in problems


def test_source_parser_reads_the_program():
    prog = parse_p4_source(P4_SOURCE.read_text())
    assert prog.tables[pl.T_BUCKET_OWNER].keys == [("meta.version", 1, "EXACT"),
                                                   ("meta.bucket", 16, "EXACT")]
    assert prog.tables[pl.T_PORT_ROLE].keys == [("standard_metadata.ingress_port", 9, "EXACT")]
    assert prog.tables[pl.T_SPLIT_GROUP].keys == []
    assert (pl.A_SET_GROUPS, True) in prog.tables[pl.T_SPLIT_GROUP].actions
    assert prog.actions[pl.A_SET_GROUPS] == [("primary", 8), ("mirror", 8), ("epoch", 7)]
    assert prog.counters[pl.C_BUCKET] == (pl.N_BUCKETS, "BOTH")
    assert prog.counters[pl.C_PORT_OUT] == (pl.N_PORTS, "BOTH")
    assert prog.registers == {"LegoIngress.seq_register": (1, 64),
                              "LegoIngress.window_start_register": (1, 48),
                              "LegoIngress.window_register": (1, 32)}
    assert "LegoIngress.derive_l2" not in prog.actions  # called directly, not in a table
    assert set(prog.counters) == set(pl.COUNTER_SIZES)


def test_index_resolves_names_and_aliases():
    idx = P4InfoIndex(load_p4info())
    tid = idx.id(P4Type.TABLE, "LegoIngress.bucket_owner")
    assert idx.id(P4Type.TABLE, "bucket_owner") == tid
    assert idx.name(tid) == "LegoIngress.bucket_owner"
    assert idx.match_field("bucket_owner", "meta.bucket").bitwidth == 16
    assert idx.param("set_groups", "mirror").bitwidth == 8
    assert idx.by_id(P4Type.ACTION, tid) is None
    with pytest.raises(ConfigError, match="no table named 'nope'"):
        idx.get(P4Type.TABLE, "nope")


def test_pipeline_constants_match_the_program():
    text = P4_SOURCE.read_text()
    for name, value in (("N_BUCKETS", pl.N_BUCKETS), ("CLONE_SESSION_BASE",
                                                      pl.CLONE_SESSION_BASE),
                        ("GROUP_SRCIP", pl.GROUP_SRCIP), ("GROUP_DSTIP", pl.GROUP_DSTIP),
                        ("EVENT_MIRROR", pl.EVENT_MIRROR), ("ETHERTYPE_LEGO", 0x88B5),
                        ("GROUP_SRCIP_DSTIP_SYM", pl.GROUP_SRCIP_DSTIP_SYM),
                        ("GROUP_SOCKET_SYM", pl.GROUP_SOCKET_SYM),
                        ("EVENT_WINDOW", pl.EVENT_WINDOW),
                        ("WINDOW_MARK_SESSION", pl.WINDOW_MARK_SESSION),
                        ("WINDOW_MARK_BYTES", pl.WINDOW_MARK_BYTES),
                        ("SHIM_KIND_WINDOW", pl.SHIM_KIND_WINDOW)):
        m = re.search(rf"const bit<\d+> {name}\s*=\s*(0x[0-9A-Fa-f]+|\d+);", text)
        assert m and int(m.group(1), 0) == value, name


def test_a_bmv2_json_from_another_source_fails_with_one_line(copies, tmp_path):
    src, info = copies
    program = tmp_path / "lego.json"
    program.write_text('{"__meta__": {"version": [2, 23]}, "pipelines": []}\n')
    stamp(info, src, json_path=program)
    assert check(info, src, program) == []
    src.write_text(src.read_text() + "\n/* an edit, not compiled */\n")
    stamp(info, src)  # the p4info restamped by hand, the JSON left behind
    problems = check(info, src, program)
    assert len(problems) == 1 and "lego.json" in problems[0] and "make p4" in problems[0]


def test_p4cs_fresh_output_gets_the_generated_header(copies):
    src, info = copies
    body = "\n".join(ln for ln in info.read_text().splitlines() if not ln.startswith("#"))
    info.write_text(body + "\n")  # as p4c writes it: no comment header
    sha = stamp(info, src, compiler="p4c 1.2.4.8")
    text = info.read_text()
    assert text.startswith("# P4Info of lego.p4, generated by p4c 1.2.4.8")
    assert recorded_sha256(text) == sha and check(info, src, None) == []


def test_the_models_initial_defaults_are_lego_p4s():
    text = P4_SOURCE.read_text()
    consts = {m.group(1): int(m.group(2), 0) for m in re.finditer(
        r"const\s+bit<\d+>\s+(\w+)\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*;", text)}
    found = {}
    egress = text.index("control LegoEgress")
    for t in re.finditer(r"\btable\s+(\w+)\s*\{(.*?)\n\s*\}", text, re.S):
        m = re.search(r"default_action\s*=\s*(\w+)\(([^)]*)\)", t.group(2))
        if m:
            ctl = "LegoEgress" if t.start() > egress else "LegoIngress"
            args = [a.strip() for a in m.group(2).split(",") if a.strip()]
            found[f"{ctl}.{t.group(1)}"] = (
                f"{ctl}.{m.group(1)}", [consts[a] if a in consts else int(a, 0)
                                        for a in args])
    want = {t: (a, list(p.values())) for t, (a, p) in pl.INITIAL_DEFAULTS.items()}
    assert found == want
