//! Conntrack upkeep from user space: the sweep that removes expired flows (the LRU maps
//! only evict under pressure), the cut of a removed backend's flows, connection drain
//! deadlines, and the persistence entries of retired backends.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
};
use lb_common::{CtEntry, FlowKey, PROTO_TCP, PersistEntry, PersistKey, RevEntry, map_names as names, tcp_state};
use serde::Serialize;

use super::{
    error::Result,
    maps::{map_mut, words_addr},
};

/// Idle timeouts the sweep applies (the established TCP one is per listener).
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub udp_timeout: Duration,
    /// A TCP flow with a FIN from both sides, or a RST.
    pub tcp_closed_timeout: Duration,
    /// A TCP flow whose handshake has not completed (the half-open tables; a flow there whose
    /// backend has not answered either).
    pub tcp_syn_timeout: Duration,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            udp_timeout: Duration::from_secs(120),
            tcp_closed_timeout: Duration::from_secs(10),
            tcp_syn_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    pub flows: u64,
    pub expired: u64,
    pub drained: u64,
    /// Flow halves removed because their other half was gone (`pairs`).
    pub orphans: u64,
}

/// Removed backends that keep their established flows until a deadline.
#[derive(Debug, Default)]
pub struct Drains {
    /// (listener id, backend address, port) → deadline.
    pending: BTreeMap<(u32, IpAddr, u16), Instant>,
}

impl Drains {
    pub fn add(&mut self, listener: u32, addr: IpAddr, port: u16, deadline: Instant) {
        self.pending.insert((listener, addr, port), deadline);
    }

    /// A backend that comes back stops draining.
    pub fn cancel(&mut self, listener: u32, addr: IpAddr, port: u16) {
        self.pending.remove(&(listener, addr, port));
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn overdue(&self, listener: u32, addr: IpAddr, port: u16, now: Instant) -> bool {
        self.pending.get(&(listener, addr, port)).is_some_and(|d| now >= *d)
    }

    fn prune(&mut self, now: Instant) {
        self.pending.retain(|_, d| now < *d);
    }
}

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn reverse_key(key: &FlowKey, ct: &CtEntry) -> FlowKey {
    ct.reverse_key(key.proto, key.family)
}

/// A pair of flow tables: the established ones, or the half-open ones.
#[derive(Clone, Copy)]
struct Tables {
    client: &'static str,
    reverse: &'static str,
}

const ESTABLISHED: Tables = Tables { client: names::CONNTRACK, reverse: names::REVERSE_NAT };
const HALF_OPEN: Tables = Tables { client: names::HALF_OPEN, reverse: names::HALF_OPEN_REV };

/// Every client flow of `t` with its reverse side: (key, entry, reverse entry if present).
fn flows_in(ebpf: &mut Ebpf, t: Tables) -> Result<Vec<(FlowKey, CtEntry, Option<RevEntry>)>> {
    let ct: BpfHashMap<&mut MapData, FlowKey, CtEntry> = map_mut(ebpf, t.client)?;
    let entries: Vec<(FlowKey, CtEntry)> = ct.iter().filter_map(|r| r.ok()).collect();
    let rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, t.reverse)?;
    Ok(entries.into_iter().map(|(k, e)| (k, e, rev.get(&reverse_key(&k, &e), 0).ok())).collect())
}

fn flows(ebpf: &mut Ebpf) -> Result<Vec<(FlowKey, CtEntry, Option<RevEntry>)>> {
    flows_in(ebpf, ESTABLISHED)
}

fn remove_in(ebpf: &mut Ebpf, t: Tables, doomed: &[(FlowKey, CtEntry)]) -> Result<()> {
    {
        let mut ct: BpfHashMap<&mut MapData, FlowKey, CtEntry> = map_mut(ebpf, t.client)?;
        for (k, _) in doomed {
            let _ = ct.remove(k);
        }
    }
    let mut rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, t.reverse)?;
    for (k, e) in doomed {
        // Only this flow's own reverse entry (its port may have gone to another flow).
        if rev.get(&reverse_key(k, e), 0).is_ok_and(|r| r.owned_by(k)) {
            let _ = rev.remove(&reverse_key(k, e));
        }
    }
    Ok(())
}

fn remove(ebpf: &mut Ebpf, doomed: &[(FlowKey, CtEntry)]) -> Result<()> {
    remove_in(ebpf, ESTABLISHED, doomed)
}

/// Half-open flows idle for longer than `timeout` or to a backend whose drain is over (they
/// would become its flows under an id about to be reused), and half-open reverse entries
/// whose flow is gone (the datapath's tables are LRU: either side may have been evicted
/// alone).
fn sweep_half_open(ebpf: &mut Ebpf, timeout: Duration, now_ns: u64, drains: &Drains, now: Instant) -> Result<u64> {
    let idle = |ns: u64| Duration::from_nanos(now_ns.saturating_sub(ns)) > timeout;
    let drained = |k: &FlowKey, e: &CtEntry| {
        drains.overdue(e.listener_id, words_addr(&e.backend, k.family), u16::from_be(e.backend_port), now)
    };
    let doomed: Vec<(FlowKey, CtEntry)> = flows_in(ebpf, HALF_OPEN)?
        .into_iter()
        .filter(|(k, e, r)| drained(k, e) || idle(r.map_or(e.last_seen_ns, |r| r.last_seen_ns.max(e.last_seen_ns))))
        .map(|(k, e, _)| (k, e))
        .collect();
    remove_in(ebpf, HALF_OPEN, &doomed)?;
    let mut rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, names::HALF_OPEN_REV)?;
    let orphans: Vec<FlowKey> =
        rev.iter().filter_map(|r| r.ok()).filter(|(_, r)| idle(r.last_seen_ns)).map(|(k, _)| k).collect();
    for k in &orphans {
        let _ = rev.remove(k);
    }
    Ok((doomed.len() + orphans.len()) as u64)
}

/// Remove the flows `doomed(listener id, backend address, backend port)` selects. Their next
/// packet is scheduled anew (a TCP peer gets a RST from the new backend).
pub fn cut_flows(ebpf: &mut Ebpf, doomed: impl Fn(u32, IpAddr, u16) -> bool) -> Result<usize> {
    let cut: Vec<(FlowKey, CtEntry)> = flows(ebpf)?
        .into_iter()
        .filter(|(k, e, _)| doomed(e.listener_id, words_addr(&e.backend, k.family), u16::from_be(e.backend_port)))
        .map(|(k, e, _)| (k, e))
        .collect();
    remove(ebpf, &cut)?;
    // Handshakes in progress to such a backend go too (they would become its flows).
    let half: Vec<(FlowKey, CtEntry)> = flows_in(ebpf, HALF_OPEN)?
        .into_iter()
        .filter(|(k, e, _)| doomed(e.listener_id, words_addr(&e.backend, k.family), u16::from_be(e.backend_port)))
        .map(|(k, e, _)| (k, e))
        .collect();
    remove_in(ebpf, HALF_OPEN, &half)?;
    Ok(cut.len())
}

/// Forget the persistence entries of listener `id` that point at the backend ids `ids`.
pub fn forget_persistence(ebpf: &mut Ebpf, id: u32, ids: &[u32]) -> Result<()> {
    let mut persist: BpfHashMap<&mut MapData, PersistKey, PersistEntry> = map_mut(ebpf, names::PERSIST)?;
    let doomed: Vec<PersistKey> = persist
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(k, e)| k.listener_id == id && ids.contains(&e.backend_id))
        .map(|(k, _)| k)
        .collect();
    for k in doomed {
        let _ = persist.remove(&k);
    }
    Ok(())
}

/// One pass over the conntrack table: remove idle flows (by protocol and TCP state) and the
/// flows of drained backends past their deadline.
pub fn sweep(
    ebpf: &mut Ebpf,
    established_timeouts: &BTreeMap<u32, u32>,
    drains: &mut Drains,
    opts: &SweepOptions,
) -> Result<SweepReport> {
    let now_ns = monotonic_ns();
    let now = Instant::now();
    let all = flows(ebpf)?;
    let mut report = SweepReport { flows: all.len() as u64, ..Default::default() };
    let mut doomed = Vec::new();
    for (k, e, rev) in all {
        let last = rev.map_or(e.last_seen_ns, |r| r.last_seen_ns.max(e.last_seen_ns));
        let idle = Duration::from_nanos(now_ns.saturating_sub(last));
        let timeout = if k.proto == PROTO_TCP {
            let back = rev.map_or(0, |r| r.state);
            let closed =
                (e.state | back) & tcp_state::RST != 0 || (e.state & tcp_state::FIN != 0 && back & tcp_state::FIN != 0);
            if closed {
                opts.tcp_closed_timeout
            } else if back & tcp_state::SYN == 0 {
                opts.tcp_syn_timeout
            } else {
                Duration::from_secs(established_timeouts.get(&e.listener_id).copied().unwrap_or(900) as u64)
            }
        } else {
            opts.udp_timeout
        };
        let addr = words_addr(&e.backend, k.family);
        if drains.overdue(e.listener_id, addr, u16::from_be(e.backend_port), now) {
            report.drained += 1;
            doomed.push((k, e));
        } else if idle > timeout {
            report.expired += 1;
            doomed.push((k, e));
        }
    }
    remove(ebpf, &doomed)?;
    report.expired += sweep_half_open(ebpf, opts.tcp_syn_timeout, now_ns, drains, now)?;
    drains.prune(now);
    Ok(report)
}
