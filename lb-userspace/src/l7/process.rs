//! `lb proxy`: the L7 proxy as a process of its own. It binds the L7 listeners the agent
//! sends over the control channel (an inherited socket when `lb run` started it, a Unix
//! socket path when it runs as a container of its own), applies every new configuration,
//! answers counter requests, and drains gracefully on SIGTERM/SIGINT. Its file and memory
//! limits are set on itself at start ([`ProcessLimits`]), so they are its own.
use std::{collections::BTreeMap, io, os::fd::RawFd, path::PathBuf, time::Duration};

use tokio::{
    net::UnixStream,
    signal::unix::{SignalKind, signal},
};

use super::{
    Limits, Proxy,
    ipc::{self, FromProxy, ToProxy},
};

/// Where the control channel is.
#[derive(Debug, Clone)]
pub enum Control {
    /// A connected socket inherited from `lb run` (it started this process): when it closes,
    /// the agent is gone and the proxy drains and exits.
    Fd(RawFd),
    /// The agent's socket (`lb run --l7-mode external`): when it closes, the proxy keeps
    /// serving what it has and connects again.
    Socket(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ProcessOptions {
    pub control: Control,
    pub bind_all: Vec<std::net::IpAddr>,
    pub limits: Limits,
    pub trusted: Vec<ipnet::IpNet>,
    /// Worker threads serving the listeners ([`super::workers`]).
    pub workers: usize,
}

/// The resource limits of the proxy process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessLimits {
    /// `RLIMIT_NOFILE`; `None`: the soft limit raised to the hard one.
    pub open_files: Option<u64>,
    /// `RLIMIT_DATA` in bytes (heap, anonymous mappings, thread stacks); `None`: unlimited.
    pub memory: Option<u64>,
    /// The kernel's OOM killer takes this process first: its `oom_score_adj` is raised to
    /// this (never lowered).
    pub oom_score_adj: i32,
}

/// Sets `limits` on the calling process (before its runtime starts).
pub fn set_process_limits(limits: &ProcessLimits) -> io::Result<()> {
    let set = |resource, soft: u64, hard: u64| {
        let r = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        // SAFETY: setrlimit reads a valid rlimit.
        if unsafe { libc::setrlimit(resource, &r) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    let mut nofile = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile) } != 0 {
        return Err(io::Error::last_os_error());
    }
    match limits.open_files {
        Some(n) => set(libc::RLIMIT_NOFILE, n.min(nofile.rlim_max), n.min(nofile.rlim_max))?,
        None => set(libc::RLIMIT_NOFILE, nofile.rlim_max, nofile.rlim_max)?,
    }
    if let Some(bytes) = limits.memory {
        set(libc::RLIMIT_DATA, bytes, bytes)?;
    }
    let current: i32 =
        std::fs::read_to_string("/proc/self/oom_score_adj").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    if limits.oom_score_adj > current {
        std::fs::write("/proc/self/oom_score_adj", limits.oom_score_adj.to_string())?;
    }
    Ok(())
}

/// Names this process `lb-proxy` (as `ps` and `top` show it).
pub fn set_name() {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"lb-proxy".as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// Serves until SIGTERM/SIGINT, or (with [`Control::Fd`]) until the agent is gone; then
/// drains within the drain timeout. Started by `lb run` ([`Control::Fd`]), it ignores SIGINT:
/// a Ctrl-C reaches both processes, and `lb run` stops it with SIGTERM once its own loop
/// has ended (so that it never sees its proxy exit as a crash).
pub async fn run(opts: ProcessOptions) -> io::Result<()> {
    let mut proxy = Proxy::with_limits(opts.bind_all.clone(), opts.limits)
        .with_trusted_proxies(opts.trusted.clone())
        .with_workers(super::workers::Workers::for_process(opts.workers)?);
    tracing::debug!(workers = opts.workers, "L7 worker threads started");
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let on_sigint = matches!(opts.control, Control::Socket(_));
    let mut inherited = match opts.control {
        Control::Fd(fd) => Some(inherited_socket(fd)?),
        Control::Socket(_) => None,
    };
    let mut backoff = RETRY_FIRST;
    loop {
        let stream = match (&opts.control, inherited.take()) {
            (Control::Fd(_), Some(s)) => s,
            (Control::Fd(_), None) => {
                tracing::info!("the agent is gone: draining the L7 listeners");
                break;
            }
            (Control::Socket(path), _) => {
                let connect = UnixStream::connect(path);
                // Signals first: a socket that fails at once must not win the race every time.
                tokio::select! {
                    biased;
                    _ = sigterm.recv() => break,
                    _ = sigint.recv(), if on_sigint => break,
                    r = connect => match r {
                        Ok(s) => {
                            tracing::info!(socket = %path.display(), "connected to the agent");
                            backoff = RETRY_FIRST;
                            s
                        }
                        Err(e) => {
                            tracing::debug!(socket = %path.display(), error = %e, "the agent's socket does not answer");
                            // A signal ends the wait: SIGTERM is never held up by the backoff.
                            tokio::select! {
                                biased;
                                _ = sigterm.recv() => break,
                                _ = sigint.recv(), if on_sigint => break,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(RETRY_MAX);
                            continue;
                        }
                    },
                }
            }
        };
        match session(stream, &mut proxy, &mut sigterm, &mut sigint, on_sigint).await {
            Ok(Ended::Signal) => break,
            Ok(Ended::Closed) => tracing::warn!("the agent closed the L7 control channel: serving the last routes"),
            Err(e) => tracing::warn!(error = %e, "the L7 control channel failed: serving the last routes"),
        }
    }
    proxy.shutdown_gracefully().await;
    tracing::info!("L7 proxy stopped");
    Ok(())
}

enum Ended {
    Signal,
    Closed,
}

async fn session(
    stream: UnixStream,
    proxy: &mut Proxy,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
    on_sigint: bool,
) -> io::Result<Ended> {
    let (rd, mut wr) = stream.into_split();
    let mut frames = ipc::spawn_reader::<_, ToProxy>(rd, "the agent's messages");
    ipc::write_frame(&mut wr, &FromProxy::Hello { pid: std::process::id() }).await?;
    // The generation last applied, and its errors (logged once each).
    let (mut generation, mut errors) = (0, Vec::new());
    let mut retry = tokio::time::interval(RETRY_LISTENERS);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = sigterm.recv() => return Ok(Ended::Signal),
            _ = sigint.recv() => if on_sigint { return Ok(Ended::Signal) },
            // A listener that could not start (its port taken, its address not there yet) is
            // tried again until it starts or the configuration changes.
            _ = retry.tick(), if proxy.has_failed() => {
                let now = proxy.retry_failed();
                if now != errors {
                    errors = now;
                    ipc::write_frame(&mut wr, &FromProxy::Applied { generation, errors: errors.clone() }).await?;
                }
            }
            msg = frames.recv() => match msg {
                None => return Ok(Ended::Closed),
                Some(ToProxy::Config(config)) => {
                    generation = config.generation;
                    let listeners: BTreeMap<_, _> = config.into_listeners();
                    let now = proxy.apply(&listeners);
                    for e in now.iter().filter(|e| !errors.contains(e)) {
                        tracing::error!(error = %e, "L7 listener not applied");
                    }
                    errors = now;
                    tracing::debug!(generation, listeners = listeners.len(), "L7 configuration applied");
                    ipc::write_frame(&mut wr, &FromProxy::Applied { generation, errors: errors.clone() }).await?;
                }
                Some(ToProxy::Counters) => {
                    let counters = proxy.counters().map(|(k, c)| (k.to_owned(), c.into())).collect();
                    ipc::write_frame(&mut wr, &FromProxy::Counters(counters)).await?;
                }
            },
        }
    }
}

/// The socket `lb run` left at `fd` (close-on-exec set again, so nothing this process
/// starts holds it).
fn inherited_socket(fd: RawFd) -> io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl on an fd number; fails cleanly (EBADF) when it is not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("control fd {fd}: {}", io::Error::last_os_error()),
        ));
    }
    // SAFETY: the fd is open and this process's from now on (nothing else uses it).
    let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    std.set_nonblocking(true)?;
    UnixStream::from_std(std)
}

/// How often listeners that could not start are tried again.
pub const RETRY_LISTENERS: Duration = Duration::from_secs(2);

const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
