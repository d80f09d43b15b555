//! Lease-based election of the one status writer among the DaemonSet's pods, as client-go's
//! leaderelection does it: the holder renews a `coordination.k8s.io/v1` Lease; another pod
//! takes it over once the Lease has not changed for its duration, timed by this pod's own
//! monotonic clock from when it last saw a change (never by comparing the holder's
//! `renewTime` with the local clock, so clock skew between nodes does not matter). The
//! holder stops writing when it could not renew within the renew deadline (2/3 of the
//! duration, even while a request hangs), before anyone may take over. On shutdown the holder releases the Lease
//! (no holder, duration 1 s, as client-go's `ReleaseOnCancel`) so another pod takes over at
//! once. Optimistic concurrency (the Lease's resourceVersion) makes two pods never both win
//! the same round.
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::{
    sync::{oneshot, watch},
    task::JoinSet,
    time::Instant,
};

/// Name of the Lease `lb`'s pods compete for.
pub const LEASE_NAME: &str = "lb-status-writer";

/// How long shutdown waits for the release of the Lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// Namespace of the Lease (the pods' own, `POD_NAMESPACE`).
    pub namespace: String,
    /// This pod's identity in the Lease (its node name: one pod per node).
    pub identity: String,
    /// A Lease that has not changed for this long may be taken over.
    pub duration: Duration,
    /// How often the holder renews and the others check.
    pub retry: Duration,
}

impl LeaseOptions {
    pub fn new(namespace: String, identity: String) -> LeaseOptions {
        LeaseOptions { namespace, identity, duration: Duration::from_secs(15), retry: Duration::from_secs(5) }
    }

    /// The holder stops writing when it has not renewed for this long (client-go's
    /// RenewDeadline), well before another pod may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// The running election.
pub struct Election {
    /// Whether this pod holds the Lease.
    pub leader: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl Election {
    /// Stop competing and, if this pod holds the Lease, release it (at most a few seconds).
    pub async fn release(&mut self) {
        if let (Some(stop), Some(done)) = (self.stop.take(), self.done.take()) {
            let _ = stop.send(());
            if tokio::time::timeout(RELEASE_TIMEOUT, done).await.is_err() {
                tracing::warn!(lease = LEASE_NAME, "releasing the Lease took too long; it expires by itself");
            }
        }
    }
}

/// Start competing on `tasks`.
pub fn spawn(client: Client, opts: LeaseOptions, tasks: &mut JoinSet<()>) -> Election {
    let (tx, rx) = watch::channel(false);
    let (stop_tx, stop_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let elector = Elector { api: Api::namespaced(client, &opts.namespace), opts, observed: None, renewed: None };
    tasks.spawn(async move {
        elector.run(tx, stop_rx).await;
        let _ = done_tx.send(());
    });
    Election { leader: rx, stop: Some(stop_tx), done: Some(done_rx) }
}

/// What identifies one version of the Lease: a renewal changes it.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    resource_version: Option<String>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.as_ref();
        Record {
            holder: spec.and_then(|s| s.holder_identity.clone()).filter(|h| !h.is_empty()),
            renew_time: spec.and_then(|s| s.renew_time.clone()),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

struct Elector {
    api: Api<Lease>,
    opts: LeaseOptions,
    /// The Lease as last seen, and when (this pod's monotonic clock) it was first seen so.
    observed: Option<(Record, Instant)>,
    /// When the last renewal that succeeded was sent.
    renewed: Option<Instant>,
}

impl Elector {
    async fn run(mut self, tx: watch::Sender<bool>, mut stop: oneshot::Receiver<()>) {
        loop {
            // The holder steps down at its renew deadline even while a request hangs.
            let deadline = self.renewed.filter(|_| *tx.borrow()).map(|t| t + self.opts.renew_deadline());
            let step_down = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let outcome = tokio::select! {
                r = tokio::time::timeout(self.opts.duration, self.round()) => Some(r),
                () = step_down => None,
            };
            let leader = match outcome {
                Some(Ok(Ok(held))) => held,
                None => {
                    tracing::warn!(lease = LEASE_NAME, "leader election: not renewed within the renew deadline");
                    false
                }
                Some(failed) => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer".to_string(),
                    };
                    tracing::warn!(lease = LEASE_NAME, %error, "leader election: cannot read or renew the Lease");
                    // Still the holder until the renew deadline: nobody may take over before
                    // the Lease's duration has passed unchanged.
                    *tx.borrow() && self.renewed.is_some_and(|t| t.elapsed() < self.opts.renew_deadline())
                }
            };
            publish(&tx, leader, &self.opts.identity);
            // The next try, or the renew deadline if it comes first: a holder whose last try
            // failed does not write past it while it waits.
            let mut wake = Instant::now() + self.opts.retry;
            if let Some(renewed) = self.renewed.filter(|_| leader) {
                wake = wake.min(renewed + self.opts.renew_deadline());
            }
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        // Stop writing first, then hand the Lease over.
        let was_leader = *tx.borrow();
        publish(&tx, false, &self.opts.identity);
        if was_leader {
            match self.release().await {
                Ok(true) => tracing::info!(identity = %self.opts.identity, "released the Lease {LEASE_NAME}"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = LEASE_NAME, error = %e, "cannot release the Lease; it expires by itself")
                }
            }
        }
    }

    /// One round: create, renew or take over the Lease. `Ok(true)` = this pod holds it now.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let started = Instant::now();
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
                spec: Some(holder_spec(&self.opts, now, 0)),
            };
            let created = self.api.create(&PostParams::default(), &lease).await;
            return self.won(created, started);
        };
        let record = Record::of(&lease);
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != record) {
            self.observed = Some((record.clone(), started));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        if record.holder.as_deref() == Some(self.opts.identity.as_str()) {
            lease.spec = Some(LeaseSpec { renew_time: Some(MicroTime(now)), ..spec });
        } else if record.holder.is_none() || self.expired(&spec, started) {
            let transitions = spec.lease_transitions.unwrap_or(0) + 1;
            lease.spec = Some(holder_spec(&self.opts, now, transitions));
        } else {
            return Ok(false);
        }
        // `replace` sends the resourceVersion we read: a concurrent writer makes it fail (409).
        let replaced = self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await;
        self.won(replaced, started)
    }

    /// The Lease another pod holds has not changed for its duration, by this pod's clock.
    fn expired(&self, spec: &LeaseSpec, now: Instant) -> bool {
        let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(0));
        self.observed.as_ref().is_none_or(|(_, seen)| now.saturating_duration_since(*seen) >= duration)
    }

    fn won(&mut self, result: Result<Lease, kube::Error>, started: Instant) -> Result<bool, kube::Error> {
        match result {
            Ok(lease) => {
                self.renewed = Some(started);
                self.observed = Some((Record::of(&lease), started));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Empty the Lease if this pod still holds it. `Ok(true)`: released.
    async fn release(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else { return Ok(false) };
        if Record::of(&lease).holder.as_deref() != Some(self.opts.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions);
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: transitions,
            ..Default::default()
        });
        match self.api.replace(LEASE_NAME, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn publish(tx: &watch::Sender<bool>, leader: bool, identity: &str) {
    crate::metrics::set_leader(leader);
    tx.send_if_modified(|was| {
        if *was != leader {
            tracing::info!(identity, leader, "status writer (Lease {LEASE_NAME})");
        }
        std::mem::replace(was, leader) != leader
    });
}

fn holder_spec(opts: &LeaseOptions, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(opts.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(opts.duration.as_secs().max(1)).unwrap_or(i32::MAX)),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}
