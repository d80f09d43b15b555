//! The agent's side of the L7 proxy: [`L7Front`] serves the model's L7 listeners either in
//! the agent itself (`--l7-mode inline`), or through the `lb proxy` process, which the agent
//! starts and restarts (`process`, the default) or which runs as a container of its own and
//! connects to the agent's socket (`external`). Every change is sent as the full set of
//! listeners; a proxy that (re)connects gets the latest one first. The datapath is never
//! touched by any of this: XDP and conntrack go on while the proxy is down.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot, watch};

use super::{
    Proxy, ProxyError,
    ipc::{Config, WireCounters},
    session::{Cmd, Peer, Source, Status},
};
use crate::{metrics::exposition::L7Snapshot, model::l7::L7Listener};

/// Where the L7 proxy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// In the agent's own process.
    Inline,
    /// `lb proxy`, started and restarted by the agent.
    Process,
    /// `lb proxy` started by someone else (a container of the DaemonSet's pod) that
    /// connects to the agent's control socket.
    External,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Inline => "inline",
            Mode::Process => "process",
            Mode::External => "external",
        })
    }
}

/// How the agent runs its L7 proxy.
#[derive(Debug, Clone)]
pub struct FrontOptions {
    pub mode: Mode,
    /// Inline only: the proxy itself.
    pub bind_all: Vec<std::net::IpAddr>,
    pub limits: super::Limits,
    pub trusted: Vec<ipnet::IpNet>,
    /// Process mode: the program (the agent's own binary) and the arguments after
    /// `proxy --control-fd N`.
    pub exe: PathBuf,
    pub args: Vec<String>,
    /// External mode: the control socket the proxy connects to (created 0600).
    pub socket: PathBuf,
}

/// The L7 proxy as the agent drives it.
pub enum L7Front {
    Inline { proxy: Box<Proxy>, errors: Vec<ProxyError> },
    Remote(Remote),
}

pub struct Remote {
    mode: Mode,
    generation: u64,
    config: watch::Sender<Option<Arc<Config>>>,
    cmds: mpsc::Sender<Cmd>,
    status: Arc<Status>,
    task: tokio::task::JoinHandle<()>,
}

impl L7Front {
    /// Starts serving (process mode: starts the proxy process; external: listens on the
    /// socket). Must run inside a tokio runtime.
    pub fn start(opts: FrontOptions) -> std::io::Result<L7Front> {
        let source = match opts.mode {
            Mode::Inline => {
                let proxy = Proxy::with_limits(opts.bind_all, opts.limits).with_trusted_proxies(opts.trusted);
                return Ok(L7Front::Inline { proxy: Box::new(proxy), errors: Vec::new() });
            }
            Mode::Process => Source::Spawn { exe: opts.exe, args: opts.args },
            Mode::External => Source::listen(&opts.socket)?,
        };
        let (config, config_rx) = watch::channel(None);
        let (cmds, cmds_rx) = mpsc::channel(16);
        let status = Arc::new(Status::default());
        let peer =
            Peer { config: config_rx, cmds: cmds_rx, status: status.clone(), stop_wait: opts.limits.drain_timeout };
        let task = tokio::spawn(super::session::supervise(source, peer));
        Ok(L7Front::Remote(Remote { mode: opts.mode, generation: 0, config, cmds, status, task }))
    }

    /// Serves `listeners` from now on; returns the listeners that could not be configured
    /// (inline: at once; the process: at its last apply, this one follows).
    pub fn apply(&mut self, listeners: &BTreeMap<String, L7Listener>) -> usize {
        match self {
            L7Front::Inline { proxy, errors } => {
                let failed = proxy.apply(listeners);
                for e in &failed {
                    tracing::error!(error = %e, "L7 listener not applied");
                }
                *errors = failed;
                errors.len()
            }
            L7Front::Remote(r) => {
                r.generation += 1;
                r.config.send_replace(Some(Arc::new(Config::new(r.generation, listeners))));
                self.errors()
            }
        }
    }

    /// Inline: start the listeners that could not start at the last apply (a port taken, an
    /// address not there yet). The proxy process tries them again itself.
    pub fn retry_failed(&mut self) {
        if let L7Front::Inline { proxy, errors } = self
            && proxy.has_failed()
        {
            *errors = proxy.retry_failed();
        }
    }

    /// Listeners not configured at the last apply.
    pub fn errors(&self) -> usize {
        self.error_list().len()
    }

    /// The listeners not configured at the last apply (or that failed to start since), and why.
    pub fn error_list(&self) -> Vec<ProxyError> {
        match self {
            L7Front::Inline { errors, .. } => errors.clone(),
            L7Front::Remote(r) => r.status.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        }
    }

    /// Resolves when the proxy process reports other errors than before; never inline (its
    /// errors change only in [`L7Front::apply`] and [`L7Front::retry_failed`]).
    pub async fn errors_changed(&self) {
        match self {
            L7Front::Inline { .. } => std::future::pending().await,
            L7Front::Remote(r) => r.status.errors_changed.notified().await,
        }
    }

    /// Every listener's counters; none while the proxy process is down.
    pub async fn counters(&self) -> Vec<(String, WireCounters)> {
        match self {
            L7Front::Inline { proxy, .. } => proxy.counters().map(|(k, c)| (k.to_owned(), c.into())).collect(),
            L7Front::Remote(r) => {
                let (tx, rx) = oneshot::channel();
                // Not waiting for room: a supervisor stuck on a hung proxy must not hold the
                // agent's loop (it restarts that proxy within its send timeout).
                if r.cmds.try_send(Cmd::Counters(tx)).is_err() {
                    return Vec::new();
                }
                tokio::time::timeout(COUNTERS_WAIT, rx).await.ok().and_then(Result::ok).unwrap_or_default()
            }
        }
    }

    /// [`L7Front::counters`] as `/metrics` takes them.
    pub async fn snapshots(&self) -> Vec<(String, L7Snapshot)> {
        self.counters().await.into_iter().map(|(k, c)| (k, c.snapshot())).collect()
    }

    /// `/stats`'s `l7_proxy`: where the proxy runs and whether it is up.
    pub fn status_json(&self) -> serde_json::Value {
        match self {
            L7Front::Inline { .. } => serde_json::json!({ "mode": "inline", "up": true }),
            L7Front::Remote(r) => serde_json::json!({
                "mode": r.mode.to_string(),
                "up": r.status.up.load(Ordering::Relaxed),
                "pid": r.status.pid.load(Ordering::Relaxed),
                "restarts": r.status.restarts.load(Ordering::Relaxed),
            }),
        }
    }

    /// (up, restarts) of the proxy process; `None` inline.
    pub fn process(&self) -> Option<(bool, u64)> {
        match self {
            L7Front::Inline { .. } => None,
            L7Front::Remote(r) => {
                Some((r.status.up.load(Ordering::Relaxed), r.status.restarts.load(Ordering::Relaxed)))
            }
        }
    }

    /// Drains: inline, the listeners; process mode, SIGTERM to the proxy and a wait for it
    /// (the drain timeout and a few seconds; then SIGKILL); external, the channel closes
    /// and the proxy container keeps serving until it is stopped itself.
    pub async fn shutdown_gracefully(self) {
        match self {
            L7Front::Inline { mut proxy, .. } => proxy.shutdown_gracefully().await,
            L7Front::Remote(r) => {
                let (tx, rx) = oneshot::channel();
                if r.cmds.send(Cmd::Shutdown(tx)).await.is_ok() {
                    let _ = rx.await;
                }
                let _ = r.task.await;
            }
        }
    }
}

/// How long `/metrics` and `/stats` wait for the proxy's counters.
const COUNTERS_WAIT: Duration = Duration::from_secs(2);
