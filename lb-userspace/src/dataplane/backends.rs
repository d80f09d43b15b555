//! Backend ids and their map entries: one id per (address, port), shared by every listener
//! that uses it and freed (after the grace period) when the last one stops.
use std::{collections::HashMap, net::IpAddr, time::Instant};

use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use lb_common::{backend_flags, map_names as names};

use super::{Result, map_err, map_mut, table::GRACE};
use crate::model::Backend;

#[derive(Debug, Default)]
pub struct BackendIds {
    ids: HashMap<(IpAddr, u16), (u32, usize)>,
    next: u32,
    free: Vec<u32>,
    pending: Vec<(Instant, u32)>,
}

impl BackendIds {
    /// Ids for `backends` (in order), taking a reference on each.
    pub fn acquire(&mut self, backends: &[Backend]) -> Vec<u32> {
        backends
            .iter()
            .map(|b| {
                let entry = self.ids.entry((b.addr, b.port)).or_insert_with(|| {
                    let id = self.free.pop().unwrap_or_else(|| {
                        self.next += 1;
                        self.next - 1
                    });
                    (id, 0)
                });
                entry.1 += 1;
                entry.0
            })
            .collect()
    }

    /// Drop one reference on each of `backends`; returns the ids nobody uses any more (they
    /// are handed out again after the grace period).
    pub fn release(&mut self, backends: &[Backend], now: Instant) -> Vec<u32> {
        let mut freed = Vec::new();
        for b in backends {
            let key = (b.addr, b.port);
            if let Some(entry) = self.ids.get_mut(&key) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    freed.push(entry.0);
                    self.pending.push((now, entry.0));
                    self.ids.remove(&key);
                }
            }
        }
        freed
    }

    pub fn reclaim(&mut self, now: Instant) {
        let (due, keep): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, _)| now.duration_since(*t) >= GRACE);
        self.pending = keep;
        self.free.extend(due.into_iter().map(|(_, id)| id));
    }
}

fn to_map_value(b: &Backend) -> lb_common::Backend {
    lb_common::Backend {
        addr: super::addr_words(b.addr),
        port: b.port.to_be(),
        family: super::family(b.addr),
        flags: if b.weight > 0 { backend_flags::LIVE } else { 0 },
        weight: b.weight,
    }
}

/// Write the `BACKENDS` entries of a listener's backends.
pub fn write(ebpf: &mut Ebpf, backends: &[Backend], ids: &[u32]) -> Result<()> {
    let mut table: Array<&mut MapData, lb_common::Backend> = map_mut(ebpf, names::BACKENDS)?;
    for (b, id) in backends.iter().zip(ids) {
        table.set(*id, to_map_value(b), 0).map_err(map_err(names::BACKENDS))?;
    }
    Ok(())
}

/// Mark a freed backend id as taking no flows.
pub fn clear(ebpf: &mut Ebpf, id: u32) -> Result<()> {
    let mut table: Array<&mut MapData, lb_common::Backend> = map_mut(ebpf, names::BACKENDS)?;
    table.set(id, lb_common::Backend::default(), 0).map_err(map_err(names::BACKENDS))
}

/// Write a ring or Maglev table at `offset` of `BACKEND_TABLE`.
pub fn write_table(ebpf: &mut Ebpf, offset: u32, entries: &[u32]) -> Result<()> {
    let mut table: Array<&mut MapData, u32> = map_mut(ebpf, names::BACKEND_TABLE)?;
    for (i, id) in entries.iter().enumerate() {
        table.set(offset + i as u32, id, 0).map_err(map_err(names::BACKEND_TABLE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(port: u16) -> Backend {
        Backend { addr: "198.18.0.1".parse().unwrap(), port, weight: 1 }
    }

    #[test]
    fn shared_backends_keep_their_id_until_the_last_release_then_wait_out_the_grace() {
        let mut ids = BackendIds::default();
        let now = Instant::now();
        let a = ids.acquire(&[be(1), be(2)]);
        let b = ids.acquire(&[be(2), be(3)]);
        assert_eq!(a, vec![0, 1]);
        assert_eq!(b, vec![1, 2]);
        assert_eq!(ids.release(&[be(1), be(2)], now), vec![0], "id 1 is still held");
        assert_eq!(ids.acquire(&[be(4)]), vec![3], "id 0 is in its grace period");
        ids.reclaim(now + GRACE);
        assert_eq!(ids.acquire(&[be(5)]), vec![0]);
        assert_eq!(ids.acquire(&[be(2)]), vec![1]);
    }
}
