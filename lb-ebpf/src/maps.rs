//! Every map of the datapath, with the types `lb-common` defines for both sides.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMap, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
};
use lb_common::*;

/// (VIP, port, protocol) → listener id.
#[map(name = "LISTENERS")]
pub static LISTENERS: HashMap<ListenerKey, u32> = HashMap::with_max_entries(MAX_LISTENERS, 0);

/// Listener id → its settings.
#[map(name = "LISTENER_CFG")]
pub static LISTENER_CFG: Array<Listener> = Array::with_max_entries(MAX_LISTENERS, 0);

/// Backend id → backend.
#[map(name = "BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Rings (rr/wrr) and Maglev tables of backend ids; each listener points at its region.
#[map(name = "BACKEND_TABLE")]
pub static BACKEND_TABLE: Array<u32> = Array::with_max_entries(DEFAULT_BACKEND_TABLE_ENTRIES, 0);

/// Round-robin cursor per listener, per CPU.
#[map(name = "RR_CURSORS")]
pub static RR_CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

/// Client-side 5-tuple → backend and SNAT choice. Resized by the agent at load time.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<FlowKey, CtEntry> = LruHashMap::with_max_entries(DEFAULT_CONNTRACK_ENTRIES, 0);

/// Backend-side 5-tuple (backend → SNAT address:port) → the client flow it belongs to.
#[map(name = "REVERSE_NAT")]
pub static REVERSE_NAT: LruHashMap<FlowKey, RevEntry> = LruHashMap::with_max_entries(DEFAULT_CONNTRACK_ENTRIES, 0);

/// TCP flows between the client's SYN and its handshake ACK, client side: a bounded table
/// of their own, so a SYN flood churns it and never evicts an established flow.
#[map(name = "HALF_OPEN")]
pub static HALF_OPEN: LruHashMap<FlowKey, CtEntry> = LruHashMap::with_max_entries(DEFAULT_HALF_OPEN_ENTRIES, 0);

/// The backend side of `HALF_OPEN`'s flows (where their SYN-ACKs come back).
#[map(name = "HALF_OPEN_REV")]
pub static HALF_OPEN_REV: LruHashMap<FlowKey, RevEntry> = LruHashMap::with_max_entries(DEFAULT_HALF_OPEN_ENTRIES, 0);

/// The source-port walk's running choice (`half_open::claim_snat_port`), kept in a map
/// rather than in registers so every path through a walk step leaves the verifier the same
/// (unknown) state and it prunes instead of following each outcome separately.
#[repr(C)]
pub struct ClaimWalk {
    /// `last_seen_ns` of the oldest half-open flow met so far (`u64::MAX`: none).
    pub oldest_seen: u64,
    /// Its port (host byte order).
    pub oldest_port: u32,
    pub _pad: u32,
    /// The reverse key being tried (here rather than on the new-flow call's stack frame).
    pub rkey: FlowKey,
}

#[map(name = "CLAIM_WALK")]
pub static CLAIM_WALK: PerCpuArray<ClaimWalk> = PerCpuArray::with_max_entries(1, 0);

/// (client address, listener) → the backend the client persists on.
#[map(name = "PERSIST")]
pub static PERSIST: LruHashMap<PersistKey, PersistEntry> = LruHashMap::with_max_entries(DEFAULT_PERSIST_ENTRIES, 0);

/// ACL prefixes: (ACL id, address prefix) → 1 (aya adds the BPF_F_NO_PREALLOC LPM tries need).
#[map(name = "ACLS")]
pub static ACLS: LpmTrie<AclData, u32> = LpmTrie::with_max_entries(MAX_ACL_PREFIXES, 0);

/// First-fragment ports (and the datagram's new IPv4 identification) by (source,
/// destination, identification, protocol), for the fragments after it.
#[map(name = "FRAGMENTS")]
pub static FRAGMENTS: LruHashMap<FlowKey, FragEntry> = LruHashMap::with_max_entries(16384, 0);

/// The next IPv4 identification for a fragmented datagram sent on ([`FragEntry::id`]): one
/// counter for the node, seeded by user space at load.
#[map(name = "FRAG_IDS")]
pub static FRAG_IDS: Array<u32> = Array::with_max_entries(1, 0);

/// Egress ifindex → node addresses used as the source of NATed packets.
#[map(name = "SNAT_ADDRS")]
pub static SNAT_ADDRS: HashMap<u32, SnatAddr> = HashMap::with_max_entries(MAX_TX_PORTS, 0);

/// Interfaces we redirect to (ifindex → ifindex).
#[map(name = "TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);

/// Bitmaps of the addresses a packet can be ours for: the VIPs', then the SNAT addresses'
/// (`lb_common::addr_filter`), written by user space.
#[map(name = "ADDR_FILTER")]
pub static ADDR_FILTER: Array<u64> = Array::with_max_entries(2 * addr_filter::WORDS, 0);

/// A backend's next hop as `bpf_fib_lookup` gave it, cached per CPU (no torn reads) in a
/// direct-mapped table by backend id, so a known flow's packet needs no FIB lookup.
#[repr(C)]
pub struct NextHopCache {
    /// The backend id + 1 (0: empty).
    pub tag: u32,
    /// The interface the lookup was made from (the FIB may depend on it).
    pub ingress: u32,
    pub ifindex: u32,
    /// `DatapathConfig::nexthop_gen` when it was looked up.
    pub generation: u32,
    /// When it was looked up (`bpf_ktime_get_ns`): entries older than
    /// `fwd::NEXTHOP_TTL_NS` are looked up again.
    pub stamp_ns: u64,
    /// The longest packet (IP total length) the FIB accepted for this next hop: a longer one
    /// is looked up again, so the route's MTU check still applies.
    pub max_len: u16,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Slots of [`NEXTHOPS`] (a power of two).
pub const NEXTHOP_SLOTS: u32 = 1024;

#[map(name = "NEXTHOPS")]
pub static NEXTHOPS: PerCpuArray<NextHopCache> = PerCpuArray::with_max_entries(NEXTHOP_SLOTS, 0);

/// Datapath-wide settings at index 0.
#[map(name = "CONFIG")]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `lb_common::stat`.
#[map(name = "STATS")]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[map(name = "LISTENER_STATS")]
pub static LISTENER_STATS: PerCpuArray<ListenerCounters> = PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

#[map(name = "BACKEND_STATS")]
pub static BACKEND_STATS: PerCpuArray<BackendCounters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// SYNs seen on this CPU in the current tenth of a second (`syncookie::wanted`).
#[repr(C)]
pub struct SynRate {
    pub start_ns: u64,
    pub count: u32,
    pub _pad: u32,
}

#[map(name = "SYN_RATE")]
pub static SYN_RATE: PerCpuArray<SynRate> = PerCpuArray::with_max_entries(1, 0);

/// Until when (`bpf_ktime_get_ns`) SYN cookies are on under `syn_cookies::AUTO`.
#[map(name = "SYN_PRESSURE")]
pub static SYN_PRESSURE: Array<u64> = Array::with_max_entries(1, 0);

/// The cookie program's buffers.
#[repr(C)]
pub struct CookieScratch {
    /// A SYN's TCP header without options, for the cookie helper.
    pub th: [u8; 20],
}

#[map(name = "COOKIE_SCRATCH")]
pub static COOKIE_SCRATCH: PerCpuArray<CookieScratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch space for the structs too large for the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    pub fib: aya_ebpf::bindings::bpf_fib_lookup,
    pub ct: CtEntry,
    pub rev: RevEntry,
    /// Addresses an ICMPv6 error is rewritten to.
    pub t6: [Addr; 4],
    /// The listener a packet that may open a flow is for.
    pub lkey: ListenerKey,
}

#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch space.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    // SAFETY: per-CPU slot; XDP runs to completion on its CPU, and each user is done with
    // its part before the next one starts.
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// A verdict with this bit set asks the entry program (`lb_xdp`, `lb_tc`, `lb_tc_pp_client`)
/// to tail-call program `verdict & 0xff` (`lb_common::prog_index`) of [`PROGS`] / [`TC_PROGS`],
/// which returns the real verdict.
pub const TAIL_CALL: u32 = 0x100;

/// Programs `lb_xdp` tail-calls (`lb_common::prog_index`), filled by user space at load.
#[map(name = "PROGS")]
pub static PROGS: ProgramArray = ProgramArray::with_max_entries(prog_index::COUNT, 0);

/// The same for the tc programs (`lb_tc_pp_*`: a tail call stays within a program type).
#[map(name = "TC_PROGS")]
pub static TC_PROGS: ProgramArray = ProgramArray::with_max_entries(prog_index::COUNT, 0);

/// What `lb_xdp` hands a PROXY protocol program it tail-calls (a tail call passes only the
/// context), and the buffers that program works in.
#[repr(C)]
pub struct PpScratch {
    /// The verdict the entry program decided (the redirect is already set up).
    pub action: u32,
    /// Offset of the transport header (the same before and after the NAT).
    pub l4_off: u32,
    pub client_isn: u32,
    pub pp_len: u32,
    pub pp_version: u8,
    pub pp_acked: u8,
    pub proto: u8,
    pub family: u8,
    /// 1 when the packet is an IP fragment.
    pub fragment: u8,
    pub _pad: [u8; 3],
    /// TCP option walk state, kept in the map rather than in registers: every path through
    /// a walk step then leaves the verifier the same (unknown) state, so it prunes instead
    /// of following each option layout separately.
    pub opt_len: u32,
    pub opt_pos: u32,
    pub sack_at: u32,
    pub sack_len: u32,
    pub mss_at: u32,
    /// The flow's client-side key: client → VIP, what the header tells.
    pub key: FlowKey,
    /// The flow's backend-side key (backend → SNAT), for `REVERSE_NAT`.
    pub rkey: FlowKey,
    /// Frame headers (Ethernet, IP, transport) while they are moved, or TCP options.
    pub hdr: [u8; PP_HDR_BUF],
    /// The PROXY header, zero-padded to a multiple of 4 bytes.
    pub pp: [u8; PP_BUF],
    /// A pseudo-header for checksums.
    pub pseudo: [u8; 40],
    /// Payload moved up a chunk at a time (tc makes room for a header at the tail).
    pub chunk: [u8; CHUNK],
    /// A header insertion worked out, handed from `lb_tc_pp_client` to `lb_tc_pp_move`.
    pub ins: Insertion,
}

/// A PROXY header insertion, worked out before room is made for it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Insertion {
    /// PROXY header length.
    pub len: u32,
    /// Bytes of Ethernet, IP and transport headers (the payload starts here).
    pub hl: u32,
    /// Offset of the transport checksum.
    pub csum_off: u32,
    /// The checksum field as it was, and as a complete checksum after the insertion.
    pub old_csum: u16,
    pub new_csum: u16,
    /// The pseudo-header's change (the transport length).
    pub pseudo: u16,
    /// IPv4 UDP without a checksum: it stays without one.
    pub keep_zero: u8,
    pub _pad: u8,
}

/// Bytes of payload moved per step when tc makes room for a PROXY header.
pub const CHUNK: usize = 128;

/// Room for the frame headers moved when a PROXY header is inserted.
pub const PP_HDR_BUF: usize = 256;
/// Largest transport-header offset a PROXY flow's packets may have: the moved headers
/// (offset + a 60-byte TCP header) must fit [`PP_HDR_BUF`].
pub const PP_MAX_OFF: u32 = (PP_HDR_BUF - 60) as u32;
/// Room for the PROXY header (at most `pp::MAX_LEN` bytes).
pub const PP_BUF: usize = 128;

#[map(name = "PP_SCRATCH")]
pub static PP_SCRATCH: PerCpuArray<PpScratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's PROXY protocol scratch space.
#[inline(always)]
pub fn pp_scratch() -> Option<&'static mut PpScratch> {
    // SAFETY: per-CPU slot; `lb_xdp` fills it and the program it tail-calls reads it, both
    // on this CPU, one packet at a time.
    PP_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The bench's minimal XDP forwarder (`bench::min_forward`): destination and source MAC it
/// writes, and the one device it redirects to. Not used by the datapath.
#[map(name = "MIN_FWD_MACS")]
pub static MIN_FWD_MACS: Array<[u8; 12]> = Array::with_max_entries(1, 0);

#[map(name = "MIN_FWD_TX")]
pub static MIN_FWD_TX: DevMap = DevMap::with_max_entries(1, 0);
