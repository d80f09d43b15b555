//! TrafficMirror of requests with a body through real requests: the mirror target gets the
//! body too, up to `--l7-mirror-max-body-bytes` (1 MiB by default); a longer body goes to the
//! primary whole, is not mirrored, and is counted (`mirror_skipped`).
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};

use super::{routing::NS, support::*};

/// POST `body` to `port` with `Host: host`; `chunked`: without a Content-Length.
async fn post(port: u16, host: &str, body: Vec<u8>, chunked: bool) -> serde_json::Value {
    let req = Request::post(format!("http://127.0.0.1:{port}/in")).header("host", host);
    let resp = if chunked {
        let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let frames = body
            .chunks(16 << 10)
            .map(|c| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect::<Vec<_>>();
        let stream = StreamBody::new(futures::stream::iter(frames));
        c.request(req.body(stream).unwrap()).await.unwrap()
    } else {
        client().request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap()
    };
    assert_eq!(resp.status(), 200);
    serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn traffic_mirror_copies_bodies_up_to_the_bound() {
    let port = free_port();
    let (primary, mirror) = (echo("primary", Duration::ZERO).await, echo("mirror", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let mirrored = r#"[{"type":"TrafficMirror","trafficMirrorConfig":{"targetType":"ForwardGroupMirror","mirrorGroupConfig":{"serverGroupTuples":[{"serviceName":"mirror","servicePort":80}]}}},{"type":"ForwardGroup","ForwardConfig":{"ServerGroups":[{"ServiceName":"primary","ServicePort":80,"Weight":100}]}}]"#;
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "primary", &[&primary])
        + &service(NS, "mirror", &[&mirror])
        + &ingress(
            NS,
            "mirrored",
            &[("listen-ports", &lp), ("actions.m", mirrored)],
            &rule("m.test", &[("/", "Prefix", "m")]).replace("number: 80", "name: use-annotation"),
        );
    let p = proxy(&model(&yaml));
    let wait_for = |n: usize| {
        let mirror = &mirror;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while mirror.hits() < n && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // A POST with a body (Content-Length), then one streamed without a length: both copied.
    let got = post(port, "m.test", b"order=42&qty=3".to_vec(), false).await;
    assert_eq!((got["backend"].as_str(), got["body"].as_str()), (Some("primary"), Some("order=42&qty=3")));
    let streamed: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(post(port, "m.test", streamed.clone(), true).await["body_len"], 200_000);
    wait_for(2).await;
    let seen = mirror.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0]["method"].as_str(), seen[0]["body"].as_str()), (Some("POST"), Some("order=42&qty=3")));
    assert_eq!(seen[1]["body_len"], 200_000, "the streamed body, copied whole");

    // Longer than 1 MiB, by Content-Length and streamed: the primary gets it, no copy.
    let big = vec![b'x'; (1 << 20) + 1];
    assert_eq!(post(port, "m.test", big.clone(), false).await["body_len"], (1 << 20) + 1);
    assert_eq!(post(port, "m.test", big, true).await["body_len"], (1 << 20) + 1);
    // A body-less request after them: its copy arrives, and the big ones never did.
    assert_eq!(get(&client(), port, "m.test", "/after", &[]).await.backend(), "primary");
    wait_for(3).await;
    let uris: Vec<String> = mirror.seen().iter().map(|s| s["uri"].as_str().unwrap().to_owned()).collect();
    assert_eq!(uris, ["/in", "/in", "/after"]);
    let stats = p.stats();
    let counted: u64 = stats.as_object().unwrap().values().map(|l| l["mirror_skipped"].as_u64().unwrap()).sum();
    assert_eq!(counted, 2, "{stats}");
}
