//! The `lb` daemon as a child process inside a namespace, stopped (SIGTERM, then SIGKILL) on drop.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// The `lb` binary: `$LB_BIN` (set by `cargo xtask test`), else `target/release/lb`.
pub fn lb_bin() -> PathBuf {
    std::env::var_os("LB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/lb"))
}

pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
    pub stdout: PathBuf,
}

impl Daemon {
    /// Start `lb run` in `ns` on `manifests` and `ifaces`, and wait until it has loaded
    /// `listeners` listeners.
    pub fn start(ns: &Netns, manifests: &Path, ifaces: &str, listeners: usize, workdir: &Path) -> Result<Daemon> {
        Daemon::start_with(ns, manifests, ifaces, listeners, workdir, &[])
    }

    /// [`Daemon::start`] with more `lb run` arguments.
    pub fn start_with(
        ns: &Netns,
        manifests: &Path,
        ifaces: &str,
        listeners: usize,
        workdir: &Path,
        extra: &[&str],
    ) -> Result<Daemon> {
        let bin = lb_bin();
        if !bin.exists() {
            bail!("{} not found: run `cargo xtask build` (or set LB_BIN)", bin.display());
        }
        let log = workdir.join("lb.log");
        let stdout = workdir.join("lb.out");
        let child = ns
            .command(bin.to_str().unwrap())
            .args(["run", "--manifests"])
            .arg(manifests)
            .args(["--iface", ifaces, "--poll-ms", "200"])
            .args(extra)
            .env("LB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout)?)
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("starting lb")?;
        let mut d = Daemon { child: Some(child), log, stdout };
        d.wait_for_log("listener loaded", listeners, Duration::from_secs(30))?;
        Ok(d)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `needle` appears `count` times in the log.
    pub fn wait_for_log(&mut self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().matches(needle).count() >= count {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("lb exited ({status}) before {needle:?}:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {needle:?} x{count} in lb's log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait (SIGKILL after 10 s); returns what it printed on stdout.
    pub fn stop(&mut self) -> Result<String> {
        let Some(mut child) = self.child.take() else { return Ok(String::new()) };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("lb did not stop within 10 s of SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            bail!("lb exited with {status}:\n{}", self.log_text());
        }
        Ok(fs::read_to_string(&self.stdout).unwrap_or_default())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
