"""The dataplane contract of ``lego.p4``: what the P4 program, its software model
(:mod:`lego.switch`) and the controller (:mod:`lego.control`) must agree on.

Buckets and port counters' sizes, the split groups' ids and their fields (the
symmetric groups' too), port roles, the event counter's cells, the window clock
and its marks, the shim to the bricks, and the P4Info names of every table,
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
#: the symmetric groups (DESIGN §4): a two-endpoint group with its endpoints ordered,
#: the lower (family, address[, port]) first, so a packet and its reply share a
#: bucket. Each maps to the directed group whose slice of the key record it hashes
#: once the endpoints are ordered. The symmetric Socket group keys a frame by its
#: *outer* header (``outer_proto``, outer ports): an ICMP error is ICMP with ports 0,
#: as a bidirectional-flow NF keys it, not the datagram it quotes
GROUP_SRCIP_DSTIP_SYM, GROUP_SOCKET_SYM = 6, 7
SYMMETRIC_GROUPS = {GROUP_SRCIP_DSTIP_SYM: GROUP_SRCIP_DSTIP, GROUP_SOCKET_SYM: GROUP_SOCKET}
SYMMETRIC_GROUP_NAMES = {GROUP_SRCIP_DSTIP_SYM: "SrcIP-DstIP (sym)",
                         GROUP_SOCKET_SYM: "Socket (sym)"}
#: every group the controller may install
GROUP_NAMES = {GROUP_SRCMAC_SRCIP: "SrcMAC-SrcIP", GROUP_SRCIP: "SrcIP",
               GROUP_SRCIP_DSTIP: "SrcIP-DstIP", GROUP_SOCKET: "Socket", GROUP_DSTIP: "DstIP",
               **SYMMETRIC_GROUP_NAMES}
# each directed group's field list in lego.p4 GroupHash, as a slice of the key record
GROUP_SLICES = {GROUP_SRCMAC_SRCIP: (0, 23), GROUP_SRCIP: (6, 23), GROUP_SRCIP_DSTIP: (6, 40),
                GROUP_SOCKET: (6, 45), GROUP_DSTIP: (23, 40)}

ROLE_DROP, ROLE_TRAFFIC, ROLE_FORWARD = 0, 1, 2

(EVENT_PARSER_ERROR, EVENT_RUNT, EVENT_UNOWNED, EVENT_PORT_DROP, EVENT_MIRROR, EVENT_FORWARD,
 EVENT_WINDOW) = range(7)

#: the window clock (DESIGN §4): state no header keys but one clock orders (an NF's
#: time windows), held by the switch. With a period set (``window_clock``), a
#: register keeps the current window's start and number (windows count from 1); the
#: first traffic frame whose ingress time exceeds start + period opens the next one
#: (counted ``EVENT_WINDOW``) and every frame to a replica carries its window in the
#: shim. The frame that opens a window is also cloned, as a *window mark* (Ethernet
#: and shim only, ``SHIM_KIND_WINDOW``), to every port of clone session
#: ``WINDOW_MARK_SESSION``: a replica that owns no frame of the new window still
#: learns, in order with its frames, that the previous ones are closed. One clone
#: per pass: a frame that opens a window and is mirrored too carries no mark (the
#: next frame or mark a replica receives closes the window for it)
WINDOW_MARK_SESSION = 511
#: the frame log (DESIGN §4): with ``frame_log`` set to ``log_frames``, each frame sent
#: to a replica also goes, byte for byte, to one log port off the NF hosts: a
#: primary through this E2E clone session, a mirror and a window mark as the last
#: replica of their own sessions
FRAME_LOG_SESSION = 510
MAX_REPLICA_PORT = FRAME_LOG_SESSION - CLONE_SESSION_BASE - 1  # its session below the log's

#: the shim between the Ethernet addresses and the original EtherType: EtherType
#: 0x88B5, then flags (epoch << 1 | mirror), group, bucket, seq, ingress time (us),
#: original length, window, kind (27 bytes), then the original EtherType (29 in all)
LEGO_ETHERTYPE = 0x88B5
SHIM_MIRROR = 0x01
SHIM_KIND_FRAME, SHIM_KIND_WINDOW = 0, 1  # a frame; a window mark (no frame behind it)
SHIM_FIELDS_LEN = 27
SHIM_BYTES = 29
WINDOW_MARK_BYTES = 14 + SHIM_BYTES  # a mark as lego.p4 cuts it: MACs, type, shim

# P4Info names of the objects this model implements
T_PORT_ROLE = "LegoIngress.port_role"
T_SPLIT_GROUP = "LegoIngress.split_group"
T_BUCKET_OWNER = "LegoIngress.bucket_owner"
T_MIRROR_OWNER = "LegoIngress.mirror_owner"
T_WINDOW_CLOCK = "LegoIngress.window_clock"
T_FRAME_LOG = "LegoEgress.frame_log"
A_ROLE_TRAFFIC = "LegoIngress.role_traffic"
A_ROLE_FORWARD = "LegoIngress.role_forward"
A_ROLE_DROP = "LegoIngress.role_drop"
A_SET_GROUPS = "LegoIngress.set_groups"
A_TO_REPLICA = "LegoIngress.to_replica"
A_UNOWNED = "LegoIngress.unowned"
A_MIRROR_TO = "LegoIngress.mirror_to"
A_MIRROR_UNOWNED = "LegoIngress.mirror_unowned"
A_SET_WINDOW = "LegoIngress.set_window"
A_LOG_FRAMES = "LegoEgress.log_frames"
A_NO_FRAME_LOG = "LegoEgress.no_frame_log"
#: each table's ``default_action`` in lego.p4: what a switch holds before any write
#: and restores on a reset (BMv2 takes it from the JSON; p4c 1.2.4's P4Info has no
#: ``initial_default_action``)
INITIAL_DEFAULTS: dict[str, tuple[str, dict[str, int]]] = {
    T_PORT_ROLE: (A_ROLE_DROP, {}),
    T_SPLIT_GROUP: (A_SET_GROUPS, {"primary": GROUP_SRCIP, "mirror": GROUP_NONE, "epoch": 0}),
    T_BUCKET_OWNER: (A_UNOWNED, {}),
    T_MIRROR_OWNER: (A_MIRROR_UNOWNED, {}),
    T_WINDOW_CLOCK: (A_SET_WINDOW, {"period": 0}),
    T_FRAME_LOG: (A_NO_FRAME_LOG, {}),
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
