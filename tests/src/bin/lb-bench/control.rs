//! The control plane through `lb run`, end to end: Services and their EndpointSlices written
//! as manifests (one file per Service, as a watch delivers one object at a time) into a
//! staging directory, then moved in a burst into the directory a running `lb run` reads (as a
//! relist or a `kubectl apply` of many objects arrives), until its log says the model with all
//! of them is in the maps (next hops resolved: the endpoints are routed through the backend
//! host); then one endpoint of one Service changed, several times; and the agent's resident
//! memory.
use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_tests::{
    daemon::{Daemon, strip_ansi},
    scenario::write_atomic,
    topology::Topology,
};
use serde_json::json;

/// How many single-endpoint changes are timed (the median is reported).
pub const CHANGES: usize = 20;

pub fn suite(services: usize, per_service: usize) -> Result<serde_json::Value> {
    let topo = Topology::new(1)?;
    // Endpoints live behind the backend host: every one has a next hop to resolve.
    topo.lb.ip(&["route", "add", "10.200.0.0/15", "via", "198.18.1.2"])?;
    let work = tempfile::tempdir()?;
    let dir = work.path().join("m");
    fs::create_dir(&dir)?;
    fs::write(dir.join("seed.yaml"), service(services, per_service, 0))?;
    // Every endpoint is a distinct backend: a node with this many raises --max-backends (its
    // default, 65536, is below 100,000), as its operator would.
    let max_backends = format!("--max-backends={}", (services * per_service).next_power_of_two().max(65536));
    let mut lb = Daemon::start_with(&topo.lb, &dir, &topo.iface_list(), 1, work.path(), &[&max_backends])?;
    let pid = lb.pid().context("lb's pid")?;

    // Written first (writing 10,000 files takes the bench seconds on this machine, with the
    // agent reading them as they come), then renamed in: the clock measures the agent, not
    // the bench's writes.
    let stage = work.path().join("stage");
    fs::create_dir(&stage)?;
    for s in 0..services {
        fs::write(stage.join(format!("s{s}.yaml")), service(s, per_service, 0))?;
    }
    crate::progress(&format!("control plane: {services} Services written"));
    let seen = applies(&lb).len();
    let t0 = Instant::now();
    for s in 0..services {
        let name = format!("s{s}.yaml");
        fs::rename(stage.join(&name), dir.join(&name))?;
    }
    let moved = t0.elapsed();
    let last_all = wait_apply(&lb, seen, Some(services + 1), Duration::from_secs(120))?;
    let apply_all = t0.elapsed();
    let (rss, _) = memory(pid)?;

    let mut changes = Vec::new();
    for c in 1..=CHANGES {
        crate::progress(&format!("control plane: one endpoint change ({c}/{CHANGES})"));
        let seen = applies(&lb).len();
        write_atomic(&dir, "s0.yaml", &service(0, per_service, c))?;
        changes.push(wait_apply(&lb, seen, None, Duration::from_secs(30))?);
    }
    changes.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (rss_after, peak) = memory(pid)?;
    lb.stop()?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(json!({
        "services": services,
        "endpoints": services * per_service,
        "apply_all_ms": ms(apply_all),
        "apply_all_moves_ms": ms(moved),
        "apply_all_last_poll_ms": last_all.0,
        "apply_all_last_phases": last_all.1,
        "one_endpoint_change_ms": changes[changes.len() / 2].0,
        "one_endpoint_change_phases": changes[changes.len() / 2].1,
        "one_endpoint_change_max_ms": changes[changes.len() - 1].0,
        "agent_rss_mib": rss.max(rss_after),
        "agent_peak_rss_mib": peak,
    }))
}

/// Service `s` (VIP 198.19.0.0 + s; `per` endpoints from 10.200.0.0 + s * per, the first
/// moved by `change`) and its EndpointSlice. Service `services` (one past the last) is the
/// seed lb starts with.
fn service(s: usize, per: usize, change: usize) -> String {
    let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + s as u32);
    let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + (s * per) as u32;
    let mut eps = Vec::new();
    for e in 0..per {
        // A changed first endpoint takes an address past every Service's.
        let addr = if e == 0 && change > 0 {
            u32::from(Ipv4Addr::new(10, 201, 255, 0)) + change as u32
        } else {
            base + e as u32
        };
        eps.push(format!("{{addresses: [\"{}\"]}}", Ipv4Addr::from(addr)));
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: s{s}, namespace: bench}}\nspec: {{type: LoadBalancer, loadBalancerIP: {vip}, ports: [{{name: tcp, port: 80}}]}}\n---"
    );
    let _ = writeln!(
        text,
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{s}-1, namespace: bench, labels: {{kubernetes.io/service-name: s{s}}}}}\naddressType: IPv4\nports: [{{name: tcp, port: 8080}}]\nendpoints: [{}]",
        eps.join(", ")
    );
    text
}

/// lb's `model applied` log lines so far: (listeners, ms from the poll that read the change to
/// the maps filled, where that time went: `read:MS,build:MS,...`).
fn applies(lb: &Daemon) -> Vec<(usize, f64, String)> {
    let text = lb.run_log_text();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.contains("model applied")) {
        let plain = strip_ansi(line);
        let field = |name: &str| {
            plain.split_whitespace().find_map(|w| w.strip_prefix(name)).map(|v| v.trim_matches('"').to_string())
        };
        let listeners = field("listeners=").and_then(|v| v.parse().ok()).unwrap_or(0);
        let ms = field("ms=").and_then(|v| v.parse().ok()).unwrap_or(0.0);
        out.push((listeners, ms, field("phases=").unwrap_or_default()));
    }
    out
}

/// Wait for an apply after the first `seen` (with `listeners` listeners, if given); its ms
/// and phases.
fn wait_apply(lb: &Daemon, seen: usize, listeners: Option<usize>, timeout: Duration) -> Result<(f64, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = applies(lb);
        if let Some((_, ms, phases)) =
            all.iter().skip(seen).rev().find(|(n, _, _)| listeners.is_none_or(|want| *n == want))
        {
            return Ok((*ms, phases.clone()));
        }
        if Instant::now() > deadline {
            bail!("no model applied with {listeners:?} listeners in lb's log:\n{}", lb.log_text());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `pid`'s resident memory now and at its peak, MiB.
fn memory(pid: u32) -> Result<(f64, f64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0.0)))
            .unwrap_or(0.0)
    };
    Ok((kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0))
}
