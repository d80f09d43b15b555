//! The probes a health check runs against one backend, behind [`Probe`]: TCP connect,
//! UDP (healthy unless the backend answers ICMP port unreachable, as CLB does) and HTTP(S)
//! status classes over HTTP/1.0 or HTTP/1.1, with a PROXY protocol LOCAL header first when
//! the backend expects one. The gRPC probe is in [`super::grpc`].
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use lb_common::proxy_header;

use crate::model::{ProxyProtocol, health::HttpCheck};

/// One way of asking a backend whether it is healthy.
pub trait Probe: Send + Sync + 'static {
    fn check(&self, to: SocketAddr) -> impl Future<Output = bool> + Send;
}

/// Healthy when a TCP connection opens.
pub struct TcpProbe;

impl Probe for TcpProbe {
    async fn check(&self, to: SocketAddr) -> bool {
        TcpStream::connect(to).await.is_ok()
    }
}

/// Healthy unless the backend answers a datagram with ICMP port unreachable.
pub struct UdpProbe;

impl Probe for UdpProbe {
    async fn check(&self, to: SocketAddr) -> bool {
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
}

/// Healthy when an HTTP(S) request gets a status of an accepted class.
pub struct HttpProbe {
    check: HttpCheck,
    tls: Option<tokio_rustls::TlsConnector>,
    proxy_header: Vec<u8>,
}

impl HttpProbe {
    /// The probe of `check`, after a LOCAL PROXY header when the backend expects `pp`.
    pub fn new(check: HttpCheck, pp: ProxyProtocol) -> HttpProbe {
        let tls = check.tls.then(|| tokio_rustls::TlsConnector::from(Arc::new(crate::tls::backend_client_config())));
        HttpProbe { check, tls, proxy_header: local_proxy_header(pp) }
    }
}

impl Probe for HttpProbe {
    async fn check(&self, to: SocketAddr) -> bool {
        let Ok(s) = TcpStream::connect(to).await else { return false };
        let c = &self.check;
        let host = c.host.clone().unwrap_or_else(|| host_of(to));
        let mut req = self.proxy_header.clone();
        let method = if c.get { "GET" } else { "HEAD" };
        let (version, close) = if c.http11 { ("1.1", "Connection: close\r\n") } else { ("1.0", "") };
        req.extend_from_slice(
            format!("{method} {} HTTP/{version}\r\nHost: {host}\r\n{close}User-Agent: lb-health-check\r\n\r\n", c.uri)
                .as_bytes(),
        );
        let code = match &self.tls {
            Some(connector) => {
                let name = rustls_pki_types::ServerName::IpAddress(to.ip().into());
                match connector.connect(name, s).await {
                    Ok(t) => http_status(t, &req).await,
                    Err(_) => 0,
                }
            }
            None => http_status(s, &req).await,
        };
        c.classes.contains(&((code / 100) as u8))
    }
}

/// The `Host` of a check that names none: the backend's address (IPv6 in brackets).
pub(super) fn host_of(to: SocketAddr) -> String {
    match to {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// The PROXY protocol header of a health check (no client behind it): v2 `LOCAL`, v1
/// `PROXY UNKNOWN`.
pub fn local_proxy_header(pp: ProxyProtocol) -> Vec<u8> {
    let mut buf = [0u8; proxy_header::MAX_LEN];
    let len = match pp {
        ProxyProtocol::Off => Ok(0),
        ProxyProtocol::V1 => proxy_header::v1_unknown(&mut buf),
        ProxyProtocol::V2 => proxy_header::v2_local(&mut buf),
    };
    buf[..len.unwrap_or(0)].to_vec()
}

/// Sends `req` and reads the status code of the answer (0: none). The status line may
/// arrive in pieces (a server writing it a field at a time): read until its end.
async fn http_status(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin, req: &[u8]) -> u16 {
    if s.write_all(req).await.is_err() {
        return 0;
    }
    let (mut head, mut n) = ([0u8; 64], 0);
    while n < head.len() && !head[..n].contains(&b'\n') {
        match s.read(&mut head[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(got) => n += got,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let http = HttpCheck { uri: "/".into(), host: None, classes: vec![2], get: false, tls: false, http11: false };
        let v2 = backend(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00HEAD / HTTP/1.0").await;
        assert!(HttpProbe::new(http.clone(), ProxyProtocol::V2).check(v2).await, "v2 LOCAL header first");
        assert!(
            !HttpProbe::new(http.clone(), ProxyProtocol::Off).check(v2).await,
            "a PROXY backend refuses a bare request"
        );
        let v1 = backend(b"PROXY UNKNOWN\r\nHEAD / HTTP/1.0").await;
        assert!(HttpProbe::new(http.clone(), ProxyProtocol::V1).check(v1).await);
        let plain = backend(b"HEAD / HTTP/1.0").await;
        assert!(HttpProbe::new(http.clone(), ProxyProtocol::Off).check(plain).await);
    }

    #[tokio::test]
    async fn a_status_line_written_in_pieces_is_read_whole() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.read(&mut [0u8; 256]).await;
                for piece in [&b"HTTP/1.0 "[..], b"204", b" X\r\n\r\n"] {
                    let _ = s.write_all(piece).await;
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        let http = HttpCheck { uri: "/".into(), host: None, classes: vec![2], get: false, tls: false, http11: true };
        assert!(HttpProbe::new(http, ProxyProtocol::Off).check(addr).await);
    }

    #[tokio::test]
    async fn http11_probes_name_their_host_and_close() {
        let http = |http11, host: Option<&str>| HttpCheck {
            uri: "/healthz".into(),
            host: host.map(str::to_owned),
            classes: vec![2],
            get: true,
            tls: false,
            http11,
        };
        let named = backend(b"GET /healthz HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n").await;
        assert!(HttpProbe::new(http(true, Some("shop.example")), ProxyProtocol::Off).check(named).await);
        assert!(!HttpProbe::new(http(false, Some("shop.example")), ProxyProtocol::Off).check(named).await, "1.0");
        let by_ip = backend(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await;
        assert!(HttpProbe::new(http(true, None), ProxyProtocol::Off).check(by_ip).await);
        assert_eq!(host_of("[2001:db8::1]:80".parse().unwrap()), "[2001:db8::1]");
    }
}
