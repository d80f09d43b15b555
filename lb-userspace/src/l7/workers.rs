//! The proxy's worker threads, as nginx runs worker processes: each worker is a thread with
//! a single-threaded tokio runtime of its own and its own listening socket per listener
//! address (`SO_REUSEPORT`: the kernel spreads new connections over the workers). A
//! connection, its requests and its backend connections then stay on one thread: no task
//! moves between threads, no work stealing, no cross-thread wake-ups on the request path.
use std::{io, thread};

use tokio::{runtime::Handle, sync::oneshot};

/// The runtimes listeners are served on.
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropped with the workers: each thread's runtime then stops and the thread ends.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one), named `lb-l7-worker-N`.
    pub fn start(n: usize) -> io::Result<Workers> {
        let mut handles = Vec::new();
        let mut stops = Vec::new();
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            thread::Builder::new().name(format!("lb-l7-worker-{i}")).spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        }
        Ok(Workers { handles, _stop: stops })
    }

    /// The proxy process's workers: with one, the caller's runtime (which also talks to the
    /// agent) serves the listeners, so the process has a single thread, as an nginx worker
    /// is: the kernel then takes a socket's file without a reference count on every
    /// syscall (a file table shared by threads needs one), and there is no second thread
    /// to switch to on a core the proxy is pinned to. With more, `n` threads
    /// ([`Workers::start`]). Must run inside a tokio runtime.
    pub fn for_process(n: usize) -> io::Result<Workers> {
        if n <= 1 { Ok(Workers::current()) } else { Workers::start(n) }
    }

    /// The runtime of the caller as the only worker (tests; `--l7-mode inline`, where the
    /// agent's runtime serves L7). Must run inside a tokio runtime.
    pub fn current() -> Workers {
        Workers { handles: vec![Handle::current()], _stop: Vec::new() }
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

/// Worker threads by default: one per CPU this process may run on (its affinity mask, as
/// `taskset` or a cgroup cpuset leaves it).
pub fn default_count() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}
