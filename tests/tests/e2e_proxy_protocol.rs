//! PROXY protocol end to end in the netns topology, against real receivers: nginx
//! (`listen ... proxy_protocol`, logging `$proxy_protocol_addr:$proxy_protocol_port`) and
//! haproxy (`bind ... accept-proxy`, logging `%ci:%cp`), v1 and v2, IPv4 and IPv6, TLS 1.3
//! through nginx, with 20% loss injected in the backends' namespaces (iptables `statistic`;
//! this kernel has no netem); a server-first backend; multi-MB transfers both ways with
//! their hashes; UDP datagrams each checked for their v2 header.
//!
//! Debugging aid: `PP_PCAP=DIR` makes the server-first test capture the client's and the
//! backend's side with tcpdump (client.pcap, backend.pcap).
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_tests::{
    daemon::Daemon,
    in_every_shape,
    netns::Netns,
    ppserver::{self, BANNER, FNV_START, fnv, stream_bytes},
    privileged,
    topology::{CLIENT, CLIENT6, Shape, Topology},
};

const PP: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-proxy-protocol";
const PP_VERSION: &str = "lb.dev/proxy-protocol-version";

/// The tests with injected loss run one at a time: several at once on two CPUs stretch
/// retransmissions (and haproxy's stream ends, when it logs) past their deadlines.
fn one_loss_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when the test can run: root, and every program in `bins` installed. A missing one
/// skips the test, unless `LB_REQUIRE_PRIVILEGED=1` makes it a failure.
fn ready(test: &str, bins: &[&str]) -> bool {
    if !privileged(test) {
        return false;
    }
    for bin in bins {
        let found =
            Command::new("sh").args(["-c", &format!("command -v {bin}")]).output().is_ok_and(|o| o.status.success());
        if !found {
            if std::env::var("LB_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("{test} needs {bin} (cargo xtask setup installs it)");
            }
            eprintln!("skipping {test}: {bin} not installed (cargo xtask setup)");
            return false;
        }
    }
    true
}

/// A Service with TCP (and UDP) ports `(port, target)` on `vip`, PROXY protocol on with
/// `version` ("1", "2", or "" for the default), over `endpoints`.
fn service(name: &str, vip: IpAddr, version: &str, ports: &[(&str, u16, u16)], endpoints: &[IpAddr]) -> String {
    let family = if vip.is_ipv6() { "IPv6" } else { "IPv4" };
    let mut version = if version.is_empty() { String::new() } else { format!("    {PP_VERSION}: \"{version}\"\n") };
    if vip.is_ipv6() {
        version.push_str("    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-ip-version: \"ipv6\"\n");
    }
    let svc_ports: String = ports
        .iter()
        .map(|(p, port, target)| {
            format!("  - {{name: {}{port}, protocol: {p}, port: {port}, targetPort: {target}}}\n", p.to_lowercase())
        })
        .collect();
    let ep_ports: Vec<String> = ports
        .iter()
        .map(|(p, port, target)| format!("{{name: {}{port}, protocol: {p}, port: {target}}}", p.to_lowercase()))
        .collect();
    let eps: String =
        endpoints.iter().map(|a| format!("- addresses: [\"{a}\"]\n  conditions: {{ready: true}}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: e2e\n  annotations:\n    {PP}: \"on\"\n{version}spec:\n  type: LoadBalancer\n  loadBalancerIP: \"{vip}\"\n  ports:\n{svc_ports}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: e2e\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: {family}\nports: [{}]\nendpoints:\n{eps}",
        ep_ports.join(", ")
    )
}

/// The topology, the manifests and `lb` on them.
struct Bed {
    topo: Topology,
    daemon: Daemon,
    work: tempfile::TempDir,
}

impl Bed {
    /// The topology, then the backends' servers (`servers`: before `lb`, so its health
    /// checks find them up), then `lb`.
    fn start<T>(
        shape: Shape,
        backends: usize,
        services: &[String],
        listeners: usize,
        servers: impl FnOnce(&Topology, &Path) -> Result<T>,
    ) -> Result<(Bed, T)> {
        let topo = Topology::shaped(shape, backends)?;
        let work = tempfile::tempdir()?;
        let peers = servers(&topo, work.path())?;
        let manifests = work.path().join("manifests");
        fs::create_dir(&manifests)?;
        for (i, s) in services.iter().enumerate() {
            fs::write(manifests.join(format!("svc{i}.yaml")), s)?;
        }
        let daemon =
            Daemon::start_with(&topo.lb, &manifests, &topo.iface_list(), listeners, work.path(), &topo.lb_args(&[]))?;
        Ok((Bed { topo, daemon, work }, peers))
    }

    /// Stop `lb` and return its datapath counter `name` (packets).
    fn stop_counter(&mut self, names: &[&str]) -> Vec<u64> {
        let out = self.daemon.stop().unwrap();
        let stats: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        names.iter().map(|n| stats["stats"]["datapath"][n]["packets"].as_u64().unwrap_or(0)).collect()
    }
}

/// A program the test started in a namespace, stopped by its pid (SIGTERM, then SIGKILL)
/// when dropped.
struct Peer {
    child: Child,
    name: &'static str,
    dir: PathBuf,
}

impl Peer {
    fn start(ns: &Netns, name: &'static str, dir: &Path, program: &str, args: &[&str]) -> Result<Peer> {
        let child = ns
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(dir.join(format!("{name}.out")))?)
            .stderr(fs::File::create(dir.join(format!("{name}.err")))?)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Peer { child, name, dir: dir.to_path_buf() })
    }

    fn output(&self, suffix: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{}.{suffix}", self.name))).unwrap_or_default()
    }

    /// Wait until something listens on TCP `port` in `ns` (bounded).
    fn wait_listening(&mut self, ns: &Netns, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = ns.exec(&["ss", "-Hltn", &format!("sport = :{port}")])?;
            if !out.stdout.is_empty() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}): {}", self.name, self.output("err"));
            }
            if Instant::now() > deadline {
                bail!("{} not listening on {port} after 15 s: {}", self.name, self.output("err"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx in `ns`: HTTP on 8080 and HTTPS (TLS 1.3 only) on 8443, both `proxy_protocol`,
/// answering and logging `$proxy_protocol_addr:$proxy_protocol_port`.
fn nginx(ns: &Netns, dir: &Path) -> Result<Peer> {
    fs::create_dir_all(dir)?;
    let d = dir.display();
    Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lb-test"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .context("openssl")?
        .status
        .success()
        .then_some(())
        .context("openssl req failed")?;
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    log_format pp '$proxy_protocol_addr:$proxy_protocol_port';
    access_log {d}/access.log pp;
    server {{
        listen 8080 proxy_protocol;
        listen [::]:8080 proxy_protocol;
        listen 8443 ssl proxy_protocol;
        listen [::]:8443 ssl proxy_protocol;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.3;
        location / {{ return 200 "$proxy_protocol_addr:$proxy_protocol_port\n"; }}
    }}
}}
"#
    );
    fs::write(dir.join("nginx.conf"), conf)?;
    let conf = dir.join("nginx.conf");
    let mut p = Peer::start(ns, "nginx", dir, "nginx", &["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()])?;
    p.wait_listening(ns, 8080)?;
    Ok(p)
}

/// haproxy in `ns`: HTTP on 8080 with `accept-proxy`, answering `%[src]:%[src_port]` and
/// logging `%ci:%cp` to stdout.
fn haproxy(ns: &Netns, dir: &Path) -> Result<Peer> {
    fs::create_dir_all(dir)?;
    let conf = r#"global
    log stdout format raw local0
    maxconn 256
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind :::8080 v4v6 accept-proxy
    log-format "%ci:%cp"
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]\n"
"#;
    fs::write(dir.join("haproxy.cfg"), conf)?;
    let cfg = dir.join("haproxy.cfg");
    let mut p = Peer::start(ns, "haproxy", dir, "haproxy", &["-db", "-f", cfg.to_str().unwrap()])?;
    p.wait_listening(ns, 8080)?;
    Ok(p)
}

/// Drop `p` of the TCP segments to and from the backend's port `port` in `ns`: the client's
/// (the handshake's final ACK with the header, first segments, their retransmissions) and
/// the backend's, SYN-ACKs excepted. (With SYN-ACKs dropped too, the server-first test saw,
/// about once in four loaded runs, a backend in SYN_RECV whose final ACK was lost send no
/// SYN-ACK retransmission at all for 90 s, leaving both sides silent: see docs/annotations.md.)
fn inject_loss(ns: &Netns, port: u16, p: &str) -> Result<()> {
    let port = port.to_string();
    let stat = ["-m", "statistic", "--mode", "random", "--probability", p, "-j", "DROP"];
    let mut input = vec!["iptables", "-A", "INPUT", "-p", "tcp", "--dport", &port];
    input.extend_from_slice(&stat);
    ns.exec(&input)?;
    let mut output = vec!["iptables", "-A", "OUTPUT", "-p", "tcp", "--sport", &port, "!", "--tcp-flags", "SYN", "SYN"];
    output.extend_from_slice(&stat);
    ns.exec(&output)?;
    Ok(())
}

/// Packets the loss rules of `ns` dropped.
fn dropped(ns: &Netns) -> u64 {
    ["INPUT", "OUTPUT"]
        .iter()
        .filter_map(|chain| ns.exec(&["iptables", "-L", chain, "-v", "-x", "-n"]).ok())
        .flat_map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("DROP"))
                .filter_map(|l| l.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
                .collect::<Vec<_>>()
        })
        .sum()
}

/// `addr:port` as nginx or haproxy print it (IPv6 with or without brackets).
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    let (ip, port) = s.rsplit_once(':')?;
    Some(SocketAddr::new(ip.trim_matches(['[', ']']).parse().ok()?, port.parse().ok()?))
}

/// One HTTP/1.0 request: (our local address, the response body).
fn http_get(to: SocketAddr) -> Result<(SocketAddr, String)> {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(30)).with_context(|| format!("connect {to}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let local = s.local_addr()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: lb-test\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body =
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).with_context(|| format!("no HTTP response: {out:?}"))?;
    Ok((local, body))
}

/// One HTTPS request with TLS 1.3 through curl: (our local address, the body).
fn https_get(ns: &Netns, to: SocketAddr) -> Result<(SocketAddr, String)> {
    let url = format!("https://{to}/");
    let out = ns.exec(&[
        "curl",
        "-sS",
        "-k",
        "--tlsv1.3",
        "--max-time",
        "60",
        "-w",
        "\n%{local_ip} %{local_port} %{ssl_verify_result}",
        &url,
    ])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n').context("curl output")?;
    let mut t = tail.split_whitespace();
    let local = SocketAddr::new(t.next().context("ip")?.parse()?, t.next().context("port")?.parse()?);
    Ok((local, body.to_string()))
}

fn nginx_and_haproxy_log_the_real_client_v1_v2_under_loss(shape: Shape) {
    let _turn = one_loss_test_at_a_time();
    if !ready(
        "nginx_and_haproxy_log_the_real_client_v1_v2_under_loss",
        &["nginx", "haproxy", "openssl", "curl", "iptables"],
    ) {
        return;
    }
    let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
    let (n4, n6, h4, h6) = (
        IpAddr::V4(shape.backend_addr(1)),
        IpAddr::V6(shape.backend_addr6(1)),
        IpAddr::V4(shape.backend_addr(2)),
        IpAddr::V6(shape.backend_addr6(2)),
    );
    let web = [("TCP", 80, 8080), ("TCP", 443, 8443)];
    // (name, VIP, version, backend)
    let plan: Vec<(&str, IpAddr, &str, IpAddr)> = vec![
        ("nginx-v2", v4("198.18.100.10"), "", n4),
        ("nginx-v1", v4("198.18.100.11"), "1", n4),
        ("haproxy-v2", v4("198.18.100.12"), "2", h4),
        ("haproxy-v1", v4("198.18.100.13"), "1", h4),
        ("nginx6-v1", v4("2001:db8:100::11"), "1", n6),
        ("nginx6-v2", v4("2001:db8:100::10"), "2", n6),
        ("haproxy6-v2", v4("2001:db8:100::12"), "2", h6),
        ("haproxy6-v1", v4("2001:db8:100::13"), "1", h6),
    ];
    let services: Vec<String> = plan.iter().map(|(name, vip, ver, b)| service(name, *vip, ver, &web, &[*b])).collect();
    let (mut bed, (ngx, hap)) = Bed::start(shape, 2, &services, services.len() * 2, |topo, work| {
        Ok((nginx(&topo.backends[0], &work.join("nginx"))?, haproxy(&topo.backends[1], &work.join("haproxy"))?))
    })
    .unwrap();
    for ns in &bed.topo.backends {
        inject_loss(ns, 8080, "0.2").unwrap();
        inject_loss(ns, 8443, "0.2").unwrap();
    }
    // Every Service, five requests each, in parallel (loss makes each take a while).
    const N: usize = 5;
    let handles: Vec<_> = plan
        .iter()
        .map(|(name, vip, _, _)| {
            let (name, to) = (name.to_string(), SocketAddr::new(*vip, 80));
            bed.topo.client.spawn(move || (name, (0..N).map(|_| http_get(to)).collect::<Vec<_>>()))
        })
        .collect();
    let mut clients: Vec<(String, SocketAddr)> = Vec::new();
    for h in handles {
        let (name, results) = h.join().unwrap();
        for r in results {
            let (local, body) = r.unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let seen = parse_addr(&body).unwrap_or_else(|| panic!("{name}: body {body:?}"));
            assert_eq!(seen, local, "{name}: the backend saw the real client");
            clients.push((name.clone(), local));
        }
    }
    // TLS 1.3 through nginx, header first, then the handshake.
    for vip in ["198.18.100.10", "198.18.100.11", "2001:db8:100::11"] {
        let to = SocketAddr::new(v4(vip), 443);
        let (local, body) = https_get(&bed.topo.client, to).unwrap_or_else(|e| panic!("TLS 1.3 via {to}: {e:#}"));
        assert_eq!(parse_addr(&body), Some(local), "TLS 1.3 via {to}: {body:?}");
        clients.push(("nginx-tls".into(), local));
    }
    // The logs say the same.
    // (Each server writes its log line after the answer: wait a bounded time for the last ones.)
    let logged = |text: &str| text.lines().filter_map(parse_addr).collect::<BTreeSet<SocketAddr>>();
    let read_logs = || {
        (
            logged(&fs::read_to_string(bed.work.path().join("nginx/access.log")).unwrap_or_default()),
            logged(&hap.output("out")),
        )
    };
    let all_logged = |(ngx, hap): &(BTreeSet<SocketAddr>, BTreeSet<SocketAddr>)| {
        clients
            .iter()
            .all(|(name, local)| if name.starts_with("nginx") { ngx.contains(local) } else { hap.contains(local) })
    };
    // haproxy logs a request when its stream ends, which retransmissions under loss delay
    // (the more so with the three shapes' runs sharing two CPUs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut logs = read_logs();
    while !all_logged(&logs) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        logs = read_logs();
    }
    let (ngx_log, hap_log) = logs;
    for (name, local) in &clients {
        let log = if name.starts_with("nginx") { &ngx_log } else { &hap_log };
        assert!(log.contains(local), "{name}: {local} not in the access log: {log:?}");
    }
    let lost: u64 = bed.topo.backends.iter().map(dropped).sum();
    assert!(lost > 10, "the loss rules dropped {lost} segments");
    drop((ngx, hap));
    let c = bed.stop_counter(&["pp_inserted", "drop_pp", "new_flows"]);
    assert!(c[0] >= (plan.len() * N) as u64, "a header per connection at least: {c:?}");
    assert_eq!(c[1], 0, "no PROXY packet dropped by the datapath");
    eprintln!("{} connections, {lost} segments dropped by the loss rules, {} headers inserted", clients.len(), c[0]);
}

/// Open a connection to the server-first backend: read its banner and what it says the
/// header told it, without sending a byte. Returns (local address, header source, version).
fn server_first(to: SocketAddr) -> Result<(SocketAddr, BufReader<TcpStream>, TcpStream, SocketAddr, u8)> {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(30)).with_context(|| format!("connect {to}"))?;
    s.set_read_timeout(Some(Duration::from_secs(90)))?;
    let local = s.local_addr()?;
    let w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).with_context(|| format!("{local} → {to}: reading the banner"))?;
    if line.trim_end() != BANNER {
        bail!("banner {line:?}");
    }
    line.clear();
    r.read_line(&mut line).with_context(|| format!("{local} → {to}: reading the header's echo"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 3 || f[0] != "200" {
        bail!("the server did not get a PROXY header first: {line:?}");
    }
    let src: SocketAddr = f[1].parse()?;
    let version: u8 = f[2].trim_start_matches('v').parse()?;
    Ok((local, r, w, src, version))
}

fn server_first_protocol_gets_the_header_first_under_loss(shape: Shape) {
    let _turn = one_loss_test_at_a_time();
    if !ready("server_first_protocol_gets_the_header_first_under_loss", &["iptables"]) {
        return;
    }
    let tcp = [("TCP", 80, 8080)];
    let b4 = IpAddr::V4(shape.backend_addr(1));
    let b6 = IpAddr::V6(shape.backend_addr6(1));
    let plan: Vec<(IpAddr, u8)> = vec![
        ("198.18.100.10".parse().unwrap(), 2),
        ("198.18.100.11".parse().unwrap(), 1),
        ("2001:db8:100::10".parse().unwrap(), 2),
        ("2001:db8:100::11".parse().unwrap(), 1),
    ];
    let services: Vec<String> = plan
        .iter()
        .enumerate()
        .map(|(i, (vip, v))| {
            service(&format!("sf{i}"), *vip, &v.to_string(), &tcp, &[if vip.is_ipv4() { b4 } else { b6 }])
        })
        .collect();
    let (mut bed, _server) =
        Bed::start(shape, 1, &services, services.len(), |topo, _| ppserver::start(&topo.backends[0], 8080)).unwrap();
    let _pcap: Vec<Peer> = match std::env::var("PP_PCAP") {
        Ok(dir) => {
            let dir = PathBuf::from(dir);
            fs::create_dir_all(&dir).unwrap();
            let c = format!("{}c0", bed.topo.prefix);
            let b = format!("{}b1", bed.topo.prefix);
            let cf = dir.join("client.pcap");
            let bf = dir.join("backend.pcap");
            vec![
                Peer::start(
                    &bed.topo.client,
                    "tcpdump-c",
                    &dir,
                    "tcpdump",
                    &["-i", &c, "-s", "200", "-w", cf.to_str().unwrap(), "tcp"],
                )
                .unwrap(),
                Peer::start(
                    &bed.topo.backends[0],
                    "tcpdump-b",
                    &dir,
                    "tcpdump",
                    &["-i", &b, "-s", "200", "-w", bf.to_str().unwrap(), "tcp"],
                )
                .unwrap(),
            ]
        }
        Err(_) => Vec::new(),
    };
    std::thread::sleep(Duration::from_millis(500));
    inject_loss(&bed.topo.backends[0], 8080, "0.2").unwrap();
    let handles: Vec<_> = plan
        .iter()
        .map(|(vip, version)| {
            let (to, version) = (SocketAddr::new(*vip, 80), *version);
            bed.topo.client.spawn(move || -> Result<usize> {
                for _ in 0..5 {
                    let (local, mut r, mut w, src, v) = server_first(to)?;
                    if (src, v) != (local, version) {
                        bail!("{to}: header said {src} v{v}, want {local} v{version}");
                    }
                    // Then a little traffic both ways on the same connection (20% loss each
                    // way makes bulk transfers a matter of exponential backoff: those are
                    // `multi_megabyte_transfers_keep_their_checksums`'s, at 1%).
                    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
                    w.write_all(format!("UP {}\n", data.len()).as_bytes())?;
                    w.write_all(&data)?;
                    let mut line = String::new();
                    r.read_line(&mut line).with_context(|| format!("{local} → {to}: reading the upload's hash"))?;
                    if line.trim() != format!("OK {:016x}", fnv(&data, FNV_START)) {
                        bail!("{to}: upload hash {line:?}");
                    }
                    w.write_all(b"QUIT\n")?;
                }
                Ok(5)
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let lost = dropped(&bed.topo.backends[0]);
    assert!(lost > 10, "the loss rules dropped {lost} segments");
    let c = bed.stop_counter(&["pp_inserted", "drop_pp"]);
    assert!(c[0] >= 20 && c[1] == 0, "{c:?}");
}

fn multi_megabyte_transfers_keep_their_checksums(shape: Shape) {
    if !ready("multi_megabyte_transfers_keep_their_checksums", &["iptables"]) {
        return;
    }
    let tcp = [("TCP", 80, 8080)];
    let services = vec![
        service("big4", "198.18.100.10".parse().unwrap(), "2", &tcp, &[IpAddr::V4(shape.backend_addr(1))]),
        service("big6", "2001:db8:100::10".parse().unwrap(), "1", &tcp, &[IpAddr::V6(shape.backend_addr6(1))]),
    ];
    let (mut bed, _server) =
        Bed::start(shape, 1, &services, 2, |topo, _| ppserver::start(&topo.backends[0], 8080)).unwrap();
    // A little loss: SACK blocks from the backend, retransmissions both ways.
    inject_loss(&bed.topo.backends[0], 8080, "0.01").unwrap();
    const SIZE: usize = 8 << 20;
    for vip in ["198.18.100.10", "2001:db8:100::10"] {
        let to = SocketAddr::new(vip.parse().unwrap(), 80);
        bed.topo
            .client
            .run(move || -> Result<()> {
                let (local, mut r, mut w, src, _) = server_first(to)?;
                assert_eq!(src, local);
                // Upload: the server hashes what it got.
                let mut h = FNV_START;
                w.write_all(format!("UP {SIZE}\n").as_bytes())?;
                stream_bytes(SIZE, 42, |b| {
                    h = fnv(b, h);
                    Ok(w.write_all(b)?)
                })?;
                let mut line = String::new();
                r.read_line(&mut line)?;
                assert_eq!(line.trim(), format!("OK {h:016x}"), "{to}: upload of {SIZE} bytes");
                // Download: we hash what we got.
                w.write_all(format!("DOWN {SIZE} 7\n").as_bytes())?;
                let mut want = FNV_START;
                stream_bytes(SIZE, 7, |b| {
                    want = fnv(b, want);
                    Ok(())
                })?;
                let mut got = FNV_START;
                let mut buf = vec![0u8; 65536];
                let mut left = SIZE;
                while left > 0 {
                    let n = r.read(&mut buf[..left.min(65536)])?;
                    if n == 0 {
                        bail!("{to}: download cut short with {left} bytes to go");
                    }
                    got = fnv(&buf[..n], got);
                    left -= n;
                }
                assert_eq!(got, want, "{to}: download of {SIZE} bytes");
                Ok(())
            })
            .unwrap();
    }
    let c = bed.stop_counter(&["pp_inserted", "drop_pp"]);
    assert!(c[0] >= 2 && c[1] == 0, "{c:?}");
}

fn udp_datagrams_each_carry_a_v2_header(shape: Shape) {
    if !privileged("udp_datagrams_each_carry_a_v2_header") {
        return;
    }
    let udp = [("UDP", 53, 8080)];
    let services = vec![
        service("u4", "198.18.100.10".parse().unwrap(), "", &udp, &[IpAddr::V4(shape.backend_addr(1))]),
        // v1 asked for: UDP still gets v2 (v1 has no datagram form).
        service("u4v1", "198.18.100.11".parse().unwrap(), "1", &udp, &[IpAddr::V4(shape.backend_addr(1))]),
        service("u6", "2001:db8:100::10".parse().unwrap(), "2", &udp, &[IpAddr::V6(shape.backend_addr6(1))]),
    ];
    let (bed, _server) =
        Bed::start(shape, 1, &services, 3, |topo, _| ppserver::start(&topo.backends[0], 8080)).unwrap();
    for (vip, client) in [
        ("198.18.100.10", IpAddr::V4(CLIENT)),
        ("198.18.100.11", IpAddr::V4(CLIENT)),
        ("2001:db8:100::10", IpAddr::V6(CLIENT6)),
    ] {
        let to = SocketAddr::new(vip.parse().unwrap(), 53);
        let answers = bed.topo.client.run(move || -> Result<Vec<(String, String)>> {
            let s = UdpSocket::bind(SocketAddr::new(client, 0))?;
            s.connect(to)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            let local = s.local_addr()?;
            let mut out = Vec::new();
            for i in 0..50 {
                let msg = format!("datagram {i} {}", "x".repeat(i * 20));
                // UDP may lose a datagram (the very first one waits for a neighbour entry):
                // up to three sends; every answer that comes is checked.
                // A late answer to an earlier datagram's resend (the first datagrams wait for
                // neighbour discovery) is skipped.
                let mut answered = false;
                'tries: for _ in 0..3 {
                    s.send(msg.as_bytes())?;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.recv(&mut buf) {
                        let got = String::from_utf8_lossy(&buf[..n]).to_string();
                        let earlier = (0..i).any(|j| got.starts_with(&format!("ok {local} datagram {j} ")));
                        if earlier {
                            continue;
                        }
                        out.push((got, format!("ok {local} {msg}")));
                        answered = true;
                        break 'tries;
                    }
                }
                if !answered {
                    bail!("no answer to datagram {i} via {to} in three tries");
                }
            }
            Ok(out)
        });
        let answers = match answers {
            Ok(a) => a,
            Err(e) => {
                let mut bed = bed;
                let out = bed.daemon.stop().unwrap_or_default();
                panic!("{e:#}\nlb: {out}\n{}", bed.daemon.log_text());
            }
        };
        for (got, want) in answers {
            assert_eq!(got, want, "via {to}: every datagram starts with a valid v2 header from the real client");
        }
    }
}

/// Clients on the load balancer's node (a client pod, the node itself: default offloads,
/// partial checksums) get their header from the tc datapath: on the handshake's final ACK,
/// and on the first data segment when it goes out before the backend acknowledged the
/// header (the payload is moved up to make room), small and multi-segment first writes.
fn local_clients_get_the_header_from_tc(shape: Shape) {
    if !ready("local_clients_get_the_header_from_tc", &["nginx", "haproxy"]) {
        return;
    }
    let http = [("TCP", 80, 8080)];
    let (n4, n6, h4, h6) = (
        IpAddr::V4(shape.backend_addr(1)),
        IpAddr::V6(shape.backend_addr6(1)),
        IpAddr::V4(shape.backend_addr(2)),
        IpAddr::V6(shape.backend_addr6(2)),
    );
    let services = vec![
        service("ngx4", "198.18.100.10".parse().unwrap(), "2", &http, &[n4]),
        service("ngx6", "2001:db8:100::10".parse().unwrap(), "2", &http, &[n6]),
        service("hap4", "198.18.100.11".parse().unwrap(), "1", &http, &[h4]),
        service("hap6", "2001:db8:100::11".parse().unwrap(), "1", &http, &[h6]),
    ];
    let (mut bed, peers) = Bed::start(shape, 2, &services, services.len(), |topo, work| {
        Ok((nginx(&topo.backends[0], &work.join("nginx"))?, haproxy(&topo.backends[1], &work.join("haproxy"))?))
    })
    .unwrap();
    let vips = ["198.18.100.10", "2001:db8:100::10", "198.18.100.11", "2001:db8:100::11"];
    let pod = bed.topo.client_pod.as_ref().expect("a cluster has a client pod");
    for (who, ns) in [("client pod", pod), ("node", &bed.topo.lb)] {
        for vip in vips {
            let to = SocketAddr::new(vip.parse().unwrap(), 80);
            for big in [false, true] {
                let got = ns.run(move || -> Result<(SocketAddr, String)> {
                    if !big {
                        return http_get(to);
                    }
                    // A request larger than a segment, written at once.
                    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
                    s.set_read_timeout(Some(Duration::from_secs(30)))?;
                    let local = s.local_addr()?;
                    let pad = "x".repeat(6000);
                    s.write_all(format!("GET / HTTP/1.0\r\nHost: lb-test\r\nX-Pad: {pad}\r\n\r\n").as_bytes())?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).context("no HTTP response")?;
                    Ok((local, body))
                });
                let (local, body) = got.unwrap_or_else(|e| {
                    let stats = bed
                        .topo
                        .lb
                        .exec(&[lb_tests::daemon::lb_bin().to_str().unwrap(), "stats"])
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                    panic!("{who} → {to} (big: {big}): {e:#}\n{stats:?}\n{}", bed.daemon.log_text())
                });
                assert_eq!(
                    parse_addr(&body),
                    Some(local),
                    "{who} → {to} (big: {big}): the backend saw the real client: {body:?}"
                );
            }
        }
    }
    drop(peers);
    let [inserted, drop_pp, gso] = bed.stop_counter(&["pp_inserted", "drop_pp", "drop_pp_tc"])[..] else {
        unreachable!()
    };
    assert!(inserted >= 16, "a header for each of the 16 connections: {inserted}");
    // A multi-segment first write (GSO) is dropped on purpose (drop_pp_tc) for its
    // one-segment retransmission to carry the header; nothing else may fail.
    assert_eq!(drop_pp, gso, "every header not inserted was a deliberate GSO drop");
}

/// The cluster shapes only: the routed topology has no client on the node.
mod local_clients_get_the_header_from_tc {
    #[test]
    fn bridge() {
        super::local_clients_get_the_header_from_tc(lb_tests::topology::Shape::Bridge)
    }

    #[test]
    fn vxlan() {
        super::local_clients_get_the_header_from_tc(lb_tests::topology::Shape::Vxlan)
    }
}

in_every_shape!(
    nginx_and_haproxy_log_the_real_client_v1_v2_under_loss,
    server_first_protocol_gets_the_header_first_under_loss,
    multi_megabyte_transfers_keep_their_checksums,
    udp_datagrams_each_carry_a_v2_header,
);
