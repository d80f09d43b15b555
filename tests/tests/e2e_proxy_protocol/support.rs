//! What every test here shares: the Service manifest, the bed (topology, manifests, `lb`),
//! programs started in namespaces, loss injection, and the clients' requests.
use std::{
    fs,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use lb_tests::{
    daemon::Daemon,
    netns::Netns,
    privileged,
    topology::{Shape, Topology},
};

pub const PP: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-proxy-protocol";
pub const PP_VERSION: &str = "lb.dev/proxy-protocol-version";

/// The tests with injected loss run one at a time: several at once on two CPUs stretch
/// retransmissions (and haproxy's stream ends, when it logs) past their deadlines.
pub fn one_loss_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when the test can run: root, and every program in `bins` installed. A missing one
/// skips the test, unless `LB_REQUIRE_PRIVILEGED=1` makes it a failure.
pub fn ready(test: &str, bins: &[&str]) -> bool {
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
pub fn service(name: &str, vip: IpAddr, version: &str, ports: &[(&str, u16, u16)], endpoints: &[IpAddr]) -> String {
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
pub struct Bed {
    pub topo: Topology,
    pub daemon: Daemon,
    pub work: tempfile::TempDir,
}

impl Bed {
    /// The topology, then the backends' servers (`servers`: before `lb`, so its health
    /// checks find them up), then `lb`.
    pub fn start<T>(
        shape: Shape,
        backends: usize,
        services: &[String],
        listeners: usize,
        servers: impl FnOnce(&Topology, &Path) -> Result<T>,
    ) -> Result<(Bed, T)> {
        Bed::start_args(shape, backends, services, listeners, &[], servers)
    }

    /// [`Bed::start`] with `lb run` options `args`.
    pub fn start_args<T>(
        shape: Shape,
        backends: usize,
        services: &[String],
        listeners: usize,
        args: &[&str],
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
            Daemon::start_with(&topo.lb, &manifests, &topo.iface_list(), listeners, work.path(), &topo.lb_args(args))?;
        Ok((Bed { topo, daemon, work }, peers))
    }

    /// Stop `lb` and return its datapath counter `name` (packets).
    pub fn stop_counter(&mut self, names: &[&str]) -> Vec<u64> {
        let out = self.daemon.stop().unwrap();
        let stats: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        names.iter().map(|n| stats["stats"]["datapath"][n]["packets"].as_u64().unwrap_or(0)).collect()
    }
}

/// A program the test started in a namespace, stopped by its pid (SIGTERM, then SIGKILL)
/// when dropped.
pub struct Peer {
    child: Child,
    name: &'static str,
    dir: PathBuf,
}

impl Peer {
    pub fn start(ns: &Netns, name: &'static str, dir: &Path, program: &str, args: &[&str]) -> Result<Peer> {
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

    pub fn output(&self, suffix: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{}.{suffix}", self.name))).unwrap_or_default()
    }

    /// Wait until something listens on TCP `port` in `ns` (bounded).
    pub fn wait_listening(&mut self, ns: &Netns, port: u16) -> Result<()> {
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

/// Drop `p` of the TCP segments to and from the backend's port `port` in `ns`: the client's
/// (the handshake's final ACK with the header, first segments, their retransmissions) and
/// the backend's, SYN-ACKs excepted. (With SYN-ACKs dropped too, the server-first test saw,
/// about once in four loaded runs, a backend in SYN_RECV whose final ACK was lost send no
/// SYN-ACK retransmission at all for 90 s, leaving both sides silent: see docs/annotations.md.)
pub fn inject_loss(ns: &Netns, port: u16, p: &str) -> Result<()> {
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
pub fn dropped(ns: &Netns) -> u64 {
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
pub fn parse_addr(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    let (ip, port) = s.rsplit_once(':')?;
    Some(SocketAddr::new(ip.trim_matches(['[', ']']).parse().ok()?, port.parse().ok()?))
}

/// One HTTP/1.0 request: (our local address, the response body).
pub fn http_get(to: SocketAddr) -> Result<(SocketAddr, String)> {
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
pub fn https_get(ns: &Netns, to: SocketAddr) -> Result<(SocketAddr, String)> {
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
