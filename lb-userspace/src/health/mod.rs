//! Active health checks (CLB `health-check-*`, ALB `healthcheck-*`): one task per checked
//! backend and check runs its [`Probe`] (TCP connect, HTTP status, UDP, gRPC health; see
//! [`probe`] and [`grpc`]). A backend turns unhealthy after `unhealthy_threshold` failures
//! in a row and healthy again after `healthy_threshold` successes; unhealthy backends get no
//! new flows (weight 0 in the datapath) from the listeners whose check failed (a backend
//! port behind a TCP and a UDP listener is judged by each listener's own probe), their
//! established flows go on. Backends start healthy.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use tokio::{sync::mpsc, task::JoinHandle};

pub use self::grpc::GrpcProbe;
pub use self::probe::{HttpProbe, Probe, TcpProbe, UdpProbe};
use crate::model::{
    Model,
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
#[derive(Default)]
pub struct Checker {
    tasks: BTreeMap<Target, JoinHandle<()>>,
    unhealthy: BTreeSet<Target>,
    /// The backends unhealthy under at least one check.
    any_unhealthy: BTreeSet<(IpAddr, u16)>,
}

impl Checker {
    /// Run exactly the probes `model` asks for; changes arrive on `tx`.
    pub fn sync(&mut self, model: &Model, tx: &mpsc::Sender<Change>) {
        let mut wanted: BTreeSet<Target> = model
            .listeners
            .values()
            .filter_map(|l| l.health_check.as_ref().map(|h| (l, h)))
            .flat_map(|(l, h)| l.backends.iter().map(move |b| ((b.addr, b.port), h.clone())))
            .collect();
        for u in model.l7.values().flat_map(|l| l.routes.iter().chain(&l.canaries)).flat_map(|r| &r.upstreams) {
            if let Some(h) = &u.health_check {
                wanted.extend(u.endpoints.iter().map(|e| ((e.addr.ip(), e.addr.port()), h.clone())));
            }
        }
        self.tasks.retain(|k, task| {
            let keep = wanted.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        self.unhealthy.retain(|t| wanted.contains(t));
        self.any_unhealthy = self.unhealthy.iter().map(|(b, _)| *b).collect();
        for (backend, check) in wanted {
            if !self.tasks.contains_key(&(backend, check.clone())) {
                let task = spawn(backend, check.clone(), tx.clone());
                self.tasks.insert((backend, check), task);
            }
        }
    }

    pub fn record(&mut self, c: Change) {
        let target = (c.backend, c.check);
        if c.healthy {
            self.unhealthy.remove(&target);
        } else if self.tasks.contains_key(&target) {
            self.unhealthy.insert(target);
        }
        self.any_unhealthy = self.unhealthy.iter().map(|(b, _)| *b).collect();
    }

    fn is_unhealthy(&self, backend: (IpAddr, u16), check: &Option<HealthCheck>) -> bool {
        check.as_ref().is_some_and(|h| self.unhealthy.contains(&(backend, h.clone())))
    }

    /// `model` with unhealthy backends at weight 0 (no new flows).
    pub fn effective(&self, model: &Model) -> Model {
        let mut m = model.clone();
        if self.unhealthy.is_empty() {
            return m;
        }
        for l in m.listeners.values_mut() {
            for b in &mut l.backends {
                if self.is_unhealthy((b.addr, b.port), &l.health_check) {
                    b.weight = 0;
                }
            }
        }
        for l in m.l7.values_mut() {
            for u in l.routes.iter_mut().chain(l.canaries.iter_mut()).flat_map(|r| &mut r.upstreams) {
                for e in &mut u.endpoints {
                    if self.is_unhealthy((e.addr.ip(), e.addr.port()), &u.health_check) {
                        e.weight = 0;
                    }
                }
            }
        }
        m
    }

    /// Every backend a probe runs for.
    pub fn checked(&self) -> BTreeSet<(IpAddr, u16)> {
        self.tasks.keys().map(|(b, _)| *b).collect()
    }

    /// The backends unhealthy under at least one of their checks.
    pub fn unhealthy(&self) -> &BTreeSet<(IpAddr, u16)> {
        &self.any_unhealthy
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
fn spawn(backend: (IpAddr, u16), check: HealthCheck, tx: mpsc::Sender<Change>) -> JoinHandle<()> {
    match &check.probe {
        ProbeKind::Tcp => tokio::spawn(run(TcpProbe, backend, check, tx)),
        ProbeKind::Udp => tokio::spawn(run(UdpProbe, backend, check, tx)),
        ProbeKind::Http(http) => {
            let probe = HttpProbe::new(http.clone(), check.proxy_protocol);
            tokio::spawn(run(probe, backend, check, tx))
        }
        ProbeKind::Grpc(grpc) => {
            let probe = GrpcProbe::new(grpc.clone(), check.proxy_protocol);
            tokio::spawn(run(probe, backend, check, tx))
        }
    }
}

async fn run(probe: impl Probe, backend: (IpAddr, u16), check: HealthCheck, tx: mpsc::Sender<Change>) {
    let (mut healthy, mut streak) = (true, 0u8);
    let to = SocketAddr::new(backend.0, if check.port == 0 { backend.1 } else { check.port });
    loop {
        tokio::time::sleep(check.interval).await;
        let ok = matches!(tokio::time::timeout(check.timeout, probe.check(to)).await, Ok(true));
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
