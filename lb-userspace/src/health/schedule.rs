//! The probe schedule: every checked target is a slot of one table (its backend, its check,
//! its health and streak) and one entry of a timer heap; a single task starts the probes that
//! are due, at most [`MAX_PROBES_IN_FLIGHT`] at once, and turns their results into health
//! changes. A target costs a few dozen bytes, not a task with its own timer and future (a node
//! with 100,000 checked endpoints had 100 MiB in probe tasks alone).
use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use super::{Change, GrpcProbe, HttpProbe, Probe, TcpProbe, UdpProbe};
use crate::model::health::{HealthCheck, ProbeKind};

/// At most this many probes run at once. When more are due, they wait their turn (in the
/// order they fell due): a probe then comes later than its interval (with 256 probes of 5 s
/// timeouts each, 51 a second), never more often.
pub const MAX_PROBES_IN_FLIGHT: usize = 256;

/// A backend address and port.
pub type Backend = (IpAddr, u16);

/// One check as the table holds it: what it asks and the probe that asks it.
pub struct CheckEntry {
    pub spec: HealthCheck,
    pub probe: AnyProbe,
}

/// The probe of each kind of check.
pub enum AnyProbe {
    Tcp(TcpProbe),
    Udp(UdpProbe),
    Http(HttpProbe),
    Grpc(GrpcProbe),
}

impl AnyProbe {
    fn of(check: &HealthCheck) -> AnyProbe {
        match &check.probe {
            ProbeKind::Tcp => AnyProbe::Tcp(TcpProbe),
            ProbeKind::Udp => AnyProbe::Udp(UdpProbe),
            ProbeKind::Http(http) => AnyProbe::Http(HttpProbe::new(http.clone(), check.proxy_protocol)),
            ProbeKind::Grpc(grpc) => AnyProbe::Grpc(GrpcProbe::new(grpc.clone(), check.proxy_protocol)),
        }
    }
}

impl Probe for AnyProbe {
    async fn check(&self, to: SocketAddr) -> bool {
        match self {
            AnyProbe::Tcp(p) => p.check(to).await,
            AnyProbe::Udp(p) => p.check(to).await,
            AnyProbe::Http(p) => p.check(to).await,
            AnyProbe::Grpc(p) => p.check(to).await,
        }
    }
}

/// A target's place in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId(u32);

/// A check's place in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CheckId(u32);

struct Slot {
    backend: Backend,
    check: u32,
    /// Bumped when the slot is let go: heap entries and probe results of an earlier target
    /// in the slot are recognised and dropped.
    generation: u32,
    healthy: bool,
    streak: u8,
}

/// When a slot's next probe is due (the heap's order: earliest first).
type Due = Reverse<(Instant, u32, u32)>;

/// The targets, their checks and when each is probed next.
#[derive(Default)]
pub struct Table {
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    checks: Vec<Option<Arc<CheckEntry>>>,
    /// How many targets ask for each check.
    check_targets: Vec<u32>,
    free_checks: Vec<u32>,
    due: BinaryHeap<Due>,
}

/// A probe to start: which slot (and which target in it), when it fell due, what to run.
struct Start {
    slot: u32,
    generation: u32,
    due: Instant,
    check: Arc<CheckEntry>,
    to: SocketAddr,
}

impl Table {
    /// A place for `check` (its probe made once, for every target it is asked of); let go
    /// when its last target goes, or by [`drop_unused`](Self::drop_unused).
    pub fn add_check(&mut self, check: &HealthCheck) -> CheckId {
        let entry = Some(Arc::new(CheckEntry { spec: check.clone(), probe: AnyProbe::of(check) }));
        match self.free_checks.pop() {
            Some(i) => {
                self.checks[i as usize] = entry;
                self.check_targets[i as usize] = 0;
                CheckId(i)
            }
            None => {
                self.checks.push(entry);
                self.check_targets.push(0);
                CheckId(self.checks.len() as u32 - 1)
            }
        }
    }

    /// Let go of `check` if no target asks for it; whether it was.
    pub fn drop_unused(&mut self, check: CheckId) -> bool {
        let unused = self.check_targets[check.0 as usize] == 0;
        if unused && self.checks[check.0 as usize].take().is_some() {
            self.free_checks.push(check.0);
        }
        unused
    }

    /// Start probing `backend` with `check`, healthy, at a point of its interval spread by
    /// the backend's hash (the probes of thousands of backends do not all start at once).
    pub fn add(&mut self, backend: Backend, check: CheckId, now: Instant) -> SlotId {
        let interval = self.entry(check.0).spec.interval;
        self.check_targets[check.0 as usize] += 1;
        let slot = Slot { backend, check: check.0, generation: 0, healthy: true, streak: 0 };
        let i = match self.free_slots.pop() {
            Some(i) => {
                let generation = self.slots[i as usize].generation;
                self.slots[i as usize] = Slot { generation, ..slot };
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() as u32 - 1
            }
        };
        self.due.push(Reverse((now + phase(backend, interval), i, self.slots[i as usize].generation)));
        SlotId(i)
    }

    /// Stop probing the target in `slot` (a probe of it still running is not counted);
    /// whether its check was let go with it (it was the check's last target).
    pub fn remove(&mut self, slot: SlotId) -> bool {
        let s = &mut self.slots[slot.0 as usize];
        s.generation = s.generation.wrapping_add(1);
        self.free_slots.push(slot.0);
        let check = CheckId(s.check);
        self.check_targets[check.0 as usize] -= 1;
        self.drop_unused(check)
    }

    /// How many targets are probed.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len() - self.free_slots.len()
    }

    fn entry(&self, check: u32) -> &Arc<CheckEntry> {
        self.checks[check as usize].as_ref().expect("a check in use is in the table")
    }

    /// The next probe due at `now`, if any (entries of targets gone are dropped on the way).
    fn next_start(&mut self, now: Instant) -> Option<Start> {
        while let Some(Reverse((due, slot, generation))) = self.due.peek().copied() {
            if due > now {
                return None;
            }
            self.due.pop();
            let s = &self.slots[slot as usize];
            if s.generation != generation {
                continue;
            }
            let check = self.entry(s.check).clone();
            let port = if check.spec.port == 0 { s.backend.1 } else { check.spec.port };
            return Some(Start { slot, generation, due, check, to: SocketAddr::new(s.backend.0, port) });
        }
        None
    }

    /// When the earliest probe falls due.
    fn earliest(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Take in a probe's result: the target's health changes after its check's threshold of
    /// results in a row that disagree with it. The next probe comes an interval after this
    /// one fell due (at once if this one ran longer; a probe that waited for its turn is not
    /// made up for).
    fn finish(&mut self, slot: u32, generation: u32, due: Instant, ok: bool, now: Instant) -> Option<Change> {
        if self.slots[slot as usize].generation != generation {
            return None;
        }
        let check = self.entry(self.slots[slot as usize].check).clone();
        let spec = &check.spec;
        self.due.push(Reverse(((due + spec.interval).max(now), slot, generation)));
        let s = &mut self.slots[slot as usize];
        if ok == s.healthy {
            s.streak = 0;
            return None;
        }
        s.streak += 1;
        let needed = if s.healthy { spec.unhealthy_threshold } else { spec.healthy_threshold };
        if s.streak < needed {
            return None;
        }
        s.healthy = ok;
        s.streak = 0;
        tracing::warn!(backend = %SocketAddr::new(s.backend.0, s.backend.1), healthy = ok, "backend health changed");
        Some(Change { backend: s.backend, check: spec.clone(), healthy: ok })
    }
}

/// The table and the prober's wake-up call (targets added may be due before it would wake).
#[derive(Default)]
pub struct Shared {
    pub table: Mutex<Table>,
    pub wake: Notify,
}

impl Shared {
    /// The table, locked (a panic elsewhere while it was held does not stop the probes).
    pub fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The prober: starts the probes that are due through `probe`, each bounded by its check's
/// timeout, and sends the health changes their results make on `tx`; returns when `tx` is
/// closed.
pub async fn run<F, Fut>(shared: Arc<Shared>, tx: mpsc::Sender<Change>, probe: F)
where
    F: Fn(Arc<CheckEntry>, SocketAddr) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let mut running = FuturesUnordered::new();
    loop {
        let next = {
            let mut table = shared.table();
            let now = Instant::now();
            while running.len() < MAX_PROBES_IN_FLIGHT {
                let Some(start) = table.next_start(now) else { break };
                let Start { slot, generation, due, check, to } = start;
                let timeout = check.spec.timeout;
                let asked = probe(check, to);
                running.push(async move {
                    let ok = matches!(tokio::time::timeout(timeout, asked).await, Ok(true));
                    (slot, generation, due, ok)
                });
            }
            // At the bound, the next start waits for a probe to end.
            if running.len() < MAX_PROBES_IN_FLIGHT { table.earliest() } else { None }
        };
        tokio::select! {
            Some((slot, generation, due, ok)) = running.next(), if !running.is_empty() => {
                let change = shared.table().finish(slot, generation, due, ok, Instant::now());
                if let Some(change) = change
                    && tx.send(change).await.is_err()
                {
                    return;
                }
            }
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {}
            _ = shared.wake.notified() => {}
            _ = tx.closed() => return,
        }
    }
}

/// Where in its interval a target's probes fall: spread by a hash of the backend, so the
/// probes of a model's thousands of backends do not all start in the same instant.
pub fn phase(backend: Backend, interval: Duration) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    backend.hash(&mut h);
    interval.mul_f64((h.finish() % 1024) as f64 / 1024.0)
}

#[cfg(test)]
pub(super) mod tests {
    use std::{
        collections::BTreeSet,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use super::*;
    use crate::model::ProxyProtocol;

    /// A TCP check every 100 ms on `port` (0: the backend's), 2 results in a row to turn.
    pub fn check(port: u16) -> HealthCheck {
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

    fn backend(i: u16) -> Backend {
        (IpAddr::from([10, 9, (i >> 8) as u8, i as u8]), 80)
    }

    /// Counts the probes running at once and per backend; each takes 50 ms and fails.
    #[derive(Default, Clone)]
    struct Slow {
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        done: Arc<Mutex<Vec<SocketAddr>>>,
    }

    impl Slow {
        fn probe(
            &self,
        ) -> impl Fn(Arc<CheckEntry>, SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send>> + use<>
        {
            let me = self.clone();
            move |_, to| {
                let me = me.clone();
                Box::pin(async move {
                    let n = me.now.fetch_add(1, Ordering::SeqCst) + 1;
                    me.most.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    me.now.fetch_sub(1, Ordering::SeqCst);
                    me.done.lock().unwrap().push(to);
                    false
                })
            }
        }
    }

    /// 1,000 backends whose probes would overlap ~500 at a time run at most
    /// MAX_PROBES_IN_FLIGHT at once (each probe holds a socket: a node with 100,000
    /// unreachable endpoints ran out of file descriptors), and every one still gets probed
    /// and turns unhealthy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probes_in_flight_are_bounded() {
        let shared = Arc::new(Shared::default());
        {
            let mut t = shared.table.lock().unwrap();
            let id = t.add_check(&check(0));
            for i in 0..1000 {
                t.add(backend(i), id, Instant::now());
            }
        }
        let slow = Slow::default();
        let (tx, mut rx) = mpsc::channel(2048);
        let prober = tokio::spawn(run(shared.clone(), tx, slow.probe()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let most = slow.most.load(Ordering::SeqCst);
        let probed: BTreeSet<SocketAddr> = slow.done.lock().unwrap().iter().copied().collect();
        prober.abort();
        assert!(most <= MAX_PROBES_IN_FLIGHT, "{most} probes at once");
        assert!(most > MAX_PROBES_IN_FLIGHT / 2, "the bound was never reached ({most}): the test proves nothing");
        assert_eq!(probed.len(), 1000, "every backend probed at least once");
        // Every backend failed twice in a row at least once: one change each.
        let mut changed = BTreeSet::new();
        while let Ok(c) = rx.try_recv() {
            assert!(!c.healthy);
            assert!(changed.insert(c.backend), "{:?} turned unhealthy twice", c.backend);
        }
        assert!(changed.len() > 900, "{} backends turned unhealthy", changed.len());
    }

    /// A target is probed once an interval (not more often, not less), on the port its check
    /// names; after it is removed it is probed no more, and a target that takes its slot is
    /// a new one (healthy, its own streak).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn targets_are_probed_each_interval_until_removed() {
        let shared = Arc::new(Shared::default());
        let (a, b) = {
            let mut t = shared.table.lock().unwrap();
            let (c80, c81) = (t.add_check(&check(0)), t.add_check(&check(81)));
            (t.add(backend(1), c80, Instant::now()), t.add(backend(2), c81, Instant::now()))
        };
        let seen: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let log = seen.clone();
        let (tx, mut rx) = mpsc::channel(64);
        let prober = tokio::spawn(run(shared.clone(), tx, move |_, to| {
            log.lock().unwrap().push(to);
            async { false }
        }));
        tokio::time::sleep(Duration::from_millis(1050)).await;
        let count = |to: SocketAddr| seen.lock().unwrap().iter().filter(|x| **x == to).count();
        let (to_a, to_b) = (SocketAddr::new(backend(1).0, 80), SocketAddr::new(backend(2).0, 81));
        // 100 ms interval, first probe within the first interval: 10 or 11 in 1.05 s.
        assert!((9..=11).contains(&count(to_a)), "{} probes of a", count(to_a));
        assert!((9..=11).contains(&count(to_b)), "{} probes of b on port 81", count(to_b));
        shared.table.lock().unwrap().remove(a);
        shared.table.lock().unwrap().remove(b);
        let after = count(to_a);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(count(to_a) <= after + 1, "a removed target is not probed (one may have been running)");
        assert_eq!(shared.table.lock().unwrap().len(), 0);
        let mut changes = BTreeSet::new();
        while let Ok(c) = rx.try_recv() {
            changes.insert(c.backend);
        }
        assert_eq!(changes, BTreeSet::from([backend(1), backend(2)]), "each turned unhealthy");
        prober.abort();
    }

    /// Thresholds: a target turns unhealthy after `unhealthy_threshold` failures in a row and
    /// healthy after `healthy_threshold` successes; a result of a target gone is dropped, even
    /// when another target took its slot (which starts healthy, with a streak of its own).
    #[test]
    fn results_count_for_the_target_they_were_probed_for() {
        let mut t = Table::default();
        let id = t.add_check(&HealthCheck { healthy_threshold: 3, ..check(0) });
        let now = Instant::now();
        // Another target keeps the check in the table.
        t.add(backend(3), id, now);
        let a = t.add(backend(1), id, now);
        let first = t.slots[a.0 as usize].generation;
        let finish = |t: &mut Table, generation, ok| t.finish(a.0, generation, now, ok, now).map(|c| c.healthy);
        assert_eq!(finish(&mut t, first, false), None);
        assert_eq!(finish(&mut t, first, true), None, "not in a row");
        assert_eq!(finish(&mut t, first, false), None);
        assert_eq!(finish(&mut t, first, false), Some(false));
        assert_eq!((finish(&mut t, first, true), finish(&mut t, first, true)), (None, None));
        assert_eq!(finish(&mut t, first, true), Some(true), "three successes");
        assert_eq!(finish(&mut t, first, false), None);
        t.remove(a);
        let b = t.add(backend(2), id, now);
        assert_eq!(b, a, "the slot is taken again");
        assert_eq!(finish(&mut t, first, false), None, "a's result");
        assert_eq!(finish(&mut t, first, false), None, "a's result");
        let second = t.slots[b.0 as usize].generation;
        assert_eq!(finish(&mut t, second, false), None, "b's own streak starts at its first failure");
        assert_eq!(finish(&mut t, second, false), Some(false));
        // Heap entries of a are skipped: only b's come out.
        let mut starts = 0;
        while let Some(start) = t.next_start(now + Duration::from_secs(10)) {
            if start.to.ip() != backend(3).0 {
                assert_eq!((start.slot, start.generation, start.to.ip()), (b.0, second, backend(2).0));
                starts += 1;
            }
        }
        assert!(starts > 0);
        // The check goes with its last target.
        assert!(!t.remove(b));
        assert!(t.remove(SlotId(0)) && t.checks[id.0 as usize].is_none());
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
}
