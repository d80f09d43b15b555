//! Active health checks of L4 backends (CLB `health-check-*`): TCP connect, HTTP status, or
//! UDP (healthy unless the backend answers with ICMP port unreachable, as CLB does). A
//! backend turns unhealthy after `unhealthy_threshold` failures in a row and healthy again
//! after `healthy_threshold` successes; unhealthy backends get no new flows (weight 0 in the
//! datapath), their established flows go on. Backends start healthy.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::Serialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    sync::mpsc,
    task::JoinHandle,
};

use crate::model::{Model, Protocol};

/// How a listener's backends are checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HealthCheck {
    pub probe: ProbeKind,
    /// The port probed; 0: the backend's own port.
    pub port: u16,
    /// The backend expects a PROXY protocol header: HTTP probes start with a LOCAL one
    /// (v2 `LOCAL` command, v1 `PROXY UNKNOWN`), as the spec provides for health checks.
    pub proxy_protocol: crate::model::ProxyProtocol,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u8,
    pub unhealthy_threshold: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Tcp,
    Udp,
    Http {
        uri: String,
        /// `Host:` header; the backend's address when `None`.
        host: Option<String>,
        /// Healthy status classes: 2 for 2xx, ...
        classes: Vec<u8>,
        get: bool,
        /// Over TLS (the backend's certificate is not verified, as on ALB).
        tls: bool,
    },
}

/// A health change of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub backend: (IpAddr, u16),
    pub healthy: bool,
}

/// The probes running for a model; restarted only for targets whose check changed.
#[derive(Default)]
pub struct Checker {
    tasks: BTreeMap<((IpAddr, u16), HealthCheck), JoinHandle<()>>,
    unhealthy: BTreeSet<(IpAddr, u16)>,
}

impl Checker {
    /// Run exactly the probes `model` asks for; changes arrive on `tx`.
    pub fn sync(&mut self, model: &Model, tx: &mpsc::Sender<Change>) {
        let mut wanted: BTreeSet<((IpAddr, u16), HealthCheck)> = model
            .listeners
            .values()
            .filter_map(|l| l.health_check.as_ref().map(|h| (l, h)))
            .flat_map(|(l, h)| l.backends.iter().map(move |b| ((b.addr, b.port), h.clone())))
            .collect();
        for u in model.l7.values().flat_map(|l| l.routes.iter().chain(&l.canaries)).flat_map(|r| &r.upstreams) {
            if let Some(h) = &u.health_check {
                wanted.extend(u.endpoints.iter().map(|e| ((e.addr.ip(), e.addr.port()), h.clone())));
            }
        }
        self.tasks.retain(|k, task| {
            let keep = wanted.contains(k);
            if !keep {
                task.abort();
            }
            keep
        });
        let live: BTreeSet<(IpAddr, u16)> = wanted.iter().map(|(b, _)| *b).collect();
        self.unhealthy.retain(|b| live.contains(b));
        for (backend, check) in wanted {
            if !self.tasks.contains_key(&(backend, check.clone())) {
                let task = tokio::spawn(run(backend, check.clone(), tx.clone()));
                self.tasks.insert((backend, check), task);
            }
        }
    }

    pub fn record(&mut self, c: Change) {
        if c.healthy {
            self.unhealthy.remove(&c.backend);
        } else {
            self.unhealthy.insert(c.backend);
        }
    }

    /// `model` with unhealthy backends at weight 0 (no new flows).
    pub fn effective(&self, model: &Model) -> Model {
        let mut m = model.clone();
        for l in m.listeners.values_mut() {
            for b in &mut l.backends {
                if self.unhealthy.contains(&(b.addr, b.port)) {
                    b.weight = 0;
                }
            }
        }
        for l in m.l7.values_mut() {
            for u in l.routes.iter_mut().chain(l.canaries.iter_mut()).flat_map(|r| &mut r.upstreams) {
                for e in &mut u.endpoints {
                    if self.unhealthy.contains(&(e.addr.ip(), e.addr.port())) {
                        e.weight = 0;
                    }
                }
            }
        }
        m
    }

    pub fn unhealthy(&self) -> &BTreeSet<(IpAddr, u16)> {
        &self.unhealthy
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

async fn run(backend: (IpAddr, u16), check: HealthCheck, tx: mpsc::Sender<Change>) {
    let (mut healthy, mut streak) = (true, 0u8);
    let to = SocketAddr::new(backend.0, if check.port == 0 { backend.1 } else { check.port });
    loop {
        tokio::time::sleep(check.interval).await;
        let ok = matches!(
            tokio::time::timeout(check.timeout, probe(to, &check.probe, check.proxy_protocol)).await,
            Ok(true)
        );
        if ok == healthy {
            streak = 0;
            continue;
        }
        streak += 1;
        let needed = if healthy { check.unhealthy_threshold } else { check.healthy_threshold };
        if streak >= needed {
            healthy = ok;
            streak = 0;
            tracing::warn!(backend = %to, healthy, "backend health changed");
            if tx.send(Change { backend, healthy }).await.is_err() {
                return;
            }
        }
    }
}

/// The PROXY protocol header of a health check (no client behind it).
pub fn local_proxy_header(pp: crate::model::ProxyProtocol) -> Vec<u8> {
    use crate::model::ProxyProtocol;
    match pp {
        ProxyProtocol::Off => Vec::new(),
        ProxyProtocol::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        // Signature, version 2 + LOCAL, AF_UNSPEC, no addresses.
        ProxyProtocol::V2 => [&lb_common::PROXY_V2_SIGNATURE[..], &[0x20, 0x00, 0x00, 0x00]].concat(),
    }
}

async fn probe(to: SocketAddr, kind: &ProbeKind, pp: crate::model::ProxyProtocol) -> bool {
    match kind {
        ProbeKind::Tcp => TcpStream::connect(to).await.is_ok(),
        ProbeKind::Udp => {
            // CLB's rule: healthy unless the backend answers ICMP port unreachable.
            let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let Ok(sock) = UdpSocket::bind(bind).await else { return false };
            if sock.connect(to).await.is_err() || sock.send(b"lb-health-check").await.is_err() {
                return false;
            }
            let mut buf = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await {
                Ok(Err(e)) => e.kind() != std::io::ErrorKind::ConnectionRefused,
                _ => true,
            }
        }
        ProbeKind::Http { uri, host, classes, get, tls } => {
            let Ok(s) = TcpStream::connect(to).await else { return false };
            let host = host.clone().unwrap_or_else(|| to.ip().to_string());
            let mut req = local_proxy_header(pp);
            req.extend_from_slice(
                format!(
                    "{} {uri} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lb-health-check\r\n\r\n",
                    if *get { "GET" } else { "HEAD" }
                )
                .as_bytes(),
            );
            let code = if *tls {
                let connector =
                    tokio_rustls::TlsConnector::from(std::sync::Arc::new(crate::l7::tls::backend_client_config()));
                let name = rustls_pki_types::ServerName::IpAddress(to.ip().into());
                match connector.connect(name, s).await {
                    Ok(t) => http_status(t, &req).await,
                    Err(_) => 0,
                }
            } else {
                http_status(s, &req).await
            };
            classes.contains(&((code / 100) as u8))
        }
    }
}

/// Sends `req` and reads the status code of the answer (0: none).
async fn http_status(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, req: &[u8]) -> u16 {
    if s.write_all(req).await.is_err() {
        return 0;
    }
    let mut head = [0u8; 64];
    let n = s.read(&mut head).await.unwrap_or(0);
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// The check CLB annotations ask for on a listener of `protocol`.
pub fn from_clb(h: &crate::annotations::clb::HealthCheck, protocol: Protocol) -> Option<HealthCheck> {
    use crate::annotations::clb::ListenerProtocol;
    from_clb_listener(
        h,
        match protocol {
            Protocol::Tcp => ListenerProtocol::Tcp,
            Protocol::Udp => ListenerProtocol::Udp,
        },
    )
}

/// The check CLB annotations ask for on a listener speaking `lp` (http/https included).
pub fn from_clb_listener(
    h: &crate::annotations::clb::HealthCheck,
    lp: crate::annotations::clb::ListenerProtocol,
) -> Option<HealthCheck> {
    use crate::annotations::clb::{HealthCheckDomain, HttpCodeClass, HttpMethod, Probe};
    let p = h.probe(lp)?;
    let probe = match p {
        Probe::Tcp => ProbeKind::Tcp,
        Probe::Udp => ProbeKind::Udp,
        Probe::Http => ProbeKind::Http {
            uri: h.http.uri.clone().unwrap_or_else(|| "/".into()),
            host: match &h.http.domain {
                HealthCheckDomain::BackendIp => None,
                HealthCheckDomain::Name(n) => Some(n.clone()),
            },
            classes: h
                .http
                .codes
                .iter()
                .map(|c| match c {
                    HttpCodeClass::Http2xx => 2,
                    HttpCodeClass::Http3xx => 3,
                    HttpCodeClass::Http4xx => 4,
                    HttpCodeClass::Http5xx => 5,
                })
                .collect(),
            get: h.http.method == HttpMethod::Get,
            tls: false,
        },
    };
    Some(HealthCheck {
        port: 0,
        proxy_protocol: crate::model::ProxyProtocol::Off,
        interval: Duration::from_secs(h.interval_s.max(1) as u64),
        timeout: Duration::from_secs(h.timeout_s(p).max(1) as u64),
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        probe,
    })
}

/// The check of an ALB Ingress's `healthcheck-*` annotations. gRPC checks connect over TCP
/// (the gRPC health protocol is not spoken yet).
pub fn from_alb(h: &crate::annotations::alb::HealthCheck) -> HealthCheck {
    use crate::annotations::alb::{HealthCheckCodes, HealthCheckMethod, HealthCheckProtocol};
    let classes = match &h.codes {
        HealthCheckCodes::Http(c) => c.clone(),
        _ => vec![2],
    };
    let http = |tls| ProbeKind::Http {
        uri: h.path.clone(),
        host: None,
        classes: classes.clone(),
        get: h.method == HealthCheckMethod::Get,
        tls,
    };
    let probe = match h.protocol {
        HealthCheckProtocol::Http => http(false),
        HealthCheckProtocol::Https => http(true),
        HealthCheckProtocol::Tcp | HealthCheckProtocol::Grpc => ProbeKind::Tcp,
    };
    HealthCheck {
        probe,
        port: h.port,
        proxy_protocol: crate::model::ProxyProtocol::Off,
        interval: Duration::from_secs(u64::from(h.interval_s.max(1))),
        timeout: Duration::from_secs(u64::from(h.timeout_s.max(1))),
        healthy_threshold: h.healthy_threshold.clamp(1, 255) as u8,
        unhealthy_threshold: h.unhealthy_threshold.clamp(1, 255) as u8,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::model::ProxyProtocol;

    /// A backend that answers 200 only when the request starts with `want`.
    async fn backend(want: &'static [u8]) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 256];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let status = if buf[..n].starts_with(want) && (want.is_empty() || n > want.len()) { 200 } else { 400 };
                let _ = s.write_all(format!("HTTP/1.0 {status} X\r\n\r\n").as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probes_start_with_a_local_proxy_header_when_the_listener_sends_one() {
        let http = ProbeKind::Http { uri: "/".into(), host: None, classes: vec![2], get: false, tls: false };
        let v2 = backend(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00HEAD / HTTP/1.0").await;
        assert!(probe(v2, &http, ProxyProtocol::V2).await, "v2 LOCAL header first");
        assert!(!probe(v2, &http, ProxyProtocol::Off).await, "a PROXY backend refuses a bare request");
        let v1 = backend(b"PROXY UNKNOWN\r\nHEAD / HTTP/1.0").await;
        assert!(probe(v1, &http, ProxyProtocol::V1).await);
        let plain = backend(b"HEAD / HTTP/1.0").await;
        assert!(probe(plain, &http, ProxyProtocol::Off).await);
    }
}
