/*
 * LEGO dataplane (P4_16, v1model): split traffic over NF replicas by header group.
 *
 * Contract (DESIGN.md section 4); p4src/pipeline.py is the executable model of
 * this program and must agree with it bit for bit.
 *
 * - Parses Ethernet, up to two VLAN tags (0x8100, 0x88A8, 0x9100), ARP, IPv4
 *   (with options), IPv6, TCP, UDP,
 *   ICMP/ICMPv6, and the IPv4/IPv6 header plus TCP/UDP ports quoted by an ICMP
 *   error. Anything else still forwards (it is split on the MAC addresses).
 * - Derived addresses, exactly as the NF derives them (lego.ext.batch Family):
 *   IPv4, else IPv6, else ARP sender/target protocol address (IPv4 over
 *   Ethernet ARP only; other ARP: family NONE, address 0), else the MACs.
 *   An address is 128 bits, left-aligned, zero-filled (PacketBatch src_addr).
 * - Protocol class (lego.ext.batch Proto) and ports: TCP/UDP header, else the
 *   ports quoted by an ICMP error, else 0.
 * - The controller selects the split group at run time (keyless table
 *   split_group): crc32 over the group's fields -> bucket in [0, 1024) ->
 *   bucket_owner -> replica port. An optional mirror group: its bucket ->
 *   mirror_owner -> when that replica differs from the primary, I2E clone to
 *   clone session (port + 1). SrcIP and DstIP hash the same (family, address)
 *   bytes, so a host has one owner whether it sends or receives; the
 *   controller writes bucket_owner and mirror_owner identically.
 * - Symmetric groups (SrcIP-DstIP, Socket): the two endpoints ordered, the
 *   lower (family, address[, port]) first, before hashing, so a packet and its
 *   reply share a bucket. The symmetric Socket group hashes the outer header's
 *   ports and protocol class: an ICMP error is ICMP (or IP) with ports 0.
 * - Window clock (keyless table window_clock, period 0 = off): a register
 *   holds the current window's start and number (from 1); the first traffic
 *   frame whose ingress time exceeds start + period opens the next window. Every
 *   frame to a replica carries its window in the shim; the frame that opens one
 *   is also cloned to WINDOW_MARK_SESSION (every replica port) as a window
 *   mark, cut to Ethernet + shim, unless it is mirrored in the same pass.
 * - Both owner tables hold two versions of the assignment, keyed by the low
 *   bit of split_group's epoch: the controller writes the new assignment into
 *   the version no frame reads, then bumps the epoch (one update), so every
 *   frame is split wholly by the old assignment or wholly by the new, even on
 *   a target that applies a Write's updates one by one (BMv2).
 * - Every frame sent to a replica carries the lego shim right after the MACs.
 * - Port roles (traffic-facing, forwarded unchanged, dropped) come from the
 *   port_role table. Frames from NF ports (alerts) use role_forward or role_drop.
 * - A frame too short for Ethernet is dropped and counted (EVENT_RUNT). A later
 *   header that does not fit (or is bogus: IPv4 version/IHL, IPv6 version)
 *   stays invalid; the frame is classified by the headers that parsed and
 *   forwarded; a parser error is counted (EVENT_PARSER_ERROR).
 * - Frame log (keyless egress table frame_log, off by default): each frame sent
 *   to a replica also goes, byte for byte, to one log port, off the NF hosts, so
 *   that a lost host's frames since its last checkpoint can be replayed. A
 *   primary is cloned egress-to-egress to FRAME_LOG_SESSION; the controller adds
 *   the log port as the last replica of each mirror session and of the window
 *   mark session.
 * - Counter bytes are the frame's ingress length (BMv2 semantics); port_out_counter
 *   counts frames, not window marks.
 */
#include <core.p4>
#include <v1model.p4>

const bit<16> ETHERTYPE_IPV4 = 0x0800;
const bit<16> ETHERTYPE_ARP  = 0x0806;
const bit<16> ETHERTYPE_VLAN = 0x8100;
const bit<16> ETHERTYPE_QINQ = 0x88A8;
const bit<16> ETHERTYPE_VLAN_OLD = 0x9100;
const bit<16> ETHERTYPE_IPV6 = 0x86DD;
const bit<16> ETHERTYPE_LEGO = 0x88B5;   /* IEEE local experimental EtherType 1 */

const bit<8> IPPROTO_ICMP   = 1;
const bit<8> IPPROTO_TCP    = 6;
const bit<8> IPPROTO_UDP    = 17;
const bit<8> IPPROTO_ICMPV6 = 58;

const bit<32> N_BUCKETS = 1024;
const bit<32> N_PORTS   = 512;
const bit<32> N_EVENTS  = 8;
const bit<32> CLONE_SESSION_BASE = 1;    /* clone session id = replica port + 1 */
const bit<32> WINDOW_MARK_SESSION = 511; /* every replica port: window marks */
const bit<32> FRAME_LOG_SESSION = 510;   /* the frame log's port: a copy of each primary */
const bit<32> WINDOW_MARK_BYTES = 43;    /* a mark: Ethernet and shim */

/* split groups, chosen by the controller (split_group.set_groups) */
const bit<8> GROUP_NONE         = 0;
const bit<8> GROUP_SRCMAC_SRCIP = 1;
const bit<8> GROUP_SRCIP        = 2;
const bit<8> GROUP_SRCIP_DSTIP  = 3;
const bit<8> GROUP_SOCKET       = 4;
const bit<8> GROUP_DSTIP        = 5;
const bit<8> GROUP_SRCIP_DSTIP_SYM = 6;
const bit<8> GROUP_SOCKET_SYM      = 7;

/* lego.ext.batch.Family */
const bit<8> FAMILY_NONE = 0;
const bit<8> FAMILY_MAC  = 1;
const bit<8> FAMILY_IPV4 = 4;
const bit<8> FAMILY_IPV6 = 6;

/* lego.ext.batch.Proto */
const bit<8> PROTO_L2   = 0;
const bit<8> PROTO_ARP  = 1;
const bit<8> PROTO_ICMP = 2;
const bit<8> PROTO_TCP  = 3;
const bit<8> PROTO_UDP  = 4;
const bit<8> PROTO_IP   = 5;

/* port roles */
const bit<2> ROLE_DROP    = 0;
const bit<2> ROLE_TRAFFIC = 1;
const bit<2> ROLE_FORWARD = 2;

/* shim flags: bit 0 mirror, bits 1..7 the assignment epoch (split_group.set_groups) */
const bit<8> SHIM_MIRROR = 0x01;
/* shim kind: a frame, or a window mark (Ethernet and shim only) */
const bit<8> SHIM_KIND_FRAME  = 0;
const bit<8> SHIM_KIND_WINDOW = 1;

/* event_counter indices */
const bit<32> EVENT_PARSER_ERROR = 0;
const bit<32> EVENT_RUNT         = 1;
const bit<32> EVENT_UNOWNED      = 2;
const bit<32> EVENT_PORT_DROP    = 3;
const bit<32> EVENT_MIRROR       = 4;
const bit<32> EVENT_FORWARD      = 5;
const bit<32> EVENT_WINDOW       = 6;

const bit<32> PKT_INSTANCE_TYPE_INGRESS_CLONE = 1;
const bit<8>  FL_MIRROR = 1;
/* what an ingress clone is */
const bit<1>  CLONE_MIRROR = 0;
const bit<1>  CLONE_WINDOW_MARK = 1;

header ethernet_t {
    bit<48> dstAddr;
    bit<48> srcAddr;
    bit<16> etherType;
}

/* 29 bytes after the MACs; EtherType ETHERTYPE_LEGO. A brick restores the
 * frame by putting origEtherType back and removing the shim. */
header lego_shim_t {
    bit<8>  flags;          /* epoch << 1 | (SHIM_MIRROR for a clone, 0 for the primary) */
    bit<8>  group;          /* the group whose bucket this is */
    bit<16> bucket;
    bit<64> seq;            /* per-switch sequence number, shared by a clone */
    bit<48> ts;             /* ingress global timestamp, microseconds */
    bit<32> origLen;        /* original frame length (kept under truncation) */
    bit<32> window;         /* the window clock's window (0: no clock) */
    bit<8>  kind;           /* SHIM_KIND_FRAME, or SHIM_KIND_WINDOW for a mark */
    bit<16> origEtherType;
}

header vlan_t {
    bit<3>  pcp;
    bit<1>  dei;
    bit<12> vid;
    bit<16> etherType;
}

header arp_t {
    bit<16> htype;
    bit<16> ptype;
    bit<8>  hlen;
    bit<8>  plen;
    bit<16> oper;
}

header arp_ipv4_t {
    bit<48> sha;
    bit<32> spa;
    bit<48> tha;
    bit<32> tpa;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  diffserv;
    bit<16> totalLen;
    bit<16> identification;
    bit<3>  flags;
    bit<13> fragOffset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdrChecksum;
    bit<32> srcAddr;
    bit<32> dstAddr;
}

header ipv4_options_t {
    varbit<320> options;
}

header ipv6_t {
    bit<4>   version;
    bit<8>   trafficClass;
    bit<20>  flowLabel;
    bit<16>  payloadLen;
    bit<8>   nextHdr;
    bit<8>   hopLimit;
    bit<128> srcAddr;
    bit<128> dstAddr;
}

/* TCP and UDP are parsed as their ports (4 bytes: enough for the split key,
 * as for the NF) followed by the rest of the header */
header l4_ports_t {
    bit<16> srcPort;
    bit<16> dstPort;
}

header tcp_t {
    bit<32> seqNo;
    bit<32> ackNo;
    bit<4>  dataOffset;
    bit<4>  res;
    bit<8>  flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgentPtr;
}

header udp_t {
    bit<16> length;
    bit<16> checksum;
}

header icmp_t {
    bit<8>  type;
    bit<8>  code;
    bit<16> checksum;
    bit<32> rest;
}

struct headers_t {
    ethernet_t     ethernet;
    lego_shim_t    shim;
    vlan_t[2]      vlan;
    arp_t          arp;
    arp_ipv4_t     arp_ipv4;
    ipv4_t         ipv4;
    ipv4_options_t ipv4_options;
    ipv6_t         ipv6;
    l4_ports_t     tcp_ports;
    tcp_t          tcp;
    l4_ports_t     udp_ports;
    udp_t          udp;
    icmp_t         icmp;
    ipv4_t         inner_ipv4;
    ipv6_t         inner_ipv6;
    l4_ports_t     inner_ports;    /* of a TCP/UDP header quoted by an ICMP error */
}

struct metadata_t {
    bit<16>  l3_type;
    bit<2>   role;
    bit<8>   src_family;
    bit<128> src_addr;
    bit<8>   dst_family;
    bit<128> dst_addr;
    bit<8>   proto;
    bit<16>  sport;
    bit<16>  dport;
    /* the outer header's protocol class and ports (an ICMP error's: ICMP, 0, 0) */
    bit<8>   outer_proto;
    bit<16>  outer_sport;
    bit<16>  outer_dport;
    /* the symmetric groups' order: 1 where the destination endpoint is the lower */
    bit<1>   swap_hosts;
    bit<1>   swap_sockets;
    bit<48>  window_period;
    bit<48>  window_start;
    bit<1>   window_opened;
    bit<8>   primary_group;
    bit<16>  bucket;
    bit<1>   version;       /* the owner tables' version: epoch's low bit */
    bit<1>   owned;
    bit<9>   owner;
    bit<1>   mirror_owned;
    bit<9>   mirror_owner;
    /* what the egress of an I2E clone needs */
    @field_list(FL_MIRROR) bit<8>  mirror_group;
    @field_list(FL_MIRROR) bit<16> mirror_bucket;
    @field_list(FL_MIRROR) bit<64> seq;
    @field_list(FL_MIRROR) bit<48> ingress_ts;
    @field_list(FL_MIRROR) bit<32> orig_len;
    @field_list(FL_MIRROR) bit<7>  epoch;
    @field_list(FL_MIRROR) bit<32> window;
    @field_list(FL_MIRROR) bit<1>  clone_kind;
}

parser LegoParser(packet_in packet, out headers_t hdr, inout metadata_t meta,
                  inout standard_metadata_t standard_metadata) {
    state start {
        packet.extract(hdr.ethernet);
        meta.l3_type = hdr.ethernet.etherType;
        transition select(hdr.ethernet.etherType) {
            ETHERTYPE_VLAN: parse_vlan;
            ETHERTYPE_QINQ: parse_vlan;
            ETHERTYPE_VLAN_OLD: parse_vlan;
            default: dispatch_l3;
        }
    }
    /* Two tags at most, one state each: BMv2 cannot select on a stack's lastIndex
     * (p4c emits it as an expression key, which simple_switch rejects). */
    state parse_vlan {
        packet.extract(hdr.vlan[0]);
        meta.l3_type = hdr.vlan[0].etherType;
        transition select(hdr.vlan[0].etherType) {
            ETHERTYPE_VLAN: parse_vlan_inner;
            ETHERTYPE_QINQ: parse_vlan_inner;
            ETHERTYPE_VLAN_OLD: parse_vlan_inner;
            default: dispatch_l3;
        }
    }
    state parse_vlan_inner {
        packet.extract(hdr.vlan[1]);
        meta.l3_type = hdr.vlan[1].etherType;
        transition dispatch_l3;
    }
    state dispatch_l3 {
        transition select(meta.l3_type) {
            ETHERTYPE_IPV4: check_ipv4;
            ETHERTYPE_IPV6: check_ipv6;
            ETHERTYPE_ARP: parse_arp;
            default: accept;
        }
    }
    state parse_arp {
        packet.extract(hdr.arp);
        transition select(hdr.arp.ptype, hdr.arp.hlen, hdr.arp.plen) {
            (ETHERTYPE_IPV4, 6, 4): parse_arp_ipv4;
            default: accept;
        }
    }
    state parse_arp_ipv4 {
        packet.extract(hdr.arp_ipv4);
        transition accept;
    }
    /* version 4 and IHL >= 5, else not IP */
    state check_ipv4 {
        transition select(packet.lookahead<bit<8>>()) {
            0x45: parse_ipv4;
            0x46 &&& 0xFE: parse_ipv4_options;
            0x48 &&& 0xF8: parse_ipv4_options;
            default: accept;
        }
    }
    state parse_ipv4 {
        packet.extract(hdr.ipv4);
        transition ipv4_l4;
    }
    state parse_ipv4_options {
        packet.extract(hdr.ipv4);
        packet.extract(hdr.ipv4_options, (bit<32>)(((bit<16>)hdr.ipv4.ihl - 5) * 32));
        transition ipv4_l4;
    }
    /* a fragment (MF set or offset != 0) carries no L4 header we use */
    state ipv4_l4 {
        transition select(hdr.ipv4.flags[0:0], hdr.ipv4.fragOffset, hdr.ipv4.protocol) {
            (0, 0, IPPROTO_TCP): parse_tcp;
            (0, 0, IPPROTO_UDP): parse_udp;
            (0, 0, IPPROTO_ICMP): parse_icmp;
            default: accept;
        }
    }
    state check_ipv6 {
        transition select(packet.lookahead<bit<4>>()) {
            6: parse_ipv6;
            default: accept;
        }
    }
    state parse_ipv6 {
        packet.extract(hdr.ipv6);
        transition select(hdr.ipv6.nextHdr) {
            IPPROTO_TCP: parse_tcp;
            IPPROTO_UDP: parse_udp;
            IPPROTO_ICMPV6: parse_icmpv6;
            default: accept;
        }
    }
    state parse_tcp {
        packet.extract(hdr.tcp_ports);
        packet.extract(hdr.tcp);
        transition accept;
    }
    state parse_udp {
        packet.extract(hdr.udp_ports);
        packet.extract(hdr.udp);
        transition accept;
    }
    /* ICMP errors that quote the offending datagram: 3, 4, 5, 11, 12 */
    state parse_icmp {
        packet.extract(hdr.icmp);
        transition select(hdr.icmp.type) {
            3: check_inner_ipv4;
            4: check_inner_ipv4;
            5: check_inner_ipv4;
            11: check_inner_ipv4;
            12: check_inner_ipv4;
            default: accept;
        }
    }
    state check_inner_ipv4 {
        transition select(packet.lookahead<bit<8>>()) {
            0x45: parse_inner_ipv4;
            default: accept;
        }
    }
    state parse_inner_ipv4 {
        packet.extract(hdr.inner_ipv4);
        transition select(hdr.inner_ipv4.flags[0:0], hdr.inner_ipv4.fragOffset,
                          hdr.inner_ipv4.protocol) {
            (0, 0, IPPROTO_TCP): parse_inner_ports;
            (0, 0, IPPROTO_UDP): parse_inner_ports;
            default: accept;
        }
    }
    /* ICMPv6 errors 1..4 quote the offending datagram */
    state parse_icmpv6 {
        packet.extract(hdr.icmp);
        transition select(hdr.icmp.type) {
            1: check_inner_ipv6;
            2: check_inner_ipv6;
            3: check_inner_ipv6;
            4: check_inner_ipv6;
            default: accept;
        }
    }
    state check_inner_ipv6 {
        transition select(packet.lookahead<bit<4>>()) {
            6: parse_inner_ipv6;
            default: accept;
        }
    }
    state parse_inner_ipv6 {
        packet.extract(hdr.inner_ipv6);
        transition select(hdr.inner_ipv6.nextHdr) {
            IPPROTO_TCP: parse_inner_ports;
            IPPROTO_UDP: parse_inner_ports;
            default: accept;
        }
    }
    state parse_inner_ports {
        packet.extract(hdr.inner_ports);
        transition accept;
    }
}

control LegoVerifyChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply { }
}

/* bucket = crc32(group fields, bit-packed MSB first) % N_BUCKETS */
control GroupHash(in headers_t hdr, in metadata_t meta, in bit<8> group, out bit<16> bucket) {
    apply {
        bucket = 0;
        if (group == GROUP_SRCMAC_SRCIP) {
            hash(bucket, HashAlgorithm.crc32, 16w0,
                 { hdr.ethernet.srcAddr, meta.src_family, meta.src_addr }, N_BUCKETS);
        } else if (group == GROUP_SRCIP) {
            hash(bucket, HashAlgorithm.crc32, 16w0,
                 { meta.src_family, meta.src_addr }, N_BUCKETS);
        } else if (group == GROUP_SRCIP_DSTIP) {
            hash(bucket, HashAlgorithm.crc32, 16w0,
                 { meta.src_family, meta.src_addr, meta.dst_family, meta.dst_addr }, N_BUCKETS);
        } else if (group == GROUP_SOCKET) {
            hash(bucket, HashAlgorithm.crc32, 16w0,
                 { meta.src_family, meta.src_addr, meta.dst_family, meta.dst_addr,
                   meta.proto, meta.sport, meta.dport }, N_BUCKETS);
        } else if (group == GROUP_DSTIP) {
            hash(bucket, HashAlgorithm.crc32, 16w0,
                 { meta.dst_family, meta.dst_addr }, N_BUCKETS);
        } else if (group == GROUP_SRCIP_DSTIP_SYM) {
            if (meta.swap_hosts == 1) {
                hash(bucket, HashAlgorithm.crc32, 16w0,
                     { meta.dst_family, meta.dst_addr, meta.src_family, meta.src_addr },
                     N_BUCKETS);
            } else {
                hash(bucket, HashAlgorithm.crc32, 16w0,
                     { meta.src_family, meta.src_addr, meta.dst_family, meta.dst_addr },
                     N_BUCKETS);
            }
        } else if (group == GROUP_SOCKET_SYM) {
            if (meta.swap_sockets == 1) {
                hash(bucket, HashAlgorithm.crc32, 16w0,
                     { meta.dst_family, meta.dst_addr, meta.src_family, meta.src_addr,
                       meta.outer_proto, meta.outer_dport, meta.outer_sport }, N_BUCKETS);
            } else {
                hash(bucket, HashAlgorithm.crc32, 16w0,
                     { meta.src_family, meta.src_addr, meta.dst_family, meta.dst_addr,
                       meta.outer_proto, meta.outer_sport, meta.outer_dport }, N_BUCKETS);
            }
        }
    }
}

control LegoIngress(inout headers_t hdr, inout metadata_t meta,
                    inout standard_metadata_t standard_metadata) {
    counter(N_BUCKETS, CounterType.packets_and_bytes) bucket_counter;
    counter(N_BUCKETS, CounterType.packets_and_bytes) mirror_bucket_counter;
    counter(N_PORTS, CounterType.packets_and_bytes) port_in_counter;
    counter(N_EVENTS, CounterType.packets_and_bytes) event_counter;
    register<bit<64>>(1) seq_register;
    register<bit<48>>(1) window_start_register;
    register<bit<32>>(1) window_register;
    GroupHash() primary_hash;
    GroupHash() mirror_hash;

    action role_traffic() {
        meta.role = ROLE_TRAFFIC;
    }
    action role_forward(bit<9> port) {
        meta.role = ROLE_FORWARD;
        standard_metadata.egress_spec = port;
    }
    action role_drop() {
        meta.role = ROLE_DROP;
    }
    table port_role {
        key = { standard_metadata.ingress_port: exact; }
        actions = { role_traffic; role_forward; role_drop; }
        default_action = role_drop();
        size = 512;
    }

    /* epoch: bumped by the controller once the moved buckets' new owners are
     * written in the other version, so a replica tells the frames of the old
     * assignment from the new, and the owner tables switch version with it */
    action set_groups(bit<8> primary, bit<8> mirror, bit<7> epoch) {
        meta.primary_group = primary;
        meta.mirror_group = mirror;
        meta.epoch = epoch;
        meta.version = epoch[0:0];
    }
    table split_group {
        actions = { @defaultonly set_groups; }
        default_action = set_groups(GROUP_SRCIP, GROUP_NONE, 0);
        size = 1;
    }

    /* the window clock's period in microseconds (0: no clock) */
    action set_window(bit<48> period) {
        meta.window_period = period;
    }
    table window_clock {
        actions = { @defaultonly set_window; }
        default_action = set_window(0);
        size = 1;
    }

    action to_replica(bit<9> port) {
        meta.owned = 1;
        meta.owner = port;
    }
    action unowned() {
        meta.owned = 0;
    }
    table bucket_owner {
        key = { meta.version: exact; meta.bucket: exact; }
        actions = { to_replica; @defaultonly unowned; }
        default_action = unowned();
        size = 2048;
    }

    action mirror_to(bit<9> port) {
        meta.mirror_owned = 1;
        meta.mirror_owner = port;
    }
    action mirror_unowned() {
        meta.mirror_owned = 0;
    }
    table mirror_owner {
        key = { meta.version: exact; meta.mirror_bucket: exact; }
        actions = { mirror_to; @defaultonly mirror_unowned; }
        default_action = mirror_unowned();
        size = 2048;
    }

    /* the addresses, protocol class and ports the NF derives */
    action derive_l2() {
        meta.src_family = FAMILY_MAC;
        meta.src_addr = hdr.ethernet.srcAddr ++ 80w0;
        meta.dst_family = FAMILY_MAC;
        meta.dst_addr = hdr.ethernet.dstAddr ++ 80w0;
        meta.proto = PROTO_L2;
    }

    /* the symmetric groups' endpoint order: (family, address[, outer port]) */
    action order_endpoints() {
        meta.swap_hosts = 0;
        if (meta.dst_family < meta.src_family
                || (meta.dst_family == meta.src_family && meta.dst_addr < meta.src_addr)) {
            meta.swap_hosts = 1;
        }
        meta.swap_sockets = meta.swap_hosts;
        if (meta.dst_family == meta.src_family && meta.dst_addr == meta.src_addr
                && meta.outer_dport < meta.outer_sport) {
            meta.swap_sockets = 1;
        }
    }

    apply {
        port_in_counter.count((bit<32>)standard_metadata.ingress_port);
        port_role.apply();
        if (meta.role == ROLE_DROP) {
            event_counter.count(EVENT_PORT_DROP);
            mark_to_drop(standard_metadata);
        } else if (meta.role == ROLE_FORWARD) {
            event_counter.count(EVENT_FORWARD);
        } else if (!hdr.ethernet.isValid()) {
            event_counter.count(EVENT_RUNT);
            mark_to_drop(standard_metadata);
        } else {
            if (standard_metadata.parser_error != error.NoError) {
                event_counter.count(EVENT_PARSER_ERROR);
            }
            meta.sport = 0;
            meta.dport = 0;
            if (hdr.ipv4.isValid()) {
                meta.src_family = FAMILY_IPV4;
                meta.src_addr = hdr.ipv4.srcAddr ++ 96w0;
                meta.dst_family = FAMILY_IPV4;
                meta.dst_addr = hdr.ipv4.dstAddr ++ 96w0;
                meta.proto = PROTO_IP;
                if (hdr.icmp.isValid()) {
                    meta.proto = PROTO_ICMP;
                }
            } else if (hdr.ipv6.isValid()) {
                meta.src_family = FAMILY_IPV6;
                meta.src_addr = hdr.ipv6.srcAddr;
                meta.dst_family = FAMILY_IPV6;
                meta.dst_addr = hdr.ipv6.dstAddr;
                meta.proto = PROTO_IP;
            } else if (hdr.arp.isValid()) {
                meta.proto = PROTO_ARP;
                if (hdr.arp_ipv4.isValid()) {
                    meta.src_family = FAMILY_IPV4;
                    meta.src_addr = hdr.arp_ipv4.spa ++ 96w0;
                    meta.dst_family = FAMILY_IPV4;
                    meta.dst_addr = hdr.arp_ipv4.tpa ++ 96w0;
                } else {
                    meta.src_family = FAMILY_NONE;
                    meta.src_addr = 0;
                    meta.dst_family = FAMILY_NONE;
                    meta.dst_addr = 0;
                }
            } else {
                derive_l2();
            }
            if (hdr.tcp_ports.isValid()) {
                meta.proto = PROTO_TCP;
                meta.sport = hdr.tcp_ports.srcPort;
                meta.dport = hdr.tcp_ports.dstPort;
            } else if (hdr.udp_ports.isValid()) {
                meta.proto = PROTO_UDP;
                meta.sport = hdr.udp_ports.srcPort;
                meta.dport = hdr.udp_ports.dstPort;
            }
            meta.outer_proto = meta.proto;
            meta.outer_sport = meta.sport;
            meta.outer_dport = meta.dport;
            if (hdr.inner_ports.isValid()) {
                meta.proto = PROTO_UDP;
                if ((hdr.inner_ipv4.isValid() && hdr.inner_ipv4.protocol == IPPROTO_TCP)
                        || (hdr.inner_ipv6.isValid() && hdr.inner_ipv6.nextHdr == IPPROTO_TCP)) {
                    meta.proto = PROTO_TCP;
                }
                meta.sport = hdr.inner_ports.srcPort;
                meta.dport = hdr.inner_ports.dstPort;
            }
            order_endpoints();

            seq_register.read(meta.seq, 0);
            seq_register.write(0, meta.seq + 1);
            meta.ingress_ts = standard_metadata.ingress_global_timestamp;
            meta.orig_len = standard_metadata.packet_length;

            meta.window = 0;
            meta.window_opened = 0;
            window_clock.apply();
            if (meta.window_period != 0) {
                window_register.read(meta.window, 0);
                window_start_register.read(meta.window_start, 0);
                if (meta.window == 0 || meta.ingress_ts > meta.window_start + meta.window_period) {
                    meta.window = meta.window + 1;
                    window_register.write(0, meta.window);
                    window_start_register.write(0, meta.ingress_ts);
                    meta.window_opened = 1;
                    event_counter.count(EVENT_WINDOW);
                }
            }

            split_group.apply();
            primary_hash.apply(hdr, meta, meta.primary_group, meta.bucket);
            bucket_counter.count((bit<32>)meta.bucket);
            bucket_owner.apply();
            if (meta.owned == 1) {
                standard_metadata.egress_spec = meta.owner;
            } else {
                event_counter.count(EVENT_UNOWNED);
                mark_to_drop(standard_metadata);
            }
            if (meta.mirror_group != GROUP_NONE) {
                mirror_hash.apply(hdr, meta, meta.mirror_group, meta.mirror_bucket);
                mirror_owner.apply();
                if (meta.mirror_owned == 1 && (meta.owned == 0 || meta.mirror_owner != meta.owner)) {
                    mirror_bucket_counter.count((bit<32>)meta.mirror_bucket);
                    event_counter.count(EVENT_MIRROR);
                    meta.clone_kind = CLONE_MIRROR;
                    clone_preserving_field_list(CloneType.I2E,
                        (bit<32>)meta.mirror_owner + CLONE_SESSION_BASE, FL_MIRROR);
                    meta.window_opened = 0;  /* one clone per pass: the mirror's */
                }
            }
            if (meta.window_opened == 1) {
                meta.clone_kind = CLONE_WINDOW_MARK;
                clone_preserving_field_list(CloneType.I2E, WINDOW_MARK_SESSION, FL_MIRROR);
            }
        }
    }
}

control LegoEgress(inout headers_t hdr, inout metadata_t meta,
                   inout standard_metadata_t standard_metadata) {
    counter(N_PORTS, CounterType.packets_and_bytes) port_out_counter;

    /* the frame log: each primary, as its replica gets it, also to the log port
     * (E2E clone session FRAME_LOG_SESSION); mirrors and window marks reach it as
     * the last replica of their own clone sessions */
    action log_frames() {
        clone(CloneType.E2E, FRAME_LOG_SESSION);
    }
    action no_frame_log() { }
    table frame_log {
        actions = { @defaultonly log_frames; @defaultonly no_frame_log; }
        default_action = no_frame_log();
        size = 1;
    }

    apply {
        bool is_clone = standard_metadata.instance_type == PKT_INSTANCE_TYPE_INGRESS_CLONE;
        /* frames only: a window mark is no frame (the port counts match the bricks') */
        if (!(is_clone && meta.clone_kind == CLONE_WINDOW_MARK)) {
            port_out_counter.count((bit<32>)standard_metadata.egress_port);
        }
        if (hdr.ethernet.isValid() && (is_clone || meta.role == ROLE_TRAFFIC)) {
            hdr.shim.setValid();
            hdr.shim.window = meta.window;
            hdr.shim.kind = SHIM_KIND_FRAME;
            if (is_clone && meta.clone_kind == CLONE_WINDOW_MARK) {
                /* a window mark: no group, no bucket (ingress metadata is reset) */
                hdr.shim.flags = meta.epoch ++ 1w0;
                hdr.shim.group = GROUP_NONE;
                hdr.shim.bucket = 0;
                hdr.shim.kind = SHIM_KIND_WINDOW;
                truncate(WINDOW_MARK_BYTES);  /* BMv2's clone sessions cannot truncate */
            } else if (is_clone) {
                hdr.shim.flags = meta.epoch ++ 1w1;
                hdr.shim.group = meta.mirror_group;
                hdr.shim.bucket = meta.mirror_bucket;
            } else {
                hdr.shim.flags = meta.epoch ++ 1w0;
                hdr.shim.group = meta.primary_group;
                hdr.shim.bucket = meta.bucket;
            }
            hdr.shim.seq = meta.seq;
            hdr.shim.ts = meta.ingress_ts;
            hdr.shim.origLen = meta.orig_len;
            hdr.shim.origEtherType = hdr.ethernet.etherType;
            hdr.ethernet.etherType = ETHERTYPE_LEGO;
            if (!is_clone) {
                frame_log.apply();  /* its E2E copy keeps this shim: role is reset */
            }
        }
    }
}

control LegoComputeChecksum(inout headers_t hdr, inout metadata_t meta) {
    apply { }
}

control LegoDeparser(packet_out packet, in headers_t hdr) {
    apply {
        packet.emit(hdr.ethernet);
        packet.emit(hdr.shim);
        packet.emit(hdr.vlan);
        packet.emit(hdr.arp);
        packet.emit(hdr.arp_ipv4);
        packet.emit(hdr.ipv4);
        packet.emit(hdr.ipv4_options);
        packet.emit(hdr.ipv6);
        packet.emit(hdr.tcp_ports);
        packet.emit(hdr.tcp);
        packet.emit(hdr.udp_ports);
        packet.emit(hdr.udp);
        packet.emit(hdr.icmp);
        packet.emit(hdr.inner_ipv4);
        packet.emit(hdr.inner_ipv6);
        packet.emit(hdr.inner_ports);
    }
}

V1Switch(LegoParser(), LegoVerifyChecksum(), LegoIngress(), LegoEgress(),
         LegoComputeChecksum(), LegoDeparser()) main;
