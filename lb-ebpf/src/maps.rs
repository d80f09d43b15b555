//! Every map of the datapath, with the types `lb-common` defines for both sides.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::*;

/// (VIP, port, protocol) → listener.
#[map(name = "LISTENERS")]
pub static LISTENERS: HashMap<ListenerKey, Listener> = HashMap::with_max_entries(MAX_LISTENERS, 0);

/// Backend id → backend.
#[map(name = "BACKENDS")]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// `listener_id * MAX_BACKENDS_PER_LISTENER + i` → backend id.
#[map(name = "BACKEND_SLOTS")]
pub static BACKEND_SLOTS: Array<u32> =
    Array::with_max_entries(MAX_LISTENERS * MAX_BACKENDS_PER_LISTENER, 0);

/// Round-robin cursor per listener, per CPU.
#[map(name = "RR_CURSORS")]
pub static RR_CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_LISTENERS, 0);

/// Client-side 5-tuple → backend and SNAT choice. Resized by the agent at load time.
#[map(name = "CONNTRACK")]
pub static CONNTRACK: LruHashMap<FlowKey, CtEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONNTRACK_ENTRIES, 0);

/// Backend-side 5-tuple (backend → SNAT address:port) → the client flow it belongs to.
#[map(name = "REVERSE_NAT")]
pub static REVERSE_NAT: LruHashMap<FlowKey, RevEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONNTRACK_ENTRIES, 0);

/// Egress ifindex → node address used as the source of NATed packets.
#[map(name = "SNAT_ADDRS")]
pub static SNAT_ADDRS: HashMap<u32, SnatAddr> = HashMap::with_max_entries(MAX_TX_PORTS, 0);

/// Interfaces we redirect to (ifindex → ifindex).
#[map(name = "TX_PORTS")]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);

/// Datapath-wide settings at index 0.
#[map(name = "CONFIG")]
pub static CONFIG: Array<DatapathConfig> = Array::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `lb_common::stat`.
#[map(name = "STATS")]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(stat::COUNT, 0);
