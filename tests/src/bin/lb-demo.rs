//! `cargo xtask demo`: the example manifests served by `lb run` in each node shape — routed
//! backends across wires, pods behind a bridge on the node, pods behind a VXLAN overlay, and
//! a client pod on the node — real TCP, UDP and HTTP traffic, and a summary per shape. Exits
//! 0 only when the traffic really went through the load balancer to every backend in each.
use std::{collections::BTreeMap, net::SocketAddr, path::Path, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use lb_tests::{
    daemon::Daemon,
    netns::Netns,
    servers::{http_name_server, name_server, tcp_request, udp_request},
    topology::{LB_CLIENT_SIDE, Shape, Topology, VIP},
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
    let sections = [
        (Shape::Routed, false, "routed backends: hosts across wires, XDP both ways"),
        (Shape::Bridge, false, "pods behind a bridge on the node: XDP hands over to tc, replies through tc"),
        (Shape::Vxlan, false, "pods on another node behind a VXLAN overlay"),
        (Shape::Bridge, true, "a client pod on the node (default offloads): tc both ways"),
    ];
    let mut passed = Vec::new();
    for (shape, from_pod, what) in sections {
        let title = if from_pod { "client pod".to_string() } else { shape.name().to_string() };
        println!();
        println!("== {title}: {what}");
        section(&examples, shape, from_pod).with_context(|| format!("section {title}"))?;
        passed.push(title);
    }
    println!();
    println!("demo: PASS in every shape: {}", passed.join(", "));
    Ok(())
}

/// The examples with the routed topology's backend addresses (198.18.i.2, 2001:db8:i::2)
/// replaced by `shape`'s (and the client pod allowed by the ACL example), in a directory
/// of their own.
fn examples_for(examples: &Path, shape: Shape, dir: &Path) -> Result<()> {
    for entry in walk(examples)? {
        let rel = entry.strip_prefix(examples)?;
        let mut text = std::fs::read_to_string(&entry)?;
        for i in 1..=BACKENDS {
            text = text.replace(&format!("198.18.{i}.2\""), &format!("{}\"", shape.backend_addr(i)));
            text = text.replace(&format!("198.18.{i}.2]"), &format!("{}]", shape.backend_addr(i)));
            text = text.replace(&format!("198.18.{i}.2\n"), &format!("{}\n", shape.backend_addr(i)));
            text = text.replace(&format!("198.18.{i}.2="), &format!("{}=", shape.backend_addr(i)));
            text = text.replace(&format!("198.18.{i}.2,"), &format!("{},", shape.backend_addr(i)));
            text = text.replace(&format!("2001:db8:{i}::2"), &shape.backend_addr6(i).to_string());
        }
        if shape != Shape::Routed {
            // The ACL example lets the demo client in; the client pod too.
            text = text.replace(
                "  - {cidr: 198.18.0.0/30, comment: the demo client}\n",
                "  - {cidr: 198.18.0.0/30, comment: the demo client}\n  - {cidr: 198.18.10.10/32, comment: the demo client pod}\n",
            );
        }
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap())?;
        std::fs::write(to, text)?;
    }
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() { out.extend(walk(&p)?) } else { out.push(p) }
    }
    Ok(out)
}

fn section(examples: &Path, shape: Shape, from_pod: bool) -> Result<()> {
    let topo = Topology::shaped(shape, BACKENDS).context("building the namespace topology")?;
    let work = std::env::temp_dir().join(format!("{}-demo", topo.prefix));
    std::fs::create_dir_all(&work)?;
    let manifests_dir = work.join("manifests");
    examples_for(examples, shape, &manifests_dir)?;
    let objects = manifests::load_dir(&manifests_dir)?;
    let build = model::build(
        &objects,
        &model::BuildOptions { node_name: Some(lb_tests::cluster::NODE_A.into()), ..Default::default() },
    );
    if !build.errors.is_empty() || !objects.errors.is_empty() {
        bail!("examples do not validate: {:?} {:?}", objects.errors, build.errors);
    }
    let listeners = build.model.listeners.len();
    let client: &Netns = if from_pod { topo.client_pod.as_ref().context("no client pod")? } else { &topo.client };
    println!(
        "demo: topology {}*: {} -> lb -> backends {} / {}: {} listener(s)",
        topo.prefix,
        if from_pod { "client pod 198.18.10.10 / 2001:db8:10::10" } else { "client 198.18.0.2 / 2001:db8::2" },
        (1..=BACKENDS).map(|i| shape.backend_addr(i).to_string()).collect::<Vec<_>>().join(" "),
        (1..=BACKENDS).map(|i| shape.backend_addr6(i).to_string()).collect::<Vec<_>>().join(" "),
        listeners,
    );
    let _servers = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| name_server(ns, "[::]:8080".parse().unwrap(), &format!("backend-{}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    // HTTP backends for the L7 examples.
    let _http = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| http_name_server(ns, "0.0.0.0:8081".parse().unwrap(), &format!("backend-{}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    let mut daemon =
        Daemon::start_with(&topo.lb, &manifests_dir, &topo.iface_list(), listeners, &work, &topo.lb_args(&[]))?;
    println!("demo: lb run attached to {}", topo.iface_list());
    daemon.wait_for_log("L7 listener started", build.model.l7.len(), Duration::from_secs(10))?;

    // Every example listener: 30 requests from the client, tallied by the backend that answered.
    let targets: Vec<(String, SocketAddr, bool)> = build
        .model
        .listeners
        .iter()
        .map(|(name, l)| (name.clone(), SocketAddr::new(l.vip, l.port), l.protocol == model::Protocol::Tcp))
        .collect();
    let timeout = Duration::from_secs(3);
    let results = client.run(move || {
        targets
            .into_iter()
            .map(|(name, to, tcp)| {
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for _ in 0..REQUESTS {
                    let r = if tcp { tcp_request(to, timeout) } else { udp_request(to, timeout) };
                    *counts.entry(r.unwrap_or_else(|e| format!("failed: {e:#}"))).or_default() += 1;
                }
                (name, counts)
            })
            .collect::<Vec<_>>()
    });
    let mut results = results;
    results.extend(l7_requests(client, &build.model));
    let out = daemon.stop()?;
    let stats: serde_json::Value = serde_json::from_str(out.lines().last().context("lb printed no stats")?)?;
    let packets = |name: &str| stats["stats"]["datapath"][name]["packets"].as_u64().unwrap_or(0);

    let names: Vec<String> = (1..=BACKENDS).map(|i| format!("backend-{i}")).collect();
    println!();
    println!("  {:<28} {:>10} {:>10} {:>10}  failed", "listener", names[0], names[1], names[2]);
    let mut failed = 0;
    for (listener, counts) in &results {
        let bad: usize = counts.iter().filter(|(k, _)| !names.contains(k)).map(|(_, v)| v).sum();
        failed += bad;
        let cell = |n: &String| counts.get(n).copied().unwrap_or(0);
        println!("  {listener:<28} {:>10} {:>10} {:>10}  {bad}", cell(&names[0]), cell(&names[1]), cell(&names[2]));
    }
    println!();
    println!("  {:<28} {:>6}", "new flows", packets("new_flows"));
    println!("  {:<28} {:>6}", "packets NATed to backends", packets("fwd_to_backend"));
    println!("  {:<28} {:>6}", "packets NATed to clients", packets("fwd_to_client"));
    println!("  {:<28} {:>6}", "passed to the kernel", packets("pass_not_ours"));
    println!("  {:<28} {:>6}", "handed from XDP to tc", packets("xdp_to_tc"));
    println!("  {:<28} {:>6}", "redirected by tc", packets("tc_redirect"));
    let dropped: u64 = [
        "drop_no_backend",
        "drop_no_route",
        "drop_no_snat_addr",
        "drop_no_snat_port",
        "drop_acl",
        "drop_pp",
        "drop_handoff",
    ]
    .iter()
    .map(|n| packets(n))
    .sum();
    println!("  {:<28} {:>6}", "dropped", dropped);
    println!();
    let basic = |suffix: &str| {
        results.iter().find(|(n, _)| n == &format!("{VIP}:80/{suffix}")).map(|(_, c)| c.clone()).unwrap_or_default()
    };
    let every_backend = |m: &BTreeMap<String, usize>| names.iter().all(|n| m.get(n).is_some_and(|c| *c > 0));
    let through_tc = shape == Shape::Routed && !from_pod || packets("tc_redirect") > 0;
    let ok = failed == 0
        && every_backend(&basic("tcp"))
        && every_backend(&basic("udp"))
        && packets("fwd_to_client") > 0
        && through_tc;
    if !ok {
        bail!("not every request was answered through its VIP by the backends");
    }
    println!(
        "demo: ok: {} listeners, {REQUESTS} requests each, all answered through the VIPs (L4 with full NAT, L7 through the proxy)",
        results.len()
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Every L7 example listener, 30 requests with curl from the client namespace, tallied by
/// the backend that answered (the first line of its body). ALB listeners answer on the
/// node's address; the example Ingress rewrites `/shop/(.*)` to `/${1}`.
fn l7_requests(client: &Netns, m: &model::Model) -> Vec<(String, BTreeMap<String, usize>)> {
    m.l7.iter()
        .map(|(name, l)| {
            let addr = l.addr.unwrap_or(LB_CLIENT_SIDE.into());
            let host = l.routes.iter().find_map(|r| {
                r.rule.host.as_ref().and_then(|h| match h {
                    lb_userspace::model::l7::route::HostMatch::Exact(h) => Some(h.clone()),
                    _ => None,
                })
            });
            let url = format!("http://{addr}:{}/shop/cart/42", l.port);
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for _ in 0..REQUESTS {
                let mut cmd = client.command("curl");
                cmd.args(["-sS", "--max-time", "3"]);
                if let Some(h) = &host {
                    cmd.args(["-H", &format!("Host: {h}")]);
                }
                let reply = match cmd.arg(&url).output() {
                    Ok(o) if o.status.success() => {
                        String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned()
                    }
                    Ok(o) => format!("failed: {}", String::from_utf8_lossy(&o.stderr).trim()),
                    Err(e) => format!("failed: {e}"),
                };
                *counts.entry(reply).or_default() += 1;
            }
            (name.clone(), counts)
        })
        .collect()
}
