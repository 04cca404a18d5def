"""Algorithm 1 and the split plan, on the paper's groups and on invented NFs."""

import pytest

from lego.control.granularity import (
    SplitGroup,
    StateGroup,
    Verdict,
    algorithm1,
    contains,
    plan_split,
)
from lego.errors import ConfigError

MI = StateGroup("SrcMAC-SrcIP", {"src_mac", "src_ip"})
H = StateGroup("SrcIP", {"src_ip"})
HH = StateGroup("SrcIP-DstIP", {"src_ip", "dst_ip"})
SOCK = StateGroup("Socket", {"src_ip", "dst_ip", "src_port", "dst_port", "proto"})
CHANNEL = StateGroup("channel", {"src_ip", "dst_ip"}, symmetric=True)
SOCKET_PAIR = StateGroup("socket pair", SOCK.fields, symmetric=True)


def names(groups):
    return [g.name for g in groups]


def test_paper_relations():
    assert contains(H, MI) and not contains(MI, H)  # SrcMAC-SrcIP within SrcIP
    assert contains(H, HH) and contains(HH, SOCK)
    assert not contains(HH, MI) and not contains(MI, HH)  # they overlap


def test_paper_groups_split_on_src_ip():
    assert names(algorithm1([MI, H, HH, SOCK])) == ["SrcIP"]
    plan = plan_split([MI, H, HH, SOCK])
    assert plan.verdict is Verdict.SPLIT and plan.primary is SplitGroup.SRC_IP


def test_symmetric_pairs_need_a_mirror_to_the_destination():
    groups = [MI, H, HH, CHANNEL, SOCKET_PAIR]
    assert names(algorithm1(groups)) == ["SrcIP", "channel"]
    plan = plan_split(groups)
    assert plan.verdict is Verdict.SPLIT_AND_MIRROR
    assert (plan.primary, plan.mirror) == (SplitGroup.SRC_IP, SplitGroup.DST_IP)
    assert "mirror to the owner of DST_IP" in plan.describe()


def test_symmetric_pair_the_dataplane_cannot_hash_is_covered_by_src_and_dst_owners():
    # (a symmetric key the dataplane hashes itself splits with no mirror:
    # tests/test_granularity_symmetric.py)
    per_proto = StateGroup("pair per protocol", {"src_ip", "dst_ip", "proto"}, symmetric=True)
    plan = plan_split([per_proto])
    assert plan.verdict is Verdict.SPLIT_AND_MIRROR and plan.primary is SplitGroup.SRC_IP


def test_contained_symmetric_and_directed():
    assert contains(CHANNEL, SOCK) and contains(CHANNEL, HH) and contains(CHANNEL, SOCKET_PAIR)
    assert not contains(H, CHANNEL) and not contains(CHANNEL, H)
    proto_only = StateGroup("per protocol", {"proto"})
    assert contains(proto_only, SOCKET_PAIR)  # undirected fields agree across directions


def test_chain_returns_the_coarsest():
    a = StateGroup("a", {"src_ip", "dst_ip", "src_port"})
    b = StateGroup("b", {"src_ip", "dst_ip"})
    c = StateGroup("c", {"src_ip"})
    assert names(algorithm1([a, b, c])) == ["c"]
    assert names(algorithm1([c, a, b])) == ["c"]


def test_two_directed_maximal_groups_have_no_exact_split():
    by_mac = StateGroup("by dst mac", {"dst_mac"})
    plan = plan_split([H, by_mac])
    assert plan.verdict is Verdict.NO_EXACT_SPLIT
    assert set(plan.maximal) == {"SrcIP", "by dst mac"}
    assert "cannot be covered" in plan.reason


def test_group_the_switch_cannot_hash_has_no_exact_split():
    plan = plan_split([StateGroup("per src port", {"src_port"})])
    assert plan.verdict is Verdict.NO_EXACT_SPLIT


def test_peer_coupling_names_the_features():
    coupled = StateGroup("HH", {"src_ip"}, peer_coupled=True, features=("HH_w_5", "HH_pcc_5"))
    plan = plan_split([MI, coupled])
    assert plan.verdict is Verdict.NO_EXACT_SPLIT
    assert plan.affected_features == ("HH_w_5", "HH_pcc_5")
    assert "'HH'" in plan.reason


@pytest.mark.parametrize("make,match", [
    (lambda: StateGroup("x", {"src_ip", "vlan"}), "unknown header fields \\['vlan'\\]"),
    (lambda: StateGroup("x", set()), "at least one header field"),
    (lambda: StateGroup("", {"src_ip"}), "name is required"),
    (lambda: StateGroup("x", {"src_ip"}, symmetric=True), "both directions"),
])
def test_bad_groups(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_declarations():
    with pytest.raises(ConfigError, match="at least one state group"):
        algorithm1([])
    with pytest.raises(ConfigError, match="partition traffic identically"):
        algorithm1([H, StateGroup("SrcIP again", {"src_ip"})])
    with pytest.raises(ConfigError, match="unique"):
        algorithm1([H, StateGroup("SrcIP", {"dst_ip"})])


def test_kitsune_semantics_declared():
    from lego.ext.features import state_groups

    lego = plan_split(state_groups("lego"))
    assert lego.verdict is Verdict.SPLIT_AND_MIRROR
    assert (lego.primary, lego.mirror) == (SplitGroup.SRC_IP, SplitGroup.DST_IP)
    assert lego.maximal == ("H", "channel")

    ref = plan_split(state_groups("kitsune"))
    assert ref.verdict is Verdict.NO_EXACT_SPLIT
    assert "'HH'" in ref.reason and "'HpHp'" in ref.reason
    assert len(ref.affected_features) == 40  # 2 groups x 5 lambdas x 4 two-D statistics
    assert all(f.rsplit("_", 1)[1] in ("radius", "magnitude", "covariance", "pcc")
               for f in ref.affected_features)


def test_global_state_is_split_exactly_only_when_the_switch_holds_it():
    from lego.control.granularity import GlobalState

    clock = GlobalState("window clock", features=("time",))
    loose = plan_split([H], [clock])
    assert loose.verdict is Verdict.NO_EXACT_SPLIT and "window clock" in loose.reason
    assert loose.affected_features == ("time",)
    held = plan_split([H], [GlobalState("window clock", switch_held=True)])
    assert held.verdict is Verdict.SPLIT and held.primary is SplitGroup.SRC_IP
    assert held.switch_held == ("window clock",) and "held by the switch" in held.describe()
    assert plan_split([H]).switch_held == ()
