//! `cargo xtask bench [--quick]`: measured side by side with a floor in the same run, reported
//! as figures (min/median/max over repeats) and ratios in `target/bench/report.{md,json}` with
//! an SVG chart. Suites so far: datapath cost per packet (BPF_PROG_TEST_RUN: the XDP program
//! against an XDP_DROP + counter program, the tc program against a TC_ACT_SHOT + counter
//! one) and the control plane (apply 10 000 Services / 100 000
//! endpoints, one endpoint change, RSS), throughput and TCP connection rate on the veth
//! topology against iptables DNAT, and the L7 proxy against nginx and haproxy (wrk, h2load).
//! `--only SUITE[,SUITE]` runs some of them (datapath, control, throughput, connections, l7);
//! `--packets N` sets the throughput runs' packet count; `--compare-lb WRAPPER` measures
//! another `lb` build beside this one in the throughput runs (see `throughput`);
//! `--conntrack-entries N` sizes the datapath suite's conntrack table.
use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

mod control;
mod cost;
mod l7;
mod l7_load;
mod l7_peers;
mod l7_report;
mod report;
mod tc_datapath;
mod throughput;
mod veth_xdp;

use anyhow::{Context, Result};
use lb_tests::{
    packet::{ACK, Flow, Frame, SYN, parse},
    testbed::{self, Bed, pin_to_cpu0, run_frame},
};
use lb_userspace::{
    dataplane::{self, Dataplane, Options},
    manifests, model,
    model::{Acl, AclBinding, AclMode, L4Listener, Model, ObjectRef, Protocol, Scheduler, listener_name},
};
use serde_json::json;

use crate::cost::Sample;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const XDP_REDIRECT: u32 = 4;

struct Plan {
    repeats: usize,
    /// BPF_PROG_TEST_RUN repeat count for a repeated packet.
    runs: u32,
    /// Distinct packets for new-flow cases.
    new_flows: u16,
    services: usize,
    endpoints_per_service: usize,
    /// Packets trafgen sends per throughput run.
    packets: u32,
    /// TCP connections per connection-rate run.
    connections: usize,
    /// The datapath suite's conntrack size (`--conntrack-entries N`; lb's default otherwise).
    conntrack_entries: Option<u32>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default());
    const SUITES: [&str; 5] = ["datapath", "control", "throughput", "connections", "l7"];
    if let Some(unknown) = only.iter().flatten().find(|s| !SUITES.contains(&s.as_str())) {
        anyhow::bail!("--only: unknown suite {unknown:?} (suites: {})", SUITES.join(", "));
    }
    if only.as_ref().is_some_and(|o| o.is_empty()) {
        anyhow::bail!("--only: name one or more suites ({})", SUITES.join(", "));
    }
    let runs = |suite: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == suite));
    let mut plan = if quick {
        Plan {
            repeats: 3,
            runs: 20_000,
            new_flows: 2_000,
            services: 1_000,
            endpoints_per_service: 10,
            packets: 50_000,
            connections: 300,
            conntrack_entries: None,
        }
    } else {
        Plan {
            repeats: 7,
            runs: 200_000,
            new_flows: 20_000,
            services: 10_000,
            endpoints_per_service: 10,
            packets: 200_000,
            connections: 2_000,
            conntrack_entries: None,
        }
    };
    // `--packets N`: the throughput runs' packet count (a development run at the full run's
    // count with `--quick`'s repeats, so the share of packets that open a flow is the same).
    if let Some(i) = args.iter().position(|a| a == "--packets") {
        plan.packets = args.get(i + 1).and_then(|v| v.parse().ok()).context("--packets: a packet count")?;
    }
    // `--conntrack-entries N`: the datapath suite's conntrack size, for A/B runs of how the
    // table's size (its hash buckets) weighs on a lookup.
    if let Some(i) = args.iter().position(|a| a == "--conntrack-entries") {
        let n = args.get(i + 1).and_then(|v| v.parse().ok()).context("--conntrack-entries: a flow count")?;
        plan.conntrack_entries = Some(n);
    }
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    fs::create_dir_all(&out_dir)?;

    let mut report = json!({ "machine": machine(), "quick": quick });
    if runs("datapath") {
        report["datapath_ns_per_packet"] = datapath_suite(&plan)?;
        report["tc_datapath_ns_per_packet"] = tc_datapath::suite(&plan)?;
    }
    if runs("control") {
        progress("control plane suite");
        let mut control = control::suite(plan.services, plan.endpoints_per_service)?;
        control["in_process"] = control_plane_suite(&plan)?;
        report["control_plane"] = control;
    }
    if runs("throughput") {
        progress("throughput suite");
        let compare =
            args.iter().position(|a| a == "--compare-lb").map(|i| args.get(i + 1).context("--compare-lb: a program"));
        report["throughput"] =
            throughput::suite(plan.packets, plan.repeats.min(3), compare.transpose()?.map(String::as_str))?;
    }
    if runs("connections") {
        progress("connection rate suite");
        report["connection_rate"] = throughput::connection_rate(plan.connections, plan.repeats.min(3))?;
    }
    if runs("l7") {
        let l7_plan = if quick {
            l7::L7Plan { quick, repeats: 1, secs: 1.0 }
        } else {
            l7::L7Plan { quick, repeats: 5, secs: 4.0 }
        };
        progress("L7 proxy suite");
        report["l7"] = l7::suite(&l7_plan).context("the L7 suite")?;
    }
    report["not_measured_yet"] = json!(["HTTP/2 cleartext (h2c)", "TLS handshake rate", "large bodies"]);
    fs::write(out_dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    let md = report::markdown(&report);
    fs::write(out_dir.join("report.md"), &md)?;
    if report.get("datapath_ns_per_packet").is_some() {
        fs::write(out_dir.join("datapath.svg"), report::svg(&report))?;
    }
    if let Some(l7) = report.get("l7") {
        fs::write(out_dir.join("l7-throughput.svg"), l7_report::throughput_svg(l7))?;
        fs::write(out_dir.join("l7-latency.svg"), l7_report::latency_svg(l7))?;
    }
    println!("{md}");
    if let Some(l7) = report.get("l7") {
        println!("{}", l7_report::short_table(l7));
    }
    println!("bench: wrote {}", out_dir.display());
    Ok(())
}

fn machine() -> serde_json::Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    json!({ "cpu": cpu, "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "kernel": kernel, "lb": env!("CARGO_PKG_VERSION") })
}

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({ "min": v[0], "median": v[v.len() / 2], "max": v[v.len() - 1] })
}

fn listener(port: u16, scheduler: Scheduler, backends: &[(IpAddr, u16, u32)]) -> L4Listener {
    let vip = if backends.first().is_some_and(|b| b.0.is_ipv6()) {
        IpAddr::V6("2001:db8:100::10".parse().unwrap())
    } else {
        IpAddr::V4(VIP)
    };
    testbed::listener(vip, port, Protocol::Tcp, scheduler, backends)
}

/// ns/packet for each datapath case, and the ratio to the floor.
fn datapath_suite(plan: &Plan) -> Result<serde_json::Value> {
    let bed = Bed::new().context("bench namespace")?;
    let (a, b) = (bed.a, bed.b);
    let (repeats, runs, new_flows, conntrack_entries) =
        (plan.repeats, plan.runs, plan.new_flows, plan.conntrack_entries);
    let results = bed.ns.run(move || -> Result<Vec<(String, Vec<Sample>)>> {
        pin_to_cpu0();
        let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
        let two = [(v4("198.18.1.2"), 8080, 1), (v4("198.18.1.3"), 8080, 1)];
        let six = [(IpAddr::V6("2001:db8:1::2".parse::<Ipv6Addr>().unwrap()), 8080, 1)];
        let mut m = Model::default();
        let mut acl_l = listener(84, Scheduler::Rr, &two);
        acl_l.acl = Some(AclBinding { acl: "bench".into(), mode: AclMode::White });
        m.acls.insert(
            "bench".into(),
            Acl {
                source: ObjectRef::default_for("AccessControlList", "bench"),
                entries: vec!["198.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            },
        );
        let mut pp_l = listener(85, Scheduler::Rr, &two);
        pp_l.proxy_protocol = lb_userspace::model::ProxyProtocol::V2;
        let udp = testbed::listener(IpAddr::V4(VIP), 53, Protocol::Udp, Scheduler::Rr, &two);
        for l in [
            udp,
            listener(80, Scheduler::Rr, &two),
            listener(81, Scheduler::Wrr, &two),
            listener(82, Scheduler::Sch, &two),
            listener(443, Scheduler::Rr, &six),
            acl_l,
            pp_l,
        ] {
            m.listeners.insert(listener_name(&l), std::sync::Arc::new(l));
        }
        let mut opts = Options::default();
        opts.conntrack_entries = conntrack_entries.unwrap_or(opts.conntrack_entries);
        let mut dp = Dataplane::load(&opts)?;
        dp.add_port(a, Some(Ipv4Addr::new(198, 18, 0, 1)), Some("2001:db8::1".parse()?))?;
        dp.add_port(b, Some(Ipv4Addr::new(198, 18, 1, 1)), Some("2001:db8:1::1".parse()?))?;
        dp.apply(&m)?;
        let mut floor = dataplane::load_floor()?;
        let floor_prog: &mut aya::programs::Xdp = floor.program_mut(dataplane::FLOOR_PROGRAM).unwrap().try_into()?;
        let _stats = cost::enable_stats()?;

        let mut out: Vec<(String, Vec<Sample>)> = Vec::new();
        let syn = |c: Ipv4Addr, sport: u16, port: u16| Frame::tcp(Flow::new(c, sport, VIP, port), SYN).bytes();
        let calls = runs.min(20_000) as usize;
        // Packets the program leaves unchanged: the kernel's own loop over `runs`.
        let mut repeated = |name: &str, prog: &mut aya::programs::Xdp, frame: &[u8], ifindex: u32| {
            progress(name);
            let v: Vec<Sample> = (0..repeats).map(|_| cost::xdp_repeated(prog, frame, ifindex, runs)).collect();
            out.push((name.to_string(), v));
        };
        repeated("floor: XDP_DROP + counter", floor_prog, &syn(Ipv4Addr::new(198, 18, 0, 2), 1, 80), a);
        let prog = dp.program()?;
        repeated(
            "not ours (UDP to another host)",
            prog,
            &Frame::udp(Flow::new(Ipv4Addr::new(198, 18, 0, 2), 1, Ipv4Addr::new(198, 18, 0, 99), 53)).bytes(),
            a,
        );
        repeated(
            "not ours (UDP to the node's own address)",
            prog,
            &Frame::udp(Flow::new(Ipv4Addr::new(198, 18, 0, 2), 1, Ipv4Addr::new(198, 18, 0, 1), 53)).bytes(),
            a,
        );
        // Packets the program rewrites: one call per packet, so each run gets the packet
        // named (a repeated run would get the one it rewrote); the floor measured likewise.
        let mut single = |name: &str, prog: &mut aya::programs::Xdp, frame: &[u8], ifindex: u32| {
            progress(name);
            let v: Vec<Sample> =
                (0..repeats).map(|_| cost::xdp_calls(prog, std::iter::repeat_n(frame, calls), ifindex)).collect();
            out.push((name.to_string(), v));
        };
        single("floor, one packet per call", floor_prog, &syn(Ipv4Addr::new(198, 18, 0, 2), 1, 80), a);
        let prog = dp.program()?;
        let (v, fwd, _) = run_frame(prog, &syn(Ipv4Addr::new(198, 18, 0, 2), 40000, 80), a, 1);
        anyhow::ensure!(v == XDP_REDIRECT, "bench flow not forwarded (verdict {v})");
        let p = parse(&fwd);
        let reply = Frame { dst_mac: [0; 6], ..Frame::tcp(Flow::new(p.flow.2, 8080, p.flow.0, p.flow.1), ACK) }.bytes();
        // Its handshake completed (the backend's SYN-ACK, the client's ACK of it): established.
        let synack = Frame { dst_mac: [0; 6], ..Frame::tcp(Flow::new(p.flow.2, 8080, p.flow.0, p.flow.1), SYN | ACK) }
            .seq_ack(0, 1)
            .bytes();
        run_frame(prog, &synack, b, 1);
        let est = Frame::tcp(Flow::new(Ipv4Addr::new(198, 18, 0, 2), 40000, VIP, 80), ACK).seq_ack(1, 1).bytes();
        let (v, _, _) = run_frame(prog, &est, a, 1);
        anyhow::ensure!(v == XDP_REDIRECT, "bench flow not established (verdict {v})");
        single("established TCP flow, IPv4", prog, &est, a);
        single("backend reply, IPv4", prog, &reply, b);
        let c6: Ipv6Addr = "2001:db8::2".parse()?;
        let v6s: Ipv6Addr = "2001:db8:100::10".parse()?;
        let (_, syn6, _) = run_frame(prog, &Frame::tcp(Flow::new(c6, 40000, v6s, 443), SYN).bytes(), a, 1);
        let p6 = parse(&syn6);
        let synack6 =
            Frame { dst_mac: [0; 6], ..Frame::tcp(Flow::new(p6.flow.2, 8080, p6.flow.0, p6.flow.1), SYN | ACK) }
                .seq_ack(0, 1)
                .bytes();
        run_frame(prog, &synack6, b, 1);
        single(
            "established TCP flow, IPv6",
            prog,
            &Frame::tcp(Flow::new(c6, 40000, v6s, 443), ACK).seq_ack(1, 1).bytes(),
            a,
        );
        // Many flows: 16,000 UDP flows (as the veth throughput runs' many-flows case), opened
        // first, then one packet of each per call in a shuffled order: the conntrack lookup
        // of a flow whose entry is not in the CPU's caches, against one flow's.
        let udp_flow = |sport: u16| Frame::udp(Flow::new(Ipv4Addr::new(198, 18, 0, 3), sport, VIP, 53)).bytes();
        let many: Vec<Vec<u8>> =
            (0..throughput::MANY_FLOWS).map(|i| udp_flow(throughput::MANY_FLOWS_FIRST_PORT + i)).collect();
        for f in &many {
            let (v, _, _) = run_frame(prog, f, a, 1);
            anyhow::ensure!(v == XDP_REDIRECT, "UDP bench flow not forwarded (verdict {v})");
        }
        single("established UDP flow, IPv4", prog, &many[0], a);
        progress("established UDP flows, 16,000 in turn");
        let order = shuffled(many.len());
        let v: Vec<Sample> =
            (0..repeats).map(|_| cost::xdp_calls(prog, order.iter().map(|&i| many[i].as_slice()), a)).collect();
        let many_flows = ("established UDP flows, 16,000 in turn, IPv4".to_string(), v);
        // PROXY protocol v2: the first segment (header inserted, each call: the backend never
        // acknowledges it here), then a later segment once it did (seq shifted only).
        let ppf = Flow::new(Ipv4Addr::new(198, 18, 0, 2), 40000, VIP, 85);
        let (v, syn_out, _) = run_frame(prog, &Frame::tcp(ppf, SYN).seq_ack(1000, 0).bytes(), a, 1);
        anyhow::ensure!(v == XDP_REDIRECT, "PROXY bench flow not forwarded (verdict {v})");
        let first = Frame::tcp(ppf, ACK | lb_tests::packet::PSH).seq_ack(1001, 1).payload(&[b'x'; 64]).bytes();
        single("PROXY v2 first segment (header inserted), IPv4", prog, &first, a);
        let p = parse(&syn_out);
        let ack = Frame {
            dst_mac: [0; 6],
            ..Frame::tcp(Flow::new(p.flow.2, 8080, p.flow.0, p.flow.1), ACK).seq_ack(1, 1001 + 28 + 64)
        }
        .bytes();
        run_frame(prog, &ack, b, 1);
        let later = Frame::tcp(ppf, ACK | lb_tests::packet::PSH).seq_ack(1065, 1).payload(&[b'x'; 64]).bytes();
        single("PROXY v2 later segment (seq shifted), IPv4", prog, &later, a);
        single("PROXY v2 backend ACK (ack shifted), IPv4", prog, &ack, b);
        out.push(many_flows);
        // New flows: one packet each (a distinct client address per repeat and port per
        // packet), one call per packet; the flows are forgotten after each repeat, so every
        // repeat finds the source ports free.
        for (name, port) in [
            ("new TCP flow, rr", 80u16),
            ("new TCP flow, wrr", 81),
            ("new TCP flow, Maglev (sch)", 82),
            ("new TCP flow through a whitelist", 84),
        ] {
            progress(name);
            let mut v = Vec::new();
            for r in 0..repeats {
                let client = Ipv4Addr::new(198, 18, 0, 10 + (r as u8) + (port as u8 - 80) * 16);
                let frames: Vec<Vec<u8>> = (1..=new_flows).map(|sport| syn(client, sport, port)).collect();
                v.push(cost::xdp_calls(dp.program()?, frames.iter().map(|f| f.as_slice()), a));
                cost::forget_flows(dp.ebpf_mut())?;
            }
            out.push((name.to_string(), v));
        }
        Ok(out)
    })?;
    let floor_of = |name: &str| results.iter().find(|(n, _)| n.starts_with(name)).map(|(_, v)| cost::medians(v));
    let (floor_repeated, floor_single) =
        (floor_of("floor: ").unwrap_or((1.0, 1.0)), floor_of("floor, one packet").unwrap_or((1.0, 1.0)));
    let cases: Vec<serde_json::Value> = results
        .iter()
        .map(|(name, v)| {
            // Each case against the floor measured the same way (repeated, or one per call).
            let repeated = name.starts_with("floor: ") || name.starts_with("not ours");
            cost::case_json(name, v, if repeated { floor_repeated } else { floor_single })
        })
        .collect();
    Ok(json!(cases))
}

/// 0..n in a fixed pseudo-random order (a full-period LCG walk), the same every run.
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..n).rev() {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, ((x >> 33) as usize) % (i + 1));
    }
    order
}

/// A case starts (the bench takes minutes: say where it is).
pub fn progress(case: &str) {
    eprintln!("bench: {case}");
}

/// Apply N Services with M endpoints each from a manifest directory, then one endpoint change,
/// step by step in this process (the breakdown of what [`control::suite`] measures end to end).
fn control_plane_suite(plan: &Plan) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let mut text = String::new();
    for s in 0..plan.services {
        let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + s as u32);
        writeln!(
            text,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: s{s}, namespace: bench}}\nspec: {{type: LoadBalancer, loadBalancerIP: {vip}, ports: [{{name: tcp, port: 80}}]}}\n---"
        )?;
        let eps: Vec<String> = (0..plan.endpoints_per_service)
            .map(|e| {
                format!(
                    "{{addresses: [\"{}\"]}}",
                    Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(198, 18, 128, 0)) + (s * plan.endpoints_per_service + e) as u32
                    )
                )
            })
            .collect();
        writeln!(
            text,
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{s}-1, namespace: bench, labels: {{kubernetes.io/service-name: s{s}}}}}\naddressType: IPv4\nports: [{{name: tcp, port: 8080}}]\nendpoints: [{}]\n---",
            eps.join(", ")
        )?;
    }
    fs::write(dir.path().join("bench.yaml"), &text)?;
    let services = plan.services;
    let result = std::thread::spawn(move || -> Result<serde_json::Value> {
        let t0 = Instant::now();
        let objects = manifests::load_dir(dir.path())?;
        let parsed = t0.elapsed();
        let build = model::build(&objects, &model::BuildOptions::default());
        anyhow::ensure!(build.errors.is_empty(), "bench manifests rejected: {:?}", &build.errors[..1]);
        let built = t0.elapsed() - parsed;
        let mut dp = Dataplane::load(&Options { max_backends: 1 << 17, ..Options::default() })?;
        let t1 = Instant::now();
        dp.apply(&build.model)?;
        let applied = t1.elapsed();
        // One endpoint of one Service changes.
        let mut changed = build.model.clone();
        let (name, first) = changed.listeners.iter().next().map(|(k, l)| (k.clone(), l.clone())).unwrap();
        let mut l = (*first).clone();
        l.backends[0].addr = "198.18.127.1".parse()?;
        changed.listeners.insert(name, l.into());
        let t2 = Instant::now();
        dp.apply(&changed)?;
        let one_change = t2.elapsed();
        let rss_kib: u64 = fs::read_to_string("/proc/self/status")?
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").parse().unwrap_or(0)))
            .unwrap_or(0);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Ok(json!({
            "services": services,
            "endpoints": build.model.listeners.values().map(|l| l.backends.len()).sum::<usize>(),
            "parse_ms": ms(parsed),
            "validate_ms": ms(built),
            "apply_all_ms": ms(applied),
            "one_endpoint_change_ms": ms(one_change),
            "process_rss_mib": rss_kib as f64 / 1024.0,
        }))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("control-plane suite panicked"))??;
    Ok(result)
}
