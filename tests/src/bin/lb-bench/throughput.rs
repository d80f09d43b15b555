//! Throughput on the veth topology: trafgen pushes 60-byte UDP from the client namespace
//! through (a) an XDP_DROP sink on the load balancer's interface, (b) `lb run` forwarding to a
//! backend, (c) iptables DNAT + MASQUERADE doing the same balancing; one flow and many flows
//! (random source ports); with a routed backend (XDP both ways) and with a pod behind a
//! bridge on the node (XDP hands over to tc). Bounded: a fixed packet count per run.
use std::{fs, process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use lb_tests::{
    daemon::Daemon,
    netns::Netns,
    topology::{Shape, Topology},
};
use serde_json::json;

const MODES: [&str; 3] = ["XDP_DROP sink", "lb (full NAT)", "iptables DNAT"];

pub fn suite(packets: u32, repeats: usize) -> Result<serde_json::Value> {
    let mut rows = Vec::new();
    for (shape, flows) in [
        (Shape::Routed, "one flow"),
        (Shape::Routed, "many flows"),
        (Shape::Bridge, "one flow"),
        (Shape::Bridge, "many flows"),
    ] {
        let mut per_mode: Vec<(String, Vec<f64>, f64)> = Vec::new();
        for mode in MODES {
            let mut secs = Vec::new();
            let mut delivered = 0.0;
            for r in 0..repeats {
                crate::progress(&format!("throughput: {shape:?}, {flows}, {mode} ({}/{repeats})", r + 1));
                let (t, d) = run(shape, mode, flows == "many flows", packets)?;
                secs.push(t);
                delivered = d;
            }
            secs.sort_by(|a, b| a.partial_cmp(b).unwrap());
            per_mode.push((mode.to_string(), secs.clone(), delivered));
        }
        let sink = per_mode[0].1[per_mode[0].1.len() / 2];
        for (mode, secs, delivered) in per_mode {
            let t = secs[secs.len() / 2];
            rows.push(json!({
                "backend": if shape == Shape::Routed { "routed host (XDP both ways)" } else { "pod behind a bridge (XDP hands over to tc)" },
                "mode": mode,
                "flows": flows,
                "mpps": packets as f64 / t / 1e6,
                "marginal_us_per_packet": (t - sink) / packets as f64 * 1e6,
                "delivered": delivered,
            }));
        }
    }
    Ok(json!(rows))
}

/// One run: (seconds trafgen took to send `packets`, fraction that reached the backend or
/// the sink).
fn run(shape: Shape, mode: &str, many: bool, packets: u32) -> Result<(f64, f64)> {
    let topo = Topology::shaped(shape, 1)?;
    let backend_addr = shape.backend_addr(1).to_string();
    // Where NATed traffic leaves the node towards the backend.
    let out_if = if shape == Shape::Routed { topo.lb_ifaces[1].clone() } else { format!("{}cni", topo.prefix) };
    let backend = &topo.backends[0];
    // The backend drops the datagrams before its stack would answer them.
    backend.exec(&["iptables", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport", "8080", "-j", "DROP"])?;
    let lbc = topo.lb_ifaces[0].clone();
    let work = tempfile::tempdir()?;
    let mut _daemon = None;
    let mut _sink = None;
    match mode {
        "XDP_DROP sink" => {
            let name = topo.lb.name.clone();
            _sink = Some(SinkGuard::attach(&topo.lb, &lbc).with_context(|| format!("sink in {name}"))?);
        }
        "lb (full NAT)" => {
            _daemon = Some(start_lb(&topo, &SERVICE.replace("198.18.1.2", &backend_addr), work.path())?);
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
    fs::write(
        &conf,
        format!(
            "{{\n  eth(da={}, sa={}),\n  ipv4(saddr=198.18.0.2, daddr=198.18.100.10, ttl=64),\n  udp(sp={}, dp=80),\n  fill(0x00, 18),\n}}\n",
            hex(lb_mac),
            hex(cli_mac),
            if many { "drnd()" } else { "40000" }
        ),
    )?;
    // Delivered: the sink's interface counter, or the backend's iptables DROP rule counter
    // (veth interface counters count XDP-redirected frames more than once).
    let delivered = |topo: &Topology| -> Result<u64> {
        if mode == "XDP_DROP sink" { rx_packets(&topo.lb, &lbc) } else { raw_drops(&topo.backends[0]) }
    };
    let rx_before = delivered(&topo)?;
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
    let rx = delivered(&topo)? - rx_before;
    Ok((secs, rx as f64 / packets as f64))
}

/// Packets the backend's `raw PREROUTING` DROP rule matched.
fn raw_drops(ns: &Netns) -> Result<u64> {
    let out = ns.exec(&["iptables", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("DROP")).context("no DROP rule")?;
    Ok(line.split_whitespace().next().unwrap_or("0").parse()?)
}

fn rx_packets(ns: &Netns, iface: &str) -> Result<u64> {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{iface}/statistics/rx_packets")])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// TCP connections per second, sequential connect / request / response / close from the client
/// through (a) lb and (b) iptables DNAT, to a real server on the backend.
pub fn connection_rate(connections: usize, repeats: usize) -> Result<serde_json::Value> {
    let mut rows = Vec::new();
    for mode in ["lb (full NAT)", "iptables DNAT"] {
        let mut rates = Vec::new();
        for _ in 0..repeats {
            rates.push(conn_run(mode, connections)?);
        }
        rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rows.push(json!({ "mode": mode, "connections_per_second": { "min": rates[0], "median": rates[rates.len() / 2], "max": rates[rates.len() - 1] } }));
    }
    Ok(json!(rows))
}

fn conn_run(mode: &str, connections: usize) -> Result<f64> {
    let topo = Topology::new(1)?;
    let _server = lb_tests::servers::name_server(&topo.backends[0], "[::]:8080".parse().unwrap(), "backend-1")?;
    let work = tempfile::tempdir()?;
    let mut _daemon = None;
    if mode.starts_with("lb") {
        _daemon = Some(start_lb(&topo, &SERVICE.replace("UDP", "TCP").replace("name: udp", "name: tcp"), work.path())?);
    } else {
        iptables_dnat(&topo.lb, "tcp", "198.18.1.2", &topo.lb_ifaces[1])?;
    }
    let to: std::net::SocketAddr = "198.18.100.10:80".parse()?;
    // Warm up (neighbour resolution), then measure.
    topo.client.run(move || lb_tests::servers::tcp_request(to, std::time::Duration::from_secs(5)))?;
    let secs = topo.client.run(move || -> Result<f64> {
        let start = Instant::now();
        for _ in 0..connections {
            lb_tests::servers::tcp_request(to, std::time::Duration::from_secs(5))?;
        }
        Ok(start.elapsed().as_secs_f64())
    })?;
    Ok(connections as f64 / secs)
}

/// `lb run` on the bench Service `yaml` in `topo`, ready.
fn start_lb(topo: &Topology, yaml: &str, work: &std::path::Path) -> Result<Daemon> {
    let dir = work.join("m");
    fs::create_dir(&dir)?;
    fs::write(dir.join("svc.yaml"), yaml)?;
    Daemon::start_with(&topo.lb, &dir, &topo.iface_list(), 1, work, &topo.lb_args(&[]))
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

/// The floor program attached to an interface in a namespace, detached on drop.
struct SinkGuard {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SinkGuard {
    fn attach(ns: &Netns, iface: &str) -> Result<SinkGuard> {
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel::<Result<(), String>>();
        let iface = iface.to_string();
        let thread = ns.spawn(move || {
            let attached = (|| -> Result<aya::Ebpf> {
                let mut ebpf = lb_userspace::dataplane::load_floor()?;
                let prog: &mut aya::programs::Xdp =
                    ebpf.program_mut(lb_userspace::dataplane::FLOOR_PROGRAM).unwrap().try_into()?;
                prog.attach(&iface, aya::programs::XdpMode::Driver)?;
                Ok(ebpf)
            })();
            match attached {
                Ok(ebpf) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = wait.recv();
                    drop(ebpf);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                }
            }
        });
        ready.recv()?.map_err(|e| anyhow::anyhow!(e))?;
        Ok(SinkGuard { stop, thread: Some(thread) })
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
