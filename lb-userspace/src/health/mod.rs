//! Active health checks (CLB `health-check-*`, ALB `healthcheck-*`): every checked backend
//! under each of its checks is a target of one probe [`schedule`], worked through by a single
//! task that runs the check's [`Probe`] (TCP connect, HTTP status, UDP, gRPC health; see
//! [`probe`] and [`grpc`]) once an interval, at a point of it spread by the backend's hash,
//! with at most [`MAX_PROBES_IN_FLIGHT`] probes running at once on the node. A backend turns
//! unhealthy after `unhealthy_threshold` failures in a row and healthy again after
//! `healthy_threshold` successes; unhealthy backends get no new flows (weight 0 in the
//! datapath) from the listeners whose check failed (a backend port behind a TCP and a UDP
//! listener is judged by each listener's own probe), their established flows go on.
//! Backends start healthy.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use tokio::{sync::mpsc, task::JoinHandle};

pub use self::grpc::GrpcProbe;
pub use self::probe::{HttpProbe, Probe, TcpProbe, UdpProbe};
pub use self::schedule::MAX_PROBES_IN_FLIGHT;
use self::schedule::{Backend, CheckId, Shared, SlotId};
use crate::model::{L4Listener, Model, health::HealthCheck};

mod grpc;
mod probe;
mod schedule;

/// A health change of one backend under one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub backend: (IpAddr, u16),
    pub check: HealthCheck,
    pub healthy: bool,
}

/// A backend under one of the checks of the table.
type Target = (Backend, CheckId);

/// The probes running for a model; a target's probe keeps going while any listener or route
/// asks for it, and starts or stops only when one whose check or backends changed does.
#[derive(Default)]
pub struct Checker {
    /// The probe table and the task working through it (started with the first target).
    shared: Arc<Shared>,
    prober: Option<JoinHandle<()>>,
    /// Each target's slot and how many listeners and routes ask for it.
    targets: HashMap<Target, (SlotId, u32)>,
    /// The checks in the table.
    checks: HashMap<HealthCheck, CheckId>,
    unhealthy: BTreeSet<(Backend, HealthCheck)>,
    /// The backends unhealthy under at least one check, and under how many.
    unhealthy_checks: BTreeMap<Backend, u32>,
    /// What each L4 listener (by name) asked to be checked at the last sync, and what the L7
    /// routes did.
    inputs: crate::model::Listeners,
    l7_inputs: Vec<(Backend, HealthCheck)>,
    /// The model's L4 listeners at the last [`effective`](Self::effective), and what it gave.
    from: crate::model::Listeners,
    out: Model,
    /// Backends whose health changed since the last [`effective`](Self::effective).
    changed: HashSet<Backend>,
}

/// The backends an L4 listener asks to be checked, and under which check.
fn asked(l: &L4Listener) -> Option<(&HealthCheck, impl Iterator<Item = Backend> + '_)> {
    l.health_check.as_ref().map(|h| (h, l.backends.iter().map(|b| (b.addr, b.port))))
}

impl Checker {
    /// Run exactly the probes `model` asks for; changes arrive on `tx`. Only listeners whose
    /// check or backends changed since the last sync are gone through target by target (a
    /// target shared by several listeners is probed once, while any of them asks for it).
    pub fn sync(&mut self, model: &Model, tx: &mpsc::Sender<Change>) {
        let (mut gone, mut new): (Vec<(Backend, HealthCheck)>, Vec<Target>) = (Vec::new(), Vec::new());
        let mut table = self.shared.table();
        // Checks put in the table now (let go at the end if no target asks for them).
        let mut fresh: Vec<HealthCheck> = Vec::new();
        let mut intern = |h: &HealthCheck| match self.checks.get(h) {
            Some(id) => *id,
            None => {
                let id = table.add_check(h);
                self.checks.insert(h.clone(), id);
                fresh.push(h.clone());
                id
            }
        };
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
            if same {
                continue;
            }
            if let Some((h, backends)) = after.as_deref().and_then(asked) {
                let id = intern(h);
                new.extend(backends.map(|b| (b, id)));
            }
            if let Some((h, backends)) = before.as_deref().and_then(asked) {
                gone.extend(backends.map(|b| (b, h.clone())));
            }
        }
        self.inputs = model.listeners.clone();
        let mut l7: Vec<(Backend, HealthCheck)> = Vec::new();
        for u in model.l7.values().flat_map(|l| l.routes.iter().chain(&l.canaries)).flat_map(|r| &r.upstreams) {
            if let Some(h) = &u.health_check {
                l7.extend(u.endpoints.iter().map(|e| ((e.addr.ip(), e.addr.port()), h.clone())));
            }
        }
        if l7 != self.l7_inputs {
            new.extend(l7.iter().map(|(b, h)| (*b, intern(h))));
            gone.append(&mut std::mem::replace(&mut self.l7_inputs, l7));
        }
        // Added first: a target that moved from one listener to another keeps its probe.
        let now = tokio::time::Instant::now();
        let added = !new.is_empty();
        for target in new {
            let (_, refs) = self.targets.entry(target).or_insert_with(|| (table.add(target.0, target.1, now), 0));
            *refs += 1;
        }
        let mut dropped = false;
        for (backend, h) in gone {
            let Some(id) = self.checks.get(&h).copied() else { continue };
            let Some((slot, refs)) = self.targets.get_mut(&(backend, id)) else { continue };
            *refs -= 1;
            if *refs > 0 {
                continue;
            }
            if table.remove(*slot) {
                self.checks.remove(&h);
            }
            self.targets.remove(&(backend, id));
            if self.unhealthy.remove(&(backend, h)) {
                self.changed.insert(backend);
                dropped = true;
            }
        }
        for h in fresh {
            if let Some(id) = self.checks.get(&h)
                && table.drop_unused(*id)
            {
                self.checks.remove(&h);
            }
        }
        drop(table);
        if added {
            match &self.prober {
                Some(p) if !p.is_finished() => self.shared.wake.notify_one(),
                _ => {
                    let probe = |c: Arc<schedule::CheckEntry>, to| async move { c.probe.check(to).await };
                    self.prober = Some(tokio::spawn(schedule::run(self.shared.clone(), tx.clone(), probe)));
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
        } else if self.checks.get(&target.1).is_some_and(|id| self.targets.contains_key(&(backend, *id)))
            && self.unhealthy.insert(target)
        {
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
        self.targets.keys().map(|(b, _)| *b).collect()
    }

    /// The backends unhealthy under at least one of their checks (the keys), and under how
    /// many.
    pub fn unhealthy(&self) -> &BTreeMap<(IpAddr, u16), u32> {
        &self.unhealthy_checks
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        if let Some(prober) = &self.prober {
            prober.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{schedule::tests::check, *};

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
        assert!(probed(&c).is_empty() && c.inputs.is_empty());
        assert!(c.checks.is_empty() && c.shared.table.lock().unwrap().len() == 0, "the table is empty");
    }

    /// A backend unhealthy under two checks stays unhealthy until both recover.
    #[tokio::test]
    async fn a_backend_is_unhealthy_while_any_check_fails() {
        let mut checker = Checker::default();
        let backend = (IpAddr::from([10, 0, 0, 1]), 80);
        let (tx, _rx) = mpsc::channel(16);
        let mut two = model(&[("a", &[1]), ("b", &[1])]);
        let mut b = (*two.listeners["b"]).clone();
        b.health_check = Some(check(81));
        two.listeners.insert("b".into(), Arc::new(b));
        checker.sync(&two, &tx);
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
