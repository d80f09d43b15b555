//! Active health checks (CLB `health-check-*`, ALB `healthcheck-*`): one task per checked
//! backend and check runs its [`Probe`] (TCP connect, HTTP status, UDP, gRPC health; see
//! [`probe`] and [`grpc`]), at a point of its interval spread by the backend's hash, with at
//! most [`MAX_PROBES_IN_FLIGHT`] probes running at once on the node. A backend turns
//! unhealthy after `unhealthy_threshold` failures in a row and healthy again after
//! `healthy_threshold` successes; unhealthy backends get no new flows (weight 0 in the
//! datapath) from the listeners whose check failed (a backend port behind a TCP and a UDP
//! listener is judged by each listener's own probe), their established flows go on.
//! Backends start healthy.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};

pub use self::grpc::GrpcProbe;
pub use self::probe::{HttpProbe, Probe, TcpProbe, UdpProbe};
use crate::model::{
    L4Listener, Model,
    health::{HealthCheck, ProbeKind},
};

mod grpc;
mod probe;

/// A health change of one backend under one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub backend: (IpAddr, u16),
    pub check: HealthCheck,
    pub healthy: bool,
}

type Target = ((IpAddr, u16), HealthCheck);

/// The probes running for a model; restarted only for targets whose check changed.
pub struct Checker {
    tasks: BTreeMap<Target, JoinHandle<()>>,
    unhealthy: BTreeSet<Target>,
    /// The backends unhealthy under at least one check, and under how many.
    unhealthy_checks: BTreeMap<(IpAddr, u16), u32>,
    /// What each L4 listener (by name) asked to be checked at the last sync, what the L7
    /// routes did, and how many of those ask for each target.
    inputs: crate::model::Listeners,
    l7_inputs: Vec<Target>,
    refs: HashMap<Target, u32>,
    /// Probes running at once, node-wide: each holds a socket, and a node with 100,000
    /// unreachable endpoints must not run out of file descriptors (nor flood the network).
    in_flight: Arc<Semaphore>,
    /// The model's L4 listeners at the last [`effective`](Self::effective), and what it gave.
    from: crate::model::Listeners,
    out: Model,
    /// Backends whose health changed since the last [`effective`](Self::effective).
    changed: HashSet<(IpAddr, u16)>,
}

/// The targets an L4 listener asks for: each backend under its check.
fn targets(l: &L4Listener) -> impl Iterator<Item = Target> + '_ {
    l.health_check.iter().flat_map(|h| l.backends.iter().map(move |b| ((b.addr, b.port), h.clone())))
}

/// At most this many probes run at once. When more are due, they wait their turn: a probe
/// then comes later than its interval (with 256 probes of 5 s timeouts each, 51 a second),
/// never more often.
pub const MAX_PROBES_IN_FLIGHT: usize = 256;

impl Default for Checker {
    fn default() -> Checker {
        Checker {
            tasks: BTreeMap::new(),
            unhealthy: BTreeSet::new(),
            unhealthy_checks: BTreeMap::new(),
            inputs: Default::default(),
            l7_inputs: Vec::new(),
            refs: HashMap::new(),
            in_flight: Arc::new(Semaphore::new(MAX_PROBES_IN_FLIGHT)),
            from: Default::default(),
            out: Model::default(),
            changed: HashSet::new(),
        }
    }
}

impl Checker {
    /// Run exactly the probes `model` asks for; changes arrive on `tx`. Only listeners whose
    /// check or backends changed since the last sync are gone through target by target (a
    /// target shared by several listeners runs once, while any of them asks for it).
    pub fn sync(&mut self, model: &Model, tx: &mpsc::Sender<Change>) {
        let (mut gone, mut new): (Vec<Target>, Vec<Target>) = (Vec::new(), Vec::new());
        for crate::model::ListenerChange { before, after, .. } in
            crate::model::changed_listeners(&self.inputs, &model.listeners)
        {
            // The same check of the same backends (weights and the rest do not matter here).
            let same = match (&before, &after) {
                (Some(b), Some(a)) => {
                    let addr = |x: &crate::model::Backend| (x.addr, x.port);
                    b.health_check == a.health_check && b.backends.iter().map(addr).eq(a.backends.iter().map(addr))
                }
                _ => false,
            };
            if !same {
                new.extend(after.iter().flat_map(|l| targets(l)));
                gone.extend(before.iter().flat_map(|l| targets(l)));
            }
        }
        self.inputs = model.listeners.clone();
        let mut l7: Vec<Target> = Vec::new();
        for u in model.l7.values().flat_map(|l| l.routes.iter().chain(&l.canaries)).flat_map(|r| &r.upstreams) {
            if let Some(h) = &u.health_check {
                l7.extend(u.endpoints.iter().map(|e| ((e.addr.ip(), e.addr.port()), h.clone())));
            }
        }
        if l7 != self.l7_inputs {
            gone.append(&mut std::mem::replace(&mut self.l7_inputs, l7.clone()));
            new.extend(l7);
        }
        // Added first: a target that moved from one listener to another keeps its probe.
        for target in new {
            let refs = self.refs.entry(target.clone()).or_default();
            *refs += 1;
            if *refs == 1 && !self.tasks.contains_key(&target) {
                let task = spawn(target.0, target.1.clone(), tx.clone(), self.in_flight.clone());
                self.tasks.insert(target, task);
            }
        }
        let mut dropped = false;
        for target in gone {
            let Some(refs) = self.refs.get_mut(&target) else { continue };
            *refs -= 1;
            if *refs == 0 {
                self.refs.remove(&target);
                if let Some(task) = self.tasks.remove(&target) {
                    task.abort();
                }
                if self.unhealthy.remove(&target) {
                    self.changed.insert(target.0);
                    dropped = true;
                }
            }
        }
        if dropped {
            self.recount();
        }
    }

    /// Take one change in (constant work per change: a burst of thousands is recorded in
    /// the time of a model apply, not thousands of them).
    pub fn record(&mut self, c: Change) {
        let backend = c.backend;
        let target = (c.backend, c.check);
        if c.healthy {
            if self.unhealthy.remove(&target) {
                self.changed.insert(backend);
                match self.unhealthy_checks.get_mut(&backend) {
                    Some(n) if *n > 1 => *n -= 1,
                    _ => {
                        self.unhealthy_checks.remove(&backend);
                    }
                }
            }
        } else if self.tasks.contains_key(&target) && self.unhealthy.insert(target) {
            self.changed.insert(backend);
            *self.unhealthy_checks.entry(backend).or_default() += 1;
        }
    }

    /// The per-backend view of `unhealthy`, made again after targets were dropped.
    fn recount(&mut self) {
        self.unhealthy_checks.clear();
        for (b, _) in &self.unhealthy {
            *self.unhealthy_checks.entry(*b).or_default() += 1;
        }
    }

    fn is_unhealthy(&self, backend: (IpAddr, u16), check: &Option<HealthCheck>) -> bool {
        check.as_ref().is_some_and(|h| self.unhealthy.contains(&(backend, h.clone())))
    }

    /// `model` with unhealthy backends at weight 0 (no new flows), kept between calls and
    /// updated in place: only the L4 listeners that differ from those of the last call, and
    /// those with a backend whose health changed since, are weighed again (a change costs the
    /// listeners it touches, and no copy of the whole model is made).
    pub fn effective(&mut self, model: &Model) -> &Model {
        let changed = std::mem::take(&mut self.changed);
        for crate::model::ListenerChange { name, after, .. } in
            crate::model::changed_listeners(&self.from, &model.listeners)
        {
            match after {
                Some(l) => {
                    self.out.listeners.insert(name, self.weighed(&l));
                }
                None => {
                    self.out.listeners.remove(&name);
                }
            }
        }
        self.from = model.listeners.clone();
        if !changed.is_empty() {
            let touched: Vec<(String, Arc<L4Listener>)> = self
                .from
                .iter()
                .filter(|(_, l)| l.backends.iter().any(|b| changed.contains(&(b.addr, b.port))))
                .map(|(name, l)| (name.clone(), self.weighed(l)))
                .collect();
            self.out.listeners.extend(touched);
        }
        // The rest as the model says (a destructuring: a new field of the model is not missed).
        let Model { listeners: _, acls, l7, ingresses, alb_configs, sub_clusters } = model;
        self.out.acls.clone_from(acls);
        self.out.l7.clone_from(l7);
        self.out.ingresses.clone_from(ingresses);
        self.out.alb_configs.clone_from(alb_configs);
        self.out.sub_clusters.clone_from(sub_clusters);
        if !self.unhealthy.is_empty() {
            let mut l7 = std::mem::take(&mut self.out.l7);
            for l in l7.values_mut() {
                for u in l.routes.iter_mut().chain(l.canaries.iter_mut()).flat_map(|r| &mut r.upstreams) {
                    for e in &mut u.endpoints {
                        if self.is_unhealthy((e.addr.ip(), e.addr.port()), &u.health_check) {
                            e.weight = 0;
                        }
                    }
                }
            }
            self.out.l7 = l7;
        }
        &self.out
    }

    /// `l` with its unhealthy backends at weight 0; `l` itself if it has none.
    fn weighed(&self, l: &Arc<L4Listener>) -> Arc<L4Listener> {
        let sick = |b: &crate::model::Backend| b.weight > 0 && self.is_unhealthy((b.addr, b.port), &l.health_check);
        if self.unhealthy.is_empty() || !l.backends.iter().any(sick) {
            return l.clone();
        }
        let mut out = (**l).clone();
        for b in &mut out.backends {
            if sick(b) {
                b.weight = 0;
            }
        }
        Arc::new(out)
    }

    /// Every backend a probe runs for.
    pub fn checked(&self) -> BTreeSet<(IpAddr, u16)> {
        self.tasks.keys().map(|(b, _)| *b).collect()
    }

    /// The backends unhealthy under at least one of their checks (the keys), and under how
    /// many.
    pub fn unhealthy(&self) -> &BTreeMap<(IpAddr, u16), u32> {
        &self.unhealthy_checks
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

/// The task that checks `backend` with the probe `check` asks for.
fn spawn(
    backend: (IpAddr, u16),
    check: HealthCheck,
    tx: mpsc::Sender<Change>,
    in_flight: Arc<Semaphore>,
) -> JoinHandle<()> {
    match &check.probe {
        ProbeKind::Tcp => tokio::spawn(run(TcpProbe, backend, check, tx, in_flight)),
        ProbeKind::Udp => tokio::spawn(run(UdpProbe, backend, check, tx, in_flight)),
        ProbeKind::Http(http) => {
            let probe = HttpProbe::new(http.clone(), check.proxy_protocol);
            tokio::spawn(run(probe, backend, check, tx, in_flight))
        }
        ProbeKind::Grpc(grpc) => {
            let probe = GrpcProbe::new(grpc.clone(), check.proxy_protocol);
            tokio::spawn(run(probe, backend, check, tx, in_flight))
        }
    }
}

/// Where in its interval a target's probes fall: spread by a hash of the backend, so the
/// probes of a model's thousands of backends do not all start in the same instant.
fn phase(backend: (IpAddr, u16), interval: std::time::Duration) -> std::time::Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    backend.hash(&mut h);
    interval.mul_f64((h.finish() % 1024) as f64 / 1024.0)
}

async fn run(
    probe: impl Probe,
    backend: (IpAddr, u16),
    check: HealthCheck,
    tx: mpsc::Sender<Change>,
    in_flight: Arc<Semaphore>,
) {
    let (mut healthy, mut streak) = (true, 0u8);
    let to = SocketAddr::new(backend.0, if check.port == 0 { backend.1 } else { check.port });
    let start = tokio::time::Instant::now() + phase(backend, check.interval);
    let mut ticks = tokio::time::interval_at(start, check.interval);
    // A probe that waited for its turn is not made up for: the next comes an interval later.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let ok = {
            let Ok(_turn) = in_flight.acquire().await else { return };
            matches!(tokio::time::timeout(check.timeout, probe.check(to)).await, Ok(true))
        };
        if ok == healthy {
            streak = 0;
            continue;
        }
        streak += 1;
        let needed = if healthy { check.unhealthy_threshold } else { check.healthy_threshold };
        if streak >= needed {
            healthy = ok;
            streak = 0;
            tracing::warn!(backend = %to, healthy, "backend health changed");
            if tx.send(Change { backend, check: check.clone(), healthy }).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;
    use crate::model::ProxyProtocol;

    fn check(port: u16) -> HealthCheck {
        HealthCheck {
            probe: ProbeKind::Tcp,
            port,
            proxy_protocol: ProxyProtocol::Off,
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }

    /// Counts the probes running at once; each takes 50 ms and fails.
    struct Slow {
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        done: Arc<AtomicUsize>,
    }

    impl Probe for Slow {
        async fn check(&self, _: SocketAddr) -> bool {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.done.fetch_add(1, Ordering::SeqCst);
            false
        }
    }

    /// 1,000 backends whose probes would overlap ~500 at a time run at most
    /// MAX_PROBES_IN_FLIGHT at once (each probe holds a socket: a node with 100,000
    /// unreachable endpoints ran out of file descriptors), and every one still gets probed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probes_in_flight_are_bounded() {
        let (now, most, done) = (Arc::default(), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let in_flight = Arc::new(Semaphore::new(MAX_PROBES_IN_FLIGHT));
        let (tx, mut rx) = mpsc::channel(2048);
        let tasks: Vec<_> = (0..1000u16)
            .map(|i| {
                let probe = Slow { now: Arc::clone(&now), most: most.clone(), done: done.clone() };
                let backend = (IpAddr::from([10, 9, (i >> 8) as u8, i as u8]), 80);
                tokio::spawn(run(probe, backend, check(0), tx.clone(), in_flight.clone()))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Read first: an aborted probe never counts itself out.
        let most = most.load(Ordering::SeqCst);
        let done = done.load(Ordering::SeqCst);
        for t in &tasks {
            t.abort();
        }
        assert!(most <= MAX_PROBES_IN_FLIGHT, "{most} probes at once");
        assert!(most > MAX_PROBES_IN_FLIGHT / 2, "the bound was never reached ({most}): the test proves nothing");
        assert!(done >= 1000, "every backend probed at least once ({done} probes)");
        // Every backend failed twice in a row at least once: one change each.
        let mut changes = 0;
        while rx.try_recv().is_ok() {
            changes += 1;
        }
        assert!(changes > 900, "{changes} backends turned unhealthy");
    }

    /// Probes of a model's backends start spread over the interval, not all at once.
    #[test]
    fn probe_phases_are_spread_over_the_interval() {
        let interval = Duration::from_secs(2);
        let phases: BTreeSet<u128> =
            (0..100u8).map(|i| phase((IpAddr::from([10, 0, 0, i]), 80), interval).as_millis() / 100).collect();
        assert!(phases.len() >= 15, "100 backends fall in {} of 20 tenths of the interval", phases.len());
        assert!(phases.iter().all(|p| *p < 20));
    }

    fn model(listeners: &[(&str, &[u8])]) -> Model {
        let mut m = Model::default();
        for (name, backends) in listeners {
            let backends = backends
                .iter()
                .map(|b| crate::model::Backend { addr: IpAddr::from([10, 0, 0, *b]), port: 80, weight: 1 })
                .collect();
            let l = crate::model::L4Listener {
                health_check: Some(check(0)),
                ..crate::model::L4Listener::sample(name, IpAddr::from([192, 0, 2, 1]), 80, backends)
            };
            m.listeners.insert(name.to_string(), Arc::new(l));
        }
        m
    }

    fn probed(c: &Checker) -> Vec<u8> {
        c.checked()
            .into_iter()
            .map(|(ip, _)| match ip {
                IpAddr::V4(v4) => v4.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    /// Syncs go through the listeners that changed only: a backend two listeners share is
    /// probed once, until neither asks for it; a backend that moves between listeners keeps
    /// its probe (and its health).
    #[tokio::test]
    async fn sync_follows_listener_changes() {
        let (tx, _rx) = mpsc::channel(16);
        let mut c = Checker::default();
        c.sync(&model(&[("a", &[1, 2]), ("b", &[2, 3])]), &tx);
        assert_eq!(probed(&c), [1, 2, 3]);
        c.record(Change { backend: (IpAddr::from([10, 0, 0, 2]), 80), check: check(0), healthy: false });
        c.sync(&model(&[("b", &[2, 3])]), &tx);
        assert_eq!(probed(&c), [2, 3]);
        assert!(c.unhealthy().contains_key(&(IpAddr::from([10, 0, 0, 2]), 80)), "still checked: still unhealthy");
        c.sync(&model(&[("b", &[3]), ("c", &[2, 4])]), &tx);
        assert_eq!(probed(&c), [2, 3, 4]);
        assert!(c.unhealthy().contains_key(&(IpAddr::from([10, 0, 0, 2]), 80)), "moved, not restarted");
        c.sync(&model(&[("b", &[3])]), &tx);
        assert_eq!(probed(&c), [3]);
        assert!(c.unhealthy().is_empty(), "a backend no longer checked is not unhealthy");
        c.sync(&Model::default(), &tx);
        assert!(probed(&c).is_empty() && c.refs.is_empty() && c.inputs.is_empty());
    }

    /// A backend unhealthy under two checks stays unhealthy until both recover.
    #[tokio::test]
    async fn a_backend_is_unhealthy_while_any_check_fails() {
        let mut checker = Checker::default();
        let backend = (IpAddr::from([10, 0, 0, 1]), 80);
        for port in [0, 81] {
            checker.tasks.insert((backend, check(port)), tokio::spawn(async {}));
        }
        let change = |port, healthy| Change { backend, check: check(port), healthy };
        checker.record(change(0, false));
        checker.record(change(81, false));
        checker.record(change(0, true));
        assert!(checker.unhealthy().contains_key(&backend));
        checker.record(change(81, true));
        assert!(checker.unhealthy().is_empty());
        // A change for a target no longer checked is ignored.
        checker.record(Change { backend: (IpAddr::from([10, 0, 0, 2]), 80), check: check(0), healthy: false });
        assert!(checker.unhealthy().is_empty());
    }

    /// The effective model kept in place: an unhealthy backend weighs 0 where a listener has
    /// it, a listener that did not change is the model's own object, and after listeners
    /// change and go the result is what a checker with the same health gives from scratch.
    #[test]
    fn effective_is_updated_in_place_as_a_fresh_one_gives() {
        let sick = |c: &mut Checker, b: u8| {
            let backend = (IpAddr::from([10, 0, 0, b]), 80);
            c.unhealthy.insert((backend, check(0)));
            c.changed.insert(backend);
        };
        let weight = |m: &Model, l: &str, b: u8| {
            m.listeners[l].backends.iter().find(|x| x.addr == IpAddr::from([10, 0, 0, b])).unwrap().weight
        };
        let mut c = Checker::default();
        let first = model(&[("a", &[1, 2]), ("b", &[3])]);
        assert_eq!(*c.effective(&first), first);
        sick(&mut c, 1);
        let out = c.effective(&first).clone();
        assert_eq!((weight(&out, "a", 1), weight(&out, "a", 2)), (0, 1));
        assert!(Arc::ptr_eq(&out.listeners["b"], &first.listeners["b"]), "b has no sick backend");
        // a changes (a new object), b goes, c comes.
        let mut next = model(&[("a", &[1, 4]), ("c", &[1])]);
        next.l7 = first.l7.clone();
        let out = c.effective(&next).clone();
        assert_eq!(out.listeners.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!((weight(&out, "a", 1), weight(&out, "a", 4), weight(&out, "c", 1)), (0, 1, 0));
        let mut fresh = Checker::default();
        sick(&mut fresh, 1);
        assert_eq!(out, *fresh.effective(&next));
        // 1 heals: every listener that has it is weighed again.
        c.unhealthy.clear();
        c.changed.insert((IpAddr::from([10, 0, 0, 1]), 80));
        assert_eq!(*c.effective(&next), next);
    }
}
