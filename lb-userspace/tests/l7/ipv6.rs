//! ALB `enable-ipv6` through real requests: a Service with an IPv4 and an IPv6 endpoint
//! serves from both when the Ingress asks for IPv6 endpoints, from the IPv4 one otherwise.
use std::{collections::BTreeSet, convert::Infallible, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};

use super::{routing::NS, support::*};

/// A backend on [::1] answering `{"backend": name}`; its port.
async fn echo6(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("[::1]:0").await.expect("an IPv6 loopback");
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!(
                        "{{\"backend\":\"{name}\"}}"
                    )))))
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn enable_ipv6_adds_the_ipv6_endpoints() {
    let port = free_port();
    let v4 = echo("v4", Duration::ZERO).await;
    let v6 = echo6("v6").await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let slice = |family: &str, port: u16, addr: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: dual-{family}\n  namespace: {NS}\n  labels: {{kubernetes.io/service-name: dual}}\naddressType: {family}\nports:\n- {{name: http, port: {port}, protocol: TCP}}\nendpoints:\n- addresses: [\"{addr}\"]\n---\n"
        )
    };
    let yaml = alb_class(&[(port, "HTTP")])
        + &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: dual, namespace: {NS}}}\nspec:\n  ports:\n  - {{name: http, port: 80}}\n---\n"
        )
        + &slice("IPv4", v4.addr.port(), "127.0.0.1")
        + &slice("IPv6", v6, "::1")
        + &ingress(
            NS,
            "both",
            &[("listen-ports", &lp), ("enable-ipv6", "true")],
            &rule("both.test", &[("/", "Prefix", "dual")]),
        )
        + &ingress(NS, "v4only", &[("listen-ports", &lp)], &rule("v4.test", &[("/", "Prefix", "dual")]));
    let _p = proxy(&model(&yaml));
    let c = client();
    let (mut both, mut only) = (BTreeSet::new(), BTreeSet::new());
    for _ in 0..8 {
        both.insert(get(&c, port, "both.test", "/", &[]).await.backend());
        only.insert(get(&c, port, "v4.test", "/", &[]).await.backend());
    }
    assert_eq!(both, ["v4".to_owned(), "v6".to_owned()].into(), "enable-ipv6: both families serve");
    assert_eq!(only, ["v4".to_owned()].into(), "without it: IPv4 endpoints only");
}
