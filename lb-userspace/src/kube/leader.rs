//! Lease-based election of the one status writer among the DaemonSet's pods: the holder
//! renews a `coordination.k8s.io/v1` Lease; another pod takes it over once it has not been
//! renewed for its duration. Optimistic concurrency (the Lease's resourceVersion) makes
//! two pods never both win the same round.
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};
use tokio::{sync::watch, task::JoinSet};

/// Name of the Lease `lb`'s pods compete for.
pub const LEASE_NAME: &str = "lb-status-writer";

#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// Namespace of the Lease (the pods' own, `POD_NAMESPACE`).
    pub namespace: String,
    /// This pod's identity in the Lease (its node name: one pod per node).
    pub identity: String,
    /// A holder that has not renewed for this long loses the Lease.
    pub duration: Duration,
    /// How often the holder renews and the others check.
    pub retry: Duration,
}

impl LeaseOptions {
    pub fn new(namespace: String, identity: String) -> LeaseOptions {
        LeaseOptions { namespace, identity, duration: Duration::from_secs(15), retry: Duration::from_secs(5) }
    }
}

/// Start competing; the receiver says whether this pod holds the Lease.
pub fn spawn(client: Client, opts: LeaseOptions, tasks: &mut JoinSet<()>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tasks.spawn(run(Api::namespaced(client, &opts.namespace), opts, tx));
    rx
}

async fn run(api: Api<Lease>, opts: LeaseOptions, tx: watch::Sender<bool>) {
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let leader = match round(&api, &opts).await {
            Ok(true) => {
                last_renewed = Some(tokio::time::Instant::now());
                true
            }
            Ok(false) => false,
            Err(e) => {
                tracing::warn!(lease = LEASE_NAME, error = %e, "leader election: cannot read or renew the Lease");
                // Still the holder until the Lease could have been taken over.
                last_renewed.is_some_and(|t| t.elapsed() < opts.duration) && *tx.borrow()
            }
        };
        crate::metrics::set_leader(leader);
        tx.send_if_modified(|was| {
            if *was != leader {
                tracing::info!(identity = %opts.identity, leader, "status writer (Lease {LEASE_NAME})");
            }
            std::mem::replace(was, leader) != leader
        });
        tokio::time::sleep(opts.retry).await;
    }
}

/// One round: create, renew or take over the Lease. `Ok(true)` = this pod holds it now.
async fn round(api: &Api<Lease>, opts: &LeaseOptions) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
            spec: Some(holder_spec(opts, now, 0)),
        };
        return won(api.create(&PostParams::default(), &lease).await);
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let mine = spec.holder_identity.as_deref() == Some(opts.identity.as_str());
    if mine {
        lease.spec = Some(LeaseSpec { renew_time: Some(MicroTime(now)), ..spec });
    } else if expired(&spec, now) {
        let transitions = spec.lease_transitions.unwrap_or(0) + 1;
        lease.spec = Some(holder_spec(opts, now, transitions));
    } else {
        return Ok(false);
    }
    // `replace` sends the resourceVersion we read: a concurrent writer makes it fail (409).
    won(api.replace(LEASE_NAME, &PostParams::default(), &lease).await)
}

fn won(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
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

/// No holder, or not renewed within its duration.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let (Some(_), Some(renewed)) = (&spec.holder_identity, &spec.renew_time) else { return true };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    renewed.0 + duration < now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let now = Timestamp::now();
        let spec = |holder: Option<&str>, ago: i64| LeaseSpec {
            holder_identity: holder.map(Into::into),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(ago))),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!expired(&spec(Some("node-b"), 5), now));
        assert!(expired(&spec(Some("node-b"), 16), now));
        assert!(expired(&spec(None, 0), now));
        assert!(expired(&LeaseSpec::default(), now));
    }
}
