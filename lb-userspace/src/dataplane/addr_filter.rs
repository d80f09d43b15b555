//! The datapath's "is it ours?" bitmaps (`ADDR_FILTER`, `lb_common::addr_filter`): a bit for
//! every listener VIP and every SNAT address, so a packet for neither leaves the datapath
//! after one array read. A bit is set before the listener or address it stands for is
//! loaded and cleared after it is gone; a SNAT address keeps its bit for the life of the
//! datapath (flows opened from it may still get replies).
use std::collections::BTreeSet;

use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use lb_common::{Addr, addr_filter, map_names as names};

use super::{Result, map_err, map_mut};

/// What the bitmaps hold and what was written to the map.
#[derive(Default)]
pub struct AddrFilter {
    snat: BTreeSet<Addr>,
    /// The words written so far (VIP bitmap, then SNAT bitmap), all zero before the first write.
    written: Vec<u64>,
}

/// The two bitmaps for `vips` and `snat`.
pub fn bitmaps<'a>(vips: impl IntoIterator<Item = &'a Addr>, snat: impl IntoIterator<Item = &'a Addr>) -> Vec<u64> {
    let mut words = vec![0u64; 2 * addr_filter::WORDS as usize];
    for (base, addrs) in
        [(addr_filter::VIP, vips.into_iter().collect::<Vec<_>>()), (addr_filter::SNAT, snat.into_iter().collect())]
    {
        for a in addrs {
            let (w, m) = addr_filter::slot(a);
            words[(base + w) as usize] |= m;
        }
    }
    words
}

impl AddrFilter {
    /// A SNAT address the datapath may now send from.
    pub fn add_snat(&mut self, addr: Addr) -> bool {
        self.snat.insert(addr)
    }

    /// Write the bitmaps for `vips` and the SNAT addresses: only the words that changed.
    pub fn write(&mut self, ebpf: &mut Ebpf, vips: &[Addr]) -> Result<()> {
        let words = bitmaps(vips, &self.snat);
        if self.written.len() != words.len() {
            self.written = vec![0; words.len()];
        }
        let mut map: Array<&mut MapData, u64> = map_mut(ebpf, names::ADDR_FILTER)?;
        for (i, (new, old)) in words.iter().zip(self.written.iter_mut()).enumerate() {
            if new != old {
                map.set(i as u32, *new, 0).map_err(map_err(names::ADDR_FILTER))?;
                *old = *new;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_has_its_bit_in_its_own_bitmap() {
        let vips: Vec<Addr> = (0..2000u32).map(|i| [(0xc612_6400 + i).to_be(), 0, 0, 0]).collect();
        let snat: Vec<Addr> = vec![[0xc612_0001u32.to_be(), 0, 0, 0], [1, 2, 3, 4]];
        let words = bitmaps(&vips, &snat);
        for a in &vips {
            let (w, m) = addr_filter::slot(a);
            assert_ne!(words[(addr_filter::VIP + w) as usize] & m, 0);
        }
        for a in &snat {
            let (w, m) = addr_filter::slot(a);
            assert_ne!(words[(addr_filter::SNAT + w) as usize] & m, 0);
        }
        // Addresses that are neither mostly miss (the point of the filter).
        let others = (0..10_000u32).map(|i| [(0x0a00_0000 + i * 7).to_be(), 0, 0, 0]);
        let hits = others
            .filter(|a| {
                let (w, m) = addr_filter::slot(a);
                words[(addr_filter::VIP + w) as usize] & m != 0 || words[(addr_filter::SNAT + w) as usize] & m != 0
            })
            .count();
        assert!(hits < 200, "{hits} of 10000 other addresses hit the filter");
    }
}
