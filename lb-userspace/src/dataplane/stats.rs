//! The datapath's per-CPU counters, summed.
use std::collections::BTreeMap;

use aya::{Ebpf, maps::PerCpuArray};
use lb_common::{Counter, map_names, stat};
use serde::Serialize;

use super::{DataplaneError, Result, map_err};

/// One counter summed over CPUs.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

/// Counter name → count.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats(pub BTreeMap<&'static str, Count>);

impl Stats {
    pub fn packets(&self, name: &str) -> u64 {
        self.0.get(name).map_or(0, |c| c.packets)
    }
}

pub fn read(ebpf: &Ebpf) -> Result<Stats> {
    let map = ebpf.map(map_names::STATS).ok_or(DataplaneError::MissingMap { map: map_names::STATS })?;
    let counters: PerCpuArray<_, Counter> = PerCpuArray::try_from(map).map_err(map_err(map_names::STATS))?;
    let mut out = BTreeMap::new();
    for (i, name) in stat::NAMES.iter().enumerate() {
        let per_cpu = counters.get(&(i as u32), 0).map_err(map_err(map_names::STATS))?;
        let sum = per_cpu.iter().fold(Count::default(), |a, c| Count {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
        });
        out.insert(*name, sum);
    }
    Ok(Stats(out))
}
