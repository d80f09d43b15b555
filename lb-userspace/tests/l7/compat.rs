//! Objects written for Alibaba Cloud's controllers, through real requests (issue #18, items 2
//! and 3): ingress-nginx canary keys the ALB controller reads, an AlbConfig without its
//! cloud-only spec.config, a CLB Service with a cloud-only combination the cloud would refuse.
use std::{collections::BTreeMap, time::Duration};

use super::{routing::NS, support::*};

/// `yaml` with every `alb.ingress.kubernetes.io/canary` key spelled the ingress-nginx way.
fn nginx_canary(yaml: String) -> String {
    yaml.replace("alb.ingress.kubernetes.io/canary", "nginx.ingress.kubernetes.io/canary")
}

/// An ingress-nginx canary Ingress routed by header takes only the requests carrying the
/// header (with the value, or matching the pattern); a weight out of canary-weight-total
/// splits the others.
#[tokio::test]
async fn an_ingress_nginx_canary_routes_by_header() {
    let port = free_port();
    let (main, canary) = (echo("main", Duration::ZERO).await, echo("canary", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "main", &[&main])
        + &service(NS, "canary", &[&canary])
        + &ingress(NS, "app", &[("listen-ports", &lp)], &rule("n.test", &[("/", "Prefix", "main")]))
        + &nginx_canary(ingress(
            NS,
            "app-canary",
            &[
                ("listen-ports", &lp),
                ("canary", "true"),
                ("canary-by-header", "x-canary"),
                ("canary-by-header-value", "yes"),
            ],
            &rule("n.test", &[("/", "Prefix", "canary")]),
        ))
        + &ingress(NS, "p", &[("listen-ports", &lp)], &rule("p.test", &[("/", "Prefix", "main")]))
        + &nginx_canary(ingress(
            NS,
            "p-canary",
            &[
                ("listen-ports", &lp),
                ("canary", "true"),
                ("canary-by-header", "x-region"),
                ("canary-by-header-pattern", "^(eu|us)-"),
            ],
            &rule("p.test", &[("/", "Prefix", "canary")]),
        ))
        + &ingress(NS, "w", &[("listen-ports", &lp)], &rule("w.test", &[("/", "Prefix", "main")]))
        + &nginx_canary(ingress(
            NS,
            "w-canary",
            &[("listen-ports", &lp), ("canary", "true"), ("canary-weight", "250"), ("canary-weight-total", "1000")],
            &rule("w.test", &[("/", "Prefix", "canary")]),
        ));
    let build = build(&yaml);
    assert!(build.errors.is_empty(), "{:#?}", build.errors);
    let _p = proxy(&build.model);
    let c = client();
    for _ in 0..20 {
        assert_eq!(get(&c, port, "n.test", "/", &[]).await.backend(), "main", "no header: the main Ingress");
        assert_eq!(get(&c, port, "n.test", "/", &[("x-canary", "yes")]).await.backend(), "canary");
        assert_eq!(get(&c, port, "n.test", "/", &[("x-canary", "no")]).await.backend(), "main", "another value");
    }
    for (region, want) in [("eu-west", "canary"), ("us-east", "canary"), ("ap-south", "main"), ("xeu-", "main")] {
        assert_eq!(get(&c, port, "p.test", "/", &[("x-region", region)]).await.backend(), want, "{region}");
    }
    assert_eq!(get(&c, port, "p.test", "/", &[]).await.backend(), "main");
    // 250 of 1000: about a quarter of 400 requests (binomial sd ~8.7; the bounds are > 5 sd).
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..400 {
        *counts.entry(get(&c, port, "w.test", "/", &[]).await.backend()).or_default() += 1;
    }
    let to_canary = counts.get("canary").copied().unwrap_or(0);
    assert!((55..=145).contains(&to_canary), "{counts:?}");
}

/// An AlbConfig without spec.config (so without zoneMappings), and one whose cloud-only
/// fields hold values the cloud would refuse, both serve: the fields get notices.
#[tokio::test]
async fn an_albconfig_without_zone_mappings_serves() {
    let hit = echo("hit", Duration::ZERO).await;
    // A port per case: a dropped proxy's listener may still accept for a moment.
    for what in ["no spec.config", "refused cloud values"] {
        let port = free_port();
        let class = alb_class(&[(port, "HTTP")]);
        let class = if what == "no spec.config" {
            let bare = class.replace(
                "  config:\n    name: alb\n    addressType: Intranet\n    zoneMappings: [{vSwitchId: vsw-a}, {vSwitchId: vsw-b}]\n",
                "",
            );
            assert!(!bare.contains("zoneMappings"), "{bare}");
            bare
        } else {
            class
                .replace("zoneMappings: [{vSwitchId: vsw-a}, {vSwitchId: vsw-b}]", "zoneMappings: []\n    edition: Pro")
        };
        let lp = format!("[{{\"HTTP\": {port}}}]");
        let rest = service(NS, "hit", &[&hit])
            + &ingress(NS, "app", &[("listen-ports", &lp)], &rule("z.test", &[("/", "Prefix", "hit")]));
        let build = build(&(class + &rest));
        assert!(build.errors.is_empty(), "{what}: {:#?}", build.errors);
        let p = proxy(&build.model);
        let c = client();
        for _ in 0..5 {
            let got = get(&c, port, "z.test", "/", &[]).await;
            assert_eq!((got.status, got.backend().as_str()), (200, "hit"), "{what}");
        }
        drop(p);
    }
}

/// A CLB http Service with bandwidth on an intranet instance (the cloud refuses that
/// combination) is served, with notices on the cloud-only annotations.
#[tokio::test]
async fn a_cloud_only_combination_does_not_reject_a_clb_service() {
    let port = free_port();
    let b = echo("b", Duration::ZERO).await;
    let vip = "127.0.1.91";
    let yaml = clb_service(
        NS,
        "intranet-bw",
        vip,
        &[
            ("protocol-port", &format!("http:{port}")),
            ("address-type", "intranet"),
            ("charge-type", "paybybandwidth"),
            ("bandwidth", "50"),
        ],
        &[("http", port)],
        &b,
    );
    let build = build(&yaml);
    assert!(build.errors.is_empty(), "{:#?}", build.errors);
    let notices = format!("{:?}", build.notices);
    assert!(notices.contains("applies only to Internet-facing instances, not intranet"), "{notices}");
    let _p = proxy(&build.model);
    let c = client();
    let req = http::Request::get(format!("http://{vip}:{port}/")).body(Default::default()).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), c.request(req)).await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
}
