//! The rr/wrr ring: the order in which a listener's backends take new flows. Weights are
//! reduced by their gcd and, past `MAX_RING`, scaled down (each live backend keeps at least
//! one slot); the order is nginx's smooth weighted round robin, so a heavy backend's turns
//! are spread out instead of bunched.
use lb_common::MAX_RING;

/// Slots for `weights` (index into the input per slot). Weight-0 entries get none.
pub fn build(weights: &[u32]) -> Vec<usize> {
    let live: Vec<(usize, u64)> =
        weights.iter().enumerate().filter(|(_, w)| **w > 0).map(|(i, w)| (i, *w as u64)).collect();
    if live.is_empty() {
        return Vec::new();
    }
    let g = live.iter().fold(0, |g, (_, w)| gcd(g, *w));
    let mut w: Vec<(usize, u64)> = live.iter().map(|(i, x)| (*i, x / g)).collect();
    let total: u64 = w.iter().map(|(_, x)| x).sum();
    if total > MAX_RING as u64 {
        for (_, x) in w.iter_mut() {
            *x = ((*x * MAX_RING as u64) / total).max(1);
        }
    }
    let total: i64 = w.iter().map(|(_, x)| *x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, (_, x)) in current.iter_mut().zip(&w) {
            *c += *x as i64;
        }
        let best = (0..w.len()).max_by_key(|&k| (current[k], std::cmp::Reverse(k))).unwrap();
        current[best] -= total;
        out.push(w[best].0);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_are_plain_round_robin() {
        assert_eq!(build(&[100, 100, 100]), vec![0, 1, 2]);
    }

    #[test]
    fn weights_are_proportional_and_interleaved() {
        // 5:1:1 → nginx's classic smooth sequence a a b a c a a.
        assert_eq!(build(&[50, 10, 10]), vec![0, 0, 1, 0, 2, 0, 0]);
        let r = build(&[30, 0, 10]);
        assert_eq!(r, vec![0, 0, 2, 0], "weight 0 takes no new flows");
    }

    #[test]
    fn large_rings_are_scaled_down_keeping_every_live_backend() {
        let weights: Vec<u32> = (1..=100).map(|i| if i == 1 { 1 } else { 97 }).collect();
        let r = build(&weights);
        assert!(r.len() <= MAX_RING as usize + 100, "{}", r.len());
        assert!(r.contains(&0), "the lightest backend keeps a slot");
    }

    #[test]
    fn no_live_backend_is_an_empty_ring() {
        assert!(build(&[0, 0]).is_empty());
        assert!(build(&[]).is_empty());
    }
}
