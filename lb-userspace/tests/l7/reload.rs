//! Hot reload: routes swapped 100 times under a bounded load drop nothing; listeners added
//! and removed leave the others alone; a removed listener's keep-alive connection finishes
//! its request.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use super::support::*;

const NS: &str = "reload";

fn version(port: u16, extra_port: Option<u16>, backend: &str, a: &Echo, b: &Echo) -> String {
    let mut listeners = vec![(port, "HTTP")];
    if let Some(p) = extra_port {
        listeners.push((p, "HTTP"));
    }
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let mut yaml = alb_class(&listeners)
        + &service(NS, "a", &[a])
        + &service(NS, "b", &[b])
        + &ingress(NS, "live", &[("listen-ports", &lp)], &rule("live.test", &[("/", "Prefix", backend)]));
    if let Some(p) = extra_port {
        let lp2 = format!("[{{\"HTTP\": {p}}}]");
        yaml += &ingress(NS, "extra", &[("listen-ports", &lp2)], &rule("", &[("/", "Prefix", "a")]));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_swaps_under_load_drop_nothing() {
    let (port, extra) = (free_port(), free_port());
    let (a, b) = (echo("a", Duration::ZERO).await, echo("b", Duration::ZERO).await);
    let models: Vec<_> = (0..4)
        .map(|i| model(&version(port, (i % 2 == 1).then_some(extra), if i < 2 { "a" } else { "b" }, &a, &b)))
        .collect();
    let mut p = proxy(&models[0]);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            // Keep-alive connections (the client pools them) across every swap.
            let c = client();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline && n < 100_000 {
                n += 1;
                let got = get(&c, port, "live.test", "/", &[]).await;
                if got.status == 200 && ["a", "b"].contains(&got.backend().as_str()) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let c = client();
    for i in 0..100 {
        let m = &models[i % 4];
        let errors = p.apply(&m.l7);
        assert!(errors.is_empty(), "{errors:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The routes in force are the new ones.
        let want = if i % 4 < 2 { "a" } else { "b" };
        assert_eq!(get(&c, port, "live.test", "/", &[]).await.backend(), want, "swap {i}");
        let extra_up = std::net::TcpStream::connect(("127.0.0.1", extra)).is_ok();
        assert_eq!(extra_up, i % 2 == 1, "swap {i}: the extra listener comes and goes");
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert_eq!(failed, 0, "{failed} of {} requests failed during 100 swaps", ok + failed);
}

#[tokio::test]
async fn removed_listener_finishes_in_flight_requests() {
    let port = free_port();
    let slow = echo("slow", Duration::from_millis(800)).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let m = model(
        &(alb_class(&[(port, "HTTP")])
            + &service(NS, "slow", &[&slow])
            + &ingress(NS, "s", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "slow")]))),
    );
    let mut p = proxy(&m);
    let c = client();
    let inflight = tokio::spawn({
        let c = c.clone();
        async move { get(&c, port, "x", "/slow", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(p.apply(&Default::default()).is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "a removed listener stops accepting");
    let got = inflight.await.unwrap();
    assert_eq!(got.status, 200, "the request in flight finished: {}", got.body);
}
