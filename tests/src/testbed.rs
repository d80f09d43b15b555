//! A namespace for running the XDP program through BPF_PROG_TEST_RUN with real routes and
//! neighbours, so `bpf_fib_lookup` answers as on a node: interface `a` faces clients
//! (198.18.0.1/24, 2001:db8::1/64), interface `b` faces backends (198.18.1.1/24,
//! 2001:db8:1::1/64) with static neighbours for the backends below. Used by the packet
//! tests and by `cargo xtask bench`.
use std::time::Duration;

use anyhow::Result;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};

use crate::netns::{Netns, sh, unique_prefix};

/// Backends with a static neighbour entry on `b`.
pub const BACKEND_MACS: [(&str, [u8; 6]); 5] = [
    ("198.18.1.2", [0x02, 0xbe, 0, 0, 0, 0x01]),
    ("198.18.1.3", [0x02, 0xbe, 0, 0, 0, 0x02]),
    ("198.18.1.4", [0x02, 0xbe, 0, 0, 0, 0x03]),
    ("2001:db8:1::2", [0x02, 0xbe, 0, 0, 0, 0x12]),
    ("2001:db8:1::3", [0x02, 0xbe, 0, 0, 0, 0x13]),
];

pub struct Bed {
    pub ns: Netns,
    /// ifindex of the client-side interface.
    pub a: u32,
    /// ifindex of the backend-side interface.
    pub b: u32,
    pub b_mac: [u8; 6],
}

impl Bed {
    pub fn new() -> Result<Bed> {
        let ns = Netns::new(&format!("{}t", unique_prefix()))?;
        let (a, b) = (format!("{}a", ns.name), format!("{}b", ns.name));
        sh(&["ip", "link", "add", &a, "netns", &ns.name, "type", "veth", "peer", "name", &b, "netns", &ns.name])?;
        for (dev, v4, v6) in [(&a, "198.18.0.1/24", "2001:db8::1/64"), (&b, "198.18.1.1/24", "2001:db8:1::1/64")] {
            ns.ip(&["addr", "add", v4, "dev", dev])?;
            ns.ip(&["addr", "add", v6, "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        for (ip, mac) in BACKEND_MACS {
            let mac = mac.iter().map(|m| format!("{m:02x}")).collect::<Vec<_>>().join(":");
            ns.ip(&["neigh", "add", ip, "lladdr", &mac, "dev", &b, "nud", "permanent"])?;
        }
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        let (ai, bi, b_mac) = (ns.ifindex(&a)?, ns.ifindex(&b)?, ns.mac(&b)?);
        Ok(Bed { ns, a: ai, b: bi, b_mac })
    }
}

/// Run `prog` on `frame` as if received on `ifindex`, `repeat` times: (verdict, the frame
/// after the program, the kernel's average time per run).
pub fn run_frame(prog: &mut Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> (u32, Vec<u8>, Duration) {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    opts.repeat = repeat;
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out, r.duration)
}

/// Run the tc program `prog` on `frame` as if it arrived on `ifindex` (tc ingress), or was
/// sent by this node's own stack out of `ifindex` (tc egress: `local`), `repeat` times:
/// (verdict, the frame after the program, the kernel's average time per run).
pub fn run_skb(
    prog: &mut SchedClassifier,
    frame: &[u8],
    ifindex: u32,
    local: bool,
    repeat: u32,
) -> (u32, Vec<u8>, Duration) {
    // struct __sk_buff: ingress_ifindex at 36, ifindex at 40 (the device the skb is on);
    // every other field BPF_PROG_TEST_RUN accepts stays zero.
    let mut ctx = [0u8; 192];
    let ingress = if local { 0 } else { ifindex };
    ctx[36..40].copy_from_slice(&ingress.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 512];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    opts.repeat = repeat;
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN (tc)");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out, r.duration)
}

/// A TCP/UDP listener on `vip:port` over `backends` ((address, port, weight)) with defaults
/// for everything else, as a Service without annotations would give.
pub fn listener(
    vip: std::net::IpAddr,
    port: u16,
    protocol: lb_userspace::model::Protocol,
    scheduler: lb_userspace::model::Scheduler,
    backends: &[(std::net::IpAddr, u16, u32)],
) -> lb_userspace::model::L4Listener {
    use lb_userspace::model::{Backend, L4Listener, ObjectRef};
    L4Listener {
        source: ObjectRef { kind: "Service".into(), namespace: "t".into(), name: format!("l{port}") },
        vip,
        port,
        protocol,
        scheduler,
        backends: backends.iter().map(|(a, p, w)| Backend { addr: *a, port: *p, weight: *w }).collect(),
        persistence_timeout: 0,
        established_timeout: lb_userspace::model::DEFAULT_ESTABLISHED_TIMEOUT,
        drain_timeout: None,
        acl: None,
        health_check: None,
        proxy_protocol: lb_userspace::model::ProxyProtocol::Off,
    }
}

/// The static neighbour MAC of backend `ip` in [`Bed`].
pub fn mac_of(ip: std::net::IpAddr) -> [u8; 6] {
    BACKEND_MACS.iter().find(|(a, _)| a.parse::<std::net::IpAddr>().unwrap() == ip).unwrap().1
}

/// A model of just these listeners.
pub fn model(listeners: Vec<lb_userspace::model::L4Listener>) -> lb_userspace::model::Model {
    let mut m = lb_userspace::model::Model::default();
    for l in listeners {
        m.listeners.insert(lb_userspace::model::listener_name(&l), std::sync::Arc::new(l));
    }
    m
}

/// Keep the calling thread on CPU 0 (per-CPU round robin is then strictly sequential, and
/// timings do not mix CPUs).
pub fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}
