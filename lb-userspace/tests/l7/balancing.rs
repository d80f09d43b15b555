//! Balancing through real requests: schedulers, sticky sessions, health checks, slow start,
//! forward-group stickiness.
use std::{collections::BTreeMap, time::Duration};

use super::{routing::NS, support::*};

/// Schedulers: wrr spreads evenly, sch keeps a client on one backend, uch hashes a query
/// parameter; insert-cookie stickiness returns to the same backend.
#[tokio::test]
async fn schedulers_and_sticky_sessions() {
    let port = free_port();
    let bs = [echo("b0", Duration::ZERO).await, echo("b1", Duration::ZERO).await, echo("b2", Duration::ZERO).await];
    let refs: Vec<&Echo> = bs.iter().collect();
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "pool", &refs)
        + &ingress(NS, "rr", &[("listen-ports", &lp)], &rule("wrr.test", &[("/", "Prefix", "pool")]))
        + &ingress(
            NS,
            "sch",
            &[("listen-ports", &lp), ("backend-scheduler", "sch")],
            &rule("sch.test", &[("/", "Prefix", "pool")]),
        )
        + &ingress(
            NS,
            "uch",
            &[("listen-ports", &lp), ("backend-scheduler", "uch"), ("backend-scheduler-uch-value", "uid")],
            &rule("uch.test", &[("/", "Prefix", "pool")]),
        )
        + &ingress(
            NS,
            "sticky",
            &[
                ("listen-ports", &lp),
                ("sticky-session", "true"),
                ("sticky-session-type", "Insert"),
                ("cookie-timeout", "300"),
            ],
            &rule("sticky.test", &[("/", "Prefix", "pool")]),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        *seen.entry(get(&c, port, "wrr.test", "/", &[]).await.backend()).or_default() += 1;
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![10, 10, 10], "wrr with equal weights: {seen:?}");
    let first = get(&c, port, "sch.test", "/", &[]).await.backend();
    for _ in 0..10 {
        assert_eq!(get(&c, port, "sch.test", "/", &[]).await.backend(), first, "sch: one client, one backend");
    }
    let mut by_uid = BTreeMap::new();
    for uid in 0..20 {
        let b = get(&c, port, "uch.test", &format!("/?uid={uid}"), &[]).await.backend();
        assert_eq!(
            get(&c, port, "uch.test", &format!("/x?a=1&uid={uid}"), &[]).await.backend(),
            b,
            "uch: same uid, same backend"
        );
        by_uid.insert(uid, b);
    }
    assert!(by_uid.values().collect::<std::collections::BTreeSet<_>>().len() > 1, "uch spreads uids");
    let r = get(&c, port, "sticky.test", "/", &[]).await;
    let cookie = r.header("set-cookie").expect("an inserted cookie");
    assert!(cookie.starts_with("SERVERID=") && cookie.contains("Max-Age=300"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..10 {
        assert_eq!(
            get(&c, port, "sticky.test", "/", &[("cookie", &pair)]).await.backend(),
            r.backend(),
            "sticky cookie"
        );
    }
}

/// Two sticky routes of one host, each on its own backends: each inserts its SERVERID with its
/// own path, so a browser keeps both; a request carrying both goes by the one naming an
/// endpoint of its route (one shared cookie was rewritten at every turn between the routes).
#[tokio::test]
async fn sticky_routes_of_one_host_keep_their_own_cookies() {
    let port = free_port();
    let api = [echo("a0", Duration::ZERO).await, echo("a1", Duration::ZERO).await];
    let web = [echo("w0", Duration::ZERO).await, echo("w1", Duration::ZERO).await];
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "api", &[&api[0], &api[1]])
        + &service(NS, "web", &[&web[0], &web[1]])
        + &ingress(
            NS,
            "sticky",
            &[
                ("listen-ports", &lp),
                ("sticky-session", "true"),
                ("sticky-session-type", "Insert"),
                ("cookie-timeout", "300"),
            ],
            &rule("two.test", &[("/api", "Prefix", "api"), ("/web", "Prefix", "web")]),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let mut pairs = Vec::new();
    for (path, from) in [("/api/x", "a"), ("/web/y", "w")] {
        let r = get(&c, port, "two.test", path, &[]).await;
        let cookie = r.header("set-cookie").expect("an inserted cookie");
        let route_path = &path[..4];
        assert!(cookie.contains(&format!("; Path={route_path};")), "{path}: {cookie}");
        assert!(r.backend().starts_with(from), "{path}: {}", r.backend());
        pairs.push((path, r.backend(), cookie.split(';').next().unwrap().to_owned()));
    }
    let both = |first: usize| format!("{}; {}", pairs[first].2, pairs[1 - first].2);
    for _ in 0..6 {
        for (i, (path, backend, _)) in pairs.iter().enumerate() {
            // The other route's cookie first: it names no endpoint of this route.
            let got = get(&c, port, "two.test", path, &[("cookie", &both(1 - i))]).await.backend();
            assert_eq!(&got, backend, "{path} with both cookies");
        }
    }
}

/// A sticky request whose endpoint refuses connections (a pod restarting, its health check
/// not failed yet) is answered by another endpoint: the inserted cookie names the endpoint
/// that answered, so the client stays there.
#[tokio::test]
async fn a_sticky_cookie_names_the_endpoint_that_answered() {
    let port = free_port();
    let dead_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dead = Echo { addr: dead_addr, hits: Default::default(), seen: Default::default() };
    let live = echo("live", Duration::ZERO).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "pool", &[&dead, &live])
        + &ingress(
            NS,
            "sticky",
            &[("listen-ports", &lp), ("sticky-session", "true"), ("sticky-session-type", "Insert")],
            &rule("retry.test", &[("/", "Prefix", "pool")]),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let to_dead = format!("SERVERID={}", lb_userspace::l7::sticky::sticky_id(dead_addr));
    let r = get(&c, port, "retry.test", "/", &[("cookie", &to_dead)]).await;
    assert_eq!((r.status, r.backend()), (200, "live".to_string()), "{}", r.body);
    let cookie = r.header("set-cookie").expect("an inserted cookie");
    let to_live = format!("SERVERID={}", lb_userspace::l7::sticky::sticky_id(live.addr));
    assert!(cookie.starts_with(&format!("{to_live};")), "{cookie}");
    for _ in 0..4 {
        assert_eq!(get(&c, port, "retry.test", "/", &[("cookie", &to_live)]).await.backend(), "live");
    }
    assert_eq!(live.hits(), 5);
}

/// ALB `healthcheck-*`: an endpoint failing its HTTP check stops getting requests; the
/// agent's checker drives it exactly as `lb run` does.
#[tokio::test]
async fn health_checks_take_a_failing_endpoint_out() {
    let port = free_port();
    let (good, sick) = (echo("good", Duration::ZERO).await, echo("sick", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "pool", &[&good, &sick])
        + &ingress(
            NS,
            "checked",
            &[
                ("listen-ports", &lp),
                ("healthcheck-enabled", "true"),
                ("healthcheck-path", "/healthz"),
                ("healthcheck-interval-seconds", "1"),
                ("healthcheck-timeout-seconds", "1"),
                ("unhealthy-threshold-count", "2"),
            ],
            &rule("hc.test", &[("/", "Prefix", "pool")]),
        );
    let m = model(&yaml);
    let mut p = proxy(&m);
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(get(&c, port, "hc.test", "/", &[]).await.backend());
    }
    assert_eq!(seen.len(), 2, "both endpoints serve before the checks decide");
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut checker = lb_userspace::health::Checker::default();
    checker.sync(&m, &tx);
    let change = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("no health change").unwrap();
    assert_eq!((change.backend, change.healthy), ((sick.addr.ip(), sick.addr.port()), false));
    checker.record(change);
    assert!(p.apply(&checker.effective(&m).l7).is_empty());
    for _ in 0..10 {
        assert_eq!(get(&c, port, "hc.test", "/", &[]).await.backend(), "good");
    }
}

/// `slow-start-*`: an endpoint added to a running proxy starts with a small share of the
/// requests; without slow start it takes its full share at once.
#[tokio::test]
async fn slow_start_ramps_a_new_endpoint() {
    let port = free_port();
    let (old, new) = (echo("old", Duration::ZERO).await, echo("new", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = |eps: &[&Echo]| {
        alb_class(&[(port, "HTTP")])
            + &service(NS, "slow", eps)
            + &service(NS, "fast", eps)
            + &ingress(
                NS,
                "slow",
                &[("listen-ports", &lp), ("slow-start-enabled", "true"), ("slow-start-duration", "60")],
                &rule("slow.test", &[("/", "Prefix", "slow")]),
            )
            + &ingress(NS, "fast", &[("listen-ports", &lp)], &rule("fast.test", &[("/", "Prefix", "fast")]))
    };
    let mut p = proxy(&model(&yaml(&[&old])));
    assert!(p.apply(&model(&yaml(&[&old, &new])).l7).is_empty());
    let c = client();
    let count = |host: &'static str| {
        let c = c.clone();
        async move {
            let mut n = 0;
            for _ in 0..40 {
                if get(&c, port, host, "/", &[]).await.backend() == "new" {
                    n += 1;
                }
            }
            n
        }
    };
    let slow = count("slow.test").await;
    let fast = count("fast.test").await;
    assert!(slow <= 4, "slow start: the new endpoint took {slow}/40");
    assert!((15..=25).contains(&fast), "no slow start: the new endpoint took {fast}/40");
}

/// `ServerGroupStickySession`: a client that got one Service of a forward group keeps it
/// (cookie `SERVERGROUPID`), whatever the group's weights say.
#[tokio::test]
async fn forward_group_stickiness() {
    let port = free_port();
    let (a, b) = (echo("a", Duration::ZERO).await, echo("b", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let group = r#"[{"type":"ForwardGroup","ForwardConfig":{"ServerGroups":[{"ServiceName":"a","ServicePort":80,"Weight":50},{"ServiceName":"b","ServicePort":80,"Weight":50}],"ServerGroupStickySession":{"Enabled":true,"Timeout":120}}}]"#;
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "a", &[&a])
        + &service(NS, "b", &[&b])
        + &ingress(
            NS,
            "g",
            &[("listen-ports", &lp), ("actions.split", group)],
            &rule("g.test", &[("/", "Prefix", "split")]).replace("number: 80", "name: use-annotation"),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let first = get(&c, port, "g.test", "/", &[]).await;
    let cookie = first.header("set-cookie").expect("a group cookie");
    assert!(cookie.starts_with("SERVERGROUPID=") && cookie.contains("Max-Age=120"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..20 {
        assert_eq!(get(&c, port, "g.test", "/", &[("cookie", &pair)]).await.backend(), first.backend());
    }
    let spread: std::collections::BTreeSet<String> = backends_without_cookie(&c, port).await;
    assert_eq!(spread.len(), 2, "without the cookie both Services serve");
}

async fn backends_without_cookie(c: &HttpClient, port: u16) -> std::collections::BTreeSet<String> {
    let mut s = std::collections::BTreeSet::new();
    for _ in 0..30 {
        s.insert(get(c, port, "g.test", "/", &[]).await.backend());
    }
    s
}
