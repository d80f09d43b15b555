//! The L7 proxy: serves the model's L7 listeners (ALB Ingresses, CLB http/https ports) with
//! HTTP/1.1, HTTP/2 and TLS. [`Proxy::apply`] reconciles the running listeners with the
//! model: a changed routing table or certificate set is swapped atomically (requests in
//! flight finish on the table they started with), listeners are added or drained one by
//! one without touching the others, and a listener whose new settings are bad keeps its
//! last good ones.
mod answering;
pub mod balance;
pub mod cli;
mod deadline;
pub mod drain;
pub mod forward;
pub mod gzip;
pub mod h1;
mod h2_upstream;
pub mod headers;
pub mod ipc;
pub mod limits;
mod listener;
pub mod matching;
mod mirror;
pub mod pool;
pub mod process;
mod readahead;
pub mod respond;
pub mod router;
pub mod sanitize;
pub mod send;
mod serve_h1;
pub mod server;
mod session;
mod spare_maps;
pub mod sticky;
pub mod supervise;
mod ticker;
pub mod upstreams;
pub mod workers;
mod write_h1;

use std::{
    collections::{BTreeMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;

use crate::{
    model::l7::{Endpoint, L7Listener},
    tls,
};
use limits::ConnectionGate;
pub use limits::Limits;
use router::Table;
use server::ListenerState;
use upstreams::Upstreams;
use workers::Workers;

/// Why a listener could not be (re)configured; the rest of the proxy is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("L7 listener {listener}: {reason}")]
pub struct ProxyError {
    pub listener: String,
    pub reason: String,
}

struct Running {
    config: L7Listener,
    state: Arc<ListenerState>,
    drain: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    addrs: Vec<SocketAddr>,
}

impl Running {
    /// Stops accepting and drains the listener's connections (each closed by the drain
    /// deadline at the latest).
    fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.drain.send(true);
    }
}

/// The running L7 listeners.
pub struct Proxy {
    running: BTreeMap<String, Running>,
    upstreams: Arc<Upstreams>,
    /// Where listeners without an address (ALB) bind: every address of the node by default.
    bind_all: Vec<IpAddr>,
    limits: Limits,
    /// Clients whose forwarding headers reach backends (none by default).
    trusted: Arc<[ipnet::IpNet]>,
    /// Where listeners are served: one accepting socket per worker and address. `None`: the
    /// runtime [`Proxy::apply`] runs in.
    workers: Option<Workers>,
    /// Listeners of the last apply that could not start (a port taken, an address not yet
    /// there), tried again by [`Proxy::retry_failed`].
    failed: BTreeMap<String, L7Listener>,
    /// The other errors of the last apply (certificates a running listener could not take).
    other_errors: Vec<ProxyError>,
}

impl Default for Proxy {
    fn default() -> Proxy {
        Proxy::new(vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)])
    }
}

impl Proxy {
    pub fn new(bind_all: Vec<IpAddr>) -> Proxy {
        Proxy::with_limits(bind_all, Limits::default())
    }

    /// A proxy whose listeners have `limits` instead of the defaults.
    pub fn with_limits(bind_all: Vec<IpAddr>, limits: Limits) -> Proxy {
        Proxy {
            running: BTreeMap::new(),
            upstreams: Arc::new(Upstreams::new()),
            bind_all,
            limits,
            trusted: Arc::from(Vec::new()),
            workers: None,
            failed: BTreeMap::new(),
            other_errors: Vec::new(),
        }
    }

    /// Serves listeners on `workers` (one accepting socket per worker and address) instead
    /// of the runtime [`Proxy::apply`] runs in. Applies to listeners started from now on.
    pub fn with_workers(mut self, workers: Workers) -> Proxy {
        self.workers = Some(workers);
        self
    }

    /// Keeps the forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) of clients
    /// within `nets` (proxies in front of this one); every other client's are removed.
    /// Applies to listeners started from now on.
    pub fn with_trusted_proxies(mut self, nets: Vec<ipnet::IpNet>) -> Proxy {
        self.trusted = Arc::from(nets);
        self
    }

    /// The addresses each listener is bound to.
    pub fn bound(&self) -> BTreeMap<String, Vec<SocketAddr>> {
        self.running.iter().map(|(k, r)| (k.clone(), r.addrs.clone())).collect()
    }

    /// Makes the running listeners those of `wanted`. Must run inside a tokio runtime.
    pub fn apply(&mut self, wanted: &BTreeMap<String, L7Listener>) -> Vec<ProxyError> {
        let mut errors = Vec::new();
        self.failed.clear();
        self.other_errors.clear();
        let endpoints: HashSet<SocketAddr> = wanted
            .values()
            .flat_map(|l| l.routes.iter().chain(&l.canaries))
            .flat_map(|r| &r.upstreams)
            .flat_map(|u| &u.endpoints)
            .map(|e| e.addr)
            .collect();
        self.upstreams.ages.update(endpoints.iter().copied());
        self.upstreams.h2.retain(|a| endpoints.contains(a));
        let drain = self.limits.drain_timeout;
        // With `connection-drain` on, an endpoint that fails its health check (weight 0) leaves
        // as a removed one does ("after a pod is removed or fails a health check").
        self.upstreams.departures.update(wanted.values().flat_map(|l| l.routes.iter().chain(&l.canaries)).flat_map(
            |r| {
                let annotated = r.rule.backend.drain_timeout_s;
                let d = annotated.map_or(drain, |s| Duration::from_secs(u64::from(s)));
                let staying = move |e: &&Endpoint| annotated.is_none() || e.weight > 0;
                r.upstreams.iter().flat_map(|u| &u.endpoints).filter(staying).map(move |e| (e.addr, d))
            },
        ));
        let gone: Vec<String> = self.running.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for key in gone {
            if let Some(r) = self.running.remove(&key) {
                tracing::info!(listener = %key, "L7 listener removed: draining its connections");
                r.stop();
            }
        }
        for (key, config) in wanted {
            let err = |reason: String| ProxyError { listener: key.clone(), reason };
            match self.running.get_mut(key) {
                Some(r) if r.config == *config => {}
                Some(r) => {
                    match tls_config(config) {
                        Ok(tls) => r.state.tls.store(tls),
                        Err(e) => {
                            let e = err(format!("{e}; the previous certificates keep serving"));
                            self.other_errors.push(e.clone());
                            errors.push(e)
                        }
                    }
                    let table = Table::replacing(config.clone(), &self.upstreams.active, Some(&r.state.table.load()));
                    r.state.table.store(Arc::new(table));
                    r.config = config.clone();
                    tracing::info!(listener = %key, routes = config.routes.len(), "L7 routes swapped");
                }
                None => match self.start(config) {
                    Ok(r) => {
                        tracing::info!(listener = %key, addrs = ?r.addrs, "L7 listener started");
                        self.running.insert(key.clone(), r);
                    }
                    Err(reason) => {
                        self.failed.insert(key.clone(), config.clone());
                        errors.push(err(reason))
                    }
                },
            }
        }
        errors
    }

    /// Start again the listeners of the last apply that could not start; the last apply's
    /// errors that remain (those still failing, and the others). Nothing else changes.
    pub fn retry_failed(&mut self) -> Vec<ProxyError> {
        let mut errors = self.other_errors.clone();
        for (key, config) in std::mem::take(&mut self.failed) {
            match self.start(&config) {
                Ok(r) => {
                    tracing::info!(listener = %key, addrs = ?r.addrs, "L7 listener started on a new try");
                    self.running.insert(key, r);
                }
                Err(reason) => {
                    errors.push(ProxyError { listener: key.clone(), reason });
                    self.failed.insert(key, config);
                }
            }
        }
        errors
    }

    /// Whether listeners of the last apply wait for [`Proxy::retry_failed`].
    pub fn has_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    fn start(&self, config: &L7Listener) -> Result<Running, String> {
        let tls = tls_config(config).map_err(|e| e.to_string())?;
        let addrs: Vec<SocketAddr> = match config.addr {
            Some(a) => vec![SocketAddr::new(a, config.port)],
            None => self.bind_all.iter().map(|a| SocketAddr::new(*a, config.port)).collect(),
        };
        let current;
        let workers = match &self.workers {
            Some(w) => w,
            None => {
                current = Workers::current();
                &current
            }
        };
        // Per address, a socket per worker in one SO_REUSEPORT group: the first decides the
        // port (an ephemeral one when the listener asks for port 0), the others join it.
        let mut sockets = Vec::new();
        for a in &addrs {
            let first = server::bind(*a).map_err(|e| format!("binding {a}: {e}"))?;
            let bound = first.local_addr().map_err(|e| format!("binding {a}: {e}"))?;
            let mut group = vec![first];
            for _ in 1..workers.len() {
                group.push(server::bind(bound).map_err(|e| format!("binding {bound}: {e}"))?);
            }
            sockets.push(group);
        }
        let (drain, drain_rx) = watch::channel(false);
        let (stop, _) = watch::channel(false);
        let state = Arc::new(ListenerState {
            counters: Default::default(),
            table: ArcSwap::from_pointee(Table::new(config.clone(), &self.upstreams.active)),
            tls: ArcSwapOption::new(tls),
            upstreams: self.upstreams.clone(),
            drain: drain_rx,
            limits: self.limits,
            gate: ConnectionGate::new(self.limits),
            trusted: self.trusted.clone(),
        });
        let addrs = sockets.iter().filter_map(|g| g[0].local_addr().ok()).collect();
        let mut listeners = Vec::new();
        for group in sockets {
            for (s, worker) in group.into_iter().zip(workers.handles()) {
                // Registered with the worker's reactor, served by the worker alone.
                let _guard = worker.enter();
                let s = tokio::net::TcpListener::from_std(s).map_err(|e| format!("listening socket: {e}"))?;
                listeners.push((s, worker));
            }
        }
        for (s, worker) in listeners {
            worker.spawn(server::accept_loop(s, state.clone(), stop.subscribe()));
        }
        Ok(Running { config: config.clone(), state, drain, stop, addrs })
    }

    /// Counters of every running listener, by key.
    pub fn stats(&self) -> serde_json::Value {
        let m: serde_json::Map<String, serde_json::Value> =
            self.running.iter().map(|(k, r)| (k.clone(), r.state.counters.to_json())).collect();
        serde_json::Value::Object(m)
    }

    /// The counters of every running listener, by key (read by `/metrics`).
    pub fn counters(&self) -> impl Iterator<Item = (&str, &server::Counters)> {
        self.running.iter().map(|(k, r)| (k.as_str(), &r.state.counters))
    }

    /// Stops accepting everywhere and lets connections finish within the drain timeout. The
    /// endpoints are not removed: a route's `connection-drain-timeout` (which may be shorter,
    /// or 0) is for an endpoint leaving its route, not for the proxy stopping.
    pub fn shutdown(&mut self) {
        for (_, r) in std::mem::take(&mut self.running) {
            r.stop();
        }
    }

    /// Stops accepting everywhere, lets requests in flight finish and closes keep-alive
    /// connections; returns when every connection is closed or the drain timeout is over
    /// (connections still open then are closed by their own deadline).
    pub async fn shutdown_gracefully(&mut self) {
        let states: Vec<Arc<ListenerState>> = self.running.values().map(|r| r.state.clone()).collect();
        self.shutdown();
        let open: usize = states.iter().map(|s| s.gate.open()).sum();
        tracing::info!(
            connections = open,
            timeout_s = self.limits.drain_timeout.as_secs(),
            "draining the L7 connections"
        );
        let deadline = tokio::time::Instant::now() + self.limits.drain_timeout + Duration::from_secs(1);
        while states.iter().any(|s| s.gate.open() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn tls_config(config: &L7Listener) -> Result<Option<Arc<rustls::ServerConfig>>, tls::TlsError> {
    match &config.tls {
        None => Ok(None),
        Some(t) if t.certificates.is_empty() => {
            Err(tls::TlsError::Config("an HTTPS listener without any certificate (no usable TLS Secret)".into()))
        }
        Some(t) => tls::server_config(t, config.http2).map(Some),
    }
}
