//! The admin endpoint of `lb run` (loopback by default): `GET /metrics` (Prometheus text),
//! `GET /stats` (the counters as JSON), `GET /readyz`, `GET /livez` and `GET /healthz` (an
//! alias of `/livez`). `/metrics` and `/stats` are answered by the agent's loop, which owns
//! the datapath, through a channel; the probes from the shared [`Probes`]. `lb stats` is its
//! client.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use crate::metrics::{Probes, exposition::CONTENT_TYPE as METRICS_TYPE};

pub const DEFAULT_ADDR: &str = "127.0.0.1:9901";

/// A question for the agent's loop.
pub enum Request {
    /// The stats as JSON.
    Stats(oneshot::Sender<String>),
    /// The Prometheus text of `/metrics`.
    Metrics(oneshot::Sender<String>),
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// Asks the agent's loop; 503 when it does not answer.
async fn ask(
    tx: &mpsc::Sender<Request>,
    req: impl FnOnce(oneshot::Sender<String>) -> Request,
) -> (&'static str, String) {
    let (reply, answer) = oneshot::channel();
    match tx.send(req(reply)).await {
        Ok(()) => match answer.await {
            Ok(body) => ("200 OK", body),
            Err(_) => ("503 Service Unavailable", "agent busy\n".into()),
        },
        Err(_) => ("503 Service Unavailable", "agent stopping\n".into()),
    }
}

/// A probe's answer.
fn probe(ok: bool, what: &str) -> (&'static str, String) {
    if ok { ("200 OK", "ok\n".into()) } else { ("503 Service Unavailable", format!("{what}\n")) }
}

/// Serve the admin endpoint on `listener` until the process ends.
pub async fn serve(listener: TcpListener, tx: mpsc::Sender<Request>, probes: Arc<Probes>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        let (tx, probes) = (tx.clone(), probes.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // Read the request head (bounded), then answer and close.
            while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf[n..])).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(k)) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let stale = probes.stale_after().as_secs();
            let ((status, body), kind) = match path {
                "/livez" | "/healthz" => (probe(probes.live(), &format!("agent loop silent for over {stale} s")), TEXT),
                "/readyz" => (probe(probes.ready(), "first model not applied yet"), TEXT),
                "/metrics" => (ask(&tx, Request::Metrics).await, METRICS_TYPE),
                "/stats" => (ask(&tx, Request::Stats).await, JSON),
                _ => (("404 Not Found", "try /metrics, /stats, /readyz or /livez\n".into()), TEXT),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(response.as_bytes()).await;
        });
    }
}

/// `GET path` from the admin endpoint at `addr`: the body, or an error with the status.
pub fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).with_context(|| {
        format!("connecting to lb's admin endpoint at {addr} (is `lb run` running with --admin {addr}?)")
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("malformed answer")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        bail!("{status}: {}", body.trim());
    }
    Ok(body.to_string())
}
