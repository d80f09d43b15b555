//! The agent's supervisor of the L7 proxy process: starts `lb proxy` with one end of a
//! socket pair (or waits for an external proxy on the control socket), sends it the latest
//! configuration and every change, relays counter requests, and when the process exits or
//! the channel closes starts it again after a backoff (100 ms doubling to 5 s; reset once a
//! proxy has run 30 s). On shutdown the process gets SIGTERM and its drain time.
use std::{
    collections::VecDeque,
    io,
    os::{fd::AsRawFd, unix::fs::PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    net::{UnixListener, UnixStream},
    process::{Child, Command},
    sync::{Notify, mpsc, oneshot, watch},
};

use super::{
    ProxyError,
    ipc::{self, Config, FromProxy, ToProxy, WireCounters},
};

/// What the supervisor knows of the proxy process, read without waiting.
#[derive(Debug, Default)]
pub struct Status {
    pub up: AtomicBool,
    pub pid: AtomicU32,
    /// Times the proxy process exited or its channel closed while the agent ran.
    pub restarts: AtomicU64,
    /// Listeners the proxy could not (re)configure at its last apply.
    pub errors: Mutex<Vec<ProxyError>>,
    /// Notified when `errors` changes.
    pub errors_changed: Notify,
}

impl Status {
    /// Takes the errors of the proxy's latest apply; wakes the agent if they changed.
    fn set_errors(&self, errors: Vec<ProxyError>) {
        let mut current = self.errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *current != errors {
            *current = errors;
            self.errors_changed.notify_one();
        }
    }
}

pub enum Cmd {
    Counters(oneshot::Sender<Vec<(String, WireCounters)>>),
    Shutdown(oneshot::Sender<()>),
}

/// Where proxies come from.
pub enum Source {
    Spawn { exe: PathBuf, args: Vec<String> },
    Listen(UnixListener, PathBuf),
}

impl Source {
    /// Listens on `path` (replacing a stale socket), owner-only.
    pub fn listen(path: &Path) -> io::Result<Source> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        tracing::info!(socket = %path.display(), "waiting for the L7 proxy (lb proxy --control) on this socket");
        Ok(Source::Listen(listener, path.to_owned()))
    }
}

/// The agent's ends of the supervisor.
pub struct Peer {
    pub config: watch::Receiver<Option<Arc<Config>>>,
    pub cmds: mpsc::Receiver<Cmd>,
    pub status: Arc<Status>,
    /// How long a stopping proxy gets (its drain timeout; a few seconds are added).
    pub stop_wait: Duration,
}

pub async fn supervise(source: Source, mut peer: Peer) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let connected = match &source {
            Source::Spawn { exe, args } => spawn(exe, args).map(|(s, c)| (s, Some(c))),
            Source::Listen(listener, _) => match accept(listener, &mut peer).await {
                Some(r) => r.map(|s| (s, None)),
                None => return,
            },
        };
        let (stream, child) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "starting the L7 proxy process");
                if !wait(&mut peer, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        let started = Instant::now();
        peer.status.up.store(true, Ordering::Relaxed);
        if let Some(pid) = child.as_ref().and_then(Child::id) {
            peer.status.pid.store(pid, Ordering::Relaxed);
            tracing::info!(pid, "L7 proxy process started");
        }
        let ended = session(stream, child, &mut peer).await;
        peer.status.up.store(false, Ordering::Relaxed);
        match ended {
            Ended::Shutdown(child, reply) => {
                if let Some(child) = child {
                    stop(child, peer.stop_wait).await;
                }
                let _ = reply.send(());
                break;
            }
            Ended::Gone(why) => {
                peer.status.restarts.fetch_add(1, Ordering::Relaxed);
                if started.elapsed() >= BACKOFF_RESET {
                    backoff = BACKOFF_FIRST;
                }
                tracing::error!(
                    why,
                    restart_in_ms = backoff.as_millis() as u64,
                    "L7 proxy down (L4 keeps forwarding): restarting it"
                );
                if !wait(&mut peer, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    if let Source::Listen(_, path) = &source {
        let _ = std::fs::remove_file(path);
    }
}

enum Ended {
    Shutdown(Option<Child>, oneshot::Sender<()>),
    Gone(String),
}

async fn session(stream: UnixStream, mut child: Option<Child>, peer: &mut Peer) -> Ended {
    let (rd, mut wr) = stream.into_split();
    let mut frames = ipc::spawn_reader::<_, FromProxy>(rd, "the proxy's messages");
    let mut pending: VecDeque<oneshot::Sender<Vec<(String, WireCounters)>>> = VecDeque::new();
    let latest = peer.config.borrow_and_update().clone();
    if let Some(c) = latest
        && let Err(e) = send(&mut wr, &ToProxy::Config((*c).clone())).await
    {
        return gone(child, format!("sending the configuration: {e}")).await;
    }
    loop {
        tokio::select! {
            status = async { child.as_mut().expect("a child").wait().await }, if child.is_some() => {
                return Ended::Gone(match status {
                    Ok(s) => format!("the process ended: {s}"),
                    Err(e) => format!("waiting for the process: {e}"),
                });
            }
            msg = frames.recv() => match msg {
                None => return gone(child, "it closed the control channel".into()).await,
                Some(FromProxy::Hello { pid }) => peer.status.pid.store(pid, Ordering::Relaxed),
                Some(FromProxy::Applied { generation, errors }) => {
                    tracing::debug!(generation, errors = errors.len(), "the L7 proxy applied a configuration");
                    peer.status.set_errors(errors);
                }
                Some(FromProxy::Counters(c)) => {
                    if let Some(reply) = pending.pop_front() {
                        let _ = reply.send(c);
                    }
                }
            },
            changed = peer.config.changed() => {
                if changed.is_err() {
                    // The agent dropped its front without a shutdown.
                    return Ended::Gone("the agent stopped".into());
                }
                let latest = peer.config.borrow_and_update().clone();
                if let Some(c) = latest
                    && let Err(e) = send(&mut wr, &ToProxy::Config((*c).clone())).await
                {
                    return gone(child, format!("sending the configuration: {e}")).await;
                }
            }
            cmd = peer.cmds.recv() => match cmd {
                Some(Cmd::Counters(reply)) => {
                    if let Err(e) = send(&mut wr, &ToProxy::Counters).await {
                        return gone(child, format!("asking for counters: {e}")).await;
                    }
                    pending.push_back(reply);
                }
                Some(Cmd::Shutdown(reply)) => return Ended::Shutdown(child, reply),
                None => return Ended::Shutdown(child, oneshot::channel().0),
            },
        }
    }
}

/// How long a message to the proxy may wait for the proxy to read its channel: a proxy
/// that is alive but reads nothing (hung) is then taken for gone, and restarted, instead of
/// holding the supervisor, and the agent's commands behind it, for ever.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes `msg` to the proxy within [`SEND_TIMEOUT`].
async fn send(wr: &mut tokio::net::unix::OwnedWriteHalf, msg: &ToProxy) -> io::Result<()> {
    match tokio::time::timeout(SEND_TIMEOUT, ipc::write_frame(wr, msg)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the proxy read nothing of its channel for {} s", SEND_TIMEOUT.as_secs()),
        )),
    }
}

/// The channel broke while the process may still run: it is killed, so a new one can
/// take its place.
async fn gone(child: Option<Child>, why: String) -> Ended {
    if let Some(mut child) = child {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ended::Gone(why)
}

/// Starts `exe proxy --control-fd 3 ARGS` with one end of a socket pair as its fd 3.
fn spawn(exe: &Path, args: &[String]) -> io::Result<(UnixStream, Child)> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(own_binary(exe));
    cmd.arg0("lb").arg("proxy").arg("--control-fd").arg(CHILD_FD.to_string()).args(args).kill_on_drop(true);
    // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if fd == CHILD_FD {
                // dup2 onto itself keeps close-on-exec: clear it.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CHILD_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    ours.set_nonblocking(true)?;
    Ok((UnixStream::from_std(ours)?, child))
}

/// `/proc/self/exe` by the path it was started from while that is still the same file (what
/// `ps` and audit logs then show); the link itself once the file was replaced (an upgrade).
fn own_binary(exe: &Path) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    if exe != Path::new(OWN_BINARY) {
        return exe.to_owned();
    }
    let same = |p: &Path| {
        let (a, b) = (std::fs::metadata(p), std::fs::metadata(OWN_BINARY));
        matches!((a, b), (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()))
    };
    match std::env::current_exe() {
        Ok(p) if same(&p) => p,
        _ => exe.to_owned(),
    }
}

/// The next proxy to connect; `None` when the agent shuts down meanwhile.
async fn accept(listener: &UnixListener, peer: &mut Peer) -> Option<io::Result<UnixStream>> {
    loop {
        tokio::select! {
            r = listener.accept() => return Some(r.map(|(s, _)| s)),
            cmd = peer.cmds.recv() => match cmd {
                Some(Cmd::Counters(reply)) => drop(reply),
                Some(Cmd::Shutdown(reply)) => {
                    let _ = reply.send(());
                    return None;
                }
                None => return None,
            },
        }
    }
}

/// Waits `d`, answering commands meanwhile; false when the agent shuts down.
async fn wait(peer: &mut Peer, d: Duration) -> bool {
    let sleep = tokio::time::sleep(d);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            cmd = peer.cmds.recv() => match cmd {
                Some(Cmd::Counters(reply)) => drop(reply),
                Some(Cmd::Shutdown(reply)) => {
                    let _ = reply.send(());
                    return false;
                }
                None => return false,
            },
        }
    }
}

/// SIGTERM, then SIGKILL when the proxy has not drained within `drain` and a few seconds.
async fn stop(mut child: Child, drain: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: a signal to our own child, not yet reaped.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(drain + STOP_GRACE, child.wait()).await {
        Ok(Ok(s)) => tracing::info!(status = %s, "L7 proxy process stopped"),
        Ok(Err(e)) => tracing::warn!(error = %e, "waiting for the L7 proxy process"),
        Err(_) => {
            tracing::warn!("the L7 proxy did not stop within its drain timeout: killed");
            let _ = child.kill().await;
        }
    }
}

/// The running binary, whatever happened to its file since.
pub const OWN_BINARY: &str = "/proc/self/exe";
/// The fd number the proxy process finds its control socket at.
const CHILD_FD: i32 = 3;
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const BACKOFF_RESET: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy that is connected but reads nothing of its channel (hung) is taken for gone
    /// within the send timeout, so the supervisor and the agent's commands behind it are not
    /// held by it (the supervisor waited on its write for ever).
    #[tokio::test(start_paused = true)]
    async fn a_proxy_that_reads_nothing_is_taken_for_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let source = Source::listen(&path).unwrap();
        let (_config, config_rx) = watch::channel(None);
        let (cmds, cmds_rx) = mpsc::channel(16);
        let status = Arc::new(Status::default());
        let peer = Peer { config: config_rx, cmds: cmds_rx, status: status.clone(), stop_wait: Duration::from_secs(1) };
        let supervisor = tokio::spawn(supervise(source, peer));
        let hung = UnixStream::connect(&path).await.unwrap();
        // Requests for counters until the channel's buffer is full and a write waits.
        let asking = tokio::spawn(async move {
            for _ in 0..100_000 {
                if cmds.send(Cmd::Counters(oneshot::channel().0)).await.is_err() {
                    break;
                }
            }
        });
        let restarted = tokio::time::timeout(Duration::from_secs(60), async {
            while status.restarts.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(restarted.is_ok(), "the supervisor still waits on the hung proxy");
        drop(hung);
        asking.abort();
        supervisor.abort();
    }
}
