//! A soak under churn (issue #15, items 3 and 6). For a bounded time, with connection drain
//! on, clients open many short TCP connections and send UDP datagrams from many source ports
//! through a VIP, long-lived TCP connections and UDP flows keep talking, spoofed SYNs leave
//! half-open flows, and the test rewrites the EndpointSlice every 2 s (a backend removed and
//! brought back, weights changed). Then, read from the daemon's pinned maps, every flow's
//! reverse entry must exist and name it and every reverse entry's flow must point back at it
//! (`lb_userspace::dataplane::pairs::broken`, in the established and the half-open tables);
//! every flow the clients opened must be there, and every connection, line and datagram must
//! have had its answer.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lb_common::{CtEntry, FAMILY_V4, FlowKey, PIN_LAYOUT, PROTO_TCP, PROTO_UDP, RevEntry, map_names as names};
use lb_tests::{
    netns::Netns,
    packet::syn_v4,
    scenario::{Scenario, service_yaml},
    servers::{Server, Session, greeting_echo_server},
    topology::{CLIENT, Shape, VIP},
};
use lb_userspace::dataplane::{
    pairs::{self, Broken},
    words_addr,
};
use nix::sys::signal::Signal;

const P: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";
const BACKENDS: usize = 3;
/// The backends' echo servers (TCP and UDP); the Service maps VIP:80 to it.
const ECHO_PORT: u16 = 9000;
/// Longer than the soak: no drained flow is cut while the test looks.
const DRAIN_S: &str = "60";
const SOAK_FOR: Duration = Duration::from_secs(15);
const CHANGE_EVERY: Duration = Duration::from_secs(2);
/// Whatever happens, no load thread runs longer than this.
const AT_MOST: Duration = Duration::from_secs(40);
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a datagram's answer may take.
const UDP_TIMEOUT: Duration = Duration::from_secs(2);
/// Threads opening short TCP connections, each at most this many, one every `PACE` (at most
/// 1,500 in the soak: the count only bounds a thread that would outlive it).
const SHORT_THREADS: usize = 3;
const SHORT_MAX: usize = 2000;
/// Threads sending datagrams, each from at most this many sockets (source ports), each
/// socket `PER_SOCKET` datagrams, one socket every `PACE`. Worst case per backend: ~1,100
/// closed TCP flows (10 s) and 1,000 UDP flows (120 s) holding SNAT ports, of 4,536.
const UDP_THREADS: usize = 2;
const UDP_SOCKETS_MAX: usize = 2000;
const PER_SOCKET: usize = 2;
const PACE: Duration = Duration::from_millis(10);
/// Long-lived TCP connections (a line every `TALK_PACE`) and UDP flows (a datagram every
/// `UDP_TALK_PACE`), each at most `TALK_MAX` exchanges.
const TALKERS: usize = 4;
const UDP_TALKERS: usize = 4;
const TALK_PACE: Duration = Duration::from_millis(20);
const UDP_TALK_PACE: Duration = Duration::from_millis(50);
const TALK_MAX: usize = 5000;
/// Spoofed SYNs (nobody completes their handshake) sent at each change.
const SPOOFED_PER_CHANGE: usize = 16;
/// Between the end of the load and the read: well below the idle timeouts (a closed TCP
/// flow 10 s, a half-open one 20 s, UDP 120 s), so the flows are all still there.
const SETTLE: Duration = Duration::from_secs(1);
/// Short connections that ended this long before the load stopped must still have their
/// flow (closed: 10 s idle, the sweep runs every second, `last_seen` lags by up to 1 s).
const RECENT: Duration = Duration::from_secs(5);

/// The EndpointSlice's successive states: (backend, weight); `None`: no weight given. Under
/// `rr` a weight of 0 takes no new flows and any other weight counts as 1. Three removals
/// (backends 3, 2, 1), each brought back; the last state is the first.
const STEPS: [&[(usize, Option<u32>)]; 8] = [
    &[(1, None), (2, None), (3, None)],
    &[(1, None), (2, None)],
    &[(1, None), (2, None), (3, None)],
    &[(1, Some(0)), (2, Some(100)), (3, Some(50))],
    &[(1, Some(100)), (3, Some(50))],
    &[(2, None), (3, None)],
    &[(1, None), (2, None), (3, Some(0))],
    &[(1, None), (2, None), (3, None)],
];

/// One soak at a time: two at once on a 2-CPU machine would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn vip() -> SocketAddr {
    SocketAddr::new(VIP.into(), 80)
}

/// The Service: rr, connection drain on, TCP and UDP VIP:80 → ECHO_PORT over `eps`.
fn yaml(shape: Shape, eps: &[(usize, Option<u32>)]) -> String {
    let eps: Vec<(String, Option<u32>)> = eps.iter().map(|(i, w)| (shape.backend_addr(*i).to_string(), *w)).collect();
    let (sched, drain, timeout) =
        (format!("{P}scheduler"), format!("{P}connection-drain"), format!("{P}connection-drain-timeout"));
    service_yaml("svc", &VIP.to_string(), &[(&sched, "rr"), (&drain, "on"), (&timeout, DRAIN_S)], &eps)
        .replace("8080", &ECHO_PORT.to_string())
}

/// One short TCP connection: read the backend's greeting, send `line`, read it back,
/// half-close, expect EOF. The backend's name and the connection's source port.
fn short_tcp(line: &str) -> (u16, anyhow::Result<String>) {
    let mut port = 0;
    let mut run = || -> anyhow::Result<String> {
        let mut s = Session::open(None, vip(), TIMEOUT)?;
        port = s.stream.local_addr()?.port();
        let mut reader = BufReader::new(s.stream.try_clone()?);
        let mut name = String::new();
        reader.read_line(&mut name)?;
        anyhow::ensure!(name.starts_with("backend-"), "greeting {name:?}");
        s.stream.write_all(line.as_bytes())?;
        let mut got = String::new();
        reader.read_line(&mut got)?;
        anyhow::ensure!(got == line, "sent {line:?}, got back {got:?}");
        s.stream.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest)?;
        anyhow::ensure!(rest.is_empty(), "{} bytes after the echo: {:?}", rest.len(), String::from_utf8_lossy(&rest));
        Ok(name.trim().to_string())
    };
    let r = run();
    (port, r)
}

/// A UDP socket connected to the VIP (so only its flow can answer), in the calling thread's
/// namespace, and its source port.
fn udp_socket() -> anyhow::Result<(UdpSocket, u16)> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.connect(vip())?;
    sock.set_read_timeout(Some(UDP_TIMEOUT))?;
    let port = sock.local_addr()?.port();
    Ok((sock, port))
}

/// Send `payload` and wait for its answer: the backend that gave it.
fn ask(sock: &UdpSocket, payload: &str) -> anyhow::Result<String> {
    sock.send(payload.as_bytes())?;
    let mut buf = [0u8; 2048];
    let n = sock.recv(&mut buf).map_err(|e| anyhow::anyhow!("no answer to {payload:?}: {e}"))?;
    let got = String::from_utf8_lossy(&buf[..n]).into_owned();
    match got.split_once(' ') {
        Some((name, rest)) if rest == payload && name.starts_with("backend-") => Ok(name.to_string()),
        _ => anyhow::bail!("sent {payload:?}, got {got:?}"),
    }
}

/// What a load thread saw: answers by backend, failures (with when, since the soak began),
/// and the source ports it used with when each was last used.
#[derive(Debug, Default)]
struct Tally {
    ok: BTreeMap<String, usize>,
    failed: Vec<String>,
    ports: Vec<(u16, Instant)>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (k, v) in other.ok {
            *self.ok.entry(k).or_default() += v;
        }
        self.failed.extend(other.failed);
        self.ports.extend(other.ports);
    }

    fn answered(&self) -> usize {
        self.ok.values().sum()
    }

    /// When the last of its exchanges ended, since `started`.
    fn until(&self, started: Instant) -> Duration {
        self.ports.iter().map(|(_, at)| at.saturating_duration_since(started)).max().unwrap_or_default()
    }
}

fn running(started: Instant, stop: &AtomicBool) -> bool {
    !stop.load(Ordering::Relaxed) && started.elapsed() < AT_MOST
}

/// Short TCP connections one after another until `stop` or the bounds.
fn short_connections(id: usize, started: Instant, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    for n in 0..SHORT_MAX {
        if !running(started, &stop) {
            break;
        }
        let (port, r) = short_tcp(&format!("short {id} {n}\n"));
        t.ports.push((port, Instant::now()));
        match r {
            Ok(name) => *t.ok.entry(name).or_default() += 1,
            Err(e) => t.failed.push(format!("{:.2?}: tcp {id}/{n} from port {port}: {e:#}", started.elapsed())),
        }
        thread::sleep(PACE);
    }
    t
}

/// Datagrams from a new socket (a new source port, a new flow) at a time, `PER_SOCKET` each,
/// every one answered by the flow's backend.
fn datagrams(id: usize, started: Instant, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    for n in 0..UDP_SOCKETS_MAX {
        if !running(started, &stop) {
            break;
        }
        let (sock, port) = match udp_socket() {
            Ok(s) => s,
            Err(e) => {
                t.failed.push(format!("udp {id}/{n}: socket: {e:#}"));
                continue;
            }
        };
        let mut first: Option<String> = None;
        for k in 0..PER_SOCKET {
            match ask(&sock, &format!("udp {id} {n} {k}")) {
                Ok(name) if first.as_ref().is_some_and(|f| *f != name) => t.failed.push(format!(
                    "{:.2?}: udp {id}/{n}/{k} from port {port}: answered by {name}, its flow's first by {}",
                    started.elapsed(),
                    first.as_deref().unwrap_or_default()
                )),
                Ok(name) => {
                    first.get_or_insert_with(|| name.clone());
                    *t.ok.entry(name).or_default() += 1;
                }
                Err(e) => t.failed.push(format!("{:.2?}: udp {id}/{n}/{k} from port {port}: {e:#}", started.elapsed())),
            }
        }
        t.ports.push((port, Instant::now()));
        thread::sleep(PACE);
    }
    t
}

/// Line `n` of long-lived connection `id`: numbered, ~120 bytes.
fn line(id: usize, n: usize) -> String {
    format!("talk {id} line {n:06} {}\n", format!("{:08x}", n.wrapping_mul(0x9e37_79b9) ^ id).repeat(12))
}

/// What one long-lived connection or UDP flow saw.
#[derive(Debug, Default)]
struct Talk {
    backend: String,
    port: u16,
    /// Exchanges answered intact, in order.
    exchanges: usize,
    error: Option<String>,
}

/// A long-lived TCP connection: numbered lines until `stop` (or the bounds), each checked as
/// it comes back; at the end half-close and expect nothing more than EOF.
fn talk_tcp(id: usize, started: Instant, stop: Arc<AtomicBool>) -> Talk {
    let mut t = Talk::default();
    let run = |t: &mut Talk| -> anyhow::Result<()> {
        let mut s = Session::open(None, vip(), TIMEOUT)?;
        t.port = s.stream.local_addr()?.port();
        let mut reader = BufReader::new(s.stream.try_clone()?);
        reader.read_line(&mut t.backend)?;
        t.backend = t.backend.trim().to_string();
        let mut got = String::new();
        while running(started, &stop) && t.exchanges < TALK_MAX {
            let want = line(id, t.exchanges);
            s.stream.write_all(want.as_bytes())?;
            got.clear();
            reader.read_line(&mut got)?;
            anyhow::ensure!(got == want, "line {}: sent {want:?}, got back {got:?}", t.exchanges);
            t.exchanges += 1;
            thread::sleep(TALK_PACE);
        }
        s.stream.shutdown(std::net::Shutdown::Write)?;
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest)?;
        anyhow::ensure!(rest.is_empty(), "{} bytes after the last line", rest.len());
        Ok(())
    };
    if let Err(e) = run(&mut t) {
        t.error = Some(format!("{:.2?}: {e:#}", started.elapsed()));
    }
    t
}

/// A long-lived UDP flow: numbered datagrams until `stop` (or the bounds), each answered by
/// the backend that answered the first.
fn talk_udp(id: usize, started: Instant, stop: Arc<AtomicBool>) -> Talk {
    let mut t = Talk::default();
    let run = |t: &mut Talk| -> anyhow::Result<()> {
        let (sock, port) = udp_socket()?;
        t.port = port;
        while running(started, &stop) && t.exchanges < TALK_MAX {
            let name = ask(&sock, &format!("flow {id} datagram {:06}", t.exchanges))?;
            if t.backend.is_empty() {
                t.backend = name;
            } else {
                anyhow::ensure!(name == t.backend, "datagram {} answered by {name}", t.exchanges);
            }
            t.exchanges += 1;
            thread::sleep(UDP_TALK_PACE);
        }
        Ok(())
    };
    if let Err(e) = run(&mut t) {
        t.error = Some(format!("{:.2?}: {e:#}", started.elapsed()));
    }
    t
}

/// `n` spoofed SYNs from sources in 100.64.0.0/10 (from `seed` on), sent from `client`: the
/// sources sent.
fn spoof(client: &Netns, seed: u64, n: usize) -> Vec<(Ipv4Addr, u16)> {
    client.run(move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(libc::IPPROTO_RAW.into()))
            .expect("raw socket");
        let to: socket2::SockAddr = SocketAddr::new(VIP.into(), 0).into();
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut sent = Vec::new();
        for _ in 0..n {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let src = Ipv4Addr::from(0x6440_0000 | (r as u32 & 0x003f_ffff));
            let sport = 1024 + (r >> 32) as u16 % 60000;
            sock.send_to(&syn_v4(src, VIP, sport, 80, (r >> 16) as u32), &to).expect("spoofed SYN");
            sent.push((src, sport));
        }
        sent
    })
}

/// Every entry of the pinned LRU hash map `name` (lb is stopped: nothing changes it).
fn table<V: aya::Pod>(pins: &Path, name: &str) -> Vec<(FlowKey, V)> {
    let path = pins.join(format!("v{PIN_LAYOUT}/maps/{name}"));
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map: BpfHashMap<MapData, FlowKey, V> =
        BpfHashMap::try_from(Map::LruHashMap(data)).unwrap_or_else(|e| panic!("{name}: {e}"));
    map.iter().collect::<Result<Vec<_>, _>>().unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

fn show_key(k: &FlowKey) -> String {
    let proto = match k.proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        _ => "?",
    };
    format!(
        "{proto} {}:{} -> {}:{}",
        words_addr(&k.src, k.family),
        u16::from_be(k.sport),
        words_addr(&k.dst, k.family),
        u16::from_be(k.dport)
    )
}

/// A broken pair with both halves as the tables have them.
fn describe(b: &Broken, ct: &[(FlowKey, CtEntry)], rev: &[(FlowKey, RevEntry)]) -> String {
    let rev_of = |k: &FlowKey| rev.iter().find(|(r, _)| r == k).map(|(_, v)| *v);
    let ct_of = |k: &FlowKey| ct.iter().find(|(c, _)| c == k).map(|(_, v)| *v);
    match b {
        Broken::NoReverse(k) | Broken::ReverseOfAnother(k) => {
            let e = ct_of(k).unwrap();
            let rk = e.reverse_key(k.proto, k.family);
            let there = rev_of(&rk).map(|r| format!("owned by {}", show_key(&r.client_key(k.proto, k.family))));
            format!(
                "{b:?}: flow {} (backend id {}, listener {}, state {:#x}) -> reverse {}: {}",
                show_key(k),
                e.backend_id,
                e.listener_id,
                e.state,
                show_key(&rk),
                there.unwrap_or_else(|| "missing".into())
            )
        }
        Broken::Orphan(k) => {
            let r = rev_of(k).unwrap();
            let owner = r.client_key(k.proto, k.family);
            let there =
                ct_of(&owner).map(|e| format!("points at reverse {}", show_key(&e.reverse_key(k.proto, k.family))));
            format!(
                "{b:?}: reverse {} (state {:#x}) owned by {}: {}",
                show_key(k),
                r.state,
                show_key(&owner),
                there.unwrap_or_else(|| "missing".into())
            )
        }
    }
}

/// The pair check of one client table and its reverse table: the offenders, described.
fn check_pairs(what: &str, ct: &[(FlowKey, CtEntry)], rev: &[(FlowKey, RevEntry)]) -> Vec<String> {
    pairs::broken(ct, rev).iter().map(|b| format!("{what}: {}", describe(b, ct, rev))).collect()
}

/// The source ports of `table`'s flows from CLIENT to VIP:80 of `proto`.
fn client_ports<V>(table: &[(FlowKey, V)], proto: u8) -> BTreeSet<u16> {
    let (client, vip) = (std::net::IpAddr::V4(CLIENT), std::net::IpAddr::V4(VIP));
    table
        .iter()
        .filter(|(k, _)| k.proto == proto && k.family == FAMILY_V4 && u16::from_be(k.dport) == 80)
        .filter(|(k, _)| words_addr(&k.src, k.family) == client && words_addr(&k.dst, k.family) == vip)
        .map(|(k, _)| u16::from_be(k.sport))
        .collect()
}

fn flows_and_their_reverse_entries_stay_paired_under_churn(shape: Shape) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let name = shape.name();
    let mut s =
        Scenario::start_in(shape, BACKENDS, &[("svc.yaml", &yaml(shape, STEPS[0]))], 2, &["--sweep-ms", "1000"])
            .unwrap();
    let _echo: Vec<Server> = s
        .topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| greeting_echo_server(ns, ECHO_PORT, &format!("backend-{}", i + 1)))
        .collect();

    // Warm up (neighbours resolved, every backend answering): a few of each, all answered.
    let warm = s.topo.client.run(|| {
        let mut t = Tally::default();
        for n in 0..6 {
            let (port, r) = short_tcp(&format!("warm {n}\n"));
            t.ports.push((port, Instant::now()));
            match r {
                Ok(b) => *t.ok.entry(b).or_default() += 1,
                Err(e) => t.failed.push(format!("warm-up tcp {n}: {e:#}")),
            }
        }
        let mut udp = Tally::default();
        for n in 0..6 {
            match udp_socket().and_then(|(sock, port)| Ok((ask(&sock, &format!("warm {n}"))?, port))) {
                Ok((b, port)) => {
                    *udp.ok.entry(b).or_default() += 1;
                    udp.ports.push((port, Instant::now()));
                }
                Err(e) => udp.failed.push(format!("warm-up udp {n}: {e:#}")),
            }
        }
        (t, udp)
    });
    let (mut tcp, mut udp) = warm;
    assert!(tcp.failed.is_empty() && udp.failed.is_empty(), "{tcp:?}\n{udp:?}\n{}", s.daemon.log_text());
    assert_eq!((tcp.ok.len(), udp.ok.len()), (BACKENDS, BACKENDS), "rr spreads the warm-up: {tcp:?} {udp:?}");

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |f: fn(usize, Instant, Arc<AtomicBool>) -> Tally, id: usize| {
        let stop = stop.clone();
        s.topo.client.spawn(move || f(id, started, stop))
    };
    let shorts: Vec<_> = (0..SHORT_THREADS).map(|id| spawn(short_connections, id)).collect();
    let grams: Vec<_> = (0..UDP_THREADS).map(|id| spawn(datagrams, id)).collect();
    let talk = |f: fn(usize, Instant, Arc<AtomicBool>) -> Talk, id: usize| {
        let stop = stop.clone();
        s.topo.client.spawn(move || f(id, started, stop))
    };
    let talkers: Vec<_> = (0..TALKERS).map(|id| talk(talk_tcp, id)).collect();
    let udp_talkers: Vec<_> = (0..UDP_TALKERS).map(|id| talk(talk_udp, id)).collect();

    // The churn: a new EndpointSlice every CHANGE_EVERY, and spoofed SYNs at each change.
    let mut changes = 0;
    let mut spoofed = Vec::new();
    for (step, eps) in STEPS.iter().enumerate().skip(1) {
        let at = started + CHANGE_EVERY * step as u32;
        if at > started + SOAK_FOR {
            break;
        }
        thread::sleep(at.saturating_duration_since(Instant::now()));
        s.write("svc.yaml", &yaml(shape, eps)).unwrap();
        changes += 1;
        spoofed.extend(spoof(&s.topo.client, step as u64, SPOOFED_PER_CHANGE));
    }
    thread::sleep((started + SOAK_FOR).saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    for t in shorts {
        tcp.add(t.join().unwrap());
    }
    for t in grams {
        udp.add(t.join().unwrap());
    }
    let talks: Vec<Talk> = talkers.into_iter().map(|t| t.join().unwrap()).collect();
    let udp_talks: Vec<Talk> = udp_talkers.into_iter().map(|t| t.join().unwrap()).collect();
    let soaked = started.elapsed();

    // Settle, then stop lb (SIGTERM: the pinned datapath stays, nothing sweeps) and read its
    // tables from the pins: one consistent picture.
    thread::sleep(SETTLE);
    s.daemon.halt(Signal::SIGTERM).unwrap();
    let read_at = stopped.elapsed();
    let log = s.daemon.log_text();
    let stats: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&s.daemon.stdout).unwrap().lines().last().unwrap_or("{}"))
            .unwrap();
    let dp = &stats["stats"]["datapath"];
    let counter = |k: &str| dp[k]["packets"].as_u64().unwrap_or(0);
    let pins = s.daemon.pin_dir().unwrap().to_path_buf();
    let ct: Vec<(FlowKey, CtEntry)> = table(&pins, names::CONNTRACK);
    let rev: Vec<(FlowKey, RevEntry)> = table(&pins, names::REVERSE_NAT);
    let hct: Vec<(FlowKey, CtEntry)> = table(&pins, names::HALF_OPEN);
    let hrev: Vec<(FlowKey, RevEntry)> = table(&pins, names::HALF_OPEN_REV);
    let mut broken = check_pairs("established", &ct, &rev);
    broken.extend(check_pairs("half-open", &hct, &hrev));

    // What must be in the tables: every UDP flow (120 s idle), every long-lived TCP
    // connection and the short ones that ended in the last RECENT (closed: 10 s idle).
    let (tcp_ports, udp_ports) = (client_ports(&ct, PROTO_TCP), client_ports(&ct, PROTO_UDP));
    let want_udp: BTreeSet<u16> = udp.ports.iter().map(|(p, _)| *p).chain(udp_talks.iter().map(|t| t.port)).collect();
    let recent = |at: &Instant| stopped.saturating_duration_since(*at) < RECENT;
    let want_tcp: BTreeSet<u16> =
        tcp.ports.iter().filter(|(_, at)| recent(at)).map(|(p, _)| *p).chain(talks.iter().map(|t| t.port)).collect();
    let missing_udp: Vec<u16> = want_udp.difference(&udp_ports).copied().collect();
    let missing_tcp: Vec<u16> = want_tcp.difference(&tcp_ports).copied().collect();
    let half_open_spoofed = hct
        .iter()
        .filter(|(k, _)| {
            spoofed
                .iter()
                .any(|(a, p)| words_addr(&k.src, k.family) == std::net::IpAddr::V4(*a) && u16::from_be(k.sport) == *p)
        })
        .count();

    let loaded = log.matches("listener loaded").count();
    let drains = log.matches("draining removed backend").count();
    let cuts = log.matches("cut the flows of removed backends").count();
    let repaired = log.matches("lost the other half").count();
    eprintln!(
        "{name}: soaked {soaked:.1?} with {changes} EndpointSlice changes ({loaded} listener loads, {drains} \
         backend drains started, {cuts} cuts, {repaired} sweeps that repaired broken pairs); tables read {read_at:.1?} \
         after the load stopped"
    );
    eprintln!(
        "{name}: short TCP connections (until {:.1?}): {} answered {:?}, {} failed; UDP datagrams from {} sockets \
         (until {:.1?}): {} answered {:?}, {} failed",
        tcp.until(started),
        tcp.answered(),
        tcp.ok,
        tcp.failed.len(),
        udp.ports.len(),
        udp.until(started),
        udp.answered(),
        udp.ok,
        udp.failed.len()
    );
    for (kind, ts) in [("TCP connection", &talks), ("UDP flow", &udp_talks)] {
        for (id, t) in ts.iter().enumerate() {
            eprintln!(
                "{name}: long-lived {kind} {id} (port {}) to {}: {} exchanges intact{}",
                t.port,
                t.backend,
                t.exchanges,
                t.error.as_deref().map(|e| format!(", then: {e}")).unwrap_or_default()
            );
        }
    }
    eprintln!(
        "{name}: pairs checked: CONNTRACK {} / REVERSE_NAT {} ({} TCP and {} UDP flows of the client), HALF_OPEN {} / \
         HALF_OPEN_REV {} ({} of {} spoofed SYNs); broken: {}",
        ct.len(),
        rev.len(),
        tcp_ports.len(),
        udp_ports.len(),
        hct.len(),
        hrev.len(),
        half_open_spoofed,
        spoofed.len(),
        broken.len()
    );
    eprintln!(
        "{name}: datapath: new_flows {} handshakes {} flow_reopened {} reverse_conflict {} drop_no_snat_port {} \
         drop_no_flow {} drop_half_open {} half_open_reclaimed {} drop_no_backend {}",
        counter("new_flows"),
        counter("handshakes"),
        counter("flow_reopened"),
        counter("reverse_conflict"),
        counter("drop_no_snat_port"),
        counter("drop_no_flow"),
        counter("drop_half_open"),
        counter("half_open_reclaimed"),
        counter("drop_no_backend"),
    );
    for b in broken.iter().take(50) {
        eprintln!("{name}: BROKEN {b}");
    }
    for f in tcp.failed.iter().chain(&udp.failed).take(30) {
        eprintln!("{name}: FAILED {f}");
    }

    // The map invariant, on tables that saw real flows.
    assert!(broken.is_empty(), "{name}: {} broken pairs (first: {:?})\n{log}", broken.len(), broken.first());
    assert_eq!(repaired, 0, "{name}: lb's sweep found and removed broken flow halves during the soak\n{log}");
    assert_eq!(counter("reverse_conflict"), 0, "{name}: a flow found its reverse entry held by another: {dp}");
    assert!(missing_udp.is_empty(), "{name}: UDP flows missing from CONNTRACK (source ports): {missing_udp:?}");
    assert!(missing_tcp.is_empty(), "{name}: TCP flows missing from CONNTRACK (source ports): {missing_tcp:?}");
    assert_eq!(half_open_spoofed, spoofed.len(), "{name}: every spoofed SYN's flow is half-open");
    assert!(!ct.is_empty() && !rev.is_empty() && !hct.is_empty() && !hrev.is_empty());
    // The churn reached the datapath: three removals per listener drained, nothing cut.
    assert!(changes >= STEPS.len() - 1, "{name}: {changes} changes");
    assert!(drains >= 6, "{name}: {drains} drains started\n{log}");
    assert_eq!(cuts, 0, "{name}: connection drain is on\n{log}");
    // Every exchange answered.
    assert!(tcp.failed.is_empty(), "{name}: {} short TCP connections failed: {:#?}", tcp.failed.len(), tcp.failed);
    assert!(udp.failed.is_empty(), "{name}: {} datagrams failed: {:#?}", udp.failed.len(), udp.failed);
    for t in talks.iter().chain(&udp_talks) {
        assert!(t.error.is_none() && t.backend.starts_with("backend-"), "{name}: {talks:#?}\n{udp_talks:#?}");
        assert!(t.exchanges > 100, "{name}: {talks:#?}\n{udp_talks:#?}");
    }
    assert!(tcp.answered() > 500 && udp.answered() > 500, "{name}: too little load to mean anything");
    assert_eq!(tcp.ok.len(), BACKENDS, "{name}: {:?}", tcp.ok);
    let (t, u) = (tcp.until(started), udp.until(started));
    assert!(t > SOAK_FOR - CHANGE_EVERY && u > SOAK_FOR - CHANGE_EVERY, "{name}: the load ended at {t:?} / {u:?}");

    // The check can fail: one client flow's reverse entry taken away is found.
    let (k, e) = ct.iter().find(|(k, _)| k.proto == PROTO_TCP).unwrap();
    let path = pins.join(format!("v{PIN_LAYOUT}/maps/{}", names::REVERSE_NAT));
    let mut pinned: BpfHashMap<MapData, FlowKey, RevEntry> =
        BpfHashMap::try_from(Map::LruHashMap(MapData::from_pin(&path).unwrap())).unwrap();
    pinned.remove(&e.reverse_key(k.proto, k.family)).unwrap();
    let rev: Vec<(FlowKey, RevEntry)> = table(&pins, names::REVERSE_NAT);
    assert_eq!(pairs::broken(&ct, &rev), vec![Broken::NoReverse(*k)], "{name}: the probe");
}

mod flows_and_their_reverse_entries_stay_paired_under_churn {
    use lb_tests::{privileged, topology::Shape};

    #[test]
    fn bridge() {
        if privileged("flows_and_their_reverse_entries_stay_paired_under_churn::bridge") {
            super::flows_and_their_reverse_entries_stay_paired_under_churn(Shape::Bridge);
        }
    }

    #[test]
    fn vxlan() {
        if privileged("flows_and_their_reverse_entries_stay_paired_under_churn::vxlan") {
            super::flows_and_their_reverse_entries_stay_paired_under_churn(Shape::Vxlan);
        }
    }
}
