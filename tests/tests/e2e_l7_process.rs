//! The L7 proxy in a process of its own (issue #16, item 2): `lb run` starts `lb proxy` with
//! its own limits; `kill -9` of that process while an L4 TCP flow streams through XDP and an
//! L7 request loop runs costs the L4 flow not a byte, and L7 serves again within seconds of
//! the restart, which `/stats` and `/metrics` show; route changes reach the proxy over its
//! channel, and a restarted proxy gets the latest routes, including a change made while it
//! was down. With `--l7-mode external` a proxy started on its own (the DaemonSet's second
//! container) gets its routes over the agent's socket and keeps serving while the agent
//! restarts.
use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use lb_tests::{
    daemon::lb_bin,
    netns::Netns,
    privileged,
    scenario::{Scenario, alb_class_yaml},
    servers::{Server, Session, greeting_echo_server, http_name_server},
    topology::{LB_CLIENT_SIDE, Shape, VIP},
};

const P: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";
const HTTP_PORT: u16 = 8081;
const ECHO_PORT: u16 = 9000;
const ADMIN: &str = "http://127.0.0.1:9901";

/// A CLB Service on the VIP: http:80 (the L7 proxy) and tcp:81 (XDP) over `backends`.
fn shop(shape: Shape, backends: &[usize]) -> String {
    let eps: String = backends.iter().map(|i| format!("- addresses: [\"{}\"]\n", shape.backend_addr(*i))).collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: e2e
  annotations:
    {P}protocol-port: "http:80,tcp:81"
spec:
  type: LoadBalancer
  loadBalancerIP: "{VIP}"
  ports:
  - {{name: http, port: 80, targetPort: {HTTP_PORT}}}
  - {{name: echo, port: 81, targetPort: {ECHO_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: shop-1, namespace: e2e, labels: {{kubernetes.io/service-name: shop}}}}
addressType: IPv4
ports: [{{name: http, port: {HTTP_PORT}, protocol: TCP}}, {{name: echo, port: {ECHO_PORT}, protocol: TCP}}]
endpoints:
{eps}"#
    )
}

/// An ALB Ingress on port 8000 of every node address, over `backends`' HTTP servers.
fn web(shape: Shape, backends: &[usize]) -> String {
    let eps: String = backends.iter().map(|i| format!("- addresses: [\"{}\"]\n", shape.backend_addr(*i))).collect();
    alb_class_yaml(&["{port: 8000, protocol: HTTP}"])
        + &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: e2e}}
spec:
  ports: [{{name: http, port: 80, targetPort: {HTTP_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: e2e, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {HTTP_PORT}, protocol: TCP}}]
endpoints:
{eps}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: e2e
  annotations:
    alb.ingress.kubernetes.io/listen-ports: '[{{"HTTP": 8000}}]'
spec:
  ingressClassName: alb
  rules:
  - host: web.test
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"#
        )
}

/// Both backends' HTTP and echo servers.
fn servers(s: &Scenario) -> Vec<Server> {
    let mut all = Vec::new();
    for (i, ns) in s.topo.backends.iter().enumerate() {
        let name = format!("backend-{}", i + 1);
        all.push(http_name_server(ns, SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)), &name).unwrap());
        all.push(greeting_echo_server(ns, ECHO_PORT, &name));
    }
    all
}

/// `GET path` on the admin endpoint from lb's namespace.
fn admin(ns: &Netns, path: &str) -> String {
    let out = ns.command("curl").args(["-sS", "--max-time", "5"]).arg(format!("{ADMIN}{path}")).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `/stats`'s `l7_proxy`: (pid, up, restarts).
fn proxy_status(ns: &Netns) -> (u32, bool, u64) {
    let v: serde_json::Value = serde_json::from_str(&admin(ns, "/stats")).unwrap_or_default();
    let p = &v["l7_proxy"];
    (p["pid"].as_u64().unwrap_or(0) as u32, p["up"].as_bool().unwrap_or(false), p["restarts"].as_u64().unwrap_or(0))
}

/// The sample of `name` (no labels) in `/metrics`.
fn metric(ns: &Netns, name: &str) -> Option<f64> {
    admin(ns, "/metrics").lines().find_map(|l| l.strip_prefix(&format!("{name} ")).and_then(|v| v.parse().ok()))
}

/// One HTTP/1.1 request to VIP:80 (CLB) on a new connection: the backend's name, or the error.
fn get() -> Result<String, String> {
    get_at(SocketAddr::new(VIP.into(), 80), "shop")
}

/// One HTTP/1.1 request to the node's address, port 8000 (ALB).
fn get_alb() -> Result<String, String> {
    get_at(SocketAddr::new(LB_CLIENT_SIDE.into(), 8000), "web.test")
}

fn get_at(to: SocketAddr, host: &str) -> Result<String, String> {
    let run = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    };
    let text = run().map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no head: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head.lines().next().unwrap_or_default().to_owned());
    }
    Ok(body.lines().next().unwrap_or_default().to_owned())
}

/// Waits (20 s at most) until `check` holds.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// `kill -9` the proxy; its pid must be lb's `lb proxy` child.
fn kill_proxy(pid: u32) {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(args.get(1), Some(&&b"proxy"[..]), "{:?}", String::from_utf8_lossy(&cmdline));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// Sends numbered ~100-byte lines over VIP:81 (XDP) and checks every echo, until `stop`.
fn stream(progress: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> Result<usize, String> {
    let run = || -> anyhow::Result<usize> {
        let s = Session::open(None, SocketAddr::new(VIP.into(), 81), Duration::from_secs(5))?;
        s.stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(s.stream.try_clone()?);
        let mut writer = s.stream;
        let mut greeting = String::new();
        reader.read_line(&mut greeting)?;
        let mut n = 0;
        let mut got = String::new();
        while !stop.load(Ordering::Relaxed) && n < 200_000 {
            let want = format!("line {n:08} {}\n", format!("{:016x}", (n as u64).wrapping_mul(0x9e37_79b9)).repeat(5));
            writer.write_all(want.as_bytes())?;
            got.clear();
            reader.read_line(&mut got)?;
            anyhow::ensure!(got == want, "line {n}: sent {want:?}, got back {got:?}");
            n += 1;
            progress.store(n, Ordering::Relaxed);
            thread::sleep(Duration::from_millis(2));
        }
        Ok(n)
    };
    run().map_err(|e| format!("{e:#}"))
}

#[test]
fn killing_the_proxy_keeps_l4_flows_and_l7_comes_back() {
    if !privileged("killing_the_proxy_keeps_l4_flows_and_l7_comes_back") {
        return;
    }
    let shape = Shape::Routed;
    let mut s = Scenario::start_in(shape, 2, &[("shop.yaml", &shop(shape, &[1, 2]))], 1, &[]).unwrap();
    let _servers = servers(&s);
    s.daemon.wait_for_log("L7 listener started", 1, Duration::from_secs(10)).unwrap();
    let lb = &s.topo.lb;
    let (pid, up, restarts) = proxy_status(lb);
    assert!(pid > 0 && up && restarts == 0, "{}", admin(lb, "/stats"));
    assert_ne!(Some(pid), s.daemon.pid(), "the proxy is a process of its own");
    assert_eq!(fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "lb-proxy");
    // Its own limits: every file the hard limit allows, first in line for the OOM killer.
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let files =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(files[3], files[4], "soft = hard: {limits}");
    let adj: i32 = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap().trim().parse().unwrap();
    assert!(adj >= 500, "oom_score_adj {adj}");
    assert_eq!(metric(lb, "lb_l7_proxy_up"), Some(1.0));
    let client = &s.topo.client;
    assert!(client.run(get).is_ok_and(|b| b.starts_with("backend-")));

    // An L4 flow streaming through XDP, and an L7 request loop.
    let (progress, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let streamer = client.spawn({
        let (progress, stop) = (progress.clone(), stop.clone());
        move || stream(progress, stop)
    });
    let l7_results = Arc::new(std::sync::Mutex::new(Vec::<(Instant, Result<String, String>)>::new()));
    let l7_loop = client.spawn({
        let (results, stop) = (l7_results.clone(), stop.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                let r = get();
                results.lock().unwrap().push((Instant::now(), r));
                thread::sleep(Duration::from_millis(50));
            }
        }
    });
    wait_until("the L4 stream to flow", || progress.load(Ordering::Relaxed) >= 200);

    let killed = Instant::now();
    let before_kill = progress.load(Ordering::Relaxed);
    kill_proxy(pid);
    // While the proxy is down or starting again, the agent answers and the L4 flow goes on.
    assert_eq!(admin(lb, "/readyz"), "ok\n", "the datapath still serves");
    wait_until("a new proxy process", || {
        let (new_pid, up, restarts) = proxy_status(lb);
        new_pid != pid && new_pid != 0 && up && restarts >= 1
    });
    wait_until("L7 to serve again", || {
        l7_results
            .lock()
            .unwrap()
            .iter()
            .any(|(at, r)| *at > killed && r.as_ref().is_ok_and(|b| b.starts_with("backend-")))
    });
    let back_after = l7_results
        .lock()
        .unwrap()
        .iter()
        .find(|(at, r)| *at > killed && r.is_ok())
        .map(|(at, _)| at.duration_since(killed))
        .unwrap();
    assert!(back_after < Duration::from_secs(5), "L7 came back {back_after:?} after the kill");
    let restarted = progress.load(Ordering::Relaxed);
    wait_until("the L4 stream to go on", || progress.load(Ordering::Relaxed) >= restarted + 200);
    stop.store(true, Ordering::Relaxed);
    let lines = streamer.join().unwrap().unwrap_or_else(|e| panic!("the L4 flow broke: {e}\n{}", s.daemon.log_text()));
    l7_loop.join().unwrap();
    assert!(lines > before_kill + 200, "{lines} lines, {before_kill} before the kill");
    assert_eq!(metric(lb, "lb_l7_proxy_up"), Some(1.0));
    assert!(metric(lb, "lb_l7_proxy_restarts_total").is_some_and(|n| n >= 1.0), "{}", admin(lb, "/metrics"));
    let log = s.daemon.log_text();
    assert!(log.contains("L7 proxy down (L4 keeps forwarding): restarting it"), "{log}");
    eprintln!("L7 back {back_after:?} after kill -9; the L4 flow echoed {lines} lines intact");
    s.daemon.stop().unwrap();
}

#[test]
fn route_changes_reach_the_proxy_and_a_restart_resyncs() {
    if !privileged("route_changes_reach_the_proxy_and_a_restart_resyncs") {
        return;
    }
    let shape = Shape::Routed;
    // One worker: the proxy's main thread serves the listeners and applies the routes.
    let extra = ["--l7-max-memory-mib=512", "--l7-max-open-files=4096", "--l7-workers=1"];
    let mut s = Scenario::start_in(shape, 2, &[("shop.yaml", &shop(shape, &[1, 2]))], 1, &extra).unwrap();
    let _servers = servers(&s);
    s.daemon.wait_for_log("L7 listener started", 1, Duration::from_secs(10)).unwrap();
    let client = &s.topo.client;
    let only = |name: &'static str| move || client.run(move || (0..6).all(|_| get().is_ok_and(|b| b == name)));
    // An endpoint change goes over the channel to the running proxy.
    s.write("shop.yaml", &shop(shape, &[2])).unwrap();
    wait_until("only backend-2 to answer", only("backend-2"));
    let (pid, _, _) = proxy_status(&s.topo.lb);
    // The limits given to lb run are the proxy process's.
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let row = |name: &str| limits.lines().find(|l| l.starts_with(name)).unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(row("Max data size")[3..5], ["536870912", "536870912"], "{limits}");
    assert_eq!(row("Max open files")[3..5], ["4096", "4096"], "{limits}");
    // With one worker the process is one thread (as an nginx worker is), after serving and
    // applying a change.
    let threads = fs::read_dir(format!("/proc/{pid}/task")).unwrap().count();
    assert_eq!(threads, 1, "the one-worker proxy's threads");

    // Killed, and the routes change before it is back: the new proxy gets the latest.
    kill_proxy(pid);
    s.write("shop.yaml", &shop(shape, &[1])).unwrap();
    wait_until("a new proxy process", || {
        let (new_pid, up, _) = proxy_status(&s.topo.lb);
        new_pid != pid && new_pid != 0 && up
    });
    wait_until("only backend-1 to answer", only("backend-1"));
    s.daemon.stop().unwrap();
}

/// An L7 listener whose port is taken when the proxy starts (another program on the node, an
/// old proxy still draining) is not given up: the proxy tries it again every few seconds and
/// serves once the port is free, and the agent's `l7_listener_errors` goes back to 0.
#[test]
fn an_l7_listener_whose_port_is_taken_starts_once_it_is_free() {
    if !privileged("an_l7_listener_whose_port_is_taken_starts_once_it_is_free") {
        return;
    }
    let shape = Shape::Routed;
    let topo = lb_tests::topology::Topology::shaped(shape, 2).unwrap();
    // Port 8000 of every address, without SO_REUSEPORT: the proxy's sockets cannot join it.
    let taken = topo.lb.run(|| std::net::TcpListener::bind(("0.0.0.0", 8000))).unwrap();
    let mut s = Scenario::start_on(topo, &[("web.yaml", &web(shape, &[1, 2]))], 0, &[]).unwrap();
    let _servers = servers(&s);
    s.daemon.wait_for_log("L7 listener not applied", 1, Duration::from_secs(10)).unwrap();
    let errors = |lb: &Netns| {
        let v: serde_json::Value = serde_json::from_str(&admin(lb, "/stats")).unwrap_or_default();
        v["agent"]["l7_listener_errors"].as_u64()
    };
    wait_until("the agent to count the listener that did not start", || errors(&s.topo.lb) == Some(1));
    // The agent names the objects the listener serves (what it records as this node's Events
    // in Kubernetes), once.
    s.daemon.wait_for_log("not served on this node", 1, Duration::from_secs(10)).unwrap();
    let unserved = |log: &str| {
        log.lines().filter(|l| l.contains("not served on this node") && l.contains("Ingress e2e/web")).count()
    };
    assert_eq!(unserved(&s.daemon.log_text()), 1, "{}", s.daemon.log_text());
    drop(taken);
    let client = &s.topo.client;
    wait_until("the ALB listener to serve", || client.run(|| get_alb().is_ok_and(|b| b.starts_with("backend-"))));
    wait_until("no L7 listener error", || errors(&s.topo.lb) == Some(0));
    let log = s.daemon.log_text();
    assert!(log.contains("L7 listener started on a new try"), "{log}");
    assert_eq!(log.matches("L7 listener not applied").count(), 1, "logged once, not at every try: {log}");
    assert_eq!(unserved(&log), 1, "{log}");
    assert!(log.contains("served on this node again"), "{log}");
    s.daemon.stop().unwrap();
}

/// A process of the test's, killed if the test ends before it.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn an_external_proxy_keeps_serving_while_the_agent_restarts() {
    if !privileged("an_external_proxy_keeps_serving_while_the_agent_restarts") {
        return;
    }
    let shape = Shape::Routed;
    let run = tempfile::tempdir().unwrap();
    let socket = run.path().join("l7.sock");
    let extra = ["--l7-mode=external".to_string(), format!("--l7-control-socket={}", socket.display())];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let files = [("shop.yaml", shop(shape, &[1, 2])), ("web.yaml", web(shape, &[1, 2]))];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let mut s = Scenario::start_in(shape, 2, &files, 1, &extra).unwrap();
    let _servers = servers(&s);
    let mode = fs::metadata(&socket).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600), "the control socket is the owner's only");
    // The proxy's own container: `lb proxy --control SOCKET` in lb's network namespace.
    let proxy_log = run.path().join("proxy.log");
    let mut proxy = Reaped(
        s.topo
            .lb
            .command(lb_bin().to_str().unwrap())
            .args(["proxy", "--control"])
            .arg(&socket)
            .env("LB_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stderr(fs::File::create(&proxy_log).unwrap())
            .spawn()
            .unwrap(),
    );
    let proxy_text = || fs::read_to_string(&proxy_log).unwrap_or_default();
    let client = &s.topo.client;
    wait_until("the external proxy to serve", || client.run(get_alb).is_ok_and(|b| b.starts_with("backend-")));
    assert!(client.run(get).is_ok_and(|b| b.starts_with("backend-")), "{}", proxy_text());
    let v: serde_json::Value = serde_json::from_str(&admin(&s.topo.lb, "/stats")).unwrap();
    assert_eq!((v["l7_proxy"]["mode"].as_str(), v["l7_proxy"]["up"].as_bool()), (Some("external"), Some(true)), "{v}");

    // The agent stops: the proxy keeps its routes and serves on (ALB, on the node's
    // addresses; a CLB VIP's local route goes with the agent).
    s.daemon.halt(nix::sys::signal::Signal::SIGTERM).unwrap();
    let served: Vec<_> = (0..10).map(|_| client.run(get_alb)).collect();
    assert!(served.iter().all(|r| r.as_ref().is_ok_and(|b| b.starts_with("backend-"))), "{served:?}");

    // A new agent: the proxy connects again and takes its changes.
    s.daemon.resume().unwrap();
    wait_until("the proxy to connect again", || {
        let v: serde_json::Value = serde_json::from_str(&admin(&s.topo.lb, "/stats")).unwrap_or_default();
        v["l7_proxy"]["up"].as_bool() == Some(true)
    });
    s.write("web.yaml", &web(shape, &[2])).unwrap();
    wait_until("only backend-2 to answer", || client.run(|| (0..6).all(|_| get_alb().is_ok_and(|b| b == "backend-2"))));
    s.daemon.stop().unwrap();

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(proxy.0.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = proxy.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = proxy.0.kill();
            panic!("lb proxy did not stop within 10 s of SIGTERM:\n{}", proxy_text());
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}\n{}", proxy_text());
    assert!(proxy_text().contains("connected to the agent"), "{}", proxy_text());
}

#[test]
fn inline_mode_serves_l7_in_the_agent_itself() {
    if !privileged("inline_mode_serves_l7_in_the_agent_itself") {
        return;
    }
    let shape = Shape::Routed;
    let mut s =
        Scenario::start_in(shape, 2, &[("shop.yaml", &shop(shape, &[1, 2]))], 1, &["--l7-mode=inline"]).unwrap();
    let _servers = servers(&s);
    s.daemon.wait_for_log("L7 listener started", 1, Duration::from_secs(10)).unwrap();
    assert!(s.topo.client.run(get).is_ok_and(|b| b.starts_with("backend-")));
    let v: serde_json::Value = serde_json::from_str(&admin(&s.topo.lb, "/stats")).unwrap();
    assert_eq!(v["l7_proxy"]["mode"], "inline", "{v}");
    assert_eq!(v["l7"]["198.18.100.10:80/http"]["responses"]["2xx"], 1, "{v}");
    let pid = s.daemon.pid().unwrap();
    let children: String = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| fs::read_to_string(t.unwrap().path().join("children")).unwrap_or_default())
        .collect();
    assert!(children.trim().is_empty(), "no proxy process: {children}");
    assert_eq!(metric(&s.topo.lb, "lb_l7_proxy_up"), None, "no process to report on");
    s.daemon.stop().unwrap();
}
