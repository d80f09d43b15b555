//! The gRPC probe: one `grpc.health.v1.Health/Check` call (or the method the annotation
//! names) over HTTP/2 without TLS. The protobuf messages are one field each and written by
//! hand: `HealthCheckRequest { string service = 1; }`, `HealthCheckResponse { ServingStatus
//! status = 1; }` with `SERVING = 1`. Healthy when the `grpc-status` is one of the codes asked
//! for and, for an OK answer of the health method, the status is `SERVING`.
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use super::probe::{Probe, host_of, local_proxy_header};
use crate::model::{
    ProxyProtocol,
    health::{GRPC_HEALTH_CHECK, GrpcCheck},
};

/// `ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Healthy when the gRPC call answers with an accepted status.
pub struct GrpcProbe {
    check: GrpcCheck,
    proxy_header: Vec<u8>,
}

impl GrpcProbe {
    /// The probe of `check`, after a LOCAL PROXY header when the backend expects `pp`.
    pub fn new(check: GrpcCheck, pp: ProxyProtocol) -> GrpcProbe {
        GrpcProbe { check, proxy_header: local_proxy_header(pp) }
    }

    /// The call's `grpc-status` and, when it carried one, the response message's status.
    async fn call(&self, to: SocketAddr) -> Option<(u8, Option<u64>)> {
        let mut s = TcpStream::connect(to).await.ok()?;
        if !self.proxy_header.is_empty() {
            s.write_all(&self.proxy_header).await.ok()?;
        }
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.ok()?;
        let ask = async move {
            let req = http::Request::builder()
                .method(if self.check.post { http::Method::POST } else { http::Method::GET })
                .uri(format!("http://{}{}", authority(to), self.check.path))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("user-agent", "lb-health-check")
                .body(Full::new(Bytes::from(request_frame(&self.check.service))))
                .ok()?;
            let resp = send.send_request(req).await.ok()?;
            // A trailers-only answer carries grpc-status in its headers.
            let early = grpc_status(resp.headers());
            let body = resp.into_body().collect().await.ok()?;
            let status = early.or_else(|| body.trailers().and_then(grpc_status))?;
            Some((status, serving_status(&body.to_bytes())))
        };
        tokio::select! {
            r = ask => r,
            _ = conn => None,
        }
    }
}

impl Probe for GrpcProbe {
    async fn check(&self, to: SocketAddr) -> bool {
        let Some((status, serving)) = self.call(to).await else { return false };
        let accepted = self.check.codes.iter().any(|(a, b)| (*a..=*b).contains(&status));
        let health_ok = status != 0 || self.check.path != GRPC_HEALTH_CHECK || serving == Some(SERVING);
        accepted && health_ok
    }
}

fn authority(to: SocketAddr) -> String {
    format!("{}:{}", host_of(to), to.port())
}

fn grpc_status(h: &http::HeaderMap) -> Option<u8> {
    h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// One uncompressed gRPC message: flag 0, big-endian length, `HealthCheckRequest`.
pub(super) fn request_frame(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        varint(service.len() as u64, &mut msg);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The `status` (field 1) of the first message of a gRPC response body: `Some(0)` (UNKNOWN)
/// when the message leaves it out, `None` when there is no well-formed message.
pub(super) fn serving_status(body: &[u8]) -> Option<u64> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let msg = rest.get(4..4 + len)?;
    if flag != 0 {
        return None; // compressed: not asked for, not read
    }
    let (mut at, mut status) = (0, 0);
    while at < msg.len() {
        let key = read_varint(msg, &mut at)?;
        match key & 7 {
            0 => {
                let v = read_varint(msg, &mut at)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            1 => at += 8,
            2 => at += read_varint(msg, &mut at)? as usize,
            5 => at += 4,
            _ => return None,
        }
    }
    (at == msg.len()).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_written_and_read_as_protobuf() {
        assert_eq!(request_frame(""), [0, 0, 0, 0, 0]);
        assert_eq!(request_frame("shop"), [0, 0, 0, 0, 6, 0x0a, 4, b's', b'h', b'o', b'p']);
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(SERVING));
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2), "NOT_SERVING");
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Some(0), "status left out: UNKNOWN");
        // An unknown field before the status is skipped.
        assert_eq!(serving_status(&[0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, 1]), Some(SERVING));
        assert_eq!(serving_status(&[0, 0, 0, 0, 3, 0x08]), None, "truncated");
        assert_eq!(serving_status(&[]), None);
    }
}
