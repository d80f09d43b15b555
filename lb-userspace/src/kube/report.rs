//! The status writer's background task: after each applied build, Events for the rejected
//! objects ([`events`](super::events)) and `status.loadBalancer` of the served Services and
//! Ingresses ([`status`](super::status)). Only the latest report matters: one that arrives
//! while the previous is being written replaces any still waiting.
use std::{sync::Arc, time::Duration};

use kube::Client;
use tokio::{
    sync::watch,
    task::{AbortHandle, JoinSet},
};

pub use super::outcome::Report;
use super::{KubeOptions, events::EventWriter, status::StatusWriter, watch::Stores};

/// Where reports go.
pub struct Handle {
    tx: watch::Sender<Option<Arc<Report>>>,
    writer: AbortHandle,
    election: Option<super::leader::Election>,
}

impl Handle {
    /// Start the writer task on `tasks`.
    pub fn spawn(client: Client, stores: Stores, opts: &KubeOptions, tasks: &mut JoinSet<()>) -> Handle {
        let (tx, rx) = watch::channel(None);
        let instance = opts.node_name.clone().unwrap_or_else(|| "lb".into());
        let events = EventWriter::new(client.clone(), stores.clone(), instance.clone());
        let node_events = EventWriter::for_node(client.clone(), stores.clone(), instance);
        let status = StatusWriter::new(client.clone(), stores, opts);
        let election = opts.leader_election.clone().map(|l| super::leader::spawn(client, l, tasks));
        let leader = election.as_ref().map(|e| e.leader.clone());
        let writer = tasks.spawn(run(rx, leader, Writers { events, node_events, status }));
        Handle { tx, writer, election }
    }

    /// Stop writing, then release the Lease if this pod holds it.
    pub async fn shutdown(&mut self) {
        self.writer.abort();
        if let Some(election) = &mut self.election {
            election.release().await;
        }
    }

    pub fn send(&self, report: Report) {
        self.tx.send_replace(Some(Arc::new(report)));
    }
}

/// The first wait before a report some of whose writes failed is written again, and the
/// longest (the wait doubles each time).
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// What a report is written with.
struct Writers {
    /// The cluster's errors: the holder's only, with leader election.
    events: EventWriter,
    /// This node's own errors: every node's.
    node_events: EventWriter,
    status: StatusWriter,
}

/// Write each new report; with leader election, only while holding the Lease (but for this
/// node's own errors, which every node records), and the latest report again on becoming the
/// holder. A report some of whose writes failed (the API server unavailable a moment) is
/// written again after a backoff, unless a newer one comes first: a new Service's address or
/// a rejection's Event no longer waits for some other object to change.
async fn run(mut rx: watch::Receiver<Option<Arc<Report>>>, mut leader: Option<watch::Receiver<bool>>, mut w: Writers) {
    let mut retry: Option<Duration> = None;
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            () = became_leader(&mut leader) => {}
            () = after(retry) => {}
        }
        let Some(report) = rx.borrow_and_update().clone() else { continue };
        // The holder's status and the objects' Events first: the node's own may be many.
        let holder = leader.as_ref().is_none_or(|l| *l.borrow());
        let status_written = !holder || w.status.sync(&report).await;
        let events_written = !holder || w.events.sync(&report.errors).await;
        let node_written = w.node_events.sync(&report.node_errors).await;
        retry = if node_written && events_written && status_written {
            None
        } else {
            let wait = retry.map_or(RETRY_FIRST, |d| (d * 2).min(RETRY_MAX));
            tracing::info!(wait_s = wait.as_secs(), "some status or Event writes failed: writing again");
            Some(wait)
        };
    }
}

/// Resolves `wait` from now; never without one.
async fn after(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resolves when this pod becomes the Lease holder; never without leader election.
async fn became_leader(leader: &mut Option<watch::Receiver<bool>>) {
    let Some(rx) = leader else { return std::future::pending().await };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *rx.borrow_and_update() {
            return;
        }
    }
}
