"""The dataplane contract of ``lego.p4``: what the P4 program, its software model
(:mod:`lego.switch`) and the controller (:mod:`lego.control`) must agree on.

Buckets and port counters' sizes, the split groups' ids and their fields (also
the symmetric groups', which only the model hashes so far), port roles, the event
counter's cells, the shim to the bricks, and the P4Info names of every table,
action and counter the controller writes or reads. ``lego.p4``
declares the same values (``test_p4info`` checks the names against the
committed P4Info); nothing here knows an NF.
"""

from __future__ import annotations

from collections.abc import Iterable

N_BUCKETS = 1024
VERSIONS = 2  # the owner tables' versions (meta.version, the epoch's low bit)
N_PORTS = 512
N_EVENTS = 8
CLONE_SESSION_BASE = 1  # clone session id = replica port + 1
DROP_PORT = 511

GROUP_NONE, GROUP_SRCMAC_SRCIP, GROUP_SRCIP, GROUP_SRCIP_DSTIP, GROUP_SOCKET, GROUP_DSTIP = range(6)
GROUP_NAMES = {GROUP_SRCMAC_SRCIP: "SrcMAC-SrcIP", GROUP_SRCIP: "SrcIP",
               GROUP_SRCIP_DSTIP: "SrcIP-DstIP", GROUP_SOCKET: "Socket", GROUP_DSTIP: "DstIP"}
# each group's field list in lego.p4 GroupHash, as a slice of the key record
GROUP_SLICES = {GROUP_SRCMAC_SRCIP: (0, 23), GROUP_SRCIP: (6, 23), GROUP_SRCIP_DSTIP: (6, 40),
                GROUP_SOCKET: (6, 45), GROUP_DSTIP: (23, 40)}
#: the symmetric groups (DESIGN §4): a two-endpoint group hashed on the key record
#: with its endpoints ordered, the lower (family, address[, port]) first, so a packet
#: and its reply share a bucket. The model (``lego.switch.pipeline``) and the split
#: simulator hash them; ``lego.p4`` does not carry them yet, so they are not in
#: GROUP_NAMES (the groups the controller may install): each maps to the directed
#: group whose slice it hashes once the endpoints are ordered
GROUP_SRCIP_DSTIP_SYM, GROUP_SOCKET_SYM = 6, 7
SYMMETRIC_GROUPS = {GROUP_SRCIP_DSTIP_SYM: GROUP_SRCIP_DSTIP, GROUP_SOCKET_SYM: GROUP_SOCKET}
SYMMETRIC_GROUP_NAMES = {GROUP_SRCIP_DSTIP_SYM: "SrcIP-DstIP (sym)",
                         GROUP_SOCKET_SYM: "Socket (sym)"}

ROLE_DROP, ROLE_TRAFFIC, ROLE_FORWARD = 0, 1, 2

EVENT_PARSER_ERROR, EVENT_RUNT, EVENT_UNOWNED, EVENT_PORT_DROP, EVENT_MIRROR, EVENT_FORWARD = \
    range(6)

#: the shim between the Ethernet addresses and the original EtherType:
#: EtherType 0x88B5, then flags, reserved, bucket, seq, epoch, ingress time (22
#: bytes), then the original EtherType (24 bytes in all)
LEGO_ETHERTYPE = 0x88B5
SHIM_MIRROR = 0x01
SHIM_FIELDS_LEN = 22
SHIM_BYTES = 24

# P4Info names of the objects this model implements
T_PORT_ROLE = "LegoIngress.port_role"
T_SPLIT_GROUP = "LegoIngress.split_group"
T_BUCKET_OWNER = "LegoIngress.bucket_owner"
T_MIRROR_OWNER = "LegoIngress.mirror_owner"
A_ROLE_TRAFFIC = "LegoIngress.role_traffic"
A_ROLE_FORWARD = "LegoIngress.role_forward"
A_ROLE_DROP = "LegoIngress.role_drop"
A_SET_GROUPS = "LegoIngress.set_groups"
A_TO_REPLICA = "LegoIngress.to_replica"
A_UNOWNED = "LegoIngress.unowned"
A_MIRROR_TO = "LegoIngress.mirror_to"
A_MIRROR_UNOWNED = "LegoIngress.mirror_unowned"
#: each table's ``default_action`` in lego.p4: what a switch holds before any write
#: and restores on a reset (BMv2 takes it from the JSON; p4c 1.2.4's P4Info has no
#: ``initial_default_action``)
INITIAL_DEFAULTS: dict[str, tuple[str, dict[str, int]]] = {
    T_PORT_ROLE: (A_ROLE_DROP, {}),
    T_SPLIT_GROUP: (A_SET_GROUPS, {"primary": GROUP_SRCIP, "mirror": GROUP_NONE, "epoch": 0}),
    T_BUCKET_OWNER: (A_UNOWNED, {}),
    T_MIRROR_OWNER: (A_MIRROR_UNOWNED, {}),
}
C_BUCKET = "LegoIngress.bucket_counter"
C_MIRROR_BUCKET = "LegoIngress.mirror_bucket_counter"
C_PORT_IN = "LegoIngress.port_in_counter"
C_EVENT = "LegoIngress.event_counter"
C_PORT_OUT = "LegoEgress.port_out_counter"
COUNTER_SIZES = {C_BUCKET: N_BUCKETS, C_MIRROR_BUCKET: N_BUCKETS, C_PORT_IN: N_PORTS,
                 C_EVENT: N_EVENTS, C_PORT_OUT: N_PORTS}


def port_cells(ports: Iterable[int]) -> list[int]:
    """The port counters' cells that count these switch ports (cell = port mod
    N_PORTS, as the pipeline indexes them), sorted: what a reader of a few ports asks for."""
    return sorted({p % N_PORTS for p in ports})
