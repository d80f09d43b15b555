//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), built here and only looked up by
//! the datapath. Every node builds the same table from the same backends: permutations come
//! from a hash of each backend's identity (address and port), never from its index or id.
//! Weights: in each round a backend takes a turn for every `max_weight` of credit it has
//! accumulated, so turns are proportional to weight.
use std::net::IpAddr;

use lb_common::MAGLEV_M;

/// FNV-1a 64 of `bytes` from `basis`: stable across builds and platforms.
fn fnv1a(basis: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(basis, |h, b| (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The identity a backend's permutation is derived from.
fn identity(addr: IpAddr, port: u16) -> Vec<u8> {
    let mut v = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&port.to_be_bytes());
    v
}

/// The table for `backends` ((address, port, weight); weight 0 takes no slot): `m` entries,
/// each an index into `backends`. Empty when no backend has weight. The same set of backends
/// gives the same placement in any order.
pub fn build(backends: &[(IpAddr, u16, u32)], m: u32) -> Vec<usize> {
    // Turns go in the order of the backends' identities, whatever order they came in.
    let mut live: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].2 > 0).collect();
    live.sort_by_key(|&i| identity(backends[i].0, backends[i].1));
    if live.is_empty() {
        return Vec::new();
    }
    let m64 = m as u64;
    let perm: Vec<(u64, u64)> = live
        .iter()
        .map(|&i| {
            let id = identity(backends[i].0, backends[i].1);
            let offset = fnv1a(0xcbf2_9ce4_8422_2325, &id) % m64;
            let skip = fnv1a(0x8422_2325_cbf2_9ce4, &id) % (m64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let max_w = live.iter().map(|&i| backends[i].2 as u64).max().unwrap();
    let mut next = vec![0u64; live.len()];
    let mut credit = vec![0u64; live.len()];
    let mut table = vec![usize::MAX; m as usize];
    let mut filled = 0u32;
    while filled < m {
        for (k, &i) in live.iter().enumerate() {
            credit[k] += backends[i].2 as u64;
            if credit[k] < max_w {
                continue;
            }
            credit[k] -= max_w;
            let (offset, skip) = perm[k];
            let mut c = (offset + next[k] * skip) % m64;
            while table[c as usize] != usize::MAX {
                next[k] += 1;
                c = (offset + next[k] * skip) % m64;
            }
            table[c as usize] = i;
            next[k] += 1;
            filled += 1;
            if filled == m {
                break;
            }
        }
    }
    table
}

/// The table with the datapath's size.
pub fn build_default(backends: &[(IpAddr, u16, u32)]) -> Vec<usize> {
    build(backends, MAGLEV_M)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(i: u8, w: u32) -> (IpAddr, u16, u32) {
        (IpAddr::from([10, 0, 0, i]), 8080, w)
    }

    fn share(t: &[usize], n: usize) -> Vec<f64> {
        (0..n).map(|i| t.iter().filter(|&&x| x == i).count() as f64 / t.len() as f64).collect()
    }

    /// Golden: the table for a known backend set is fixed forever (a change would move
    /// sch/tch flows on upgrade, and nodes on different versions would disagree).
    #[test]
    fn golden_table() {
        let t = build(&[be(1, 1), be(2, 1), be(3, 1)], 13);
        assert_eq!(t, GOLDEN_13, "Maglev table changed: {t:?}");
        let big = build_default(&[be(1, 1), be(2, 1), be(3, 1)]);
        let digest = big.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x100_0000_01b3));
        assert_eq!(digest, GOLDEN_DEFAULT_DIGEST, "Maglev table changed: digest {digest:#x}");
    }
    const GOLDEN_13: [usize; 13] = [0, 0, 0, 0, 1, 1, 2, 1, 2, 1, 2, 2, 0];
    const GOLDEN_DEFAULT_DIGEST: u64 = 0x4b82_8c0c_927a_57fb;

    #[test]
    fn balanced_within_one_percent() {
        let backends: Vec<_> = (1..=10).map(|i| be(i, 1)).collect();
        for s in share(&build_default(&backends), 10) {
            assert!((s - 0.1).abs() < 0.01, "{s}");
        }
    }

    #[test]
    fn weights_are_proportional() {
        let s = share(&build_default(&[be(1, 3), be(2, 1)]), 2);
        assert!((s[0] - 0.75).abs() < 0.01 && (s[1] - 0.25).abs() < 0.01, "{s:?}");
        let t = build_default(&[be(1, 1), be(2, 0)]);
        assert!(t.iter().all(|&x| x == 0), "weight 0 takes no slot");
    }

    /// Removing 1 of N backends moves only that backend's slots, plus a small fraction.
    #[test]
    fn removing_a_backend_moves_little_else() {
        let n = 20;
        let before: Vec<_> = (1..=n).map(|i| be(i, 1)).collect();
        let after: Vec<_> = before.iter().copied().filter(|b| b.0 != IpAddr::from([10, 0, 0, 7])).collect();
        let t1 = build_default(&before);
        let t2 = build_default(&after);
        let ident = |bs: &[(IpAddr, u16, u32)], i: usize| bs[i].0;
        let mut moved_other = 0;
        for (a, b) in t1.iter().zip(&t2) {
            let (a, b) = (ident(&before, *a), ident(&after, *b));
            if a != IpAddr::from([10, 0, 0, 7]) && a != b {
                moved_other += 1;
            }
        }
        let frac = moved_other as f64 / t1.len() as f64;
        // Stated bound: under 3% of all slots move between surviving backends.
        assert!(frac < 0.03, "{:.2}% of slots of surviving backends moved", frac * 100.0);
    }

    #[test]
    fn order_of_backends_does_not_matter_for_placement() {
        let a = [be(1, 1), be(2, 1), be(3, 1)];
        let b = [be(3, 1), be(1, 1), be(2, 1)];
        let ta: Vec<IpAddr> = build_default(&a).iter().map(|&i| a[i].0).collect();
        let tb: Vec<IpAddr> = build_default(&b).iter().map(|&i| b[i].0).collect();
        assert_eq!(ta, tb);
    }
}
