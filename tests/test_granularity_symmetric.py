"""The symmetric split groups: Algorithm 1 splits a bidirectional key on the
dataplane's symmetric hash of that key (no mirror), the model hashes a packet and
its reply into one bucket (the symmetric Socket group on the outer header), and
the controller installs them."""

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from lego import nfs
from lego.control.granularity import GlobalState, SplitGroup, StateGroup, Verdict, plan_split
from lego.control.switch_state import SwitchPlan, group_id, split_groups
from lego.errors import ConfigError
from lego.p4src import contract as pl
from lego.switch.parser import parse_key
from lego.switch.pipeline import group_buckets, ordered_endpoints

SOCKET = {"src_ip", "dst_ip", "src_port", "dst_port", "proto"}
FLOW = StateGroup("flow", SOCKET, symmetric=True, features=("time", "ip_len"))
PAIR = StateGroup("pair", {"src_ip", "dst_ip"}, symmetric=True)
CLOCK = GlobalState("window clock", switch_held=True, features=("time",))


def test_split_groups_carry_the_symmetric_flag():
    assert SplitGroup.SOCKET_SYM.symmetric and not SplitGroup.SOCKET.symmetric
    assert SplitGroup.SOCKET_SYM.fields == SplitGroup.SOCKET.fields == SOCKET
    assert SplitGroup.for_fields(frozenset(SOCKET)) is SplitGroup.SOCKET
    assert SplitGroup.for_fields(frozenset(SOCKET), symmetric=True) is SplitGroup.SOCKET_SYM
    assert SplitGroup.for_fields(frozenset({"src_ip", "dst_ip"}), symmetric=True) \
        is SplitGroup.SRC_IP_DST_IP_SYM
    assert SplitGroup.for_fields(frozenset({"src_ip"}), symmetric=True) is None


def test_a_bidirectional_flow_with_a_switch_held_clock_splits_on_the_symmetric_socket():
    plan = plan_split([FLOW], [CLOCK])
    assert plan.verdict is Verdict.SPLIT
    assert plan.primary is SplitGroup.SOCKET_SYM and plan.mirror is None
    assert plan.switch_held == ("window clock",)
    text = plan.describe()
    assert "split on SOCKET_SYM" in text and "no mirror" in text
    assert "window clock held by the switch" in text


def test_lucid_declares_that_split():
    plan = nfs.get("lucid").plan()
    assert (plan.verdict, plan.primary, plan.mirror) == (Verdict.SPLIT, SplitGroup.SOCKET_SYM,
                                                         None)
    assert plan.switch_held == ("window clock",)


def test_a_symmetric_pair_alone_splits_on_the_symmetric_pair():
    plan = plan_split([PAIR])
    assert (plan.verdict, plan.primary, plan.mirror) == (Verdict.SPLIT,
                                                         SplitGroup.SRC_IP_DST_IP_SYM, None)
    # the pair contains the flow: Algorithm 1 keeps the pair, split on it
    assert plan_split([FLOW, PAIR]).primary is SplitGroup.SRC_IP_DST_IP_SYM


def test_global_state_not_held_by_the_switch_has_no_exact_split():
    plan = plan_split([FLOW], [GlobalState("window clock", features=("time",))])
    assert plan.verdict is Verdict.NO_EXACT_SPLIT and plan.primary is None
    assert "window clock" in plan.reason and plan.affected_features == ("time",)


def test_a_directed_maximal_group_keeps_the_mirror_plan():
    plan = plan_split([StateGroup("src", {"src_ip"}), PAIR])
    assert (plan.verdict, plan.primary, plan.mirror) == (Verdict.SPLIT_AND_MIRROR,
                                                         SplitGroup.SRC_IP, SplitGroup.DST_IP)


@pytest.mark.parametrize("semantics,verdict,groups", [
    ("lego", Verdict.SPLIT_AND_MIRROR, (SplitGroup.SRC_IP, SplitGroup.DST_IP)),
    ("kitsune", Verdict.NO_EXACT_SPLIT, (None, None)),
])
def test_kitsune_plans_are_unchanged(semantics, verdict, groups):
    plan = nfs.get("kitsune").plan({"semantics": semantics})
    assert (plan.verdict, (plan.primary, plan.mirror)) == (verdict, groups)
    if semantics == "lego":
        assert plan.describe() == "split on SRC_IP, mirror to the owner of DST_IP"


# ---------------------------------------------------------------- the model's hash
def _records(*frames) -> np.ndarray:
    return np.stack([np.frombuffer(parse_key(bytes(f))[0], dtype=np.uint8) for f in frames])


FLOWS = [
    (IP(src="10.0.0.9", dst="10.0.0.2") / TCP(sport=1234, dport=80),
     IP(src="10.0.0.2", dst="10.0.0.9") / TCP(sport=80, dport=1234)),
    (IP(src="10.0.0.2", dst="10.0.0.2") / UDP(sport=9000, dport=53),  # one address: ports order
     IP(src="10.0.0.2", dst="10.0.0.2") / UDP(sport=53, dport=9000)),
    (IPv6(src="2001:db8::7", dst="2001:db8::1") / TCP(sport=40000, dport=443),
     IPv6(src="2001:db8::1", dst="2001:db8::7") / TCP(sport=443, dport=40000)),
]


@pytest.mark.parametrize("there,back", FLOWS)
def test_a_packet_and_its_reply_share_the_symmetric_buckets(there, back):
    rec = _records(Ether() / there, Ether() / back)
    for group in (pl.GROUP_SRCIP_DSTIP_SYM, pl.GROUP_SOCKET_SYM):
        b = group_buckets(rec, group)
        assert b[0] == b[1], pl.SYMMETRIC_GROUP_NAMES[group]
    ordered = ordered_endpoints(rec, ports=True)
    assert np.array_equal(ordered[0, 6:], ordered[1, 6:])  # one record for both directions
    # the lower endpoint's record is hashed as the directed Socket group hashes it
    lower = 0 if bytes(rec[0, 6:23]) + bytes(rec[0, 41:43]) < \
        bytes(rec[0, 23:40]) + bytes(rec[0, 43:45]) else 1
    want = group_buckets(rec[lower:lower + 1], pl.GROUP_SOCKET)[0]
    assert group_buckets(rec, pl.GROUP_SOCKET_SYM)[0] == want


def test_ordering_leaves_the_records_alone():
    rec = _records(*(Ether() / p for pair in FLOWS for p in pair))
    rec.flags.writeable = False
    before = rec.copy()
    group_buckets(rec, pl.GROUP_SOCKET_SYM)
    assert np.array_equal(rec, before)


def test_the_symmetric_socket_keys_an_icmp_error_by_its_outer_header():
    """An ICMP error between two hosts is the hosts' ICMP flow (a bidirectional-flow
    NF's key), not the datagram it quotes: it shares the echo's bucket under the
    symmetric Socket group, while the directed Socket group hashes the quoted ports."""
    quoted = IP(src="10.0.0.9", dst="10.0.0.2") / UDP(sport=5000, dport=53)
    rec = _records(Ether() / IP(src="10.0.0.2", dst="10.0.0.9") / ICMP(type=3, code=3)
                   / IP(bytes(quoted)[:28]),
                   Ether() / IP(src="10.0.0.9", dst="10.0.0.2") / ICMP(type=8),
                   Ether() / quoted)
    assert rec[0, 40] != rec[0, 45]  # quoted: the record keeps Kitsune's key
    sym = group_buckets(rec, pl.GROUP_SOCKET_SYM)
    assert sym[0] == sym[1]
    directed = group_buckets(rec, pl.GROUP_SOCKET)
    assert directed[0] != directed[1]


# ---------------------------------------------------------------- on the switch
def test_the_controller_installs_the_symmetric_groups():
    plan = plan_split([FLOW], [CLOCK])
    assert split_groups(plan) == (pl.GROUP_SOCKET_SYM, pl.GROUP_NONE)
    assert SwitchPlan.from_split(plan, [0], [1, 2]).groups == (pl.GROUP_SOCKET_SYM,
                                                               pl.GROUP_NONE)
    assert group_id(SplitGroup.SRC_IP_DST_IP_SYM) == pl.GROUP_SRCIP_DSTIP_SYM
    assert set(pl.SYMMETRIC_GROUPS) <= set(pl.GROUP_NAMES)
    with pytest.raises(ConfigError, match="groups must be lego.p4 group ids"):
        SwitchPlan((0,), (1,), (8, pl.GROUP_NONE))
