//! The L7 suite's load generators, each one bounded run in the bench's namespace pinned to
//! the load core: wrk (HTTP/1.1, keep-alive or `Connection: close`; its Lua `done` hook prints
//! exact counts and percentiles) and h2load (HTTP/2 over TLS; latency percentiles from its
//! per-request log). While a run lasts, the proxy's CPU time and each core's busy time are
//! read from /proc.
use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use lb_tests::netns::Netns;

use crate::l7_peers::{HOST, PATH};

/// The load of one case.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// wrk, HTTP/1.1 keep-alive.
    KeepAlive,
    /// wrk, `Connection: close`: a new TCP connection per request.
    NewConnection,
    /// h2load, HTTP/2 over TLS.
    H2Tls,
    /// wrk, HTTP/1.1 keep-alive, two threads and twice the connections (the scaling case:
    /// the load has two cores of its own).
    KeepAliveWide,
}

impl Load {
    pub fn name(self) -> &'static str {
        match self {
            Load::KeepAlive => "HTTP/1.1 keep-alive",
            Load::NewConnection => "HTTP/1.1 new connection per request",
            Load::H2Tls => "HTTP/2 over TLS (h2load)",
            Load::KeepAliveWide => "HTTP/1.1 keep-alive, two load threads",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Load::KeepAlive => "http1_keepalive",
            Load::NewConnection => "http1_close",
            Load::H2Tls => "h2_tls",
            Load::KeepAliveWide => "http1_keepalive_wide",
        }
    }

    /// Concurrency, as the report states it.
    pub fn shape(self) -> &'static str {
        match self {
            Load::KeepAlive | Load::NewConnection => "wrk -t1 -c32",
            Load::H2Tls => "h2load -t1 -c4 -m8 (32 streams)",
            Load::KeepAliveWide => "wrk -t2 -c64",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Failed requests: socket errors, timeouts, non-2xx.
    pub errors: u64,
    /// The proxy's CPU time over the run's wall time (1.0 = one core).
    pub proxy_cpu: f64,
    /// Requests per second of proxy CPU time: what the proxy costs, whoever the bottleneck.
    pub rps_per_core: f64,
    /// The share of the proxy's CPU time spent in user space (the rest is the kernel's: its
    /// syscalls and, on loopback, the receiving side's TCP work).
    pub proxy_user_share: f64,
    /// TCP segments sent in the namespace per request (client, proxy and backend together).
    pub segments_per_request: f64,
    /// Busy fraction of the load generator's core.
    pub load_core_busy: f64,
    /// What the TLS handshake negotiated (h2load), empty otherwise.
    pub tls: String,
}

const WRK_SCRIPT: &str = r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LBBENCH %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// One run of `load` against `port` for `secs` seconds from `cpus`; `proxy_pid` is sampled
/// for CPU.
pub fn run(ns: &Netns, cpus: &[usize], load: Load, port: u16, secs: f64, proxy_pid: u32, dir: &Path) -> Result<Sample> {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.name,
        "timeout",
        "-k",
        "5",
        &format!("{:.0}", secs + 30.0),
        "taskset",
        "-c",
        &crate::l7_peers::cpu_list(cpus),
    ]);
    let log = dir.join("h2load.log");
    match load {
        Load::KeepAlive | Load::NewConnection | Load::KeepAliveWide => {
            let script = dir.join("report.lua");
            fs::write(&script, WRK_SCRIPT)?;
            let (threads, conns) = if load == Load::KeepAliveWide { ("-t2", "-c64") } else { ("-t1", "-c32") };
            cmd.args([
                "wrk",
                threads,
                conns,
                &format!("-d{secs:.0}s"),
                "--timeout",
                "5s",
                "-H",
                &format!("Host: {HOST}"),
                "-s",
            ])
            .arg(&script);
            if load == Load::NewConnection {
                cmd.args(["-H", "Connection: close"]);
            }
            cmd.arg(format!("http://127.0.0.1:{port}{PATH}"));
        }
        Load::H2Tls => {
            let _ = fs::remove_file(&log);
            cmd.args([
                "h2load",
                "-t1",
                "-c4",
                "-m8",
                "-D",
                &format!("{secs:.0}"),
                "--warm-up-time=300ms",
                "-H",
                &format!(":authority: {HOST}"),
                "--log-file",
            ])
            .arg(&log)
            .arg(format!("https://127.0.0.1:{port}{PATH}"));
        }
    }
    let (seg0, cpu0, cores0, t0) = (out_segs(ns), proc_cpu(proxy_pid), cores(), Instant::now());
    let out = cmd.output().with_context(|| format!("running the {} load", load.name()))?;
    let (cpu1, cores1, wall, seg1) = (proc_cpu(proxy_pid), cores(), t0.elapsed().as_secs_f64(), out_segs(ns));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("{} load failed ({}): {text}\n{}", load.name(), out.status, String::from_utf8_lossy(&out.stderr));
    }
    let mut s = if load == Load::H2Tls { h2load(&text, &log)? } else { wrk(&text)? };
    let (user, total) = (cpu1.0 - cpu0.0, (cpu1.0 + cpu1.1) - (cpu0.0 + cpu0.1));
    s.proxy_cpu = total / wall;
    s.proxy_user_share = if total > 0.0 { user / total } else { 0.0 };
    s.load_core_busy = cpus.iter().map(|c| busy(&cores0, &cores1, *c)).sum::<f64>() / cpus.len().max(1) as f64;
    // Requests over the whole run (h2load's warm-up included), as for rps_per_core.
    let all_requests = s.requests as f64 + if load == Load::H2Tls { s.rps * 0.3 } else { 0.0 };
    s.segments_per_request = (seg1 - seg0) / all_requests.max(1.0);
    s.rps_per_core = if s.proxy_cpu > 0.0 { s.rps * wall_measured(load, secs, wall) / s.proxy_cpu } else { 0.0 };
    Ok(s)
}

/// The share of the sampled wall time the measured requests ran in (h2load warms up first).
fn wall_measured(load: Load, secs: f64, wall: f64) -> f64 {
    let busy = if load == Load::H2Tls { secs + 0.3 } else { secs };
    (busy / wall).min(1.0)
}

fn wrk(text: &str) -> Result<Sample> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("LBBENCH "))
        .with_context(|| format!("no result line in wrk's output:\n{text}"))?;
    let v: Vec<f64> = line.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    anyhow::ensure!(v.len() == 9, "wrk result line {line:?}");
    let errors = v[4..].iter().sum::<f64>() as u64;
    Ok(Sample {
        rps: v[0] / (v[1] / 1e6),
        p50_ms: v[2] / 1000.0,
        p99_ms: v[3] / 1000.0,
        requests: v[0] as u64,
        errors,
        ..Sample::default()
    })
}

fn h2load(text: &str, log: &Path) -> Result<Sample> {
    let field = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix)).map(str::trim).unwrap_or("").to_string()
    };
    // "finished in 3.00s, 41234.33 req/s, 5.11MB/s"
    let finished = field("finished in");
    let rps: f64 = finished
        .split(", ")
        .nth(1)
        .and_then(|r| r.trim_end_matches(" req/s").parse().ok())
        .with_context(|| format!("h2load output:\n{text}"))?;
    // "requests: N total, N started, N done, N succeeded, F failed, E errored, T timeout"
    let counts: Vec<u64> = field("requests:")
        .split(", ")
        .map(|p| p.split_whitespace().next().unwrap_or("0").parse().unwrap_or(0))
        .collect();
    anyhow::ensure!(counts.len() >= 7, "h2load output:\n{text}");
    let (done, succeeded) = (counts[2], counts[3]);
    // "status codes: N 2xx, ..."
    let ok_2xx: u64 = field("status codes:").split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut lat: Vec<f64> = fs::read_to_string(log)
        .with_context(|| format!("h2load's log {}", log.display()))?
        .lines()
        .filter_map(|l| l.split('\t').nth(2).and_then(|v| v.trim().parse::<f64>().ok()))
        .collect();
    anyhow::ensure!(!lat.is_empty(), "h2load logged no request:\n{text}");
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] / 1000.0;
    let tls = format!("{} {} {}", field("TLS Protocol:"), field("Cipher:"), field("Application protocol:"));
    Ok(Sample {
        rps,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        requests: done,
        errors: done.saturating_sub(succeeded.min(ok_2xx)),
        tls,
        ..Sample::default()
    })
}

/// The namespace's TCP OutSegs counter.
fn out_segs(ns: &Netns) -> f64 {
    let text = Command::new("ip")
        .args(["netns", "exec", &ns.name, "cat", "/proc/net/snmp"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else { return 0.0 };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutSegs")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0.0)
}

/// CPU seconds of `pid` and its children (nginx's worker under its master): (user, system).
fn proc_cpu(pid: u32) -> (f64, f64) {
    let ticks = |stat: &str| -> Option<(u32, f64, f64)> {
        // Fields after the command name: state ppid ... utime(14) stime(15).
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f[1].parse().ok()?, f[11].parse::<f64>().ok()?, f[12].parse::<f64>().ok()?))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (mut user, mut system) = (0.0, 0.0);
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some((ppid, u, s)) = fs::read_to_string(e.path().join("stat")).ok().as_deref().and_then(ticks)
            && (p == pid || ppid == pid)
        {
            user += u;
            system += s;
        }
    }
    (user / hz, system / hz)
}

/// (busy, total) jiffies per core from /proc/stat.
fn cores() -> Vec<(f64, f64)> {
    fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<f64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
            let total: f64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            (total - idle, total)
        })
        .collect()
}

fn busy(before: &[(f64, f64)], after: &[(f64, f64)], cpu: usize) -> f64 {
    match (before.get(cpu), after.get(cpu)) {
        (Some(b), Some(a)) if a.1 > b.1 => (a.0 - b.0) / (a.1 - b.1),
        _ => 0.0,
    }
}
