//! The local channel between the agent and the L7 proxy process (`lb proxy`): frames of a
//! 4-byte big-endian length and a JSON message over a Unix stream socket. The agent sends
//! [`ToProxy::Config`], each one the full set of L7 listeners with their certificates and
//! keys (so a proxy that restarts or reconnects is in sync after one frame), and asks for
//! counters; the proxy answers with what each apply did and with its counters.
use std::{collections::BTreeMap, io, sync::atomic::Ordering};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ProxyError, server::Counters};
use crate::{
    metrics::{
        exposition::L7Snapshot,
        latency::{BOUNDS, HistogramSnapshot},
    },
    model::l7::L7Listener,
};

/// The largest frame either side accepts (certificates of many listeners fit easily).
pub const MAX_FRAME: usize = 256 << 20;

/// From the agent to the proxy.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToProxy {
    /// Serve exactly these listeners (what the agent's model and health checks say now).
    Config(Config),
    /// Send [`FromProxy::Counters`].
    Counters,
}

/// Every L7 listener, by key, and the PEM certificates and keys of their TLS settings
/// (left out of the listeners' own serialisation, which `lb check --json` prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Raised by the agent at every change; [`FromProxy::Applied`] names the one applied.
    pub generation: u64,
    pub listeners: BTreeMap<String, L7Listener>,
    /// Per listener key, per certificate (in order): certificate chain and key.
    pub keys: BTreeMap<String, Vec<Pem>>,
}

/// A certificate chain and its key, PEM.
pub type Pem = (Vec<u8>, Vec<u8>);

impl Config {
    pub fn new(generation: u64, listeners: &BTreeMap<String, L7Listener>) -> Config {
        let keys = listeners
            .iter()
            .filter_map(|(k, l)| l.tls.as_ref().map(|t| (k, t)))
            .map(|(k, t)| (k.clone(), t.certificates.iter().map(|c| (c.cert_pem.clone(), c.key_pem.clone())).collect()))
            .collect();
        Config { generation, listeners: listeners.clone(), keys }
    }

    /// The listeners with their certificates' PEM put back.
    pub fn into_listeners(self) -> BTreeMap<String, L7Listener> {
        let Config { mut listeners, keys, .. } = self;
        for (k, pems) in keys {
            let Some(tls) = listeners.get_mut(&k).and_then(|l| l.tls.as_mut()) else { continue };
            for (c, (cert, key)) in tls.certificates.iter_mut().zip(pems) {
                (c.cert_pem, c.key_pem) = (cert, key);
            }
        }
        listeners
    }
}

/// From the proxy to the agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromProxy {
    /// The first frame of a connection.
    Hello {
        pid: u32,
    },
    /// A [`Config`] was applied; these listeners could not be (re)configured.
    Applied {
        generation: u64,
        errors: Vec<ProxyError>,
    },
    Counters(Vec<(String, WireCounters)>),
}

/// One listener's counters as they cross the channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireCounters {
    pub connections: u64,
    pub refused_by_acl: u64,
    pub refused_over_limit: u64,
    pub abusive_closed: u64,
    pub tls_failures: u64,
    /// Requests not mirrored for their body's size.
    #[serde(default)]
    pub mirror_skipped: u64,
    /// 1xx ... 5xx.
    pub responses: [u64; 5],
    /// Observations per latency bucket (not cumulative; [`BOUNDS`], then `+Inf`).
    pub latency_buckets: Vec<u64>,
    /// Seconds.
    pub latency_sum: f64,
}

impl From<&Counters> for WireCounters {
    fn from(c: &Counters) -> WireCounters {
        let latency = c.latency.snapshot();
        WireCounters {
            connections: c.connections.load(Ordering::Relaxed),
            refused_by_acl: c.refused_by_acl.load(Ordering::Relaxed),
            refused_over_limit: c.refused_over_limit.load(Ordering::Relaxed),
            abusive_closed: c.abusive_closed.load(Ordering::Relaxed),
            tls_failures: c.tls_failures.load(Ordering::Relaxed),
            mirror_skipped: c.mirror_skipped.load(Ordering::Relaxed),
            responses: std::array::from_fn(|i| c.responses[i].load(Ordering::Relaxed)),
            latency_buckets: latency.buckets.iter().map(|(_, n)| *n).collect(),
            latency_sum: latency.sum,
        }
    }
}

impl WireCounters {
    pub fn snapshot(&self) -> L7Snapshot {
        let bounds = BOUNDS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.latency_buckets.iter().copied()).collect();
        L7Snapshot {
            connections: self.connections,
            refused_by_acl: self.refused_by_acl,
            refused_over_limit: self.refused_over_limit,
            abusive_closed: self.abusive_closed,
            tls_failures: self.tls_failures,
            responses: self.responses,
            latency: HistogramSnapshot { sum: self.latency_sum, count: buckets.iter().map(|(_, n)| n).sum(), buckets },
        }
    }

    /// As `/stats` shows a listener (the same fields as [`Counters::to_json`]).
    pub fn to_json(&self) -> serde_json::Value {
        let r = |i: usize| self.responses[i];
        serde_json::json!({
            "connections": self.connections,
            "refused_by_acl": self.refused_by_acl,
            "refused_over_limit": self.refused_over_limit,
            "abusive_closed": self.abusive_closed,
            "tls_failures": self.tls_failures,
            "mirror_skipped": self.mirror_skipped,
            "requests": self.responses.iter().sum::<u64>(),
            "responses": { "1xx": r(0), "2xx": r(1), "3xx": r(2), "4xx": r(3), "5xx": r(4) },
        })
    }
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("a frame of {} bytes", body.len())));
    }
    w.write_all(&(body.len() as u32).to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await
}

/// Reads one frame; `None` when the other side closed the channel between frames. Not
/// cancel-safe: a reader runs in a task of its own.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {len} bytes announced")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads frames into a channel until the other side closes or sends garbage (logged).
pub fn spawn_reader<R, T>(mut r: R, what: &'static str) -> tokio::sync::mpsc::Receiver<T>
where
    R: AsyncRead + Unpin + Send + 'static,
    T: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match read_frame(&mut r).await {
                Ok(Some(msg)) => {
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading {what} from the L7 control channel");
                    return;
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ObjectRef,
        l7::{
            Certificate, Endpoint, ForwardedHeaders, L7Protocol, Route, TlsPolicy, TlsSettings, Upstream,
            route::{BackendSettings, PathMatch, Pattern, Rule},
        },
    };

    fn listener() -> L7Listener {
        let source = ObjectRef { kind: "Ingress".into(), namespace: "shop".into(), name: "web".into() };
        let mut rule = Rule::catch_all(source.clone(), BackendSettings::default());
        let regex = regex::RegexBuilder::new("^/api/v[0-9]+").case_insensitive(true).build().unwrap();
        rule.path.matcher = PathMatch::Regex(Pattern { source: "^/api/v[0-9]+".into(), case_insensitive: true, regex });
        let upstream = Upstream {
            name: "shop/web:80".into(),
            weight: 100,
            endpoints: vec![Endpoint { addr: "10.0.0.7:8080".parse().unwrap(), weight: 1 }],
            health_check: None,
        };
        L7Listener {
            sources: vec![source.clone()],
            addr: None,
            port: 443,
            protocol: L7Protocol::Https,
            tls: Some(TlsSettings {
                policy: TlsPolicy::Tls12StrictWith13,
                certificates: vec![Certificate {
                    secret: source,
                    hosts: vec!["shop.example".into()],
                    cert_pem: b"-----BEGIN CERTIFICATE-----\ncert\n".to_vec(),
                    key_pem: b"-----BEGIN PRIVATE KEY-----\nkey\n".to_vec(),
                }],
            }),
            http2: true,
            request_timeout_s: 60,
            idle_timeout_s: 15,
            gzip: true,
            headers: ForwardedHeaders::default(),
            redirect_https_port: None,
            acl: None,
            canaries: Vec::new(),
            routes: vec![Route { rule, upstreams: vec![upstream], mirrors: Vec::new() }],
        }
    }

    #[tokio::test]
    async fn a_config_crosses_the_channel_with_its_keys_and_patterns() {
        let listeners: BTreeMap<String, L7Listener> = [("*:443/https".to_string(), listener())].into();
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &ToProxy::Config(Config::new(7, &listeners))).await.unwrap();
        drop(a);
        let Some(ToProxy::Config(got)) = read_frame::<_, ToProxy>(&mut b).await.unwrap() else { panic!("no config") };
        assert_eq!(got.generation, 7);
        let got = got.into_listeners();
        assert_eq!(got, listeners, "certificates (PEM included) and patterns as sent");
        let PathMatch::Regex(p) = &got["*:443/https"].routes[0].rule.path.matcher else { panic!() };
        assert!(p.regex.is_match("/API/v2/items"), "the pattern is compiled again, case flag kept");
        assert!(read_frame::<_, ToProxy>(&mut b).await.unwrap().is_none(), "end of channel");
    }

    #[test]
    fn counters_keep_the_histogram() {
        let c = Counters::default();
        c.responses[1].fetch_add(3, Ordering::Relaxed);
        c.latency.observe(std::time::Duration::from_millis(2));
        let wire: WireCounters = (&c).into();
        let json = serde_json::to_vec(&wire).unwrap();
        let back: WireCounters = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, wire);
        let snap = back.snapshot();
        assert_eq!((snap.responses[1], snap.latency.count), (3, 1));
        assert_eq!(snap.latency, c.latency.snapshot());
        assert_eq!(back.to_json(), c.to_json());
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes()).await.unwrap();
        let e = read_frame::<_, ToProxy>(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
