//! `cargo xtask demo`: the example manifests served by `lb run` in a namespace topology,
//! real TCP and UDP traffic from a client namespace, and a summary. Exits 0 only when the
//! traffic really went through the load balancer to every backend.
use std::{
    collections::BTreeMap,
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use lb_tests::{
    daemon::Daemon,
    servers::{name_server, tcp_request, udp_request},
    topology::{Topology, VIP},
};
use lb_userspace::{manifests, model};

const REQUESTS: usize = 30;
const BACKENDS: usize = 3;

fn main() -> ExitCode {
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<()> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").canonicalize()?;
    let objects = manifests::load_dir(&examples)?;
    let build = model::build(&objects, &model::BuildOptions::default());
    if !build.errors.is_empty() || !objects.errors.is_empty() {
        bail!("examples do not validate: {:?} {:?}", objects.errors, build.errors);
    }
    let listeners = build.model.listeners.len();
    println!("demo: {} listener(s) from {}", listeners, examples.display());

    let topo = Topology::new(BACKENDS).context("building the namespace topology")?;
    println!("demo: topology {}*: client 198.18.0.2 -> lb (VIP {VIP}) -> {BACKENDS} backends 198.18.{{1..{BACKENDS}}}.2", topo.prefix);
    let _servers = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| name_server(ns, "[::]:8080".parse().unwrap(), &format!("backend-{}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    let work = std::env::temp_dir().join(format!("{}-demo", topo.prefix));
    std::fs::create_dir_all(&work)?;
    let mut daemon = Daemon::start(&topo.lb, &examples, &topo.iface_list(), listeners, &work)?;
    println!("demo: lb run attached to {}", topo.iface_list());

    let vip = SocketAddr::V4(SocketAddrV4::new(VIP, 80));
    let timeout = Duration::from_secs(3);
    let (tcp, udp) = topo.client.run(move || {
        let tally = |f: &dyn Fn() -> Result<String>| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..REQUESTS {
                let key = f().unwrap_or_else(|e| format!("failed: {e:#}"));
                *counts.entry(key).or_default() += 1;
            }
            counts
        };
        (tally(&|| tcp_request(vip, timeout)), tally(&|| udp_request(vip, timeout)))
    });
    let out = daemon.stop()?;
    let stats: serde_json::Value = serde_json::from_str(out.lines().last().context("lb printed no stats")?)?;
    let packets = |name: &str| stats["stats"]["datapath"][name]["packets"].as_u64().unwrap_or(0);

    println!();
    println!("  {:<12} {:>5} {:>5}", "backend", "TCP", "UDP");
    let names: Vec<String> = (1..=BACKENDS).map(|i| format!("backend-{i}")).collect();
    for n in &names {
        println!("  {:<12} {:>5} {:>5}", n, tcp.get(n).unwrap_or(&0), udp.get(n).unwrap_or(&0));
    }
    for (k, v) in tcp.iter().chain(udp.iter()).filter(|(k, _)| !names.contains(k)) {
        println!("  {k}: {v}");
    }
    println!();
    println!("  {:<28} {:>6}", "new flows", packets("new_flows"));
    println!("  {:<28} {:>6}", "packets NATed to backends", packets("fwd_to_backend"));
    println!("  {:<28} {:>6}", "packets NATed to clients", packets("fwd_to_client"));
    println!("  {:<28} {:>6}", "passed to the kernel", packets("pass_not_ours"));
    let dropped: u64 = ["drop_no_backend", "drop_no_route", "drop_no_neigh", "drop_no_snat_addr", "drop_no_snat_port"]
        .iter()
        .map(|n| packets(n))
        .sum();
    println!("  {:<28} {:>6}", "dropped", dropped);

    let served = |m: &BTreeMap<String, usize>| names.iter().map(|n| m.get(n).copied().unwrap_or(0)).sum::<usize>();
    let every_backend = names.iter().all(|n| tcp.get(n).is_some_and(|c| *c > 0) && udp.get(n).is_some_and(|c| *c > 0));
    let ok = served(&tcp) == REQUESTS && served(&udp) == REQUESTS && every_backend && packets("fwd_to_client") > 0;
    println!();
    if !ok {
        bail!("not every request was answered through the VIP by the backends");
    }
    println!("demo: PASS: {REQUESTS} TCP and {REQUESTS} UDP requests to {vip} balanced over {BACKENDS} backends with full NAT");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
