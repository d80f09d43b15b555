//! The contract between the XDP datapath (`lb-ebpf`) and user space (`lb-userspace`):
//! every map key and value, flag and constant both sides must agree on, and nothing else.
#![cfg_attr(not(test), no_std)]

/// Names of the maps declared by `lb-ebpf`, as user space looks them up.
pub mod map_names {
    pub const LISTENERS: &str = "LISTENERS";
    pub const LISTENER_CFG: &str = "LISTENER_CFG";
    pub const BACKENDS: &str = "BACKENDS";
    pub const BACKEND_TABLE: &str = "BACKEND_TABLE";
    pub const CONNTRACK: &str = "CONNTRACK";
    /// The next IPv4 identification a fragmented datagram leaves with (one counter).
    pub const FRAG_IDS: &str = "FRAG_IDS";
    pub const REVERSE_NAT: &str = "REVERSE_NAT";
    /// TCP flows whose handshake has not completed (client side, then backend side).
    pub const HALF_OPEN: &str = "HALF_OPEN";
    pub const HALF_OPEN_REV: &str = "HALF_OPEN_REV";
    pub const PERSIST: &str = "PERSIST";
    pub const ACLS: &str = "ACLS";
    pub const SNAT_ADDRS: &str = "SNAT_ADDRS";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const RR_CURSORS: &str = "RR_CURSORS";
    pub const STATS: &str = "STATS";
    pub const LISTENER_STATS: &str = "LISTENER_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const CONFIG: &str = "CONFIG";
    /// Bitmaps of the addresses packets can be ours for (`addr_filter`).
    pub const ADDR_FILTER: &str = "ADDR_FILTER";
    /// Tail-called programs (`prog_index`): XDP's, and tc's.
    pub const PROGS: &str = "PROGS";
    pub const TC_PROGS: &str = "TC_PROGS";
    /// The bench's minimal XDP forwarder: the two MACs it writes (destination, then source,
    /// index 0), and the devmap it redirects through (index 0).
    pub const MIN_FWD_MACS: &str = "MIN_FWD_MACS";
    pub const MIN_FWD_TX: &str = "MIN_FWD_TX";
    /// The flow state pinned in bpffs and shared by every generation of the datapath (an
    /// agent restart or upgrade with the same [`PIN_LAYOUT`](super::PIN_LAYOUT) keeps them).
    pub const PINNED_STATE: [&str; 5] = [CONNTRACK, REVERSE_NAT, HALF_OPEN, HALF_OPEN_REV, PERSIST];
}

/// Version of the pinned maps' layout: the key and value types of
/// [`map_names::PINNED_STATE`] and of `LISTENERS` / `BACKENDS` (which carry the listener and
/// backend ids flows name). Raise it with any change to those types: a datapath pinned
/// under another layout is not adopted (its flows are cleared, with a log line). A field that
/// takes over padding, where zero means what the padding meant (`RevEntry::seq_delta`, the
/// SYN-cookie bits), keeps the layout: entries pinned before it read the same.
pub const PIN_LAYOUT: u32 = 1;

/// The programs `lb_xdp` tail-calls, by their index in `PROGS` (and the tc programs theirs,
/// in `TC_PROGS`).
pub mod prog_index {
    /// PROXY protocol on a client → backend packet (insert the header, shift seq).
    pub const PP_CLIENT: u32 = 0;
    /// PROXY protocol on a backend → client packet (shift ack and SACK, clamp MSS).
    pub const PP_BACKEND: u32 = 1;
    /// tc only: make room for the header the client program worked out (move the payload).
    pub const PP_MOVE: u32 = 2;
    /// A packet to a listener with no established flow: half-open and new flows.
    pub const OPEN: u32 = 3;
    /// SYN cookies: a SYN answered by the datapath, a client ACK carrying a cookie, a
    /// backend's SYN-ACK turned into the handshake's last ACK.
    pub const COOKIE: u32 = 4;
    pub const COUNT: u32 = 5;
    /// The XDP programs and their indices (`PROGS`).
    pub const NAMES: [(u32, &str); 4] = [
        (PP_CLIENT, "lb_xdp_pp_client"),
        (PP_BACKEND, "lb_xdp_pp_backend"),
        (OPEN, "lb_xdp_open"),
        (COOKIE, "lb_xdp_cookie"),
    ];
    /// The tc programs and their indices (`TC_PROGS`).
    pub const TC_NAMES: [(u32, &str); 5] = [
        (PP_CLIENT, "lb_tc_pp_client"),
        (PP_BACKEND, "lb_tc_pp_backend"),
        (PP_MOVE, "lb_tc_pp_move"),
        (OPEN, "lb_tc_open"),
        (COOKIE, "lb_tc_cookie"),
    ];
}

/// Name of the XDP entry point in the object.
pub const XDP_PROGRAM: &str = "lb_xdp";
/// The tc program on the devices backends and local clients are reached through (bridges,
/// overlay devices, pod veths): the whole datapath, with the skb checksum helpers.
pub const TC_PROGRAM: &str = "lb_tc";
/// The tc ingress program on the XDP NICs: sends on the frames XDP handed over.
pub const TC_NIC_PROGRAM: &str = "lb_tc_nic";
/// The tc egress program on the XDP NICs: the node's own connections to VIPs.
pub const TC_EGRESS_PROGRAM: &str = "lb_tc_egress";

/// XDP → tc hand-off: the metadata `lb_xdp` puts in front of a frame it has rewritten but
/// cannot send itself (its egress takes no XDP redirect, or the neighbour is unresolved);
/// `lb_tc_nic` on the same interface redirects it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handoff {
    pub magic: u16,
    pub flags: u16,
    /// Where the frame goes.
    pub ifindex: u32,
}

/// `Handoff::magic`.
pub const HANDOFF_MAGIC: u16 = 0x1b7c;

/// `Handoff::flags`.
pub mod handoff_flags {
    /// The next hop's neighbour is unresolved: `bpf_redirect_neigh` resolves it.
    pub const NEIGH: u16 = 1;
}

/// Upper bound on listeners (VIP, port, protocol) loaded at once.
pub const MAX_LISTENERS: u32 = 16384;
/// Upper bound on backends over all listeners.
pub const MAX_BACKENDS: u32 = 65536;
/// Upper bound on backends of one listener.
pub const MAX_BACKENDS_PER_LISTENER: u32 = 1024;
/// Default size of `BACKEND_TABLE`: the rr/wrr rings and Maglev tables of every listener,
/// each twice (the table a listener uses and the one being written for its next version).
pub const DEFAULT_BACKEND_TABLE_ENTRIES: u32 = 1 << 22;
/// Maglev table size (prime; M >= 100 x backends keeps the imbalance near 1%).
pub const MAGLEV_M: u32 = 16381;
/// Longest rr/wrr ring: weights are scaled down to fit.
pub const MAX_RING: u32 = 4096;
/// Default conntrack size (flows); the forward and the reverse table get this many.
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 262_144;
/// Default size of the half-open tables (TCP flows between the client's SYN and its
/// handshake ACK): a SYN flood churns these, never the established flows.
pub const DEFAULT_HALF_OPEN_ENTRIES: u32 = 65_536;
/// Default number of (listener, client address) session-persistence entries.
pub const DEFAULT_PERSIST_ENTRIES: u32 = 131_072;
/// Upper bound on ACL prefixes over all ACLs.
pub const MAX_ACL_PREFIXES: u32 = 65536;
/// Interfaces the datapath may redirect to.
pub const MAX_TX_PORTS: u32 = 256;
/// How many source ports the full-NAT port picker tries before it gives up on a flow.
pub const SNAT_PORT_TRIES: u32 = 32;

/// The "is it ours?" filter (`ADDR_FILTER`): one bitmap of the listeners' VIPs and one of the
/// SNAT addresses, each [`WORDS`](addr_filter::WORDS) u64 words, indexed by a multiplicative
/// hash of the destination address. A packet whose destination has its bit in neither is not
/// ours (`XDP_PASS` after parsing only the IP header); a set bit may be another address's
/// (then the map lookups decide).
pub mod addr_filter {
    use super::Addr;
    /// u64 words per bitmap (2^18 bits: a few percent of false hits at 16,384 VIPs).
    pub const WORDS: u32 = 4096;
    /// The VIP bitmap starts at word 0, the SNAT-address bitmap at [`SNAT`].
    pub const VIP: u32 = 0;
    pub const SNAT: u32 = WORDS;
    /// (word within a bitmap, bit mask) of `addr` (an IPv4 address is word 0, the rest 0).
    #[inline(always)]
    pub fn slot(addr: &Addr) -> (u32, u64) {
        let x = addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3].rotate_left(24);
        // The halves folded first: an address's last byte is the top byte of its word here.
        let bit = (x ^ (x >> 16)).wrapping_mul(0x9e37_79b1) >> 14;
        (bit >> 6, 1u64 << (bit & 63))
    }
}

/// The 12-byte signature that starts every PROXY protocol v2 header.
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

pub mod proxy_header;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Scheduler of a listener (`Listener::scheduler`).
pub mod scheduler {
    /// Round robin over the listener's ring (rr, and wrr with a weighted ring).
    pub const RING: u8 = 0;
    /// Maglev lookup by a hash of the source address.
    pub const MAGLEV_SRC: u8 = 1;
    /// Maglev lookup by a hash of the 4-tuple.
    pub const MAGLEV_TUPLE: u8 = 2;
}

/// ACL mode of a listener (`Listener::acl_mode`).
pub mod acl_mode {
    pub const OFF: u8 = 0;
    /// Only listed sources pass.
    pub const WHITE: u8 = 1;
    /// Listed sources are dropped.
    pub const BLACK: u8 = 2;
}

/// TCP state bits kept in `CtEntry::state` (seen from the client) and `RevEntry::state`
/// (seen from the backend).
pub mod tcp_state {
    pub const SYN: u32 = 1;
    pub const FIN: u32 = 2;
    pub const RST: u32 = 4;
    pub const ACK: u32 = 8;
    /// The flow was opened by a client ACK carrying a SYN cookie: the datapath made the
    /// handshake with the backend itself, and the backend's sequence numbers are shifted by
    /// `RevEntry::seq_delta` on the way to the client.
    pub const COOKIE: u32 = 16;
}

/// An address as the datapath stores it: IPv4 in word 0 (network byte order), the rest zero;
/// IPv6 in all four words (network byte order).
pub type Addr = [u32; 4];

/// Key of `LISTENERS` (value: the listener's id, its index in `LISTENER_CFG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub vip: Addr,
    /// Port in network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of `LISTENER_CFG`, indexed by listener id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    /// Where this listener's ring or Maglev table is in `BACKEND_TABLE`: the entry there holds
    /// the table's length (0 = no backend takes new flows; entry 0 is every empty table's),
    /// its backend ids follow. The datapath reads this field once and the length from the
    /// table, so a config rewritten under it never pairs an old length with a new offset.
    pub table_offset: u32,
    /// The ACL (index in `ACLS` keys) when `acl_mode` is not OFF.
    pub acl_id: u32,
    /// Session persistence per client address, seconds; 0 = off.
    pub persist_timeout_s: u32,
    pub scheduler: u8,
    pub acl_mode: u8,
    pub _pad: [u8; 2],
    pub flags: u32,
}

/// Listener flags (bit 1 is unused: an empty ACL is known by its own trie entry,
/// [`acl_value::EMPTY`]).
pub mod listener_flags {
    /// New flows get a PROXY protocol v1 (text) header (TCP listeners).
    pub const PROXY_V1: u32 = 2;
    /// New flows get a PROXY protocol v2 (binary) header (TCP and UDP listeners).
    pub const PROXY_V2: u32 = 4;
}

/// PROXY protocol version of a flow (`CtEntry::pp_version`, `RevEntry::pp_version`).
pub mod pp {
    pub const OFF: u8 = 0;
    pub const V1: u8 = 1;
    pub const V2: u8 = 2;
    /// Longest header: v1 `PROXY TCP6 <39> <39> <5> <5>\r\n` is 104 bytes, v2 with IPv6 52.
    pub const MAX_LEN: u16 = 108;
}

/// Value of `BACKENDS`, indexed by backend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: Addr,
    /// Port in network byte order.
    pub port: u16,
    pub family: u8,
    pub flags: u8,
    pub weight: u32,
}

/// Backend flags.
pub mod backend_flags {
    /// The backend takes new flows (it is in some listener's table with a weight above 0).
    pub const LIVE: u8 = 1;
}

/// A flow's 5-tuple as seen on the wire, the key of `CONNTRACK` (client → VIP) and of
/// `REVERSE_NAT` (backend → node's SNAT address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Addr,
    pub dst: Addr,
    /// Ports in network byte order.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of `FRAGMENTS` (key: source, destination, identification, protocol of the original
/// datagram): what the fragments after its first fragment borrow from it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    /// The first fragment's ports (network byte order).
    pub sport: u16,
    pub dport: u16,
    /// IPv4: the identification every fragment of the datagram leaves with (network byte
    /// order). Full NAT puts many senders' datagrams between one pair of addresses (the SNAT
    /// address and a backend, a VIP and a client), where the senders' own identifications can
    /// collide and the receiver would reassemble two datagrams into one.
    pub id: u16,
    pub _pad: u16,
}

/// Value of `CONNTRACK`: where a client flow is sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub backend: Addr,
    pub snat: Addr,
    pub backend_port: u16,
    pub snat_port: u16,
    pub backend_id: u32,
    pub listener_id: u32,
    /// `tcp_state` bits seen from the client.
    pub state: u32,
    /// `bpf_ktime_get_ns` when the flow was last seen (refreshed at most once a second).
    pub last_seen_ns: u64,
    /// PROXY protocol: the client's initial sequence number (TCP), from its SYN.
    pub client_isn: u32,
    /// PROXY protocol: header length (0 = no header); client → backend sequence numbers
    /// after the header are shifted by it.
    pub pp_len: u16,
    /// PROXY protocol version (`pp`), fixed when the flow is created.
    pub pp_version: u8,
    /// 1 once the backend acknowledged the header (TCP): no more header insertion.
    pub pp_acked: u8,
}

/// Value of `REVERSE_NAT`: how a backend's reply is turned back into the client's flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevEntry {
    pub client: Addr,
    pub vip: Addr,
    pub client_port: u16,
    pub vip_port: u16,
    /// Interface the client's packets arrive on; replies leave through it.
    pub ifindex: u32,
    /// The client's next hop (the source MAC of its packets) and our MAC on that interface.
    pub client_mac: [u8; 6],
    pub local_mac: [u8; 6],
    pub listener_id: u32,
    /// `tcp_state` bits seen from the backend.
    pub state: u32,
    /// PROXY protocol (copied from the flow's `CtEntry`): the client's initial sequence
    /// number, the header length, the version, whether the backend acknowledged it.
    pub client_isn: u32,
    pub last_seen_ns: u64,
    pub pp_len: u16,
    pub pp_version: u8,
    pub pp_acked: u8,
    /// `rev_flags`.
    pub flags: u32,
    /// TCP: the backend's initial sequence number, from its SYN-ACK (0 until then). The
    /// client's handshake ACK must acknowledge it for a half-open flow to become established.
    pub server_isn: u32,
    /// SYN-cookie flows (`rev_flags::COOKIE`): while half-open, the sequence number the
    /// datapath's SYN-ACK gave the client (the cookie); once the backend answered, what is
    /// taken off the backend's sequence numbers (and added to the client's acks). 0 else.
    pub seq_delta: u32,
}

impl CtEntry {
    /// The key of this flow's reverse entry (`REVERSE_NAT` / `HALF_OPEN_REV`): the backend's
    /// side, to our source address and port.
    #[inline(always)]
    pub fn reverse_key(&self, proto: u8, family: u8) -> FlowKey {
        FlowKey {
            src: self.backend,
            dst: self.snat,
            sport: self.backend_port,
            dport: self.snat_port,
            proto,
            family,
            _pad: [0; 2],
        }
    }
}

impl RevEntry {
    /// The client-side key of the flow this reverse entry belongs to.
    #[inline(always)]
    pub fn client_key(&self, proto: u8, family: u8) -> FlowKey {
        FlowKey {
            src: self.client,
            dst: self.vip,
            sport: self.client_port,
            dport: self.vip_port,
            proto,
            family,
            _pad: [0; 2],
        }
    }

    /// True when this reverse entry belongs to client flow `key` (its owner). Branch-free
    /// word compares: in the datapath an array `==` becomes a byte loop the verifier walks
    /// path by path.
    #[inline(always)]
    pub fn owned_by(&self, key: &FlowKey) -> bool {
        let (a, b, c, d) = (&self.client, &key.src, &self.vip, &key.dst);
        let addrs = (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]);
        let vips = (c[0] ^ d[0]) | (c[1] ^ d[1]) | (c[2] ^ d[2]) | (c[3] ^ d[3]);
        let ports = ((self.client_port ^ key.sport) | (self.vip_port ^ key.dport)) as u32;
        addrs | vips | ports == 0
    }
}

/// `RevEntry::flags`.
pub mod rev_flags {
    /// The client is this node itself (its packets were seen leaving by tc egress): replies
    /// are delivered up its own stack, not sent out of `ifindex`.
    pub const LOCAL_CLIENT: u32 = 1;
    /// A SYN-cookie flow (see `tcp_state::COOKIE`).
    pub const COOKIE: u32 = 2;
}

/// Key of `PERSIST`: a client address on a listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PersistKey {
    pub client: Addr,
    pub listener_id: u32,
}

/// Value of `PERSIST`: the backend a client stays on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistEntry {
    pub backend_id: u32,
    pub _pad: u32,
    pub last_seen_ns: u64,
}

/// Values of `ACLS` entries.
pub mod acl_value {
    /// A prefix carved out of a listed one (the IPv4-mapped range under an IPv6 `::/0`).
    pub const NOT_LISTED: u32 = 0;
    pub const LISTED: u32 = 1;
    /// The ACL has no prefix: its only entry, `::/0`. A whitelist of it forwards everyone
    /// (as CLB does), a blacklist of it no one. Kept in the trie, not in each listener's
    /// settings, so that an ACL emptied or filled is never judged by the other state.
    pub const EMPTY: u32 = 2;
}

/// The data part of an `ACLS` LPM key: the ACL, then the address (IPv4 as `::ffff:a.b.c.d`).
/// The prefix length always covers the 32 bits of `acl_id`, then the address bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AclData {
    /// ACL id in network byte order (the trie matches bytes in order).
    pub acl_id: u32,
    pub addr: [u8; 16],
}

/// Value of `SNAT_ADDRS`, keyed by egress ifindex: the node address used as the source of
/// NATed packets leaving that interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatAddr {
    pub v4: u32,
    /// Which addresses are set: `snat_flags` bits (`V4` = 1, `V6` = 2).
    pub flags: u32,
    pub v6: Addr,
}

/// `SnatAddr::flags`: the address families an interface has a SNAT address for.
pub mod snat_flags {
    /// `SnatAddr::v4` is set.
    pub const V4: u32 = 1;
    /// `SnatAddr::v6` is set.
    pub const V6: u32 = 2;
}

/// Value of `CONFIG[0]`: datapath-wide settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathConfig {
    /// First and last source port used for full NAT (host byte order, inclusive).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// When SYNs are answered with SYN cookies (`syn_cookies`).
    pub syn_cookie_mode: u8,
    pub _pad: [u8; 3],
    /// The MSS a SYN-cookie flow announces (minus a PROXY header's room) and gives the
    /// backend: the smallest MTU among the datapath's interfaces less the IPv4 / IPv6 and
    /// TCP headers.
    pub syn_cookie_mss4: u16,
    pub syn_cookie_mss6: u16,
    /// `syn_cookies::AUTO`: SYNs per second on one CPU that turn cookies on (0: only SNAT
    /// port pressure does).
    pub syn_cookie_rate: u32,
    /// Generation of the next hops the datapath caches per backend (`NEXTHOPS`): user space
    /// raises it when routes, neighbours or interfaces change, and every cached next hop
    /// of another generation is looked up again (`bpf_fib_lookup`).
    pub nexthop_gen: u32,
}

/// `DatapathConfig::syn_cookie_mode`.
pub mod syn_cookies {
    /// Under pressure only: while SYNs arrive faster than `syn_cookie_rate` on a CPU, or a
    /// new flow found no free SNAT port, and for [`HOLD_NS`] after.
    pub const AUTO: u8 = 0;
    /// Every SYN from a NIC.
    pub const ALWAYS: u8 = 1;
    /// Never: every SYN opens a half-open flow.
    pub const OFF: u8 = 2;
    /// How long pressure keeps cookies on after it was last seen.
    pub const HOLD_NS: u64 = 2_000_000_000;
}

/// Per-listener counters (`LISTENER_STATS`, per CPU, by listener id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerCounters {
    pub packets: u64,
    pub bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    pub new_flows: u64,
    pub acl_drops: u64,
    pub no_backend_drops: u64,
    /// TCP handshakes completed (half-open flows that became established).
    pub handshakes: u64,
    /// TCP packets other than a SYN for no known flow, dropped.
    pub no_flow_drops: u64,
}

/// Per-backend counters (`BACKEND_STATS`, per CPU, by backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCounters {
    pub packets: u64,
    pub bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    pub new_flows: u64,
}

/// Indices of the per-CPU counters in `STATS`.
pub mod stat {
    pub const RX: u32 = 0;
    pub const PASS_NOT_OURS: u32 = 1;
    pub const NEW_FLOWS: u32 = 2;
    pub const FWD_TO_BACKEND: u32 = 3;
    pub const FWD_TO_CLIENT: u32 = 4;
    pub const DROP_NO_BACKEND: u32 = 5;
    pub const DROP_NO_SNAT_PORT: u32 = 6;
    pub const DROP_NO_ROUTE: u32 = 7;
    /// Frames whose next hop's neighbour was unresolved (sent through the kernel's
    /// neighbour resolution by tc).
    pub const NEIGH_UNRESOLVED: u32 = 8;
    pub const DROP_NO_SNAT_ADDR: u32 = 9;
    pub const PASS_FRAGMENT: u32 = 10;
    pub const PASS_MALFORMED: u32 = 11;
    /// Frames sent back out of the interface they arrived on (a hairpin, a SYN cookie's
    /// SYN-ACK): through the devmap where the interface is in it, else XDP_TX.
    pub const TX: u32 = 12;
    pub const REDIRECT: u32 = 13;
    pub const DROP_ACL: u32 = 14;
    pub const PERSIST_HITS: u32 = 15;
    pub const FLOW_REOPENED: u32 = 16;
    pub const FRAGMENTS_FWD: u32 = 17;
    pub const ICMP_ERRORS_FWD: u32 = 18;
    pub const PASS_VLAN: u32 = 19;
    /// PROXY protocol headers inserted (first segments, their retransmissions, datagrams).
    pub const PP_INSERTED: u32 = 20;
    /// PROXY protocol packets dropped: a header that could not be inserted (headers too
    /// long, a fragmented datagram, a failed tail call).
    pub const DROP_PP: u32 = 21;
    /// Frames XDP rewrote and handed to tc, whose egress (bridge, overlay, pod veth) takes no
    /// XDP redirect.
    pub const XDP_TO_TC: u32 = 22;
    /// Frames a tc program redirected.
    pub const TC_REDIRECT: u32 = 23;
    /// Frames XDP could not hand to tc (no room for the metadata).
    pub const DROP_HANDOFF: u32 = 24;
    /// Packets the tc datapath program saw (the bridges', overlays' and pod veths' ingress).
    pub const TC_RX: u32 = 25;
    /// A PROXY-protocol flow met where the tc datapath cannot insert or shift the header.
    pub const DROP_PP_TC: u32 = 26;
    /// Replies delivered to a client on this node (the node itself).
    pub const TO_LOCAL: u32 = 27;
    /// Packets the node itself sent that the tc egress program looked at.
    pub const TC_EGRESS_RX: u32 = 28;
    /// TCP packets other than a SYN for no known flow (only a SYN opens one), dropped.
    pub const DROP_NO_FLOW: u32 = 29;
    /// Client packets of a half-open flow that do not complete its handshake (an ACK that
    /// does not acknowledge the backend's SYN-ACK), dropped.
    pub const DROP_HALF_OPEN: u32 = 30;
    /// Half-open flows that became established (the client's handshake ACK).
    pub const HANDSHAKES: u32 = 31;
    /// SNAT ports taken back from the oldest half-open flow because no port was free.
    pub const HALF_OPEN_RECLAIMED: u32 = 32;
    /// A flow's reverse entry found held by another flow (not overwritten).
    pub const REVERSE_CONFLICT: u32 = 33;
    /// Packets whose TTL / hop limit ran out (a routing loop), dropped instead of forwarded.
    pub const DROP_TTL: u32 = 34;
    /// SYNs answered with a SYN cookie (no state, no port taken).
    pub const SYNCOOKIES_SENT: u32 = 35;
    /// Client ACKs whose cookie was valid: a flow opened, a SYN sent to its backend.
    pub const SYNCOOKIES_VALID: u32 = 36;
    /// Backend SYN-ACKs of cookie flows turned into the handshake's last ACK.
    pub const SYNCOOKIE_HANDSHAKES: u32 = 37;
    /// Times SYN pressure turned cookies on (`syn_cookies::AUTO`).
    pub const SYN_PRESSURE: u32 = 38;
    pub const COUNT: u32 = 39;
    /// Names in index order, for user space.
    pub const NAMES: [&str; COUNT as usize] = [
        "rx",
        "pass_not_ours",
        "new_flows",
        "fwd_to_backend",
        "fwd_to_client",
        "drop_no_backend",
        "drop_no_snat_port",
        "drop_no_route",
        "neigh_unresolved",
        "drop_no_snat_addr",
        "pass_fragment",
        "pass_malformed",
        "xdp_tx",
        "xdp_redirect",
        "drop_acl",
        "persist_hits",
        "flow_reopened",
        "fragments_fwd",
        "icmp_errors_fwd",
        "pass_vlan",
        "pp_inserted",
        "drop_pp",
        "xdp_to_tc",
        "tc_redirect",
        "drop_handoff",
        "tc_rx",
        "drop_pp_tc",
        "to_local",
        "tc_egress_rx",
        "drop_no_flow",
        "drop_half_open",
        "handshakes",
        "half_open_reclaimed",
        "reverse_conflict",
        "drop_ttl",
        "syncookies_sent",
        "syncookies_valid",
        "syncookie_handshakes",
        "syn_pressure",
    ];
}

/// A per-CPU counter pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are `#[repr(C)]`, made of integers only, with explicit padding.
    unsafe impl aya::Pod for ListenerKey {}
    unsafe impl aya::Pod for Listener {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FragEntry {}
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for RevEntry {}
    unsafe impl aya::Pod for PersistKey {}
    unsafe impl aya::Pod for PersistEntry {}
    unsafe impl aya::Pod for AclData {}
    unsafe impl aya::Pod for SnatAddr {}
    unsafe impl aya::Pod for DatapathConfig {}
    unsafe impl aya::Pod for Counter {}
    unsafe impl aya::Pod for ListenerCounters {}
    unsafe impl aya::Pod for BackendCounters {}
    unsafe impl aya::Pod for Handoff {}
}

// Layout checks: both sides compile these, so a change that moves a field breaks the build.
const _: () = {
    assert!(core::mem::size_of::<ListenerKey>() == 20);
    assert!(core::mem::size_of::<Listener>() == 20);
    assert!(core::mem::size_of::<Backend>() == 24);
    assert!(core::mem::size_of::<FlowKey>() == 40);
    assert!(core::mem::size_of::<CtEntry>() == 64);
    assert!(core::mem::size_of::<RevEntry>() == 88);
    assert!(core::mem::size_of::<PersistKey>() == 20);
    assert!(core::mem::size_of::<PersistEntry>() == 16);
    assert!(core::mem::size_of::<AclData>() == 20);
    assert!(core::mem::size_of::<SnatAddr>() == 24);
    assert!(core::mem::size_of::<DatapathConfig>() == 20);
    assert!(core::mem::size_of::<ListenerCounters>() == 72);
    assert!(core::mem::size_of::<BackendCounters>() == 40);
    assert!(core::mem::size_of::<Handoff>() == 8);
};

/// The flow hash both sides agree on: the datapath hashes flows with it to index Maglev
/// tables, user space uses it to predict where a flow lands. Murmur3's 32-bit mixing over
/// whole words; stable forever (changing it moves every sch/tch flow).
#[inline(always)]
pub fn hash_words(words: &[u32; 10], n: usize, seed: u32) -> u32 {
    let mut h = seed;
    let mut i = 0;
    while i < n && i < 10 {
        let mut k = words[i].wrapping_mul(0xcc9e_2d51);
        k = k.rotate_left(15).wrapping_mul(0x1b87_3593);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        i += 1;
    }
    h ^= (n as u32) * 4;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Seed of the flow hash.
pub const FLOW_HASH_SEED: u32 = 0x5bd1_e995;

/// The words hashed for a flow: source address for `sch`; source address, port,
/// destination address and port for `tch` (ports and addresses as on the wire).
#[inline(always)]
pub fn flow_hash(key: &FlowKey, tuple: bool) -> u32 {
    let mut w = [0u32; 10];
    w[0] = key.src[0];
    w[1] = key.src[1];
    w[2] = key.src[2];
    w[3] = key.src[3];
    if !tuple {
        return hash_words(&w, 4, FLOW_HASH_SEED);
    }
    w[4] = key.dst[0];
    w[5] = key.dst[1];
    w[6] = key.dst[2];
    w[7] = key.dst[3];
    w[8] = ((key.sport as u32) << 16) | key.dport as u32;
    w[9] = key.proto as u32;
    hash_words(&w, 10, FLOW_HASH_SEED)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden: the flow hash is part of the contract between nodes (sch/tch flows land on
    /// the same backend from any node only while every node hashes alike).
    #[test]
    fn flow_hash_is_stable() {
        let key = FlowKey {
            src: [u32::from_ne_bytes([198, 18, 0, 2]), 0, 0, 0],
            dst: [u32::from_ne_bytes([198, 18, 100, 10]), 0, 0, 0],
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            proto: PROTO_TCP,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        assert_eq!((flow_hash(&key, false), flow_hash(&key, true)), (GOLDEN_SRC, GOLDEN_TUPLE));
        let other_port = FlowKey { sport: 40001u16.to_be(), ..key };
        assert_eq!(flow_hash(&other_port, false), GOLDEN_SRC, "sch ignores the port");
        assert_ne!(flow_hash(&other_port, true), GOLDEN_TUPLE, "tch does not");
    }
    const GOLDEN_SRC: u32 = 3_430_763_372;
    const GOLDEN_TUPLE: u32 = 444_826_287;
}

#[cfg(test)]
mod pin_layout {
    use super::*;
    use core::mem::size_of;

    /// The sizes of the pinned types, as of [`PIN_LAYOUT`]: a change here means a new layout
    /// (raise `PIN_LAYOUT` and record the new sizes), or a restarted agent would adopt maps
    /// whose entries it reads wrong.
    #[test]
    fn pinned_types_match_the_layout_version() {
        let sizes = [
            size_of::<FlowKey>(),
            size_of::<CtEntry>(),
            size_of::<RevEntry>(),
            size_of::<PersistKey>(),
            size_of::<PersistEntry>(),
            size_of::<ListenerKey>(),
            size_of::<Backend>(),
        ];
        assert_eq!((PIN_LAYOUT, sizes), (1, [40, 64, 88, 20, 16, 20, 24]));
    }
}
