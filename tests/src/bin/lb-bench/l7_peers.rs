//! The L7 suite's processes: the backend (nginx returning a fixed 200), and the three proxies
//! under test configured for the same route (host `bench.test`, path prefix `/api`, one
//! backend, backend keep-alive, X-Forwarded-For added): `lb run` on a manifest directory,
//! nginx (one worker) and haproxy (one thread). Each is a child process in the bench's
//! namespace, pinned with taskset, with its own config, pid and log files in a temp dir;
//! stopped by pid (SIGTERM, then SIGKILL) on drop.
use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use lb_tests::netns::Netns;

pub const HOST: &str = "bench.test";
pub const PATH: &str = "/api/bench";
pub const BACKEND_PORT: u16 = 9000;
/// Where every proxy reaches the backend: the bench namespace's veth address (`lb` serves no
/// loopback endpoint: one would reach the node's own ports). The backend listens on 127.0.0.1
/// too, for its own readiness check.
pub const BACKEND_ADDR: &str = "198.18.250.1";
/// What the backend answers: the readiness check looks for it through each proxy.
pub const BODY: &str = "lb-bench backend: a fixed 200 response of about one hundred bytes, no more.\n";

/// One proxy under test: its name, plain HTTP and HTTPS (h2, TLS 1.3) ports.
#[derive(Clone, Copy)]
pub struct Peer {
    pub name: &'static str,
    pub http: u16,
    pub https: u16,
}

pub const LB: Peer = Peer { name: "lb", http: 8001, https: 8441 };
pub const NGINX: Peer = Peer { name: "nginx", http: 8002, https: 8442 };
pub const HAPROXY: Peer = Peer { name: "haproxy", http: 8003, https: 8443 };

/// A child process stopped on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// `argv` in `ns`, pinned to `cpus`, output to `dir/NAME.log`.
    pub fn start(ns: &Netns, cpus: &[usize], name: &str, argv: &[&str], dir: &Path) -> Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "taskset", "-c", &cpu_list(cpus)])
            .args(argv)
            .env("LB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({})", argv[0]))?;
        Ok(Proc { name: name.to_string(), child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `GET PATH` with `Host: bench.test` on `port` answers 200 with the backend's
    /// body (the route works end to end).
    pub fn wait_ready(&mut self, ns: &Netns, port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        loop {
            let got = ns.run(move || get(addr));
            match got {
                Ok(r) if r.starts_with("HTTP/1.1 200") && r.contains(BODY) => return Ok(()),
                _ if Instant::now() > deadline => {
                    bail!(
                        "{} not serving the route on {port} after 30 s (last: {got:?}); its log:\n{}",
                        self.name,
                        self.log_text()
                    )
                }
                _ => {}
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}):\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CPU list as taskset takes it ("0", "2,3").
pub fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// One HTTP/1.1 request (Connection: close); the whole response as text.
fn get(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `program` on PATH, or an error naming the package that has it.
pub fn require(program: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).chain([PathBuf::from("/usr/sbin")]).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("{program} not found: run `cargo xtask setup` (it installs nginx-light, haproxy, wrk, nghttp2-client)");
    }
    Ok(())
}

/// A self-signed ECDSA P-256 certificate for bench.test, the same for every proxy:
/// (cert.pem, key.pem, haproxy's cert+key bundle).
pub fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let (cert, key, both) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("bundle.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", &format!("/CN={HOST}"), "-addext", &format!("subjectAltName=DNS:{HOST}"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl (cargo xtask setup installs it)")?;
    if !out.status.success() {
        bail!("openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    fs::write(&both, fs::read_to_string(&cert)? + &fs::read_to_string(&key)?)?;
    Ok((cert, key, both))
}

/// The backend: nginx, one worker per CPU of `cpus`, a fixed 200 on every path.
pub fn backend(ns: &Netns, cpus: &[usize], dir: &Path) -> Result<Proc> {
    let d = prefix(dir, "backend")?;
    let conf = format!(
        "{}http {{\n  access_log off;\n{}  server {{\n    listen 127.0.0.1:{BACKEND_PORT} backlog=4096;\n    listen {BACKEND_ADDR}:{BACKEND_PORT} backlog=4096;\n    keepalive_requests 100000000;\n    keepalive_timeout 300s;\n    location / {{ default_type text/plain; return 200 \"{}\"; }}\n  }}\n}}\n",
        nginx_main(&d, cpus.len()),
        nginx_temp(&d),
        BODY.replace('\n', "\\n")
    );
    nginx(ns, cpus, "backend", &d, &conf)
}

/// nginx as the proxy under test: one worker, an upstream keep-alive pool.
pub fn nginx_proxy(ns: &Netns, cpus: &[usize], dir: &Path, cert: &Path, key: &Path) -> Result<Proc> {
    let d = prefix(dir, "nginx")?;
    let (p, s) = (NGINX.http, NGINX.https);
    let tls = format!(
        "    ssl_certificate {};\n    ssl_certificate_key {};\n    ssl_protocols TLSv1.2 TLSv1.3;\n",
        cert.display(),
        key.display()
    );
    let conf = format!(
        "{main}http {{\n  access_log off;\n  keepalive_requests 100000000;\n{temp}  upstream web {{\n    server {BACKEND_ADDR}:{BACKEND_PORT};\n    keepalive 256;\n    keepalive_requests 100000000;\n    keepalive_timeout 60s;\n  }}\n  \
         server {{\n    listen 127.0.0.1:{p} default_server;\n    listen 127.0.0.1:{s} ssl http2 default_server;\n{tls}    return 404;\n  }}\n  \
         server {{\n    listen 127.0.0.1:{p};\n    listen 127.0.0.1:{s} ssl http2;\n    server_name {HOST};\n{tls}    \
         location /api {{\n      proxy_pass http://web;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n",
        main = nginx_main(&d, 1),
        temp = nginx_temp(&d),
    );
    nginx(ns, cpus, "nginx", &d, &conf)
}

fn prefix(dir: &Path, name: &str) -> Result<PathBuf> {
    let d = dir.join(name);
    fs::create_dir_all(&d)?;
    Ok(d)
}

fn nginx_main(d: &Path, workers: usize) -> String {
    format!(
        "user root;\nworker_processes {workers};\ndaemon off;\npid {0}/nginx.pid;\nerror_log {0}/error.log warn;\nevents {{ worker_connections 8192; }}\n",
        d.display()
    )
}

fn nginx_temp(d: &Path) -> String {
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .map(|t| format!("  {t}_temp_path {}/{t}_temp;\n", d.display()))
        .collect()
}

fn nginx(ns: &Netns, cpus: &[usize], name: &str, d: &Path, conf: &str) -> Result<Proc> {
    let file = d.join("nginx.conf");
    fs::write(&file, conf)?;
    let (prefix, file) = (format!("{}/", d.display()), file.display().to_string());
    let err = format!("{}/error.log", d.display());
    Proc::start(ns, cpus, name, &["nginx", "-p", &prefix, "-c", &file, "-e", &err], d)
}

/// haproxy as the proxy under test: one thread, backend connections reused.
pub fn haproxy(ns: &Netns, cpus: &[usize], dir: &Path, bundle: &Path) -> Result<Proc> {
    let d = prefix(dir, "haproxy")?;
    let (p, s) = (HAPROXY.http, HAPROXY.https);
    let conf = format!(
        "global\n  nbthread 1\n  maxconn 8192\n  pidfile {d}/haproxy.pid\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  timeout http-keep-alive 60s\n  option forwardfor\n  http-reuse always\n\
         frontend bench\n  bind 127.0.0.1:{p}\n  bind 127.0.0.1:{s} ssl crt {bundle} alpn h2,http/1.1 ssl-min-ver TLSv1.2\n  \
         acl host hdr(host),field(1,:) -i {HOST}\n  acl api path_beg /api\n  use_backend web if host api\n  http-request return status 404 if !host or !api\n\
         backend web\n  server b1 {BACKEND_ADDR}:{BACKEND_PORT}\n",
        d = d.display(),
        bundle = bundle.display()
    );
    let file = d.join("haproxy.cfg");
    fs::write(&file, conf)?;
    Proc::start(ns, cpus, "haproxy", &["haproxy", "-db", "-f", &file.display().to_string()], &d)
}

/// `lb run` on a manifest directory: an ALB Ingress (HTTP and HTTPS listeners) with the
/// same rule; XDP attached to an idle veth in the namespace (`lb run` needs an interface),
/// the L7 listeners bound to 127.0.0.1.
/// `lb proxy` runs one worker per CPU of `cpus` (`--l7-workers` defaults to the CPUs it may
/// run on).
pub fn lb(ns: &Netns, cpus: &[usize], dir: &Path, cert: &Path, key: &Path, iface: &str) -> Result<Proc> {
    let d = prefix(dir, "lb")?;
    let m = d.join("manifests");
    fs::create_dir_all(&m)?;
    fs::write(m.join("bench.yaml"), lb_manifests(&fs::read(cert)?, &fs::read(key)?))?;
    let bin = lb_tests::daemon::lb_bin();
    if !bin.exists() {
        bail!("{} not found: run `cargo xtask build` (or set LB_BIN)", bin.display());
    }
    let (bin, m) = (bin.display().to_string(), m.display().to_string());
    let state = d.join("state").display().to_string();
    let args = [&bin, "run", "--manifests", &m, "--iface", iface, "--l7-bind", "127.0.0.1", "--admin", "off"];
    Proc::start(ns, cpus, "lb", &[&args[..], &["--no-pin", "--state-dir", &state]].concat(), &d)
}

fn lb_manifests(cert: &[u8], key: &[u8]) -> String {
    let (p, s) = (LB.http, LB.https);
    let class = lb_tests::scenario::alb_class_yaml(&[
        &format!("{{port: {p}, protocol: HTTP}}"),
        &format!("{{port: {s}, protocol: HTTPS, securityPolicyId: tls_cipher_policy_1_2_strict_with_1_3}}"),
    ]);
    class
        + &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: bench}}
spec:
  ports: [{{name: http, port: 80, targetPort: {BACKEND_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: bench, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {BACKEND_PORT}, protocol: TCP}}]
endpoints: [{{addresses: ["{BACKEND_ADDR}"], conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: bench-tls, namespace: bench}}
type: kubernetes.io/tls
data: {{tls.crt: {crt}, tls.key: {key}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: bench
  annotations:
    alb.ingress.kubernetes.io/listen-ports: '[{{"HTTP": {p}}}, {{"HTTPS": {s}}}]'
    alb.ingress.kubernetes.io/backend-keepalive: "true"
spec:
  ingressClassName: alb
  tls: [{{hosts: [{HOST}], secretName: bench-tls}}]
  rules:
  - host: {HOST}
    http:
      paths:
      - {{path: /api, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
"#,
            crt = STANDARD.encode(cert),
            key = STANDARD.encode(key)
        )
}
