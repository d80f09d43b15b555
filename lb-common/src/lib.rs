//! The contract between the XDP datapath (`lb-ebpf`) and user space (`lb-userspace`):
//! every map key and value, flag and constant both sides must agree on, and nothing else.
#![no_std]

/// Names of the maps declared by `lb-ebpf`, as user space looks them up.
pub mod map_names {
    pub const LISTENERS: &str = "LISTENERS";
    pub const BACKENDS: &str = "BACKENDS";
    pub const BACKEND_SLOTS: &str = "BACKEND_SLOTS";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const REVERSE_NAT: &str = "REVERSE_NAT";
    pub const SNAT_ADDRS: &str = "SNAT_ADDRS";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const RR_CURSORS: &str = "RR_CURSORS";
    pub const STATS: &str = "STATS";
    pub const CONFIG: &str = "CONFIG";
}

/// Name of the XDP entry point in the object.
pub const XDP_PROGRAM: &str = "lb_xdp";

/// Upper bound on listeners (VIP, port, protocol) loaded at once.
pub const MAX_LISTENERS: u32 = 4096;
/// Upper bound on backends over all listeners.
pub const MAX_BACKENDS: u32 = 65536;
/// Backend slots reserved per listener in `BACKEND_SLOTS` (`listener_id * MAX_BACKENDS_PER_LISTENER + i`).
pub const MAX_BACKENDS_PER_LISTENER: u32 = 256;
/// Default conntrack size (flows); both the forward and the reverse table get this many.
pub const DEFAULT_CONNTRACK_ENTRIES: u32 = 262_144;
/// Interfaces the datapath may redirect to.
pub const MAX_TX_PORTS: u32 = 256;
/// How many source ports the full-NAT port picker tries before it gives up on a flow.
pub const SNAT_PORT_TRIES: u32 = 16;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Scheduler of a listener.
pub mod scheduler {
    pub const RR: u8 = 0;
}

/// An address as the datapath stores it: IPv4 in word 0 (network byte order), the rest zero;
/// IPv6 in all four words (network byte order).
pub type Addr = [u32; 4];

/// Key of `LISTENERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub vip: Addr,
    /// Port in network byte order.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of `LISTENERS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listener {
    /// Index of this listener's slots in `BACKEND_SLOTS` and its cursor in `RR_CURSORS`.
    pub id: u32,
    /// Live backends in this listener's slots (the first `backend_count` are used).
    pub backend_count: u32,
    pub scheduler: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Idle timeout of a flow in seconds (used by the agent's sweeper).
    pub idle_timeout_s: u32,
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
    pub flags: u32,
    /// `bpf_ktime_get_ns` when the flow was last seen (refreshed at most once a second).
    pub last_seen_ns: u64,
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
    pub last_seen_ns: u64,
}

/// Value of `SNAT_ADDRS`, keyed by egress ifindex: the node address used as the source of
/// NATed packets leaving that interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatAddr {
    pub v4: u32,
    pub _pad: u32,
    pub v6: Addr,
}

/// Value of `CONFIG[0]`: datapath-wide settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathConfig {
    /// First and last source port used for full NAT (host byte order, inclusive).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    pub _pad: u32,
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
    pub const DROP_NO_NEIGH: u32 = 8;
    pub const DROP_NO_SNAT_ADDR: u32 = 9;
    pub const PASS_FRAGMENT: u32 = 10;
    pub const DROP_MALFORMED: u32 = 11;
    pub const TX: u32 = 12;
    pub const REDIRECT: u32 = 13;
    pub const COUNT: u32 = 14;
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
        "drop_no_neigh",
        "drop_no_snat_addr",
        "pass_fragment",
        "drop_malformed",
        "xdp_tx",
        "xdp_redirect",
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
    unsafe impl aya::Pod for CtEntry {}
    unsafe impl aya::Pod for RevEntry {}
    unsafe impl aya::Pod for SnatAddr {}
    unsafe impl aya::Pod for DatapathConfig {}
    unsafe impl aya::Pod for Counter {}
}

// Layout checks: both sides compile these, so a change that moves a field breaks the build.
const _: () = {
    assert!(core::mem::size_of::<ListenerKey>() == 20);
    assert!(core::mem::size_of::<Listener>() == 16);
    assert!(core::mem::size_of::<Backend>() == 24);
    assert!(core::mem::size_of::<FlowKey>() == 40);
    assert!(core::mem::size_of::<CtEntry>() == 56);
    assert!(core::mem::size_of::<RevEntry>() == 64);
    assert!(core::mem::size_of::<SnatAddr>() == 24);
    assert!(core::mem::size_of::<DatapathConfig>() == 8);
};
