//! The L7 suite: `lb`'s proxy against nginx and haproxy, same route, same backend, same
//! cores, in a namespace of the bench's own (all traffic on its loopback). The proxies run
//! side by side on the proxy core; every case runs each proxy in turn, repeat after repeat
//! (the order rotated), so drift on a shared machine spreads over all three.
use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use lb_tests::netns::{Netns, unique_prefix};
use serde_json::json;

use crate::l7_load::{self, Load, Sample};
use crate::l7_peers::{self as peers, HAPROXY, LB, NGINX, Peer, Proc};

pub struct L7Plan {
    pub quick: bool,
    pub repeats: usize,
    pub secs: f64,
}

/// Runs the suite; `Ok(json)` with the figures, ratios and what was skipped (quick mode only
/// skips; a full run fails when a peer or tool is missing).
pub fn suite(plan: &L7Plan) -> Result<serde_json::Value> {
    let mut skipped: Vec<String> = Vec::new();
    let mut loads = vec![Load::KeepAlive];
    if !plan.quick {
        loads.push(Load::NewConnection);
    }
    loads.push(Load::H2Tls);
    // nginx is also the backend: without it (or openssl) nothing can run.
    for tool in ["nginx", "openssl"] {
        if let Err(e) = peers::require(tool) {
            anyhow::ensure!(plan.quick, "{e:#}");
            return Ok(json!({ "cases": [], "ratios": [], "skipped": [format!("the whole L7 suite: {e:#}")] }));
        }
    }
    for (tool, case) in [("wrk", Load::KeepAlive), ("h2load", Load::H2Tls)] {
        if let Err(e) = peers::require(tool) {
            anyhow::ensure!(plan.quick, "{e:#}");
            skipped.push(format!("{tool} missing: {} not measured", case.name()));
            loads.retain(|l| (tool == "h2load") != (*l == Load::H2Tls));
        }
    }
    let mut wanted = vec![LB, NGINX];
    if let Err(e) = peers::require("haproxy") {
        anyhow::ensure!(plan.quick, "{e:#}");
        skipped.push(format!("haproxy missing: not measured ({e:#})"));
    } else {
        wanted.push(HAPROXY);
    }

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (proxy_cpu, load_cpu): (&[usize], &[usize]) = if cpus >= 2 { (&[0], &[1]) } else { (&[0], &[0]) };
    let ns = Netns::new(&format!("{}l7", unique_prefix())).context("the L7 bench namespace")?;
    // `lb run` attaches XDP to an interface: an idle veth pair no bench traffic crosses.
    let iface = "lbl7a";
    ns.ip(&["link", "add", iface, "type", "veth", "peer", "name", "lbl7b"])?;
    ns.ip(&["addr", "add", &format!("{}/30", peers::BACKEND_ADDR), "dev", iface])?;
    ns.ip(&["link", "set", iface, "up"])?;
    ns.ip(&["link", "set", "lbl7b", "up"])?;
    let dir = tempfile::tempdir()?;
    let (cert, key, bundle) = peers::certificate(dir.path())?;

    let mut backend = peers::backend(&ns, load_cpu, dir.path())?;
    backend.wait_ready(&ns, peers::BACKEND_PORT)?;
    let mut procs: Vec<(Peer, Proc)> = Vec::new();
    for p in wanted {
        let proc = match p.name {
            "lb" => peers::lb(&ns, proxy_cpu, dir.path(), &cert, &key, iface)?,
            "nginx" => peers::nginx_proxy(&ns, proxy_cpu, dir.path(), &cert, &key)?,
            _ => peers::haproxy(&ns, proxy_cpu, dir.path(), &bundle)?,
        };
        procs.push((p, proc));
        let (p, proc) = procs.last_mut().unwrap();
        proc.wait_ready(&ns, p.http)?;
    }
    // Warm up: connections, pools, caches.
    for (p, proc) in &procs {
        for load in &loads {
            let port = if *load == Load::H2Tls { p.https } else { p.http };
            l7_load::run(&ns, load_cpu, *load, port, 1.0, proc.pid(), dir.path())
                .with_context(|| format!("warming up {}", p.name))?;
        }
    }
    std::thread::sleep(Duration::from_millis(200));

    let mut cases = Vec::new();
    for load in &loads {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); procs.len()];
        for r in 0..plan.repeats {
            for k in 0..procs.len() {
                let i = (k + r) % procs.len();
                let (p, proc) = &procs[i];
                let port = if *load == Load::H2Tls { p.https } else { p.http };
                crate::progress(&format!("L7: {} through {} ({}/{})", load.name(), p.name, r + 1, plan.repeats));
                let s = l7_load::run(&ns, load_cpu, *load, port, plan.secs, proc.pid(), dir.path())
                    .with_context(|| format!("{} through {}", load.name(), p.name))?;
                let failed = s.errors as f64 / (s.requests.max(1)) as f64;
                anyhow::ensure!(
                    failed < 0.01,
                    "{} through {}: {} of {} requests failed; its log:\n{}",
                    load.name(),
                    p.name,
                    s.errors,
                    s.requests,
                    proc.log_text()
                );
                samples[i].push(s);
            }
        }
        for ((p, _), v) in procs.iter().zip(samples) {
            cases.push(case_json(*load, p.name, &v));
        }
    }
    // The scaling case has the namespace to itself.
    drop(procs);
    drop(backend);
    let scaling = if cpus >= 4 {
        crate::progress("L7: lb on one core, then on two");
        scaling(plan, &ns, dir.path(), &cert, &key, iface)?
    } else {
        skipped.push(format!(
            "lb on two cores: needs 4 CPUs (two for the proxy, two for the load and the backend), this machine has {cpus}"
        ));
        serde_json::Value::Null
    };
    Ok(json!({
        "arrangement": format!(
            "one namespace, loopback only; each proxy pinned to CPU {} (the three run side by side, measured one at a time); \
             wrk/h2load and the backend (nginx, 1 worker, fixed {}-byte 200) pinned to CPU {}; route: Host {} + path prefix /api; \
             backend keep-alive on for all three; lb = `lb run` (ALB Ingress, backend-keepalive), nginx {} (worker_processes 1, upstream keepalive), \
             haproxy {} (nbthread 1, http-reuse always); TLS: the same ECDSA P-256 certificate",
            peers::cpu_list(proxy_cpu), peers::BODY.len(), peers::cpu_list(load_cpu), peers::HOST, version("nginx", &["-v"]), version("haproxy", &["-v"])
        ),
        "seconds_per_run": plan.secs,
        "repeats": plan.repeats,
        "cases": cases,
        "ratios": ratios(&cases),
        "scaling": scaling,
        "skipped": skipped,
    }))
}

/// lb on two cores against lb on one (`lb proxy` runs a worker per CPU it may use), the same
/// load from two other cores: `wrk -t2 -c64` and the backend (two workers) on CPUs 2 and 3.
fn scaling(plan: &L7Plan, ns: &Netns, dir: &Path, cert: &Path, key: &Path, iface: &str) -> Result<serde_json::Value> {
    const LOAD_CPUS: [usize; 2] = [2, 3];
    let mut backend = peers::backend(ns, &LOAD_CPUS, dir)?;
    backend.wait_ready(ns, peers::BACKEND_PORT)?;
    let mut out = serde_json::Map::new();
    let mut medians = Vec::new();
    for (name, cpus) in [("one_core", &[0][..]), ("two_cores", &[0, 1][..])] {
        let mut lb = peers::lb(ns, cpus, dir, cert, key, iface)?;
        lb.wait_ready(ns, LB.http)?;
        l7_load::run(ns, &LOAD_CPUS, Load::KeepAliveWide, LB.http, 1.0, lb.pid(), dir).context("warming up lb")?;
        let mut v = Vec::new();
        for _ in 0..plan.repeats {
            let s = l7_load::run(ns, &LOAD_CPUS, Load::KeepAliveWide, LB.http, plan.secs, lb.pid(), dir)
                .with_context(|| format!("lb on CPUs {}", peers::cpu_list(cpus)))?;
            anyhow::ensure!(
                s.errors * 100 < s.requests.max(1),
                "lb on CPUs {}: {} of {} requests failed",
                peers::cpu_list(cpus),
                s.errors,
                s.requests
            );
            v.push(s);
        }
        let case = case_json(Load::KeepAliveWide, "lb", &v);
        medians.push(case["rps"]["median"].as_f64().unwrap_or(0.0));
        out.insert(name.to_string(), case);
    }
    out.insert("ratio".to_string(), json!(medians[1] / medians[0].max(1.0)));
    out.insert(
        "load".to_string(),
        json!(format!("{} from CPUs 2,3; backend: nginx, 2 workers on CPUs 2,3", Load::KeepAliveWide.shape())),
    );
    Ok(serde_json::Value::Object(out))
}

fn case_json(load: Load, proxy: &str, v: &[Sample]) -> serde_json::Value {
    let s = |f: fn(&Sample) -> f64| crate::stats(v.iter().map(f).collect());
    json!({
        "case": load.key(),
        "name": load.name(),
        "load": load.shape(),
        "proxy": proxy,
        "rps": s(|x| x.rps),
        "p50_ms": s(|x| x.p50_ms),
        "p99_ms": s(|x| x.p99_ms),
        "proxy_cpu": s(|x| x.proxy_cpu),
        "rps_per_core": s(|x| x.rps_per_core),
        "proxy_user_share": s(|x| x.proxy_user_share),
        "segments_per_request": s(|x| x.segments_per_request),
        "load_core_busy": s(|x| x.load_core_busy),
        "requests": v.iter().map(|x| x.requests).sum::<u64>(),
        "errors": v.iter().map(|x| x.errors).sum::<u64>(),
        "tls": v.first().map(|x| x.tls.trim().to_string()).unwrap_or_default(),
    })
}

/// lb over each peer, medians: rps and rps per proxy core (above 1 = lb better), p50 and p99
/// (below 1 = lb lower).
fn ratios(cases: &[serde_json::Value]) -> serde_json::Value {
    let find = |case: &str, proxy: &str| cases.iter().find(|c| c["case"] == case && c["proxy"] == proxy);
    let mut out = Vec::new();
    for c in cases.iter().filter(|c| c["proxy"] == "lb") {
        let case = c["case"].as_str().unwrap_or("");
        for peer in ["nginx", "haproxy"] {
            let Some(p) = find(case, peer) else { continue };
            let r = |k: &str| c[k]["median"].as_f64().unwrap_or(0.0) / p[k]["median"].as_f64().unwrap_or(f64::NAN);
            out.push(json!({ "case": case, "vs": peer, "rps": r("rps"), "rps_per_core": r("rps_per_core"), "p50": r("p50_ms"), "p99": r("p99_ms") }));
        }
    }
    json!(out)
}

fn version(program: &str, args: &[&str]) -> String {
    // "nginx version: nginx/1.22.1", "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - ..."
    let out = std::process::Command::new(program).args(args).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout))
        .unwrap_or_default();
    let v = text.lines().next().and_then(|l| l.split("version").nth(1)).unwrap_or("");
    v.trim_start_matches([':', ' ']).split_whitespace().next().unwrap_or("").trim_start_matches("nginx/").to_string()
}
