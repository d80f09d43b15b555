//! Network namespaces owned by a test: created with a unique name, deleted on drop.
use std::{
    fs::File,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    thread,
};

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

/// A short prefix unique to this process and call, for netns and interface names
/// (interface names hold at most 15 bytes).
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("lbt{:x}{}", std::process::id() & 0xfffff, (b'a' + (n % 26) as u8) as char)
}

/// Run a command; fail with its stderr when it fails.
pub fn sh(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// A network namespace that exists as long as this value.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Result<Netns> {
        sh(&["ip", "netns", "add", name])?;
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NS ARGS...`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// Run a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// A command (not started) that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run `f` on a thread that has entered the namespace.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        self.spawn(f).join().expect("thread in netns panicked")
    }

    /// Start `f` on a thread that has entered the namespace.
    pub fn spawn<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> thread::JoinHandle<R> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path).expect("entering netns");
            f()
        })
    }

    pub fn ifindex(&self, iface: &str) -> Result<u32> {
        let out = self.exec(&["cat", &format!("/sys/class/net/{iface}/ifindex")])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    /// Names of the programs on `iface`'s tc ingress (TCX) and XDP hook.
    pub fn bpf_programs(&self, iface: &str) -> Vec<String> {
        let iface = iface.to_string();
        self.run(move || {
            use aya::programs::{SchedClassifier, TcAttachType};
            let mut names: Vec<String> = SchedClassifier::query_tcx(&iface, TcAttachType::Ingress)
                .map(|(_, progs)| progs.iter().filter_map(|p| p.name_as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            if let Ok(out) = Command::new("ip").args(["-d", "link", "show", &iface]).output()
                && String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
            {
                names.push("xdp".to_string());
            }
            names
        })
    }

    /// Names of the programs on `iface`'s tc egress (TCX).
    pub fn bpf_egress_programs(&self, iface: &str) -> Vec<String> {
        let iface = iface.to_string();
        self.run(move || {
            use aya::programs::{SchedClassifier, TcAttachType};
            SchedClassifier::query_tcx(&iface, TcAttachType::Egress)
                .map(|(_, progs)| progs.iter().filter_map(|p| p.name_as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        })
    }

    pub fn mac(&self, iface: &str) -> Result<[u8; 6]> {
        let out = self.exec(&["cat", &format!("/sys/class/net/{iface}/address")])?;
        parse_mac(String::from_utf8_lossy(&out.stdout).trim())
    }
}

/// Move the calling thread into the namespace at `path`.
pub fn enter(path: &str) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {path}"))?;
    setns(f, CloneFlags::CLONE_NEWNET).context("setns")?;
    Ok(())
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC {s:?}");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16)?;
    }
    Ok(mac)
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A veth pair between two namespaces, each end addressed and up.
pub fn veth(a: &Netns, a_name: &str, a_addr: &str, b: &Netns, b_name: &str, b_addr: &str) -> Result<()> {
    sh(&["ip", "link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name, "netns", &b.name])?;
    a.ip(&["addr", "add", a_addr, "dev", a_name])?;
    b.ip(&["addr", "add", b_addr, "dev", b_name])?;
    a.ip(&["link", "set", a_name, "up"])?;
    b.ip(&["link", "set", b_name, "up"])?;
    Ok(())
}
