//! Backend selection for L7 routes behind one trait: smooth weighted round robin (wrr),
//! weighted least connections (wlc), and weighted rendezvous hashing of the client address
//! (sch), of the connection's four-tuple (tch) or of a query parameter (uch), which move only
//! the keys of a removed endpoint.
use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use crate::model::l7::{Endpoint, route::Scheduler};

/// What a selection may look at.
pub struct PickContext<'a> {
    pub client: IpAddr,
    /// The connection's two ends, client then listener (tch).
    pub tuple: (SocketAddr, SocketAddr),
    /// The raw query string (uch).
    pub query: &'a str,
    /// When each endpoint was first served (slow start); `None`: no ramp.
    pub ages: Option<&'a EndpointAges>,
}

/// When each endpoint joined (slow start ramps a new endpoint's weight up over the
/// `slow-start-duration`). Endpoints present at the first apply count as old.
#[derive(Clone, Default)]
pub struct EndpointAges(Arc<Mutex<(bool, HashMap<SocketAddr, std::time::Instant>)>>);

impl EndpointAges {
    /// Records the endpoints of a new model: new ones start now, gone ones are forgotten.
    pub fn update(&self, live: impl IntoIterator<Item = SocketAddr>) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (started, map) = &mut *g;
        let now = std::time::Instant::now();
        let born = if *started { now } else { now.checked_sub(std::time::Duration::from_secs(86_400)).unwrap_or(now) };
        let live: std::collections::HashSet<SocketAddr> = live.into_iter().collect();
        map.retain(|a, _| live.contains(a));
        for a in live {
            map.entry(a).or_insert(born);
        }
        *started = true;
    }

    /// `endpoints` with the weights of those younger than `ramp` scaled by their age (at
    /// least 1 while the weight is not 0).
    pub fn ramped(&self, endpoints: &[Endpoint], ramp: std::time::Duration) -> Vec<Endpoint> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        endpoints
            .iter()
            .map(|e| {
                let age = g.1.get(&e.addr).map_or(ramp, |t| t.elapsed());
                let share = if ramp.is_zero() { 1.0 } else { (age.as_secs_f64() / ramp.as_secs_f64()).min(1.0) };
                let w = if e.weight == 0 { 0 } else { ((f64::from(e.weight) * share).ceil() as u32).max(1) };
                Endpoint { addr: e.addr, weight: w }
            })
            .collect()
    }
}

/// Picks an endpoint index among `endpoints` (weight 0: never picked).
pub trait Balancer: Send + Sync {
    fn pick(&self, cx: &PickContext<'_>, endpoints: &[Endpoint]) -> Option<usize>;
}

/// The balancer for a scheduler; `active` holds the in-flight request counts per endpoint
/// (shared by every route, kept across reloads).
pub fn for_scheduler(s: &Scheduler, endpoints: usize, active: &ActiveRequests) -> Box<dyn Balancer> {
    match s {
        Scheduler::Wrr => Box::new(SmoothWrr { current: Mutex::new(vec![0; endpoints]) }),
        Scheduler::Wlc => Box::new(LeastRequests { active: active.clone(), next: AtomicUsize::new(0) }),
        Scheduler::Sch => Box::new(Rendezvous { key: Key::Client }),
        Scheduler::Tch => Box::new(Rendezvous { key: Key::Tuple }),
        Scheduler::Uch { parameter } => Box::new(QueryHash {
            parameter: parameter.clone(),
            without: SmoothWrr { current: Mutex::new(vec![0; endpoints]) },
        }),
    }
}

/// nginx's smooth weighted round robin: spreads picks evenly within one cycle.
struct SmoothWrr {
    current: Mutex<Vec<i64>>,
}

impl Balancer for SmoothWrr {
    fn pick(&self, _: &PickContext<'_>, endpoints: &[Endpoint]) -> Option<usize> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        cur.resize(endpoints.len(), 0);
        let total: i64 = endpoints.iter().map(|e| i64::from(e.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut best = None;
        for (i, e) in endpoints.iter().enumerate() {
            if e.weight == 0 {
                continue;
            }
            cur[i] += i64::from(e.weight);
            if best.is_none_or(|b: usize| cur[i] > cur[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        cur[b] -= total;
        Some(b)
    }
}

/// In-flight requests per endpoint address.
#[derive(Clone, Default)]
pub struct ActiveRequests(Arc<Mutex<HashMap<SocketAddr, Arc<AtomicU64>>>>);

impl ActiveRequests {
    pub fn counter(&self, addr: SocketAddr) -> Arc<AtomicU64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(addr).or_default().clone()
    }

    pub fn get(&self, addr: SocketAddr) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&addr).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Counts a request to `addr` until the guard is dropped.
    pub fn track(&self, addr: SocketAddr) -> ActiveGuard {
        let c = self.counter(addr);
        c.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(c)
    }
}

pub struct ActiveGuard(Arc<AtomicU64>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Weighted least connections: the lowest (in-flight + 1)/weight (so idle endpoints are
/// told apart by weight, as nginx's least_conn), ties taken in turn from a rotating start
/// (ties to the first sent every request of a lightly loaded route to one endpoint).
struct LeastRequests {
    active: ActiveRequests,
    next: AtomicUsize,
}

impl Balancer for LeastRequests {
    fn pick(&self, _: &PickContext<'_>, endpoints: &[Endpoint]) -> Option<usize> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u128, u128)> = None;
        for i in (start..n).chain(0..start) {
            let e = &endpoints[i];
            if e.weight == 0 {
                continue;
            }
            let (load, weight) = (u128::from(self.active.get(e.addr)) + 1, u128::from(e.weight));
            // load/weight < best_load/best_weight  ⇔  load·best_weight < best_load·weight
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * weight) {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

enum Key {
    Client,
    Tuple,
}

/// uch: requests with the parameter by its value (rendezvous); requests without it by
/// weighted round robin, as HAProxy's `balance url_param` (hashing the empty value would
/// send every one of them, a site's front page say, to one endpoint).
struct QueryHash {
    parameter: String,
    without: SmoothWrr,
}

impl Balancer for QueryHash {
    fn pick(&self, cx: &PickContext<'_>, endpoints: &[Endpoint]) -> Option<usize> {
        match query_value(cx.query, &self.parameter) {
            Some(value) => highest_score(value.as_bytes(), endpoints),
            None => self.without.pick(cx, endpoints),
        }
    }
}

/// The value of query parameter `name` in `query` (the first, when repeated; "" for `name=`).
/// A bare `name` (no `=`) has no value, as with HAProxy's `url_param`.
fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

/// Weighted rendezvous (highest random weight) hashing.
struct Rendezvous {
    key: Key,
}

impl Rendezvous {
    fn key_bytes(&self, cx: &PickContext<'_>) -> Vec<u8> {
        match &self.key {
            Key::Client => match cx.client {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            },
            Key::Tuple => [endpoint_id(cx.tuple.0), endpoint_id(cx.tuple.1)].concat(),
        }
    }
}

impl Balancer for Rendezvous {
    fn pick(&self, cx: &PickContext<'_>, endpoints: &[Endpoint]) -> Option<usize> {
        highest_score(&self.key_bytes(cx), endpoints)
    }
}

/// The endpoint of highest rendezvous score for `key` (weight 0: never).
fn highest_score(key: &[u8], endpoints: &[Endpoint]) -> Option<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.weight > 0)
        .map(|(i, e)| (i, rendezvous_score(key, e)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// FNV-1a 64 then a murmur3 finalizer: stable across versions and machines (golden-tested).
pub fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The endpoint's address as bytes (the identity used by hashing and sticky cookies).
pub fn endpoint_id(addr: SocketAddr) -> Vec<u8> {
    let mut v = match addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&addr.port().to_be_bytes());
    v
}

/// `weight / -ln(u)` with `u` uniform in (0, 1) from the hash of (key, endpoint).
fn rendezvous_score(key: &[u8], e: &Endpoint) -> f64 {
    let h = hash64(&[key, &endpoint_id(e.addr)]);
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(e.weight) / -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(weights: &[u32]) -> Vec<Endpoint> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Endpoint { addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 8080)), weight: *w })
            .collect()
    }

    fn cx(client: [u8; 4]) -> PickContext<'static> {
        let local = SocketAddr::from(([198, 18, 100, 10], 80));
        PickContext {
            client: IpAddr::from(client),
            tuple: (SocketAddr::from((client, 40000)), local),
            query: "",
            ages: None,
        }
    }

    #[test]
    fn slow_start_ramps_new_endpoints_only() {
        let ages = EndpointAges::default();
        let e = eps(&[100, 100]);
        ages.update([e[0].addr]);
        ages.update([e[0].addr, e[1].addr]);
        let r = ages.ramped(&e, std::time::Duration::from_secs(30));
        assert_eq!(r[0].weight, 100, "present at the first apply: full weight");
        assert!((1..=5).contains(&r[1].weight), "just added: ramping, got {}", r[1].weight);
        let r = ages.ramped(&e, std::time::Duration::ZERO);
        assert_eq!(r[1].weight, 100);
    }

    #[test]
    fn smooth_wrr_follows_weights_evenly() {
        let b = for_scheduler(&Scheduler::Wrr, 3, &ActiveRequests::default());
        let e = eps(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| b.pick(&cx([1, 1, 1, 1]), &e).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0], "nginx's smooth sequence for 5/1/1");
        let zero = eps(&[0, 0]);
        assert_eq!(b.pick(&cx([1, 1, 1, 1]), &zero), None);
    }

    /// Retries' picks (`CompiledRoute::retry_pick`: the failed endpoint's weight 0) between
    /// the first picks leave the failed endpoint its share of those (a third) and no more;
    /// with a shorter list instead (as retries were picked), the cut and shifted state gave
    /// it nearly two thirds, each a failed connect and a retry.
    #[test]
    fn smooth_wrr_stays_even_across_retry_picks() {
        let b = for_scheduler(&Scheduler::Wrr, 3, &ActiveRequests::default());
        let e = eps(&[1, 1, 1]);
        let mut masked = e.clone();
        masked[1].weight = 0;
        let mut counts = [0u32; 3];
        for _ in 0..30 {
            counts[b.pick(&cx([1, 1, 1, 1]), &e).unwrap()] += 1;
            let retry = b.pick(&cx([1, 1, 1, 1]), &masked).unwrap();
            assert_ne!(retry, 1, "the failed endpoint");
            counts[retry] += 1;
        }
        assert_eq!(counts[1], 10, "{counts:?}");
        assert!(counts[0] >= 10 && counts[2] >= 10, "{counts:?}");
    }

    #[test]
    fn least_requests_prefers_idle_then_weight() {
        let active = ActiveRequests::default();
        let b = for_scheduler(&Scheduler::Wlc, 2, &active);
        let e = eps(&[100, 100]);
        let _g = active.track(e[0].addr);
        assert_eq!(b.pick(&cx([1, 1, 1, 1]), &e), Some(1));
        let _g2 = active.track(e[1].addr);
        let _g3 = active.track(e[1].addr);
        assert_eq!(b.pick(&cx([1, 1, 1, 1]), &e), Some(0));
        // Idle endpoints of one weight take requests in turn (not all the first); of different
        // weights, the heavier first.
        let idle = for_scheduler(&Scheduler::Wlc, 2, &ActiveRequests::default());
        let picks: Vec<usize> = (0..4).map(|_| idle.pick(&cx([1, 1, 1, 1]), &e).unwrap()).collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 2, "{picks:?}");
        assert_eq!(idle.pick(&cx([1, 1, 1, 1]), &eps(&[100, 300])), Some(1));
        assert_eq!(idle.pick(&cx([1, 1, 1, 1]), &eps(&[100, 300])), Some(1));
    }

    #[test]
    fn hash_golden() {
        // Fixed values: a change here reshuffles every sch/uch placement and sticky cookie.
        assert_eq!(format!("{:016x}", hash64(&[b"10.0.0.1"])), GOLDEN_1);
        assert_eq!(format!("{:016x}", hash64(&[b"a", b"b"])), GOLDEN_2);
    }
    #[test]
    fn rendezvous_placement_golden() {
        // Which of 4 equal endpoints sch picks for clients 10.1.0.0..10.1.0.11: a change here
        // moves clients between backends on upgrade.
        let b = for_scheduler(&Scheduler::Sch, 4, &ActiveRequests::default());
        let e = eps(&[100, 100, 100, 100]);
        let picks: Vec<usize> = (0..12u8).map(|i| b.pick(&cx([10, 1, 0, i]), &e).unwrap()).collect();
        assert_eq!(picks, GOLDEN_PLACEMENT);
    }
    const GOLDEN_PLACEMENT: [usize; 12] = [2, 3, 0, 3, 2, 1, 3, 0, 3, 1, 1, 0];

    const GOLDEN_1: &str = "99e3e2c3821e674e";
    const GOLDEN_2: &str = "d1cc471618320c9c";

    #[test]
    fn rendezvous_moves_only_the_removed_endpoints_keys() {
        let b = for_scheduler(&Scheduler::Sch, 4, &ActiveRequests::default());
        let all = eps(&[100, 100, 100, 100]);
        let fewer: Vec<Endpoint> = all.iter().copied().filter(|e| e.addr != all[2].addr).collect();
        let mut counts = [0usize; 4];
        for i in 0..2000u32 {
            let c = cx(i.to_be_bytes());
            let before = all[b.pick(&c, &all).unwrap()].addr;
            let after = fewer[b.pick(&c, &fewer).unwrap()].addr;
            counts[all.iter().position(|e| e.addr == before).unwrap()] += 1;
            if before != all[2].addr {
                assert_eq!(before, after, "a key not on the removed endpoint moved");
            }
        }
        for c in counts {
            assert!((350..650).contains(&c), "uneven spread {counts:?}");
        }
    }

    fn cx_query(client: [u8; 4], query: &str) -> PickContext<'_> {
        PickContext { query, ..cx(client) }
    }

    /// tch: one client address's connections (other source ports) spread over the
    /// endpoints; one connection's requests stay on one.
    #[test]
    fn tch_hashes_the_connection_not_the_client_address() {
        let b = for_scheduler(&Scheduler::Tch, 4, &ActiveRequests::default());
        let e = eps(&[100, 100, 100, 100]);
        let conn = |port: u16| PickContext {
            tuple: (SocketAddr::from(([10, 1, 0, 1], port)), cx([0; 4]).tuple.1),
            ..cx([10, 1, 0, 1])
        };
        let picks: std::collections::BTreeSet<usize> = (40000..40064).map(|p| b.pick(&conn(p), &e).unwrap()).collect();
        assert_eq!(picks.len(), 4, "one address's connections all on {picks:?}");
        assert!((0..8).all(|_| b.pick(&conn(40007), &e) == b.pick(&conn(40007), &e)));
        let sch = for_scheduler(&Scheduler::Sch, 4, &ActiveRequests::default());
        let by_address: std::collections::BTreeSet<usize> =
            (40000..40064).map(|p| sch.pick(&conn(p), &e).unwrap()).collect();
        assert_eq!(by_address.len(), 1, "sch keeps one address on one endpoint");
    }

    #[test]
    fn uch_hashes_the_named_parameter() {
        let b = for_scheduler(&Scheduler::Uch { parameter: "uid".into() }, 4, &ActiveRequests::default());
        let e = eps(&[100, 100, 100, 100]);
        let pick = |q: &'static str, client: [u8; 4]| b.pick(&cx_query(client, q), &e);
        assert_eq!(pick("a=1&uid=42", [1, 1, 1, 1]), pick("uid=42", [9, 9, 9, 9]));
        let spread: std::collections::BTreeSet<_> =
            ["uid=1", "uid=2", "uid=3", "uid=4", "uid=5", "uid=6", "uid=7", "uid=8"]
                .iter()
                .map(|q| pick(q, [1, 1, 1, 1]))
                .collect();
        assert!(spread.len() > 1);
        // Without the parameter: every endpoint in turn, not all on the one the empty value
        // hashes to.
        let without: std::collections::BTreeSet<_> =
            ["", "a=1", "uidx=3", "a=1", "", "b=2", "", ""].iter().map(|q| pick(q, [1, 1, 1, 1])).collect();
        assert_eq!(without.len(), 4, "{without:?}");
        // A bare name has no value (HAProxy's url_param): in turn as well.
        let bare: std::collections::BTreeSet<_> =
            ["uid", "b=2&uid", "uid&a=1", "uid"].iter().map(|q| pick(q, [1, 1, 1, 1])).collect();
        assert_eq!(bare.len(), 4, "{bare:?}");
        assert_eq!(pick("uid=", [1, 1, 1, 1]), pick("a=2&uid=", [2, 2, 2, 2]), "an empty value is a value");
    }
}
