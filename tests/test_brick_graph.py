"""Graph files: every rule has a config that must fail (fast, no processes)."""

from __future__ import annotations

import pytest

from lego.bricks.errors import GraphError
from lego.bricks.graph import graph_from_dict, load_graph

GOOD = """
[graph]
transport = "ipc"
hwm = 4

[params]
semantics = "lego"
model = "model.npz"

[bricks.source]
type = "packet_batching"
options = { trace = "t.pcap", batch = 1024 }

[bricks.fq]
type = "feature_quantization"
replicas = 2

[bricks.uln]
type = "uln"
replicas = 3

[bricks.decision]
type = "decision"
options = { out = "out" }

[[edges]]
from = "source"
to = "fq"
route = "key"

[[edges]]
from = "fq"
to = "uln"

[[edges]]
from = "uln"
to = "decision"
"""


def _write(tmp_path, text):
    path = tmp_path / "g.toml"
    path.write_text(text)
    return path


def test_good_graph_loads_and_resolves_paths(tmp_path):
    g = load_graph(_write(tmp_path, GOOD))
    assert [n for n, _ in g.instances()][:3] == ["source", "fq", "fq"]
    specs = {str(s.id): s for s in g.specs(tmp_path, "ipc://x")}
    assert specs["decision/0"].upstream == 3 and specs["uln/1"].upstream == 2
    assert specs["source/0"].inlet is None
    assert specs["source/0"].outlets[0].policy == "key"
    assert specs["fq/0"].options["model"] == str(tmp_path / "model.npz")


def test_paths_reach_fused_members_resolved(tmp_path):
    """Fusion copies params into each member's options: resolved first."""
    text = GOOD.replace('type = "uln"\nreplicas = 3', 'type = "uln"\nreplicas = 3\ngroup = "s"')
    text = text.replace('options = { out = "out" }', 'options = { out = "out" }\ngroup = "d"')
    g = load_graph(_write(tmp_path, text))
    members = {m["node"]: m["options"] for n in g.nodes.values() if n.type == "chain"
               for m in n.options["members"]}
    assert members["uln"]["model"] == str(tmp_path / "model.npz")
    assert members["decision"]["out"] == str(tmp_path / "out")


def _base():
    return {
        "params": {"semantics": "lego", "model": "m.npz"},
        "bricks": {"source": {"type": "packet_batching", "options": {"trace": "t"}},
                   "uln": {"type": "uln"},
                   "decision": {"type": "decision"}},
        "edges": [{"from": "source", "to": "uln"}, {"from": "uln", "to": "decision"}],
    }


def _bad(mutate, match):
    d = _base()
    mutate(d)
    with pytest.raises(GraphError, match=match):
        graph_from_dict(d, "g.toml")


def test_base_is_valid():
    graph_from_dict(_base())


def test_unknown_brick_type():
    _bad(lambda d: d["bricks"]["uln"].update(type="autoencoder"), "unknown brick type")


def test_edge_to_nowhere():
    _bad(lambda d: d["edges"].append({"from": "uln", "to": "nowhere"}), "no brick named")


def test_cycle():
    def f(d):
        d["bricks"]["relay"] = {"type": "uln"}
        d["edges"] += [{"from": "uln", "to": "relay"}, {"from": "relay", "to": "uln"}]
    _bad(f, "cycle")


def test_bad_replica_count():
    _bad(lambda d: d["bricks"]["uln"].update(replicas=0), "replicas: 0 processes is only for")
    _bad(lambda d: d["bricks"]["uln"].update(replicas=65), r"replicas: expected 1\.\.64")


def test_replica_count_wrong_type():
    _bad(lambda d: d["bricks"]["uln"].update(replicas="2"), "replicas: expected int")


def test_single_brick_replicated():
    _bad(lambda d: d["bricks"]["decision"].update(replicas=2), "runs as one replica")


def test_unknown_key():
    _bad(lambda d: d["bricks"]["uln"].update(replica=2), "unknown key 'replica'")


def test_unknown_table():
    _bad(lambda d: d.update(nodes={}), "unknown table 'nodes'")


def test_missing_type():
    _bad(lambda d: d["bricks"]["uln"].pop("type"), "'type' is required")


def test_bad_transport():
    _bad(lambda d: d.update(graph={"transport": "udp"}), "transport: expected one of")


def test_tcp_needs_port():
    _bad(lambda d: d.update(graph={"transport": "tcp"}), "base_port")


def test_bad_overflow():
    _bad(lambda d: d.update(graph={"overflow": "grow"}), "overflow: expected one of")


def test_bad_route():
    _bad(lambda d: d["edges"][0].update(route="random"), "route: expected one of")


def test_duplicate_edge():
    _bad(lambda d: d["edges"].append({"from": "source", "to": "uln"}), "duplicate edge")


def test_input_into_source():
    def f(d):
        d["bricks"]["s2"] = {"type": "packet_batching"}
        d["edges"].append({"from": "uln", "to": "s2"})
    _bad(f, "is a source")


def test_dangling_worker():
    _bad(lambda d: d["bricks"].update(fm={"type": "feature_mapping"}), "no edge leads into")


def test_sink_with_output():
    def f(d):
        d["bricks"]["d2"] = {"type": "decision"}
        d["edges"].append({"from": "decision", "to": "d2"})
    _bad(f, "is a sink")


def test_worker_without_output():
    d = _base()
    d["edges"] = [{"from": "source", "to": "uln"}]
    with pytest.raises(GraphError, match="no edge leads into|no outgoing edge"):
        graph_from_dict(d)


def test_keyed_replicas_need_key_route():
    def f(d):
        d["bricks"]["fq"] = {"type": "feature_quantization", "replicas": 2}
        d["edges"] = [{"from": "source", "to": "fq"}, {"from": "fq", "to": "uln"},
                      {"from": "uln", "to": "decision"}]
    _bad(f, "need key-routed input")


def test_kitsune_semantics_cannot_split():
    def f(d):
        d["params"]["semantics"] = "kitsune"
        d["bricks"]["fq"] = {"type": "feature_quantization", "replicas": 2}
        d["edges"] = [{"from": "source", "to": "fq", "route": "key"},
                      {"from": "fq", "to": "uln"}, {"from": "uln", "to": "decision"}]
    _bad(f, "no exact split")


def test_key_route_only_from_source():
    _bad(lambda d: d["edges"][1].update(route="key"), "only a packet source")


def test_cpu_not_available():
    _bad(lambda d: d["bricks"]["uln"].update(cpus=[4096]), "CPU 4096 is not available")


def test_no_bricks():
    with pytest.raises(GraphError, match="at least one brick"):
        graph_from_dict({"bricks": {}})


def test_bad_toml(tmp_path):
    with pytest.raises(GraphError, match="not valid TOML"):
        load_graph(_write(tmp_path, "[graph\n"))


def test_missing_file(tmp_path):
    with pytest.raises(GraphError, match="no such graph file"):
        load_graph(tmp_path / "nope.toml")


# ---------------------------------------------------------------- shm and fusion


def _kitsune_chain():
    return {
        "params": {"semantics": "lego", "model": "m.npz"},
        "bricks": {"source": {"type": "packet_batching", "options": {"trace": "t"},
                              "group": "front"},
                   "fq": {"type": "feature_quantization", "group": "front"},
                   "fm": {"type": "feature_mapping", "replicas": 2, "group": "scorer"},
                   "uln": {"type": "uln", "replicas": 2, "group": "scorer"},
                   "decision": {"type": "decision"}},
        "edges": [{"from": "source", "to": "fq"}, {"from": "fq", "to": "fm"},
                  {"from": "fm", "to": "uln"}, {"from": "uln", "to": "decision"}],
    }


def test_shm_is_the_default_for_ipc_and_an_error_with_tcp(tmp_path):
    g = graph_from_dict(_base())
    assert g.shm and g.hop_transport == "shm"
    spec = {str(s.id): s for s in g.specs(tmp_path, "ipc://x")}["source/0"]
    assert spec.outlets[0].addresses[0].startswith("shm+ipc://")
    assert spec.control.startswith("ipc://")  # control stays a plain socket
    d = _base()
    d["graph"] = {"shm": False}
    assert graph_from_dict(d).hop_transport == "ipc"
    d["graph"] = {"transport": "tcp", "base_port": 7000}
    assert graph_from_dict(d).hop_transport == "tcp"
    _bad(lambda d: d.update(graph={"transport": "tcp", "base_port": 7000, "shm": True}),
         "same-host")
    _bad(lambda d: d.update(graph={"shm": 1}), r"\[graph\]\.shm: expected bool")


def test_groups_fuse_into_one_process_per_replica(tmp_path):
    g = graph_from_dict(_kitsune_chain(), "g.toml")
    assert list(g.nodes) == ["front", "scorer", "decision"]
    assert [n.type for n in g.nodes.values()] == ["chain", "chain", "decision"]
    assert g.logical is not None and len(g.logical.nodes) == 5
    assert [(e.src, e.dst) for e in g.edges] == [("front", "scorer"), ("scorer", "decision")]
    assert g.role("front") == "source" and g.role("scorer") == "worker"
    specs = {str(s.id): s for s in g.specs(tmp_path, "ipc://x")}
    assert sorted(specs) == ["decision/0", "front/0", "scorer/0", "scorer/1"]
    assert specs["front/0"].inlet is None and len(specs["front/0"].outlets[0].addresses) == 2
    assert specs["decision/0"].upstream == 2 and specs["scorer/1"].upstream == 1
    members = specs["scorer/0"].options["members"]
    assert [m["node"] for m in members] == ["fm", "uln"]
    assert members[1]["options"]["model"] == "m.npz"  # params reach the members
    assert specs["decision/0"].options["model"] == "m.npz"


def test_group_must_be_a_chain():
    d = _kitsune_chain()
    d["bricks"]["uln"]["replicas"] = d["bricks"]["fm"]["replicas"] = 1
    d["bricks"]["uln"]["group"] = "front"  # source -> fq -> (fm, outside) -> uln
    d["bricks"]["fm"].pop("group")
    with pytest.raises(GraphError, match="must form a chain"):
        graph_from_dict(d, "g.toml")


def test_group_needs_equal_replicas():
    d = _kitsune_chain()
    d["bricks"]["fm"]["replicas"] = 1
    with pytest.raises(GraphError, match="same replicas"):
        graph_from_dict(d, "g.toml")


def test_group_cannot_take_a_brick_name():
    d = _kitsune_chain()
    d["bricks"]["fm"]["group"] = d["bricks"]["uln"]["group"] = "decision"
    with pytest.raises(GraphError, match="also a brick's name"):
        graph_from_dict(d, "g.toml")


def test_group_type_checked():
    d = _kitsune_chain()
    d["bricks"]["fm"]["group"] = 3
    with pytest.raises(GraphError, match="group: expected str"):
        graph_from_dict(d, "g.toml")


def test_chain_is_not_a_type_to_write():
    _bad(lambda d: d["bricks"]["uln"].update(type="chain"), "unknown brick type 'chain'")


# ---------------------------------------------------------------- inline replicas


def _inline_chain():
    d = _kitsune_chain()
    d["bricks"]["fm"]["replicas"] = d["bricks"]["uln"]["replicas"] = 1
    d["edges"][1]["inline"] = True  # fq -> fm: the front runs a scorer inline
    return d


def test_inline_edge_gives_the_host_a_replica_and_its_downstream_an_end_more(tmp_path):
    g = graph_from_dict(_inline_chain(), "g.toml")
    assert [(e.src, e.dst, e.inline) for e in g.edges] == [("front", "scorer", True),
                                                            ("scorer", "decision", False)]
    specs = {str(s.id): s for s in g.specs(tmp_path, "ipc://x")}
    assert sorted(specs) == ["decision/0", "front/0", "scorer/0"]  # inline: not a process
    inline = specs["front/0"].inline
    assert (inline["node"], inline["type"], inline["serial"]) == ("scorer", "chain", 1)
    assert [m["node"] for m in inline["options"]["members"]] == ["fm", "uln"]
    assert inline["outlets"] == [{"target": "decision", "policy": "round_robin",
                                  "addresses": specs["scorer/0"].outlets[0].addresses}]
    assert specs["decision/0"].upstream == 2  # scorer/0 and the inline scorer/1
    assert specs["scorer/0"].upstream == 1 and specs["scorer/0"].inline is None


def _inline_into_decision(d):
    d["edges"][1].pop("inline")
    d["edges"][3]["inline"] = True  # scorer -> decision


def _inline_into_keyed_extractor(d):
    d["edges"][1].pop("inline")
    d["bricks"]["fq"].update(replicas=2, group="")
    d["bricks"]["source"]["group"] = ""
    d["edges"][0].update(inline=True, route="key")


def _inline_target_with_two_inputs(d):
    d["bricks"]["source2"] = {"type": "packet_batching", "options": {"trace": "t"}}
    d["edges"].append({"from": "source2", "to": "fm"})


@pytest.mark.parametrize("mutate,match", [
    (_inline_into_decision, "a decision brick keeps state or runs once"),
    (_inline_into_keyed_extractor, "a feature_quantization brick keeps state"),
    (lambda d: d["edges"][1].update(inline=1), r"edges\[1\]\.inline: expected bool"),
    (_inline_target_with_two_inputs, "front's only outgoing edge and scorer's only input"),
])
def test_inline_rules(mutate, match):
    d = _inline_chain()
    mutate(d)
    with pytest.raises(GraphError, match=match):
        graph_from_dict(d, "g.toml")


def test_zero_processes_only_for_a_brick_run_inline():
    d = _inline_chain()
    d["bricks"]["fm"]["replicas"] = d["bricks"]["uln"]["replicas"] = 0
    assert graph_from_dict(d, "g.toml").nodes["scorer"].replicas == 0
    d["edges"][1].pop("inline")
    with pytest.raises(GraphError, match="0 processes is only for a brick run inline"):
        graph_from_dict(d, "g.toml")


def test_inline_edge_inside_a_group_is_refused():
    d = _inline_chain()
    d["edges"][1].pop("inline")
    d["edges"][2]["inline"] = True  # fm -> uln, both in "scorer"
    with pytest.raises(GraphError, match="inside group 'scorer'"):
        graph_from_dict(d, "g.toml")
