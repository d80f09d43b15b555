//! Restart continuity (issue #15): `lb run` pins its datapath in bpffs, so its programs keep
//! forwarding while it is stopped (SIGTERM or SIGKILL), and the next `lb run` on the same pins
//! adopts the flows: established TCP connections lose no byte, a UDP flow keeps its backend,
//! node settings are applied once, and `lb uninstall` takes everything away. Every test runs
//! with routed backends, pods behind a bridge, and pods behind a VXLAN overlay.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    in_every_shape,
    netns::Netns,
    scenario::{Scenario, service_yaml},
    servers::{Server, Session, greeting_echo_server, tcp_request},
    topology::{Shape, VIP},
};
use nix::sys::signal::Signal;

const P: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";
const TIMEOUT: Duration = Duration::from_secs(5);
const BACKENDS: usize = 3;
/// The echo Service: VIP:81 → backends' ECHO_PORT.
const ECHO_VIP_PORT: u16 = 81;
const ECHO_PORT: u16 = 9000;
/// Long-lived connections talking through the restarts.
const TALKERS: usize = 4;
/// Bounds of each connection's talk, whatever happens.
const MAX_LINES: usize = 50_000;
const TALK_AT_MOST: Duration = Duration::from_secs(120);
/// Pause between two lines of a connection.
const PACE: Duration = Duration::from_millis(5);
/// Lines every connection must exchange in each phase (before, while lb is down, after).
const PER_PHASE: usize = 30;
/// The SNAT range `lb run` reserves by default.
const SNAT: &str = "10000-29999";
const ADOPTED: &str = "adopted pinned datapath";

fn vip(port: u16) -> SocketAddr {
    SocketAddr::new(VIP.into(), port)
}

fn backends(shape: Shape) -> Vec<(String, Option<u32>)> {
    (1..=BACKENDS).map(|i| (shape.backend_addr(i).to_string(), None)).collect()
}

/// A TCP Service on VIP:81 over the backends' echo servers.
fn echo_yaml(shape: Shape) -> String {
    let eps: String = (1..=BACKENDS)
        .map(|i| format!("- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n", shape.backend_addr(i)))
        .collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: e2e}}
spec:
  type: LoadBalancer
  loadBalancerIP: "{VIP}"
  ports: [{{name: echo, protocol: TCP, port: {ECHO_VIP_PORT}, targetPort: {ECHO_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: e2e, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: echo, protocol: TCP, port: {ECHO_PORT}}}]
endpoints:
{eps}"#
    )
}

/// Line `n` of connection `id`: numbered, ~120 bytes.
fn line(id: usize, n: usize) -> String {
    format!("conn {id} line {n:06} {}\n", format!("{:08x}", n.wrapping_mul(0x9e37_79b9) ^ id).repeat(12))
}

/// What one long-lived connection saw.
#[derive(Debug)]
struct Talk {
    backend: String,
    /// Lines sent and echoed back intact, in order.
    lines: usize,
    error: Option<String>,
    /// The longest wait for an echo.
    slowest: Duration,
}

/// Connect to the echo Service and send numbered lines until `stop` (or the bounds), each
/// checked as it comes back; at the end half-close and expect nothing more than EOF.
fn talk(id: usize, progress: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> Talk {
    let mut t = Talk { backend: String::new(), lines: 0, error: None, slowest: Duration::ZERO };
    let run = |t: &mut Talk| -> anyhow::Result<()> {
        let mut s = Session::open(None, vip(ECHO_VIP_PORT), TIMEOUT)?;
        s.stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(s.stream.try_clone()?);
        reader.read_line(&mut t.backend)?;
        t.backend = t.backend.trim().to_string();
        let started = Instant::now();
        let mut got = String::new();
        while !stop.load(Ordering::Relaxed) && t.lines < MAX_LINES && started.elapsed() < TALK_AT_MOST {
            let want = line(id, t.lines);
            let sent = Instant::now();
            s.stream.write_all(want.as_bytes())?;
            got.clear();
            reader.read_line(&mut got)?;
            if got != want {
                anyhow::bail!("line {}: sent {want:?}, got back {got:?}", t.lines);
            }
            t.slowest = t.slowest.max(sent.elapsed());
            t.lines += 1;
            progress.store(t.lines, Ordering::Relaxed);
            thread::sleep(PACE);
        }
        s.stream.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest)?;
        if !rest.is_empty() {
            anyhow::bail!("{} bytes after the last line: {:?}", rest.len(), String::from_utf8_lossy(&rest));
        }
        Ok(())
    };
    if let Err(e) = run(&mut t) {
        t.error = Some(format!("{e:#}"));
    }
    t
}

/// Wait until every connection has exchanged `n` more lines than now (30 s at most).
fn progressed(progress: &[Arc<AtomicUsize>], n: usize) -> Result<(), String> {
    let from: Vec<usize> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<usize> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
        if now.iter().zip(&from).all(|(a, b)| *a >= b + n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("in 30 s the connections went from {from:?} to {now:?} lines (wanted +{n})"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// New connections: a request to the name Service (VIP:80) and an echo connection (VIP:81)
/// with one line, `n` times each; the answers (or errors).
fn new_connections(client: &Netns, n: usize) -> Vec<Result<String, String>> {
    client.run(move || {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(tcp_request(vip(80), TIMEOUT).map_err(|e| format!("{e:#}")));
            let echo = || -> anyhow::Result<String> {
                let mut s = Session::open(None, vip(ECHO_VIP_PORT), TIMEOUT)?;
                let mut reader = BufReader::new(s.stream.try_clone()?);
                let mut name = String::new();
                reader.read_line(&mut name)?;
                let want = line(100 + i, i);
                s.stream.write_all(want.as_bytes())?;
                let mut got = String::new();
                reader.read_line(&mut got)?;
                anyhow::ensure!(got == want, "sent {want:?}, got back {got:?}");
                Ok(name.trim().to_string())
            };
            out.push(echo().map_err(|e| format!("{e:#}")));
        }
        out
    })
}

fn tcp_connections_survive_sigterm_and_sigkill_restarts(shape: Shape) {
    let svc = service_yaml("svc", &VIP.to_string(), &[], &backends(shape));
    let mut s =
        Scenario::start_in(shape, BACKENDS, &[("svc.yaml", &svc), ("echo.yaml", &echo_yaml(shape))], 3, &[]).unwrap();
    let _echo: Vec<Server> = s
        .topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| greeting_echo_server(ns, ECHO_PORT, &format!("backend-{}", i + 1)))
        .collect();
    assert!(!s.daemon.run_log_text().contains(ADOPTED), "a first run on empty pins adopts nothing");

    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<AtomicUsize>> = (0..TALKERS).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let talkers: Vec<_> = (0..TALKERS)
        .map(|id| {
            let (p, stop) = (progress[id].clone(), stop.clone());
            s.topo.client.spawn(move || talk(id, p, stop))
        })
        .collect();
    let finish = |stop: &AtomicBool, talkers: Vec<thread::JoinHandle<Talk>>| -> Vec<Talk> {
        stop.store(true, Ordering::Relaxed);
        talkers.into_iter().map(|t| t.join().unwrap()).collect()
    };

    let mut measured = Vec::new();
    let mut failures = Vec::new();
    if let Err(e) = restarts(&mut s, &progress, &mut measured, &mut failures) {
        failures.push(e);
    } else if let Err(e) = progressed(&progress, PER_PHASE) {
        failures.push(format!("after both restarts: {e}"));
    }
    let talks = finish(&stop, talkers);
    for m in &measured {
        eprintln!("{}: {m}", shape.name());
    }
    for (id, t) in talks.iter().enumerate() {
        eprintln!(
            "{}: connection {id} to {}: {} lines echoed intact, slowest echo {:.1?}{}",
            shape.name(),
            t.backend,
            t.lines,
            t.slowest,
            t.error.as_deref().map(|e| format!(", then: {e}")).unwrap_or_default()
        );
    }
    assert!(failures.is_empty(), "{}\n{talks:#?}\n{}", failures.join("\n"), s.daemon.log_text());
    for t in &talks {
        assert!(t.error.is_none(), "{talks:#?}\n{}", s.daemon.log_text());
        assert!(t.backend.starts_with("backend-"), "{talks:#?}");
        // Before, during and after each of the two restarts, and at the end.
        assert!(t.lines >= 6 * PER_PHASE, "{talks:#?}");
    }
}

/// Stop lb with SIGTERM, then with SIGKILL, and start it again each time, while the
/// connections talk: they must go on before, while lb is down and after, and new connections
/// must open while it is down and after. What it measured goes to `measured`, new connections
/// that failed to `failures`; an error ends the test (the connections stalled, lb failed).
fn restarts(
    s: &mut Scenario,
    progress: &[Arc<AtomicUsize>],
    measured: &mut Vec<String>,
    failures: &mut Vec<String>,
) -> Result<(), String> {
    progressed(progress, PER_PHASE).map_err(|e| format!("before any restart: {e}"))?;
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let down_at = Instant::now();
        s.daemon.halt(signal).map_err(|e| format!("{e:#}"))?;
        // lb is down: established flows keep going, new ones open.
        progressed(progress, PER_PHASE).map_err(|e| format!("while lb was down after {signal}: {e}"))?;
        let new_down = new_connections(&s.topo.client, 3);
        let resumed_at = Instant::now();
        s.daemon.resume().map_err(|e| format!("{e:#}"))?;
        let (downtime, start_took) = (down_at.elapsed(), resumed_at.elapsed());
        s.daemon.wait_for_log(ADOPTED, 1, Duration::from_secs(10)).map_err(|e| format!("{e:#}"))?;
        progressed(progress, PER_PHASE).map_err(|e| format!("after the restart on {signal}: {e}"))?;
        let new_after = new_connections(&s.topo.client, 3);
        let adopted = s.daemon.run_log_text().matches(ADOPTED).count();
        if adopted != 1 {
            failures.push(format!("{signal}: {ADOPTED:?} {adopted} times in the restarted lb's log"));
        }
        for (when, new) in [("while lb was down", &new_down), ("after the restart", &new_after)] {
            if !new.iter().all(|r| r.as_ref().is_ok_and(|b| b.starts_with("backend-"))) {
                failures.push(format!("{signal}: new connections {when}: {new:?}"));
            }
        }
        let ok = |new: &[Result<String, String>]| new.iter().filter(|r| r.is_ok()).count();
        measured.push(format!(
            "{signal}: lb down for {downtime:.2?} (its start took {start_took:.2?}); new connections answered: \
             {} of {} while down, {} of {} after",
            ok(&new_down),
            new_down.len(),
            ok(&new_after),
            new_after.len()
        ));
    }
    Ok(())
}

/// Ask over a connected UDP socket: the backend that answered.
fn ask(sock: &UdpSocket) -> Result<String, String> {
    sock.send(b"hello\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).map_err(|e| format!("no answer: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

fn udp_socket(client: &Netns, port: u16) -> UdpSocket {
    let sock = client.run(move || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))).unwrap();
    sock.connect(vip(80)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock
}

/// The UDP listener's new flows, from `lb stats`.
fn udp_new_flows(lb: &Netns) -> u64 {
    let out = lb.exec(&[lb_tests::daemon::lb_bin().to_str().unwrap(), "stats", "--json"]).unwrap();
    let live: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    live["listeners"][format!("{VIP}:80/udp")]["new_flows"].as_u64().unwrap_or(0)
}

fn udp_flow_keeps_its_backend_across_restart(shape: Shape) {
    let svc = service_yaml("svc", &VIP.to_string(), &[(&format!("{P}scheduler"), "rr")], &backends(shape));
    let mut s = Scenario::start_in(shape, BACKENDS, &[("svc.yaml", &svc)], 2, &[]).unwrap();
    // Six flows, each from its own fixed source port: rr spreads them over the backends.
    let socks: Vec<UdpSocket> = (0..6).map(|i| udp_socket(&s.topo.client, 40001 + i)).collect();
    let mut first = Vec::new();
    for (i, sock) in socks.iter().enumerate() {
        let answers: Vec<_> = (0..3).map(|_| ask(sock)).collect();
        let b = answers[0].clone().unwrap_or_else(|e| panic!("flow {i}: {e}\n{}", s.daemon.log_text()));
        assert!(answers.iter().all(|a| a.as_ref() == Ok(&b)), "flow {i} before the restart: {answers:?}");
        first.push(b);
    }
    eprintln!("{}: the six flows' backends: {first:?}", shape.name());

    // SIGKILL: the datapath keeps every flow on its backend while lb is down...
    let down_at = Instant::now();
    s.daemon.halt(Signal::SIGKILL).unwrap();
    let down: Vec<_> = socks.iter().rev().map(ask).collect::<Vec<_>>().into_iter().rev().collect();
    // ... and after lb started again on the same pins, without opening a flow for them.
    s.daemon.resume().unwrap();
    let downtime = down_at.elapsed();
    s.daemon.wait_for_log(ADOPTED, 1, Duration::from_secs(10)).unwrap();
    let new_flows = udp_new_flows(&s.topo.lb);
    let after: Vec<Vec<_>> = socks.iter().rev().map(|sock| (0..3).map(|_| ask(sock)).collect()).collect();
    let after: Vec<Vec<_>> = after.into_iter().rev().collect();
    let new_flows_after = udp_new_flows(&s.topo.lb);
    // A new flow still opens (and is counted: the counter above can move).
    let fresh = ask(&udp_socket(&s.topo.client, 40007));
    let new_flows_fresh = udp_new_flows(&s.topo.lb);
    eprintln!(
        "{}: lb down (SIGKILL to ready again) {downtime:.2?}; while down {down:?}; after {after:?}; \
         a new flow: {fresh:?}; UDP new flows after the restart: {new_flows} -> {new_flows_after} -> {new_flows_fresh}",
        shape.name()
    );
    for (i, b) in first.iter().enumerate() {
        assert_eq!(down[i].as_ref(), Ok(b), "flow {i} while lb was down\n{}", s.daemon.log_text());
        assert!(after[i].iter().all(|a| a.as_ref() == Ok(b)), "flow {i} after the restart: {after:?}");
    }
    assert_eq!(new_flows_after, new_flows, "the old flows opened no new flow after the restart");
    assert!(fresh.as_ref().is_ok_and(|b| b.starts_with("backend-")), "{fresh:?}");
    assert_eq!(new_flows_fresh, new_flows_after + 1, "the new socket opened one flow");
    assert_eq!(s.daemon.run_log_text().matches(ADOPTED).count(), 1, "{}", s.daemon.log_text());
}

/// `net.ipv4.ip_local_reserved_ports` in `ns`.
fn reserved_ports(ns: &Netns) -> String {
    let out = ns.exec(&["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every interface of `ns` with a program on its XDP hook or tc ingress/egress.
fn programs_in(ns: &Netns) -> Vec<(String, Vec<String>)> {
    let out = ns.ip(&["-o", "link", "show"]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap().to_string())
        .map(|name| {
            let mut progs = ns.bpf_programs(&name);
            progs.extend(ns.bpf_egress_programs(&name));
            (name, progs)
        })
        .filter(|(_, progs)| !progs.is_empty())
        .collect()
}

fn node_settings_are_applied_once_and_uninstall_removes_everything(shape: Shape) {
    let svc = service_yaml("svc", &VIP.to_string(), &[], &backends(shape));
    let mut s = Scenario::start_in(shape, BACKENDS, &[("svc.yaml", &svc)], 2, &[]).unwrap();
    let answered = |s: &Scenario, t: Duration| s.topo.client.run(move || tcp_request(vip(80), t));
    assert_eq!(reserved_ports(&s.topo.lb), SNAT);
    // A clean stop keeps the node settings (the datapath still needs them) ...
    s.daemon.halt(Signal::SIGTERM).unwrap();
    assert_eq!(reserved_ports(&s.topo.lb), SNAT, "kept after SIGTERM");
    s.daemon.resume().unwrap();
    // ... and neither a restart after one nor after SIGKILL adds them twice.
    assert_eq!(reserved_ports(&s.topo.lb), SNAT, "after a restart on SIGTERM");
    s.daemon.restart(Signal::SIGKILL).unwrap();
    s.daemon.wait_for_log(ADOPTED, 1, Duration::from_secs(10)).unwrap();
    let reserved = reserved_ports(&s.topo.lb);
    eprintln!("{}: reserved ports after a SIGKILL restart: {reserved:?}", shape.name());
    assert_eq!(reserved.split(',').filter(|r| *r == SNAT).count(), 1, "{reserved:?}");
    assert_eq!(reserved, SNAT);

    // lb stopped: the pinned datapath stays attached and serves.
    s.daemon.halt(Signal::SIGTERM).unwrap();
    let pins = s.daemon.pin_dir().unwrap().to_path_buf();
    for sub in ["v1/maps", "v1/links"] {
        let entries = std::fs::read_dir(pins.join(sub)).map(|d| d.count()).unwrap_or(0);
        assert!(entries > 0, "{} is empty or missing", pins.join(sub).display());
    }
    let attached = programs_in(&s.topo.lb);
    for iface in &s.topo.lb_ifaces {
        assert!(
            attached.iter().any(|(name, progs)| name == iface && progs.contains(&"xdp".to_string())),
            "XDP stays on {iface} while lb is stopped: {attached:?}"
        );
    }
    answered(&s, TIMEOUT).unwrap_or_else(|e| panic!("the datapath serves while lb is stopped: {e:#}"));

    // lb uninstall: nothing of it is left.
    let state = s.manifests.parent().unwrap().join("state/last-good.json");
    assert!(state.exists(), "{} is missing", state.display());
    let out = s.daemon.uninstall().unwrap();
    eprintln!("{}: lb uninstall: {}; programs before: {attached:?}", shape.name(), out.trim());
    let left = programs_in(&s.topo.lb);
    assert!(left.is_empty(), "programs left after lb uninstall: {left:?}");
    assert!(!pins.exists(), "{} still exists", pins.display());
    assert!(!state.exists(), "{} still exists", state.display());
    assert_eq!(reserved_ports(&s.topo.lb), "", "the SNAT range is no longer reserved");
    let after = answered(&s, Duration::from_secs(2));
    assert!(after.is_err(), "the VIP still answers after lb uninstall: {after:?}");
}

/// An AccessControlList and a Service that break while lb is down serve their last good
/// versions after it starts again, as they would had they broken while it ran: lb keeps them
/// in its state directory. Without them the restarted lb takes both Services off the node
/// (the one naming the ACL is rejected with it). Not a matter of node shape: routed only.
#[test]
fn rejected_objects_serve_their_last_good_versions_after_a_restart() {
    let shape = Shape::Routed;
    let acl = |cidr: &str| {
        format!(
            "apiVersion: lb.dev/v1alpha1\nkind: AccessControlList\nmetadata: {{name: office}}\nspec:\n  entries:\n  - {{cidr: {cidr}}}\n"
        )
    };
    let white = [(format!("{P}acl-status"), "on"), (format!("{P}acl-id"), "office"), (format!("{P}acl-type"), "white")];
    let white: Vec<(&str, &str)> = white.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let guarded = service_yaml("guarded", &VIP.to_string(), &white, &backends(shape));
    let plain = |scheduler: &str| {
        service_yaml("plain", "198.18.100.11", &[(&format!("{P}scheduler"), scheduler)], &backends(shape))
    };
    let files = [("acl.yaml", acl("198.18.0.2/32")), ("guarded.yaml", guarded), ("plain.yaml", plain("wrr"))];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let mut s = Scenario::start_in(shape, BACKENDS, &files, 4, &[]).unwrap();
    let plain_vip = SocketAddr::new(Ipv4Addr::new(198, 18, 100, 11).into(), 80);
    let both =
        |s: &Scenario| s.topo.client.run(move || (tcp_request(vip(80), TIMEOUT), tcp_request(plain_vip, TIMEOUT)));
    let (g, p) = both(&s);
    assert!(g.is_ok() && p.is_ok(), "{g:?} {p:?}");

    s.daemon.halt(Signal::SIGTERM).unwrap();
    s.write("acl.yaml", &acl("198.18.0.2/24")).unwrap();
    s.write("plain.yaml", &plain("fastest")).unwrap();
    // Ready once its four listeners are loaded again.
    s.daemon.resume().unwrap_or_else(|e| panic!("{e:#}"));
    let (g, p) = both(&s);
    let log = lb_tests::daemon::strip_ansi(&s.daemon.log_text());
    assert!(g.is_ok() && p.is_ok(), "{g:?} {p:?}\n{log}");
    assert!(log.contains("last good objects of the previous run"), "{log}");
    let rejected: Vec<&str> = log.lines().filter(|l| l.contains("object rejected")).collect();
    assert_eq!(rejected.len(), 2, "{rejected:#?}");
    let acl = "AccessControlList office: spec.entries[0].cidr: 198.18.0.2/24 has host bits set";
    assert!(rejected.iter().any(|l| l.contains(acl) && l.contains("its last good prefixes (1) stay in force")));
    let svc = "Service e2e/plain: service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler";
    assert!(rejected.iter().any(|l| l.contains(svc) && l.contains("last_good_serving=true")), "{rejected:#?}");
}

in_every_shape!(
    tcp_connections_survive_sigterm_and_sigkill_restarts,
    udp_flow_keeps_its_backend_across_restart,
    node_settings_are_applied_once_and_uninstall_removes_everything,
);
