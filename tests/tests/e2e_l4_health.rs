//! CLB L4 listeners' health checks and established-timeout end to end, in every node shape:
//! an HTTP check on a TCP listener and a UDP check on a UDP listener take a failing backend
//! out of new flows (and the other listener of the same backend port keeps it, judged by its
//! own probe), and an idle TCP flow past `established-timeout` is swept from conntrack so its
//! next segment is dropped rather than forwarded as the old flow.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread,
    time::Duration,
};

use lb_tests::{
    daemon::strip_ansi,
    in_every_shape,
    netns::Netns,
    scenario::{Scenario, service_yaml},
    servers::{Server, Session, tcp_request, udp_request},
    topology::{Shape, VIP},
};

const P: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";
const TIMEOUT: Duration = Duration::from_secs(5);

fn vip80() -> SocketAddr {
    SocketAddr::new(VIP.into(), 80)
}

fn tally(replies: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in replies {
        *m.entry(r).or_default() += 1;
    }
    m
}

/// The Service of [`service_yaml`] on the VIP with `annotations` (suffixes), its TCP port
/// sent to `tcp_port` and its UDP port to `udp_port` on the backends.
fn svc(shape: Shape, n: usize, annotations: &[(&str, &str)], tcp_port: u16, udp_port: u16) -> String {
    let keys: Vec<(String, &str)> = annotations.iter().map(|(k, v)| (format!("{P}{k}"), *v)).collect();
    let a: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let eps: Vec<(String, Option<u32>)> = (1..=n).map(|i| (shape.backend_addr(i).to_string(), None)).collect();
    service_yaml("svc", &VIP.to_string(), &a, &eps)
        .replace(
            "{name: tcp, protocol: TCP, port: 80, targetPort: 8080}",
            &format!("{{name: tcp, protocol: TCP, port: 80, targetPort: {tcp_port}}}"),
        )
        .replace(
            "{name: udp, protocol: UDP, port: 80, targetPort: 8080}",
            &format!("{{name: udp, protocol: UDP, port: 80, targetPort: {udp_port}}}"),
        )
        .replace("{name: tcp, protocol: TCP, port: 8080}", &format!("{{name: tcp, protocol: TCP, port: {tcp_port}}}"))
        .replace("{name: udp, protocol: UDP, port: 8080}", &format!("{{name: udp, protocol: UDP, port: {udp_port}}}"))
}

/// In `ns` on `[::]:port`: HTTP/1.x, one request per connection; `/healthz` gets the status
/// in `health`, anything else 200 with `name` as the body. Each probe's request head is kept.
fn http_server(
    ns: &Netns,
    port: u16,
    name: &str,
    health: Arc<AtomicU16>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
) -> Server {
    let tcp = ns.run(move || TcpListener::bind(("::", port))).expect("http bind");
    tcp.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let name = name.to_owned();
    let accepting = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = tcp.accept() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let (name, health, heads) = (name.clone(), health.clone(), heads.clone());
                thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&got).into_owned();
                    let (status, body) = if head.split_whitespace().nth(1) == Some("/healthz") {
                        heads.lock().unwrap().push(head);
                        (health.load(Ordering::Relaxed), String::new())
                    } else {
                        (200, format!("{name}\n"))
                    };
                    let _ = write!(s, "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                });
            }
        })
    };
    Server::from_parts(stop, vec![accepting])
}

/// In `ns` on `[::]:port`: answer each UDP datagram with `name`.
fn udp_server(ns: &Netns, port: u16, name: &str) -> Server {
    let udp = ns.run(move || UdpSocket::bind(("::", port))).expect("udp bind");
    udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reply = format!("{name}\n").into_bytes();
    let answering = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&reply, from);
                }
            }
        })
    };
    Server::from_parts(stop, vec![answering])
}

/// `GET /` through the VIP (L4: the backend answers): the backend's name.
fn http_get(to: SocketAddr) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_owned())
}

/// A TCP listener with `health-check-type: http`: a backend whose /healthz answers 503 (its
/// port still open) gets no new flows, and new flows again once it answers 200. The probes
/// are GET HTTP/1.1 with the domain as Host. The UDP listener of the same Service keeps
/// both backends (its own UDP probe passes).
fn http_check_on_a_tcp_listener(shape: Shape) {
    let checks = [
        ("health-check-switch", "on"),
        ("health-check-type", "http"),
        ("health-check-uri", "/healthz"),
        ("health-check-httpcode", "http_2xx"),
        ("health-check-method", "get"),
        ("health-check-domain", "web.example"),
        // A tcp listener's check waits the connect timeout, whatever its type (CLB's).
        ("health-check-connect-timeout", "1"),
        ("health-check-interval", "1"),
        ("healthy-threshold", "2"),
        ("unhealthy-threshold", "2"),
    ];
    // And a Service the datapath rejects (a Maglev table does not fit): the health changes
    // below apply the model again without it, which does not load it either.
    let maglev = [(format!("{P}scheduler"), "sch")];
    let maglev: Vec<(&str, &str)> = maglev.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let eps = [(shape.backend_addr(1).to_string(), None)];
    let big = service_yaml("big", "198.18.100.11", &maglev, &eps);
    let files = [("svc.yaml", svc(shape, 2, &checks, 9090, 8080)), ("big.yaml", big)];
    let files: Vec<(&str, &str)> = files.iter().map(|(n, y)| (*n, y.as_str())).collect();
    let s = Scenario::start_in(shape, 2, &files, 2, &["--backend-table-entries", "4096"]).unwrap();
    let rejected = || {
        let out = s.topo.lb.command(lb_tests::daemon::lb_bin().to_str().unwrap()).args(["stats", "--json"]).output();
        let v: serde_json::Value = serde_json::from_slice(&out.unwrap().stdout).expect("stats JSON");
        v["agent"]["datapath_errors"].clone()
    };
    assert_eq!(rejected(), 2, "the two listeners of Service big");
    let health: Vec<Arc<AtomicU16>> = (0..2).map(|_| Arc::new(AtomicU16::new(200))).collect();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let _http: Vec<Server> = (0..2)
        .map(|i| {
            http_server(&s.topo.backends[i], 9090, &format!("backend-{}", i + 1), health[i].clone(), heads.clone())
        })
        .collect();
    let both = s.topo.client.run(|| tally((0..10).map(|_| http_get(vip80()).unwrap())));
    assert_eq!(both.len(), 2, "{both:?}");
    health[1].store(503, Ordering::Relaxed);
    thread::sleep(Duration::from_millis(4500));
    let one = s.topo.client.run(|| (0..10).map(|_| http_get(vip80()).map_err(|e| e.to_string())).collect::<Vec<_>>());
    let log = s.daemon.log_text();
    let one = tally(one.into_iter().map(|r| r.unwrap_or_else(|e| panic!("{e}\n{log}"))));
    assert_eq!(one, BTreeMap::from([("backend-1".to_string(), 10)]), "no new flows to the failing backend");
    let udp = s.topo.client.run(|| tally((0..10).map(|_| udp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(udp.len(), 2, "the UDP listener keeps both: {udp:?}");
    assert_eq!(rejected(), 2, "a health change does not load Service big: still counted, still retried");
    health[1].store(200, Ordering::Relaxed);
    thread::sleep(Duration::from_millis(4500));
    let again = s.topo.client.run(|| tally((0..10).map(|_| http_get(vip80()).unwrap())));
    let changes: Vec<String> =
        strip_ansi(&s.daemon.log_text()).lines().filter(|l| l.contains("health changed")).map(str::to_owned).collect();
    assert_eq!(again.len(), 2, "back after two good probes: {again:?}\n{changes:#?}");
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads.iter().any(|h| h.starts_with("GET /healthz HTTP/1.1\r\n") && h.contains("Host: web.example\r\n")),
        "{heads:?}"
    );
}

/// A UDP listener's check: a backend whose UDP port answers ICMP port unreachable (its
/// server stopped) gets no new UDP flows, and gets them again once it is back; the TCP
/// listener of the same backend keeps it (its TCP probe passes).
fn udp_check_on_a_udp_listener(shape: Shape) {
    let checks = [
        ("health-check-switch", "on"),
        ("health-check-connect-timeout", "1"),
        ("health-check-interval", "1"),
        ("healthy-threshold", "2"),
        ("unhealthy-threshold", "2"),
    ];
    let s = Scenario::start_in(shape, 2, &[("svc.yaml", &svc(shape, 2, &checks, 8080, 9091))], 2, &[]).unwrap();
    let mut udp: Vec<Option<Server>> =
        (0..2).map(|i| Some(udp_server(&s.topo.backends[i], 9091, &format!("backend-{}", i + 1)))).collect();
    let both = s.topo.client.run(|| tally((0..10).map(|_| udp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(both.len(), 2, "{both:?}");
    udp[1] = None;
    thread::sleep(Duration::from_millis(5000));
    let one = s.topo.client.run(|| tally((0..10).map(|_| udp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(one, BTreeMap::from([("backend-1".to_string(), 10)]), "no new UDP flows to the dead port");
    let tcp = s.topo.client.run(|| tally((0..10).map(|_| tcp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(tcp.len(), 2, "the TCP listener keeps both: {tcp:?}");
    udp[1] = Some(udp_server(&s.topo.backends[1], 9091, "backend-2"));
    thread::sleep(Duration::from_millis(5000));
    let again = s.topo.client.run(|| tally((0..10).map(|_| udp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(again.len(), 2, "back after two good probes: {again:?}");
    assert!(s.daemon.log_text().contains("backend health changed"));
}

/// `established-timeout: 10`: an idle established flow is swept after 10 s; the client's
/// next segment of it finds no flow and is dropped (only a SYN opens a TCP flow), so the
/// old connection gets no answer. A Service without the annotation (900 s) keeps its idle
/// flow over the same wait, and new connections to both are served.
fn established_timeout_expires_idle_flows(shape: Shape) {
    let short = svc(shape, 1, &[("established-timeout", "10")], 8080, 8080);
    let long = service_yaml("long", "198.18.100.11", &[], &[(shape.backend_addr(1).to_string(), None)]);
    let mut s =
        Scenario::start_in(shape, 1, &[("short.yaml", &short), ("long.yaml", &long)], 4, &["--sweep-ms", "500"])
            .unwrap();
    let long_vip = SocketAddr::new("198.18.100.11".parse().unwrap(), 80);
    let (mut a, mut b) = s.topo.client.run(move || {
        let mut a = Session::open(None, vip80(), TIMEOUT).unwrap();
        let mut b = Session::open(None, long_vip, TIMEOUT).unwrap();
        assert_eq!((a.ask().unwrap(), b.ask().unwrap()), ("backend-1".into(), "backend-1".into()));
        (a, b)
    });
    thread::sleep(Duration::from_millis(12_000));
    s.daemon.wait_for_log("conntrack swept", 1, Duration::from_secs(5)).unwrap();
    let (old, kept, fresh) = s.topo.client.run(move || {
        a.stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        (a.ask(), b.ask(), tcp_request(vip80(), TIMEOUT))
    });
    assert!(old.is_err(), "the expired flow is not forwarded as the old flow: {old:?}");
    assert_eq!(kept.unwrap(), "backend-1", "900 s: the idle flow is still there");
    assert_eq!(fresh.unwrap(), "backend-1", "a new connection opens a new flow");
    let log = s.daemon.log_text();
    assert!(strip_ansi(&log).contains("expired=1"), "one flow expired: {log}");
    let out = s.daemon.stop().unwrap();
    let stats: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let dropped = stats["stats"]["datapath"]["drop_no_flow"]["packets"].as_u64().unwrap_or(0);
    assert!(dropped > 0, "the old connection's segments were dropped as no-flow: {stats}");
}

in_every_shape!(http_check_on_a_tcp_listener, udp_check_on_a_udp_listener, established_timeout_expires_idle_flows);
