//! The `lb` daemon as a child process inside a namespace, stopped (SIGTERM, then SIGKILL) on drop.
//!
//! Each daemon pins its datapath in a bpffs of its own, mounted at `<workdir>/bpffs` (the
//! host's `/sys/fs/bpf` is not a bpffs inside `ip netns exec`, and a mount of its own keeps
//! tests apart), unless its arguments say `--no-pin` or `--pin-dir`. It can be stopped and
//! started again on the same pins ([`Daemon::restart`]); [`Daemon::stop`] and drop run
//! `lb uninstall` on the pins, then unmount that bpffs.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::netns::{Netns, sh};

/// The `lb` binary: `$LB_BIN` (set by `cargo xtask test`), else `target/release/lb`.
pub fn lb_bin() -> PathBuf {
    std::env::var_os("LB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/lb"))
}

/// Where a daemon pins its datapath, and what to undo when it is done.
struct Pins {
    /// `--pin-dir`.
    dir: PathBuf,
    /// The bpffs this daemon mounted (unmounted when it is done).
    mount: Option<PathBuf>,
    /// `--snat-ports`, when given (for `lb uninstall`).
    snat_ports: Option<String>,
    uninstalled: bool,
}

pub struct Daemon {
    child: Option<Child>,
    /// The current run's stderr: `lb.log`, then `lb.2.log` after the first restart, ...
    pub log: PathBuf,
    /// The current run's stdout: `lb.out`, then `lb.2.out`, ...
    pub stdout: PathBuf,
    /// The namespace `lb` runs in (by name: the test owns the [`Netns`]).
    ns: String,
    /// `lb run` and its arguments.
    args: Vec<String>,
    workdir: PathBuf,
    listeners: usize,
    /// Every run's stderr, the first run's first.
    logs: Vec<PathBuf>,
    pins: Option<Pins>,
    /// `--state-dir` (the test's own: `<workdir>/state` unless given).
    state_dir: PathBuf,
    /// `lb run` (not other subcommands) runs as the DaemonSet runs it (see
    /// [`Daemon::start_restricted`]).
    restricted: bool,
    /// A program (and its arguments) `lb run` runs under, e.g. `strace -f -o FILE`
    /// (see [`Daemon::start_wrapped`]).
    wrapper: Vec<String>,
}

/// The capabilities the DaemonSet's lb container keeps (deploy/daemonset.yaml).
pub const RESTRICTED_CAPS: &str = "-all,+bpf,+net_admin,+perfmon,+net_bind_service";

impl Daemon {
    /// Start `lb run` in `ns` on `manifests` and `ifaces`, and wait until it has loaded
    /// `listeners` listeners.
    pub fn start(ns: &Netns, manifests: &Path, ifaces: &str, listeners: usize, workdir: &Path) -> Result<Daemon> {
        Daemon::start_with(ns, manifests, ifaces, listeners, workdir, &[])
    }

    /// [`Daemon::start`] with more `lb run` arguments. Without `--no-pin` or `--pin-dir`
    /// among them, the datapath is pinned in a bpffs mounted at `<workdir>/bpffs`.
    pub fn start_with(
        ns: &Netns,
        manifests: &Path,
        ifaces: &str,
        listeners: usize,
        workdir: &Path,
        extra: &[&str],
    ) -> Result<Daemon> {
        Daemon::start_wrapped(ns, manifests, ifaces, listeners, workdir, extra, &[])
    }

    /// [`Daemon::start_with`], `lb run` running under `wrapper` (a program that executes
    /// the rest of its command line, such as `strace -f -o FILE`). [`Daemon::pid`] is then
    /// the wrapper's.
    pub fn start_wrapped(
        ns: &Netns,
        manifests: &Path,
        ifaces: &str,
        listeners: usize,
        workdir: &Path,
        extra: &[&str],
        wrapper: &[&str],
    ) -> Result<Daemon> {
        let bin = lb_bin();
        if !bin.exists() {
            bail!("{} not found: run `cargo xtask build` (or set LB_BIN)", bin.display());
        }
        let mut args: Vec<String> = ["run", "--manifests"].map(String::from).to_vec();
        args.push(manifests.to_str().context("manifest path")?.to_string());
        args.extend(["--iface", ifaces, "--poll-ms", "200"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        let state_dir = match flag(extra, "--state-dir") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let dir = workdir.join("state");
                args.extend(["--state-dir".to_string(), dir.to_str().context("state path")?.to_string()]);
                dir
            }
        };
        let pins = if extra.contains(&"--no-pin") {
            None
        } else if let Some(dir) = flag(extra, "--pin-dir") {
            Some(Pins { dir: dir.into(), mount: None, snat_ports: flag(extra, "--snat-ports"), uninstalled: false })
        } else {
            let fs_dir = workdir.join("bpffs");
            let mount = mount_bpffs(&fs_dir)?;
            let dir = fs_dir.join("lb");
            args.extend(["--pin-dir".to_string(), dir.to_str().context("pin path")?.to_string()]);
            Some(Pins { dir, mount, snat_ports: flag(extra, "--snat-ports"), uninstalled: false })
        };
        let mut d = Daemon {
            child: None,
            log: PathBuf::new(),
            stdout: PathBuf::new(),
            ns: ns.name.clone(),
            args,
            workdir: workdir.to_path_buf(),
            listeners,
            logs: Vec::new(),
            pins,
            state_dir,
            restricted: false,
            wrapper: wrapper.iter().map(|a| a.to_string()).collect(),
        };
        d.resume()?;
        Ok(d)
    }

    /// [`Daemon::start_with`], as the DaemonSet runs `lb`: first `lb node-prep` (privileged,
    /// the init container's job) with the same interfaces and pin directory, then `lb run`
    /// with /proc/sys read-only (a bind mount in a mount namespace of its own) and only
    /// [`RESTRICTED_CAPS`] in its bounding set (so in every set: it runs as uid 0).
    /// `node_prep: false` skips the first step (to see `lb run` refuse to start).
    pub fn start_restricted(
        ns: &Netns,
        manifests: &Path,
        ifaces: &str,
        listeners: usize,
        workdir: &Path,
        node_prep: bool,
    ) -> Result<Daemon> {
        let fs_dir = workdir.join("bpffs");
        let mount = mount_bpffs(&fs_dir)?;
        let dir = fs_dir.join("lb");
        let pin_dir = dir.to_str().context("pin path")?.to_string();
        let mut args: Vec<String> = ["run", "--manifests"].map(String::from).to_vec();
        args.push(manifests.to_str().context("manifest path")?.to_string());
        let state_dir = workdir.join("state");
        let state = state_dir.to_str().context("state path")?;
        args.extend(
            ["--iface", ifaces, "--poll-ms", "200", "--pin-dir", &pin_dir, "--state-dir", state].map(String::from),
        );
        let mut d = Daemon {
            child: None,
            log: PathBuf::new(),
            stdout: PathBuf::new(),
            ns: ns.name.clone(),
            args,
            workdir: workdir.to_path_buf(),
            listeners,
            logs: Vec::new(),
            pins: Some(Pins { dir, mount, snat_ports: None, uninstalled: false }),
            state_dir,
            restricted: true,
            wrapper: Vec::new(),
        };
        if node_prep {
            let out = d.command().args(["node-prep", "--iface", ifaces, "--pin-dir", &pin_dir]).output()?;
            if !out.status.success() {
                bail!("lb node-prep failed: {}", String::from_utf8_lossy(&out.stderr).trim());
            }
        }
        d.resume()?;
        Ok(d)
    }

    /// Every run's log, one after the other (a line `--- lb run #N ---` before each run
    /// after the first).
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        for (i, log) in self.logs.iter().enumerate() {
            if i > 0 {
                text.push_str(&format!("--- lb run #{} ---\n", i + 1));
            }
            text.push_str(&fs::read_to_string(log).unwrap_or_default());
        }
        text
    }

    /// The current run's log (since the last start).
    pub fn run_log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `needle` appears `count` times in the current run's log.
    pub fn wait_for_log(&mut self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.run_log_text().matches(needle).count() >= count {
                return Ok(());
            }
            let Some(child) = self.child.as_mut() else { bail!("lb is not running (waiting for {needle:?})") };
            if let Some(status) = child.try_wait()? {
                bail!("lb exited ({status}) before {needle:?}:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {needle:?} x{count} in lb's log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The directory `lb` pins its datapath in (`None` with `--no-pin`).
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir.as_path())
    }

    /// Stop `lb` with `signal` and start it again with the same arguments (and pins); ready
    /// once the new run has loaded as many listeners as the first.
    pub fn restart(&mut self, signal: Signal) -> Result<()> {
        self.halt(signal)?;
        self.resume()
    }

    /// Stop `lb` with `signal` and wait for it (10 s at most): after SIGTERM or SIGINT it
    /// must exit cleanly. Nothing is undone: a pinned datapath stays. [`Daemon::resume`]
    /// starts it again.
    pub fn halt(&mut self, signal: Signal) -> Result<()> {
        let Some(mut child) = self.child.take() else { bail!("lb is not running") };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).context("signalling lb")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("lb did not stop within 10 s of {signal}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if signal != Signal::SIGKILL && !status.success() {
            bail!("lb exited with {status} on {signal}:\n{}", self.log_text());
        }
        Ok(())
    }

    /// Start `lb run` again (after [`Daemon::halt`]) with the same arguments, its output in
    /// new files (`lb.N.log`, `lb.N.out`); ready once it has loaded the listeners.
    pub fn resume(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("lb is already running");
        }
        let run = self.logs.len() + 1;
        let (log, stdout) = if run == 1 {
            (self.workdir.join("lb.log"), self.workdir.join("lb.out"))
        } else {
            (self.workdir.join(format!("lb.{run}.log")), self.workdir.join(format!("lb.{run}.out")))
        };
        let mut command = if self.restricted {
            self.restricted_command()
        } else if !self.wrapper.is_empty() {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.ns]).args(&self.wrapper).arg(lb_bin());
            c
        } else {
            self.command()
        };
        let child = command
            .args(&self.args)
            .env("LB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting lb")?;
        self.child = Some(child);
        self.logs.push(log.clone());
        self.log = log;
        self.stdout = stdout;
        self.wait_for_log("listener loaded", self.listeners, Duration::from_secs(30))
    }

    /// SIGTERM and wait (SIGKILL after 10 s), then `lb uninstall` on the pins and unmount
    /// the bpffs; returns what this run printed on stdout.
    pub fn stop(&mut self) -> Result<String> {
        let stopped = if self.child.is_some() { self.halt(Signal::SIGTERM) } else { Ok(()) };
        self.clean_up();
        stopped?;
        Ok(fs::read_to_string(&self.stdout).unwrap_or_default())
    }

    /// `lb uninstall --pin-dir DIR [--snat-ports A-B]` in lb's namespace (stop `lb` first):
    /// fails when it fails; returns its stdout.
    pub fn uninstall(&mut self) -> Result<String> {
        let Some(pins) = self.pins.as_mut() else { bail!("lb runs with --no-pin") };
        pins.uninstalled = true;
        let mut args = vec!["uninstall".to_string(), "--pin-dir".to_string(), pins.dir.display().to_string()];
        args.extend(["--state-dir".to_string(), self.state_dir.display().to_string()]);
        if let Some(ports) = &pins.snat_ports {
            args.extend(["--snat-ports".to_string(), ports.clone()]);
        }
        let out: Output = self.command().args(&args).output().context("running lb uninstall")?;
        if !out.status.success() {
            bail!("lb {} failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lb` in the daemon's namespace (as [`Netns::command`]).
    fn command(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(lb_bin());
        c
    }

    /// The running `lb`'s process id (the wrappers exec it: the same process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `lb` in the daemon's namespace with /proc/sys read-only and [`RESTRICTED_CAPS`].
    fn restricted_command(&self) -> Command {
        let script = format!(
            "mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro /proc/sys; \
             exec setpriv --bounding-set={RESTRICTED_CAPS} --inh-caps=-all \"$@\""
        );
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &self.ns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-ec",
            &script,
            "lb",
        ])
        .arg(lb_bin());
        c
    }

    /// `lb uninstall` (once; its failure only reported), then unmount the bpffs this daemon
    /// mounted. When the namespace is gone already (a test's topology dropped first) there is
    /// nothing to uninstall: its interfaces and settings went with it, and the unmount frees
    /// what was pinned.
    fn clean_up(&mut self) {
        let ns_exists = Path::new("/run/netns").join(&self.ns).exists();
        if ns_exists
            && self.pins.as_ref().is_some_and(|p| !p.uninstalled)
            && let Err(e) = self.uninstall()
        {
            eprintln!("daemon: {e:#}");
        }
        if let Some(mount) = self.pins.take().and_then(|p| p.mount) {
            // Lazy: whatever is still pinned there is freed with the last reference.
            let _ = Command::new("umount").arg("-l").arg(&mount).output();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
            let mut exited = false;
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            if !exited {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.clean_up();
    }
}

/// The value of `--name V` or `--name=V` in `args`.
fn flag(args: &[&str], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == name {
            args.get(i + 1).map(|v| v.to_string())
        } else {
            a.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')).map(str::to_string)
        }
    })
}

/// Mount a bpffs at `dir` unless one is mounted there already: `Some(dir)` when this call
/// mounted it.
fn mount_bpffs(dir: &Path) -> Result<Option<PathBuf>> {
    fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    let path = dir.to_str().context("bpffs path")?;
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    if mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == path && f[2] == "bpf"
    }) {
        return Ok(None);
    }
    sh(&["mount", "-t", "bpf", "bpf", path])?;
    Ok(Some(dir))
}

/// `text` without its terminal colour sequences (lb's log is coloured; match on this).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
