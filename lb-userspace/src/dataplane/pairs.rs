//! A flow's two entries — its client side in `CONNTRACK`, its backend side in
//! `REVERSE_NAT` — the invariant they keep, and the sweep of halves that lost the other.
//!
//! The datapath writes both halves of a flow in one program run and a refresh touches only a
//! reverse entry the flow owns, but the tables are LRU: under pressure either half can be
//! evicted alone. A client entry without its reverse entry forwards requests whose replies
//! never come back (a UDP flow would stay broken for as long as it keeps sending); a reverse
//! entry without its flow holds a source port for nothing. The sweep removes such halves
//! once two sweeps in a row found them (a flow written between the two reads of one sweep
//! is not taken for broken), so that the next packet opens a whole flow again.
use std::collections::{HashMap, HashSet};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
};
use lb_common::{CtEntry, FlowKey, RevEntry, map_names as names};

use super::{error::Result, maps::map_mut};

/// One broken pair, by the key of the half that is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Broken {
    /// A client entry whose reverse entry is missing.
    NoReverse(FlowKey),
    /// A client entry whose reverse entry belongs to another flow.
    ReverseOfAnother(FlowKey),
    /// A reverse entry whose flow is gone or points elsewhere.
    Orphan(FlowKey),
}

/// The pairs of `ct` (client side) and `rev` (backend side) that break the invariant: every
/// client entry's reverse entry exists and names it as its owner, and every reverse entry's
/// owner is a client entry whose reverse key is that entry's.
pub fn broken(ct: &[(FlowKey, CtEntry)], rev: &[(FlowKey, RevEntry)]) -> Vec<Broken> {
    let reverse: HashMap<FlowKey, &RevEntry> = rev.iter().map(|(k, r)| (*k, r)).collect();
    let client: HashMap<FlowKey, &CtEntry> = ct.iter().map(|(k, e)| (*k, e)).collect();
    let mut out = Vec::new();
    for (k, e) in ct {
        match reverse.get(&e.reverse_key(k.proto, k.family)) {
            None => out.push(Broken::NoReverse(*k)),
            Some(r) if !r.owned_by(k) => out.push(Broken::ReverseOfAnother(*k)),
            Some(_) => {}
        }
    }
    for (k, r) in rev {
        let owner = r.client_key(k.proto, k.family);
        if client.get(&owner).is_none_or(|e| e.reverse_key(owner.proto, owner.family) != *k) {
            out.push(Broken::Orphan(*k));
        }
    }
    out
}

/// A pair of tables' entries: (client side, backend side).
pub type Entries = (Vec<(FlowKey, CtEntry)>, Vec<(FlowKey, RevEntry)>);

/// The established tables' entries.
pub fn read(ebpf: &mut Ebpf) -> Result<Entries> {
    let ct: BpfHashMap<&mut MapData, FlowKey, CtEntry> = map_mut(ebpf, names::CONNTRACK)?;
    let ct: Vec<(FlowKey, CtEntry)> = ct.iter().filter_map(|r| r.ok()).collect();
    let rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, names::REVERSE_NAT)?;
    let rev: Vec<(FlowKey, RevEntry)> = rev.iter().filter_map(|r| r.ok()).collect();
    Ok((ct, rev))
}

/// Broken halves seen by the last sweep.
#[derive(Debug, Default)]
pub struct Suspects(HashSet<Broken>);

/// Remove the halves found broken by this sweep and the one before; returns how many.
pub fn sweep(ebpf: &mut Ebpf, suspects: &mut Suspects) -> Result<u64> {
    let (ct, rev) = read(ebpf)?;
    let now: HashSet<Broken> = broken(&ct, &rev).into_iter().collect();
    let confirmed: Vec<Broken> = now.intersection(&suspects.0).copied().collect();
    suspects.0 = now.difference(&confirmed.iter().copied().collect()).copied().collect();
    // Each half is looked at again just before it goes: the datapath may have made the pair
    // whole since the read (a refresh recreates a missing reverse entry).
    let mut removed = 0;
    for b in &confirmed {
        match *b {
            Broken::NoReverse(k) | Broken::ReverseOfAnother(k) => {
                let ct: BpfHashMap<&mut MapData, FlowKey, CtEntry> = map_mut(ebpf, names::CONNTRACK)?;
                let Ok(e) = ct.get(&k, 0) else { continue };
                let rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, names::REVERSE_NAT)?;
                if rev.get(&e.reverse_key(k.proto, k.family), 0).is_ok_and(|r| r.owned_by(&k)) {
                    continue;
                }
                let mut ct: BpfHashMap<&mut MapData, FlowKey, CtEntry> = map_mut(ebpf, names::CONNTRACK)?;
                removed += u64::from(ct.remove(&k).is_ok());
            }
            Broken::Orphan(k) => {
                let rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, names::REVERSE_NAT)?;
                let Ok(r) = rev.get(&k, 0) else { continue };
                let owner = r.client_key(k.proto, k.family);
                let ct: BpfHashMap<&mut MapData, FlowKey, CtEntry> = map_mut(ebpf, names::CONNTRACK)?;
                if ct.get(&owner, 0).is_ok_and(|e| e.reverse_key(owner.proto, owner.family) == k) {
                    continue;
                }
                let mut rev: BpfHashMap<&mut MapData, FlowKey, RevEntry> = map_mut(ebpf, names::REVERSE_NAT)?;
                removed += u64::from(rev.remove(&k).is_ok());
            }
        }
    }
    if removed > 0 {
        tracing::info!(entries = removed, "conntrack: removed flow halves that lost the other half");
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(client_port: u16, snat_port: u16) -> (FlowKey, CtEntry, FlowKey, RevEntry) {
        let key = FlowKey {
            src: [1, 0, 0, 0],
            dst: [2, 0, 0, 0],
            sport: client_port,
            dport: 80,
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        let ct =
            CtEntry { backend: [3, 0, 0, 0], snat: [4, 0, 0, 0], backend_port: 8080, snat_port, ..Default::default() };
        let rkey = ct.reverse_key(6, 4);
        let rev = RevEntry { client: key.src, vip: key.dst, client_port, vip_port: 80, ..Default::default() };
        (key, ct, rkey, rev)
    }

    #[test]
    fn whole_pairs_pass_and_each_kind_of_broken_half_is_named() {
        let (k1, c1, r1, v1) = flow(1000, 61000);
        let (k2, c2, r2, _) = flow(1001, 61001);
        let (k3, c3, _, _) = flow(1002, 61000); // its reverse key is flow 1's
        let (_, _, r4, v4) = flow(1003, 61003);
        assert!(broken(&[(k1, c1)], &[(r1, v1)]).is_empty());
        let found = broken(&[(k1, c1), (k2, c2), (k3, c3)], &[(r1, v1), (r4, v4)]);
        assert_eq!(
            found,
            vec![Broken::NoReverse(k2), Broken::ReverseOfAnother(k3), Broken::Orphan(r4)],
            "flow 2 lost its reverse entry, flow 3 points at flow 1's, flow 4 lost its client entry"
        );
        assert_eq!(r2, c2.reverse_key(6, 4));
    }
}
