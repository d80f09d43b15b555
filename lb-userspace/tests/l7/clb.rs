//! CLB http/https listeners through real requests, set by CLB annotations only: sticky
//! sessions (insert with cookie-timeout, server with cookie), idle-timeout,
//! health-check-flag with an HTTP check, and on https: domain-extensions (SNI),
//! http2-enabled off and tls-cipher-policy.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    time::{Duration, Instant},
};

use super::{routing::NS, support::*, tls};

/// A CLB Service on `vip` over several echo `backends` (one EndpointSlice per backend port).
fn clb_pool(ns: &str, name: &str, vip: &str, annotations: &[(&str, &str)], port: u16, backends: &[&Echo]) -> String {
    let first = clb_service(ns, name, vip, annotations, &[("http", port)], backends[0]);
    let (svc, _) = first.split_once("---\n").unwrap();
    let slices: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: http, port: {}, protocol: TCP}}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n---\n",
                b.addr.port()
            )
        })
        .collect();
    format!("{svc}---\n{slices}")
}

fn pairs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn get_vip(c: &HttpClient, vip: &str, port: u16, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = http::Request::get(format!("http://{vip}:{port}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req.body(Default::default()).unwrap()))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
    Got { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// `sticky-session: on` with `sticky-session-type: insert` + `cookie-timeout` (a `SERVERID`
/// cookie with that Max-Age), and with `server` + `cookie` (the backend's own cookie,
/// prefixed with the endpoint, and stripped again on the way back).
#[tokio::test]
async fn clb_sticky_sessions_insert_and_server() {
    let bs = [echo("b0", Duration::ZERO).await, echo("b1", Duration::ZERO).await, echo("b2", Duration::ZERO).await];
    let refs: Vec<&Echo> = bs.iter().collect();
    let (insert_port, server_port) = (free_port(), free_port());
    let (vip_i, vip_s) = ("127.0.0.31", "127.0.0.32");
    let insert = [
        ("protocol-port", format!("http:{insert_port}")),
        ("sticky-session", "on".into()),
        ("sticky-session-type", "insert".into()),
        ("cookie-timeout", "300".into()),
    ];
    let server = [
        ("protocol-port", format!("http:{server_port}")),
        ("sticky-session", "on".into()),
        ("sticky-session-type", "server".into()),
        ("cookie", "sid".into()),
    ];
    let yaml = clb_pool(NS, "ins", vip_i, &pairs(&insert), insert_port, &refs)
        + &clb_pool(NS, "srv", vip_s, &pairs(&server), server_port, &refs);
    let _p = proxy(&model(&yaml));
    let c = client();

    let spread: BTreeSet<String> = {
        let mut s = BTreeSet::new();
        for _ in 0..9 {
            s.insert(get_vip(&c, vip_i, insert_port, "/", &[]).await.backend());
        }
        s
    };
    assert_eq!(spread.len(), 3, "without a cookie every backend serves: {spread:?}");
    let first = get_vip(&c, vip_i, insert_port, "/", &[]).await;
    let cookie = first.header("set-cookie").expect("an inserted cookie");
    assert!(cookie.starts_with("SERVERID=") && cookie.contains("Max-Age=300"), "cookie-timeout 300: {cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..9 {
        assert_eq!(get_vip(&c, vip_i, insert_port, "/", &[("cookie", &pair)]).await.backend(), first.backend());
    }

    let set = get_vip(&c, vip_s, server_port, "/", &[("x-set-cookie", "sid=abc; Path=/")]).await;
    let rewritten = set.header("set-cookie").expect("the backend's cookie");
    let value = rewritten.split(';').next().unwrap().to_owned();
    assert!(value.starts_with("sid=") && value.ends_with("~abc"), "the endpoint prefixed: {rewritten}");
    for _ in 0..9 {
        let r = get_vip(&c, vip_s, server_port, "/", &[("cookie", &value)]).await;
        assert_eq!(r.backend(), set.backend(), "the server cookie keeps the backend");
        assert_eq!(r.json()["headers"]["cookie"], "sid=abc", "the backend gets its own cookie back");
    }
}

/// `idle-timeout`: an idle keep-alive connection is closed after it (1 s here); one of a
/// listener with a longer idle-timeout (10 s) still serves after the same wait.
#[tokio::test]
async fn clb_idle_timeout_closes_idle_connections() {
    let web = echo("web", Duration::ZERO).await;
    let (short, long) = (free_port(), free_port());
    let vip = "127.0.0.33";
    let yaml = clb_service(
        NS,
        "idle1",
        vip,
        &[("protocol-port", &format!("http:{short}")), ("idle-timeout", "1")],
        &[("http", short)],
        &web,
    ) + &clb_service(
        NS,
        "idle10",
        vip,
        &[("protocol-port", &format!("http:{long}")), ("idle-timeout", "10")],
        &[("http", long)],
        &web,
    );
    let _p = proxy(&model(&yaml));
    let outcome = tokio::task::spawn_blocking(move || {
        let ask = |s: &mut std::net::TcpStream| -> bool {
            if s.write_all(b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n").is_err() {
                return false;
            }
            let mut buf = vec![0u8; 8192];
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains("\"backend\":\"web\"") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            true
        };
        let open = |port| {
            let s = std::net::TcpStream::connect((vip, port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
            s
        };
        let (mut a, mut b) = (open(short), open(long));
        assert!(ask(&mut a) && ask(&mut b), "both listeners answer");
        let started = Instant::now();
        // The proxy closes the idle connection: the read sees EOF (or a reset).
        let closed = matches!(a.read(&mut [0u8; 64]), Ok(0) | Err(_));
        let after = started.elapsed();
        std::thread::sleep(Duration::from_millis(500));
        (closed, after, ask(&mut b))
    })
    .await
    .unwrap();
    let (closed, after, long_alive) = outcome;
    assert!(closed && after < Duration::from_secs(4), "idle-timeout 1: closed after {after:?}");
    assert!(long_alive, "idle-timeout 10: still open after the same wait");
}

/// `health-check-flag: on` with an HTTP check (`health-check-type: http`, uri, httpcode,
/// method, domain, timeout, interval, thresholds) on a CLB http listener: the backend that
/// fails it gets no more requests; the probes arrive as asked (GET, HTTP/1.1 with the
/// domain as Host).
#[tokio::test]
async fn clb_health_check_flag_takes_a_failing_backend_out() {
    let (good, sick) = (echo("good", Duration::ZERO).await, echo("sick", Duration::ZERO).await);
    let port = free_port();
    let vip = "127.0.0.34";
    let annotations = [
        ("protocol-port", format!("http:{port}")),
        ("health-check-flag", "on".into()),
        ("health-check-type", "http".into()),
        ("health-check-uri", "/healthz".into()),
        ("health-check-httpcode", "http_2xx,http_3xx".into()),
        ("health-check-method", "get".into()),
        ("health-check-domain", "hc.test".into()),
        ("health-check-timeout", "1".into()),
        ("health-check-interval", "1".into()),
        ("healthy-threshold", "2".into()),
        ("unhealthy-threshold", "2".into()),
    ];
    let m = model(&clb_pool(NS, "checked", vip, &pairs(&annotations), port, &[&good, &sick]));
    let mut p = proxy(&m);
    let c = client();
    let mut before = BTreeMap::<String, usize>::new();
    for _ in 0..6 {
        *before.entry(get_vip(&c, vip, port, "/", &[]).await.backend()).or_default() += 1;
    }
    assert_eq!(before.len(), 2, "both serve before the checks decide: {before:?}");
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut checker = lb_userspace::health::Checker::default();
    checker.sync(&m, &tx);
    let change = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("no health change").unwrap();
    assert_eq!((change.backend, change.healthy), ((sick.addr.ip(), sick.addr.port()), false));
    checker.record(change);
    assert!(p.apply(&checker.effective(&m).l7).is_empty());
    for _ in 0..10 {
        assert_eq!(get_vip(&c, vip, port, "/", &[]).await.backend(), "good");
    }
    let probe = good.seen().into_iter().find(|s| s["uri"] == "/healthz").expect("the good backend was probed");
    assert_eq!((probe["method"].as_str(), probe["version"].as_str()), (Some("GET"), Some("HTTP/1.1")), "{probe}");
    assert_eq!(probe["headers"]["host"], "hc.test", "{probe}");
}

/// An https listener set by CLB annotations: `cert-id` is the default certificate,
/// `domain-extensions` picks another by SNI, `http2-enabled: off` keeps ALPN to HTTP/1.1,
/// `tls-cipher-policy: tls_cipher_policy_1_2_strict` refuses TLS 1.3, and the Service's
/// plain http listener still takes h2c (`http2-enabled` is HTTPS's). A second listener
/// without them negotiates h2 and TLS 1.3.
#[tokio::test]
async fn clb_https_sni_http2_off_and_cipher_policy() {
    let web = echo("web", Duration::ZERO).await;
    let ca = tls::ca();
    let (_dir, ca_file) = tls::ca_file(&ca);
    let (strict, plain, cleartext) = (free_port(), free_port(), free_port());
    let vip = "127.0.0.35";
    let yaml = tls::secret("cert-a", &tls::leaf(&ca, &["a.test"]))
        + &tls::secret("cert-b", &tls::leaf(&ca, &["b.test"]))
        + &clb_service(
            tls::NS,
            "strict",
            vip,
            &[
                ("protocol-port", &format!("https:{strict},http:{cleartext}")),
                ("cert-id", "cert-a"),
                ("domain-extensions", "b.test:cert-b"),
                ("http2-enabled", "off"),
                ("tls-cipher-policy", "tls_cipher_policy_1_2_strict"),
            ],
            &[("https", strict), ("http", cleartext)],
            &web,
        )
        + &clb_service(
            tls::NS,
            "plain",
            vip,
            &[("protocol-port", &format!("https:{plain}")), ("cert-id", "cert-a")],
            &[("https", plain)],
            &web,
        );
    let m = model(&yaml);
    let http2: Vec<(u16, bool)> = m.l7.values().map(|l| (l.port, l.http2)).collect();
    assert!(http2.contains(&(cleartext, true)), "http2-enabled is HTTPS's (the model lb check prints): {http2:?}");
    let _p = proxy(&m);
    let f = ca_file.clone();
    let curl = move |host: &str, port: u16, extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-v",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
                "--cacert",
            ])
            .arg(&f)
            .args(["--resolve", &format!("{host}:{port}:{vip}")])
            .args(extra)
            .arg(format!("https://{host}:{port}/"))
            .output()
            .expect("curl (installed by cargo xtask setup)");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let subject =
            stderr.lines().find(|l| l.trim_start_matches(['*', ' ']).starts_with("subject:")).unwrap_or("").to_owned();
        (String::from_utf8_lossy(&out.stdout).into_owned(), subject, out.status.success(), stderr)
    };
    let got = tokio::task::spawn_blocking(move || {
        [
            curl("a.test", strict, &["--http2"]),
            curl("b.test", strict, &["--http2"]),
            curl("b.test", strict, &["--tlsv1.3"]),
            curl("a.test", plain, &["--http2", "--tlsv1.3"]),
        ]
    })
    .await
    .unwrap();
    let [a, b, v13, other] = got;
    assert_eq!((a.0.as_str(), a.1.contains("CN=a.test")), ("200 1.1", true), "cert-id, no h2: {}", a.3);
    assert_eq!((b.0.as_str(), b.1.contains("CN=b.test")), ("200 1.1", true), "domain-extensions by SNI: {}", b.3);
    assert!(!v13.2, "tls_cipher_policy_1_2_strict refuses TLS 1.3: {}", v13.0);
    assert_eq!(other.0, "200 2", "http2-enabled defaults to on, TLS 1.3 without a policy: {}", other.3);
    let h2c: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let resp = h2c
        .request(http::Request::get(format!("http://{vip}:{cleartext}/")).body(Default::default()).unwrap())
        .await
        .expect("h2c on the plain listener of a Service with http2-enabled off");
    assert_eq!((resp.status().as_u16(), resp.version()), (200, http::Version::HTTP_2));
}

/// `connection-drain` is for TCP and UDP listeners (the reference): on a Service with a TCP
/// and an http port it drains the TCP listener, and the http listener's routes keep the
/// proxy's drain timeout (the annotation's reached them).
#[test]
fn clb_connection_drain_stays_off_the_http_listeners() {
    let web = Echo { addr: "127.0.0.1:9".parse().unwrap(), hits: Default::default(), seen: Default::default() };
    let yaml = clb_service(
        "default",
        "mixed",
        "127.0.0.36",
        &[("protocol-port", "http:80"), ("connection-drain", "on"), ("connection-drain-timeout", "30")],
        &[("ssh", 22), ("http", 80)],
        &web,
    );
    let m = model(&yaml);
    let l7 = m.l7.values().next().expect("the http listener");
    assert_eq!(l7.routes[0].rule.backend.drain_timeout_s, None);
    assert_eq!(m.listeners.values().map(|l| l.drain_timeout).collect::<Vec<_>>(), [Some(30)]);
}
