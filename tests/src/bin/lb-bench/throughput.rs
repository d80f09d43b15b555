//! Throughput on the veth topology: trafgen pushes 60-byte UDP from the client namespace
//! through (a) an XDP_DROP sink on the load balancer's interface, (b) the minimal XDP forwarder
//! (MAC rewrite + devmap redirect; routed backend only), (c) `lb run` forwarding to a backend,
//! (d) iptables DNAT + MASQUERADE doing the same balancing; one flow and 16,000 flows (source
//! ports); with a routed backend (XDP both ways) and with a pod behind a bridge on the node (XDP
//! hands over to tc). Each XDP run also reads its program's own time (bpf_stats). Bounded: a
//! fixed packet count per run. `--compare-lb WRAPPER` adds another `lb` build as a mode of its
//! own, interleaved with the others (`lb run` started as `WRAPPER <lb> run ...`: a script
//! that runs another binary, or the same one with other flags), for A/B runs of a change.
use std::{collections::BTreeMap, fs, process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use lb_tests::{
    daemon::Daemon,
    netns::Netns,
    topology::{Shape, Topology},
};
use serde_json::json;

use crate::veth_xdp::{Reference, XdpGuard, ifindex, xdp_stats};

const SINK: &str = "XDP_DROP sink";
const MIN_FWD: &str = "minimal XDP forwarder";
const LB: &str = "lb (full NAT)";
const IPTABLES: &str = "iptables DNAT";
const LB_COMPARED: &str = "lb (--compare-lb)";
/// Distinct source ports of the many-flows runs (each a flow through the VIP), from
/// [`MANY_FLOWS_FIRST_PORT`]; the datapath suite's 16,000-flow case opens the same.
pub const MANY_FLOWS: u16 = 16_000;
pub const MANY_FLOWS_FIRST_PORT: u16 = 20_000;

/// A mode's runs summed up: (mode, median seconds, lowest delivered, median program ns, lb's
/// drop counters over the runs).
type ModeResult<'a> = (&'a str, f64, f64, Option<f64>, BTreeMap<String, u64>);

/// One run's result.
struct Run {
    secs: f64,
    /// Fraction of the packets that reached the backend (or the sink).
    delivered: f64,
    /// The XDP program's own ns per packet (bpf_stats), if an XDP program forwards.
    prog_ns: Option<f64>,
    /// lb's own nonzero drop counters after the run (`lb stats`), for lb's runs.
    drops: BTreeMap<String, u64>,
}

pub fn suite(packets: u32, repeats: usize, compare: Option<&str>) -> Result<serde_json::Value> {
    let _stats = crate::cost::enable_stats()?;
    let mut rows = Vec::new();
    for (shape, many) in [(Shape::Routed, false), (Shape::Routed, true), (Shape::Bridge, false), (Shape::Bridge, true)]
    {
        let flows = if many { "16,000 flows" } else { "one flow" };
        // The minimal forwarder redirects to a device that takes XDP frames: not a bridge.
        let mut modes =
            if shape == Shape::Routed { vec![SINK, MIN_FWD, LB, IPTABLES] } else { vec![SINK, LB, IPTABLES] };
        if compare.is_some() {
            modes.insert(modes.len() - 1, LB_COMPARED);
        }
        // Repeats outermost: each round measures every mode, so the load other work puts on
        // the machine falls on all of them alike.
        let mut runs: Vec<Vec<Run>> = modes.iter().map(|_| Vec::new()).collect();
        for r in 0..repeats {
            for (i, &mode) in modes.iter().enumerate() {
                crate::progress(&format!("throughput: {shape:?}, {flows}, {mode} ({}/{repeats})", r + 1));
                runs[i].push(run(shape, mode, many, packets, compare)?);
            }
        }
        let mut per_mode: Vec<ModeResult> = Vec::new();
        for (&mode, mut runs) in modes.iter().zip(runs) {
            // Where what was not delivered went, by lb's counters, over every run.
            let mut drops = BTreeMap::new();
            for (k, n) in runs.iter().flat_map(|r| &r.drops) {
                *drops.entry(k.clone()).or_insert(0) += n;
            }
            runs.sort_by(|a, b| a.secs.total_cmp(&b.secs));
            let median = &runs[runs.len() / 2];
            let mut prog: Vec<f64> = runs.iter().filter_map(|r| r.prog_ns).collect();
            prog.sort_by(f64::total_cmp);
            let delivered = runs.iter().map(|r| r.delivered).fold(f64::INFINITY, f64::min);
            per_mode.push((mode, median.secs, delivered, prog.get(prog.len() / 2).copied(), drops));
        }
        let sink = per_mode[0].1;
        let marginal = |mode: &str| per_mode.iter().find(|m| m.0 == mode).map(|m| (m.1 - sink) / packets as f64 * 1e6);
        for (mode, secs, delivered, prog_ns, drops) in &per_mode {
            let (mode, secs) = (*mode, *secs);
            let m = (secs - sink) / packets as f64 * 1e6;
            let ratio = |peer: &str| marginal(peer).filter(|_| mode == LB || mode == LB_COMPARED).map(|p| m / p);
            rows.push(json!({
                "backend": if shape == Shape::Routed { "routed host (XDP both ways)" } else { "pod behind a bridge (XDP hands over to tc)" },
                "mode": mode,
                "flows": flows,
                "mpps": packets as f64 / secs / 1e6,
                "marginal_us_per_packet": m,
                "vs_min_forwarder": ratio(MIN_FWD),
                "vs_iptables": ratio(IPTABLES),
                "program_ns_per_packet": prog_ns,
                "delivered": delivered,
                "lb_drops": (mode == LB || mode == LB_COMPARED).then_some(drops),
            }));
        }
    }
    Ok(json!(rows))
}

/// One run: how long trafgen took to send `packets`, what reached the backend or the sink,
/// and the XDP program's own time.
fn run(shape: Shape, mode: &str, many: bool, packets: u32, compare: Option<&str>) -> Result<Run> {
    let topo = Topology::shaped(shape, 1)?;
    let backend_addr = shape.backend_addr(1).to_string();
    // Where NATed traffic leaves the node towards the backend.
    let out_if = if shape == Shape::Routed { topo.lb_ifaces[1].clone() } else { format!("{}cni", topo.prefix) };
    let backend = &topo.backends[0];
    // The backend counts and drops the datagrams at tc ingress on its own interface, before
    // its IP stack: its receive path runs in the generator's softirq, so it counts in every
    // mode's time, though it is not the node's work; there every mode's packet is an skb
    // (an XDP sink there would copy only the stack-forwarded skbs, for headroom).
    let backend_if = if shape == Shape::Routed { format!("{}b1", topo.prefix) } else { "eth0".to_string() };
    let backend_sink = XdpGuard::attach(backend, &backend_if, Reference::UdpSink).context("backend sink")?;
    let lbc = topo.lb_ifaces[0].clone();
    let work = tempfile::tempdir()?;
    let mut _daemon = None;
    let mut _xdp = None;
    match mode {
        SINK => {
            let name = topo.lb.name.clone();
            _xdp = Some(XdpGuard::attach(&topo.lb, &lbc, Reference::Sink).with_context(|| format!("sink in {name}"))?);
        }
        MIN_FWD => {
            let fwd = Reference::MinForwarder {
                out_ifindex: ifindex(&topo.lb, &out_if)?,
                dmac: backend.mac(&format!("{}b1", topo.prefix))?,
                smac: topo.lb.mac(&out_if)?,
            };
            _xdp = Some(XdpGuard::attach(&topo.lb, &lbc, fwd).context("minimal forwarder")?);
        }
        LB | LB_COMPARED => {
            let wrapper: Vec<&str> = compare.filter(|_| mode == LB_COMPARED).into_iter().collect();
            _daemon = Some(start_lb(&topo, &SERVICE.replace("198.18.1.2", &backend_addr), work.path(), &wrapper)?);
        }
        _ => {
            iptables_dnat(&topo.lb, "udp", &backend_addr, &out_if)?;
            // Resolve the backend first, as lb's managed neighbour entry would.
            topo.lb.exec(&["ip", "neigh", "replace", &backend_addr, "dev", &out_if, "managed"])?;
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
    let lb_mac = topo.lb.mac(&lbc)?;
    let cli_if = format!("{}c0", topo.prefix);
    let cli_mac = topo.client.mac(&cli_if)?;
    let hex = |m: [u8; 6]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let conf = work.path().join("trafgen.cfg");
    let sport = if many {
        format!("drnd({MANY_FLOWS_FIRST_PORT}, {})", MANY_FLOWS_FIRST_PORT + MANY_FLOWS - 1)
    } else {
        "40000".to_string()
    };
    fs::write(
        &conf,
        format!(
            "{{\n  eth(da={}, sa={}),\n  ipv4(saddr=198.18.0.2, daddr=198.18.100.10, ttl=64),\n  udp(sp={sport}, dp=80),\n  fill(0x00, 18),\n}}\n",
            hex(lb_mac),
            hex(cli_mac),
        ),
    )?;
    // Delivered: what the node's sink or the backend's sink counted (veth interface counters
    // count XDP-redirected frames more than once).
    let delivered = || -> Result<u64> {
        match (&_xdp, mode) {
            (Some(sink), SINK) => sink.received(),
            _ => backend_sink.received(),
        }
    };
    let xdp = mode != IPTABLES;
    let stats_before = if xdp { xdp_stats(&topo.lb, &lbc)? } else { (0, 0) };
    let rx_before = delivered()?;
    // In chunks of at most 50 000 packets, each retried: trafgen sometimes fails to flush its
    // TX ring on a busy veth.
    let mut secs = 0.0;
    let mut left = packets;
    while left > 0 {
        let chunk = left.min(50_000);
        let mut attempt = 0;
        secs += loop {
            let start = Instant::now();
            let out = Command::new("ip")
                .args(["netns", "exec", &topo.client.name, "timeout", "120", "trafgen", "--dev", &cli_if, "--conf"])
                .arg(&conf)
                .args(["-n", &chunk.to_string(), "--cpus", "1", "-q"])
                .output()
                .context("running trafgen (apt-get install netsniff-ng)")?;
            let secs = start.elapsed().as_secs_f64();
            if out.status.success() {
                break secs;
            }
            attempt += 1;
            if attempt > 2 {
                bail!("trafgen failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        };
        left -= chunk;
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let rx = delivered()? - rx_before;
    let prog_ns = if xdp {
        let (t, n) = xdp_stats(&topo.lb, &lbc)?;
        let n = n - stats_before.1;
        (n > 0).then(|| (t - stats_before.0) as f64 / n as f64)
    } else {
        None
    };
    let drops = match &_daemon {
        Some(_) => lb_drops(&topo)?,
        None => BTreeMap::new(),
    };
    Ok(Run { secs, delivered: rx as f64 / packets as f64, prog_ns, drops })
}

/// TCP connections per second, sequential connect / request / response / close from the client
/// through (a) lb and (b) iptables DNAT, to a real server on the backend (modes interleaved per
/// repeat); with each connection's own time, so a stall (a lost SYN waits a second) shows.
pub fn connection_rate(connections: usize, repeats: usize) -> Result<serde_json::Value> {
    let _stats = crate::cost::enable_stats()?;
    let modes = [LB, IPTABLES];
    let mut runs: Vec<Vec<ConnRun>> = modes.iter().map(|_| Vec::new()).collect();
    for r in 0..repeats {
        for (i, mode) in modes.iter().enumerate() {
            crate::progress(&format!("connections: {mode} ({}/{repeats})", r + 1));
            runs[i].push(conn_run(mode, connections)?);
        }
    }
    let mut rows = Vec::new();
    for (mode, runs) in modes.iter().zip(runs) {
        let mut rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
        rates.sort_by(f64::total_cmp);
        let mut times: Vec<f64> = runs.iter().flat_map(|r| r.each.iter().copied()).collect();
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        let mut program: Vec<(f64, f64)> = runs.iter().filter_map(|r| r.program).collect();
        program.sort_by(|a, b| a.0.total_cmp(&b.0));
        let program = program.get(program.len() / 2).copied();
        rows.push(json!({
            "mode": mode,
            "connections_per_second": { "min": rates[0], "median": rates[rates.len() / 2], "max": rates[rates.len() - 1] },
            "connection_us": { "median": at(0.5) * 1e6, "p99": at(0.99) * 1e6, "max": at(1.0) * 1e6 },
            "stalls_over_200ms": times.iter().filter(|t| **t > 0.2).count(),
            "program_ns_per_connection": program.map(|p| p.0),
            "program_packets_per_connection": program.map(|p| p.1),
        }));
    }
    Ok(json!(rows))
}

fn conn_run(mode: &str, connections: usize) -> Result<ConnRun> {
    let topo = Topology::new(1)?;
    let _server = lb_tests::servers::name_server(&topo.backends[0], "[::]:8080".parse().unwrap(), "backend-1")?;
    let work = tempfile::tempdir()?;
    let mut _daemon = None;
    if mode == LB {
        let yaml = SERVICE.replace("UDP", "TCP").replace("name: udp", "name: tcp");
        _daemon = Some(start_lb(&topo, &yaml, work.path(), &[])?);
    } else {
        iptables_dnat(&topo.lb, "tcp", "198.18.1.2", &topo.lb_ifaces[1])?;
    }
    let to: std::net::SocketAddr = "198.18.100.10:80".parse()?;
    // Warm up (neighbour resolution), then measure.
    topo.client.run(move || lb_tests::servers::tcp_request(to, std::time::Duration::from_secs(5)))?;
    let before = if mode == LB { xdp_stats(&topo.lb, &topo.lb_ifaces[0])? } else { (0, 0) };
    let (secs, each) = topo.client.run(move || -> Result<(f64, Vec<f64>)> {
        let start = Instant::now();
        let mut each = Vec::with_capacity(connections);
        for _ in 0..connections {
            let t = Instant::now();
            lb_tests::servers::tcp_request(to, std::time::Duration::from_secs(5))?;
            each.push(t.elapsed().as_secs_f64());
        }
        Ok((start.elapsed().as_secs_f64(), each))
    })?;
    // lb's program on both its interfaces (one program): its own time per connection.
    let program = if mode == LB {
        let (t, n) = xdp_stats(&topo.lb, &topo.lb_ifaces[0])?;
        let (t, n) = ((t - before.0) as f64, (n - before.1) as f64);
        Some((t / connections as f64, n / connections as f64))
    } else {
        None
    };
    Ok(ConnRun { rate: connections as f64 / secs, each, program })
}

/// One connection-rate run.
struct ConnRun {
    rate: f64,
    /// Each connection's seconds.
    each: Vec<f64>,
    /// lb's XDP program: (its ns, its packets) per connection (bpf_stats).
    program: Option<(f64, f64)>,
}

/// `lb run` (under `wrapper`, if any) on the bench Service `yaml` in `topo`, ready.
/// lb's nonzero `drop_*` datapath counters (`lb stats --json` against the daemon).
fn lb_drops(topo: &Topology) -> Result<BTreeMap<String, u64>> {
    let out =
        topo.lb.command(lb_tests::daemon::lb_bin().to_str().context("lb path")?).args(["stats", "--json"]).output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("lb stats --json")?;
    let counters = v["datapath"].as_object().cloned().context("lb stats --json: no datapath counters")?;
    Ok(counters
        .into_iter()
        .filter(|(k, _)| k.starts_with("drop_"))
        .filter_map(|(k, c)| c["packets"].as_u64().filter(|n| *n > 0).map(|n| (k, n)))
        .collect())
}

fn start_lb(topo: &Topology, yaml: &str, work: &std::path::Path, wrapper: &[&str]) -> Result<Daemon> {
    let dir = work.join("m");
    fs::create_dir(&dir)?;
    fs::write(dir.join("svc.yaml"), yaml)?;
    Daemon::start_wrapped(&topo.lb, &dir, &topo.iface_list(), 1, work, &topo.lb_args(&[]), wrapper)
}

/// The peer: iptables DNAT from VIP:80/`proto` to `backend`:8080 and MASQUERADE out of
/// `out_if`, in the load balancer's namespace.
fn iptables_dnat(lb: &Netns, proto: &str, backend: &str, out_if: &str) -> Result<()> {
    lb.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let to = format!("{backend}:8080");
    let rule =
        ["-A", "PREROUTING", "-d", "198.18.100.10", "-p", proto, "--dport", "80", "-j", "DNAT", "--to-destination"];
    lb.exec(&[&["iptables", "-t", "nat"][..], &rule, &[to.as_str()]].concat())?;
    lb.exec(&["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", out_if, "-j", "MASQUERADE"])?;
    Ok(())
}

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata: {name: bench, namespace: bench}
spec:
  type: LoadBalancer
  loadBalancerIP: 198.18.100.10
  ports: [{name: udp, protocol: UDP, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: bench-1, namespace: bench, labels: {kubernetes.io/service-name: bench}}
addressType: IPv4
ports: [{name: udp, protocol: UDP, port: 8080}]
endpoints: [{addresses: ["198.18.1.2"]}]
"#;
