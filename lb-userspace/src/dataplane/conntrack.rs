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
    let entries = client_flows_in(ebpf, t)?;
    let rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, t.reverse)?;
    Ok(entries.into_iter().map(|(k, e)| (k, e, rev.get(&reverse_key(&k, &e), 0).ok())).collect())
}

/// Every client flow of `t`, without its reverse side.
fn client_flows_in(ebpf: &mut Ebpf, t: Tables) -> Result<Vec<(FlowKey, CtEntry)>> {
    let ct: BpfHashMap<&mut MapData, FlowKey, CtEntry> = map_mut(ebpf, t.client)?;
    Ok(ct.iter().filter_map(|r| r.ok()).collect())
}

fn flows(ebpf: &mut Ebpf) -> Result<Vec<(FlowKey, CtEntry, Option<RevEntry>)>> {
    flows_in(ebpf, ESTABLISHED)
}

/// What a flow chosen from a snapshot must still be when it is removed (the table was read
/// a while ago: a flow may have seen packets since, or been closed and opened again on the
/// same addresses and ports).
#[derive(Clone, Copy)]
enum Still {
    /// The same flow (backend, source port, listener), whatever it did since: a cut.
    Same,
    /// The same flow, and no packet either way since `last_seen_ns` (the later of its two
    /// sides in the snapshot): idle.
    IdleSince(u64),
}

/// Whether `now` (with its reverse entry `rev`) is still the flow `then` was, as `still` asks.
fn still_doomed(then: &CtEntry, now: &CtEntry, rev: Option<&RevEntry>, still: Still) -> bool {
    let same = (now.backend, now.backend_port, now.snat_port, now.listener_id)
        == (then.backend, then.backend_port, then.snat_port, then.listener_id);
    match still {
        Still::Same => same,
        Still::IdleSince(last) => same && now.last_seen_ns <= last && rev.is_none_or(|r| r.last_seen_ns <= last),
    }
}

/// Remove the flows of `doomed` (each with what it must still be) from `t`, and their own
/// reverse entries. Each is read again first: a flow that came alive or was opened anew
/// since the snapshot stays.
fn remove_in(ebpf: &mut Ebpf, t: Tables, doomed: &[(FlowKey, CtEntry, Still)]) -> Result<()> {
    let mut gone = Vec::with_capacity(doomed.len());
    {
        let rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, t.reverse)?;
        // The reverse side only where idleness is asked (a cut takes the flow anyway).
        let revs: Vec<Option<RevEntry>> = doomed
            .iter()
            .map(|(k, e, still)| match still {
                Still::Same => None,
                Still::IdleSince(_) => rev.get(&reverse_key(k, e), 0).ok().filter(|r| r.owned_by(k)),
            })
            .collect();
        let mut ct: BpfHashMap<&mut MapData, FlowKey, CtEntry> = map_mut(ebpf, t.client)?;
        for ((k, e, still), r) in doomed.iter().zip(revs) {
            if ct.get(k, 0).is_ok_and(|now| still_doomed(e, &now, r.as_ref(), *still)) {
                let _ = ct.remove(k);
                gone.push((*k, *e));
            }
        }
    }
    let mut rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, t.reverse)?;
    for (k, e) in gone {
        // Only this flow's own reverse entry (its port may have gone to another flow).
        if rev.get(&reverse_key(&k, &e), 0).is_ok_and(|r| r.owned_by(&k)) {
            let _ = rev.remove(&reverse_key(&k, &e));
        }
    }
    Ok(())
}

fn remove(ebpf: &mut Ebpf, doomed: &[(FlowKey, CtEntry, Still)]) -> Result<()> {
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
    let doomed: Vec<(FlowKey, CtEntry, Still)> = flows_in(ebpf, HALF_OPEN)?
        .into_iter()
        .filter_map(|(k, e, r)| {
            let last = r.map_or(e.last_seen_ns, |r| r.last_seen_ns.max(e.last_seen_ns));
            if drained(&k, &e) {
                Some((k, e, Still::Same))
            } else {
                idle(last).then_some((k, e, Still::IdleSince(last)))
            }
        })
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
    let doomed_in = |ebpf: &mut Ebpf, t: Tables| -> Result<Vec<(FlowKey, CtEntry, Still)>> {
        Ok(client_flows_in(ebpf, t)?
            .into_iter()
            .filter(|(k, e)| doomed(e.listener_id, words_addr(&e.backend, k.family), u16::from_be(e.backend_port)))
            .map(|(k, e)| (k, e, Still::Same))
            .collect())
    };
    let cut = doomed_in(ebpf, ESTABLISHED)?;
    remove(ebpf, &cut)?;
    // Handshakes in progress to such a backend go too (they would become its flows).
    let half = doomed_in(ebpf, HALF_OPEN)?;
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
            doomed.push((k, e, Still::Same));
        } else if idle > timeout {
            report.expired += 1;
            doomed.push((k, e, Still::IdleSince(last)));
        }
    }
    remove(ebpf, &doomed)?;
    report.expired += sweep_half_open(ebpf, opts.tcp_syn_timeout, now_ns, drains, now)?;
    drains.prune(now);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flow chosen from a snapshot is removed only if it is still that flow (a cut), and
    /// still idle (a sweep): the table is read for a while (a second at 262,144 flows), and
    /// a flow reopened on the same addresses and ports meanwhile, or one that saw a packet,
    /// was removed with the stale one.
    #[test]
    fn a_flow_is_removed_only_while_it_is_the_one_the_snapshot_saw() {
        let then = CtEntry {
            backend: [1, 0, 0, 0],
            backend_port: 80,
            snat_port: 4000,
            listener_id: 3,
            last_seen_ns: 100,
            ..Default::default()
        };
        let rev = |ns| RevEntry { last_seen_ns: ns, ..Default::default() };
        assert!(still_doomed(&then, &then, Some(&rev(90)), Still::IdleSince(100)));
        assert!(still_doomed(&then, &then, None, Still::IdleSince(100)));
        // A packet either way since: alive.
        let touched = CtEntry { last_seen_ns: 150, ..then };
        assert!(!still_doomed(&then, &touched, Some(&rev(90)), Still::IdleSince(100)));
        assert!(!still_doomed(&then, &then, Some(&rev(150)), Still::IdleSince(100)));
        // A cut takes the flow whatever it did since.
        assert!(still_doomed(&then, &touched, Some(&rev(150)), Still::Same));
        // Reopened on the same key: another source port (or backend) is another flow.
        let reopened = CtEntry { snat_port: 4001, last_seen_ns: 90, ..then };
        assert!(!still_doomed(&then, &reopened, None, Still::Same));
        assert!(!still_doomed(&then, &reopened, None, Still::IdleSince(100)));
        let elsewhere = CtEntry { backend: [2, 0, 0, 0], ..then };
        assert!(!still_doomed(&then, &elsewhere, None, Still::Same));
    }
}
