//! The datapath's per-CPU counters, summed: datapath-wide, per listener, per backend.
use std::collections::BTreeMap;

use aya::{Ebpf, maps::PerCpuArray};
use lb_common::{BackendCounters, Counter, ListenerCounters, map_names as names, stat};
use serde::Serialize;

use super::error::{DataplaneError, Result, map_err};

/// One counter summed over CPUs.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ListenerStats {
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

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct BackendStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// Everything the datapath counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Counter name → count.
    pub datapath: BTreeMap<&'static str, Count>,
    /// Listener name → counters.
    pub listeners: BTreeMap<String, ListenerStats>,
    /// `addr:port` → counters.
    pub backends: BTreeMap<String, BackendStats>,
}

impl Stats {
    pub fn packets(&self, name: &str) -> u64 {
        self.datapath.get(name).map_or(0, |c| c.packets)
    }
}

fn per_cpu<'a, T: aya::Pod>(ebpf: &'a Ebpf, name: &'static str) -> Result<PerCpuArray<&'a aya::maps::MapData, T>> {
    let map = ebpf.map(name).ok_or(DataplaneError::Missing { what: name })?;
    PerCpuArray::try_from(map).map_err(map_err(name))
}

pub fn read(ebpf: &Ebpf, listeners: &[(String, u32)], backends: &[(String, u32)]) -> Result<Stats> {
    let mut out = Stats::default();
    let counters = per_cpu::<Counter>(ebpf, names::STATS)?;
    for (i, name) in stat::NAMES.iter().enumerate() {
        let per_cpu = counters.get(&(i as u32), 0).map_err(map_err(names::STATS))?;
        let sum = per_cpu
            .iter()
            .fold(Count::default(), |a, c| Count { packets: a.packets + c.packets, bytes: a.bytes + c.bytes });
        out.datapath.insert(*name, sum);
    }
    let lmap = per_cpu::<ListenerCounters>(ebpf, names::LISTENER_STATS)?;
    for (name, id) in listeners {
        let per_cpu = lmap.get(id, 0).map_err(map_err(names::LISTENER_STATS))?;
        let s = per_cpu.iter().fold(ListenerStats::default(), |a, c| ListenerStats {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
            reply_packets: a.reply_packets + c.reply_packets,
            reply_bytes: a.reply_bytes + c.reply_bytes,
            new_flows: a.new_flows + c.new_flows,
            acl_drops: a.acl_drops + c.acl_drops,
            no_backend_drops: a.no_backend_drops + c.no_backend_drops,
            handshakes: a.handshakes + c.handshakes,
            no_flow_drops: a.no_flow_drops + c.no_flow_drops,
        });
        out.listeners.insert(name.clone(), s);
    }
    let bmap = per_cpu::<BackendCounters>(ebpf, names::BACKEND_STATS)?;
    for (name, id) in backends {
        let per_cpu = bmap.get(id, 0).map_err(map_err(names::BACKEND_STATS))?;
        let s = per_cpu.iter().fold(BackendStats::default(), |a, c| BackendStats {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
            new_flows: a.new_flows + c.new_flows,
        });
        out.backends.insert(name.clone(), s);
    }
    Ok(out)
}
