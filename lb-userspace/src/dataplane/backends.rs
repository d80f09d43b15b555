//! Backend ids: one id per (address, port), shared by every listener that uses it and
//! released when the last one stops.
use std::collections::HashMap;

use lb_common::FAMILY_V4;

use crate::model::Backend;

#[derive(Debug, Default)]
pub struct BackendIds {
    ids: HashMap<(std::net::IpAddr, u16), (u32, usize)>,
    next: u32,
    free: Vec<u32>,
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

    /// Drop one reference on each of `backends`; ids nobody uses any more are freed.
    pub fn release(&mut self, backends: &[Backend]) {
        for b in backends {
            let key = (b.addr, b.port);
            if let Some(entry) = self.ids.get_mut(&key) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.free.push(entry.0);
                    self.ids.remove(&key);
                }
            }
        }
    }
}

pub fn to_map_value(b: &Backend) -> lb_common::Backend {
    lb_common::Backend {
        addr: super::addr_words(b.addr),
        port: b.port.to_be(),
        family: FAMILY_V4,
        flags: 0,
        weight: b.weight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(port: u16) -> Backend {
        Backend { addr: "198.18.0.1".parse().unwrap(), port, weight: 1 }
    }

    #[test]
    fn shared_backends_keep_their_id_until_the_last_release() {
        let mut ids = BackendIds::default();
        let a = ids.acquire(&[be(1), be(2)]);
        let b = ids.acquire(&[be(2), be(3)]);
        assert_eq!(a, vec![0, 1]);
        assert_eq!(b, vec![1, 2]);
        ids.release(&[be(1), be(2)]);
        // id 0 freed, id 1 still held by the second listener.
        assert_eq!(ids.acquire(&[be(4)]), vec![0]);
        assert_eq!(ids.acquire(&[be(2)]), vec![1]);
    }
}
