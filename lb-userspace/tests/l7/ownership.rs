//! Host ownership across namespaces: the oldest Ingress naming a host and path keeps it (a
//! newer one of another namespace is rejected), and the namespace owning a host has its
//! rules tried first, so `order` cannot hand that host to another namespace.
use std::time::Duration;

use super::support::*;

/// `yaml` (one object in namespace `ns`) with `creationTimestamp: ts`.
fn created(yaml: String, ns: &str, ts: &str) -> String {
    yaml.replacen(&format!("  namespace: {ns}\n"), &format!("  namespace: {ns}\n  creationTimestamp: \"{ts}\"\n"), 1)
}

/// An Ingress of another namespace cannot take a host and path an older Ingress serves,
/// not even with a lower `order`; Ingresses of one namespace still share hosts.
#[tokio::test]
async fn a_host_and_path_belong_to_the_oldest_ingress_across_namespaces() {
    let port = free_port();
    let (shop, evil) = (echo("shop", Duration::ZERO).await, echo("evil", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service("shop", "web", &[&shop])
        + &service("evil", "web", &[&evil])
        + &created(
            ingress("shop", "store", &[("listen-ports", &lp)], &rule("shop.test", &[("/", "Prefix", "web")])),
            "shop",
            "2026-01-01T00:00:00Z",
        )
        + &created(
            ingress(
                "evil",
                "grab",
                &[("listen-ports", &lp), ("order", "1")],
                &rule("shop.test", &[("/", "Prefix", "web")]),
            ),
            "evil",
            "2026-06-01T00:00:00Z",
        )
        + &created(
            ingress(
                "shop",
                "api",
                &[("listen-ports", &lp), ("order", "5")],
                &rule("shop.test", &[("/api", "Prefix", "web")]),
            ),
            "shop",
            "2026-07-01T00:00:00Z",
        );
    let b = build(&yaml);
    let errors: Vec<String> = b.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "Ingress evil/grab: spec.rules: host shop.test path Prefix / is already served for Ingress shop/store (created earlier, in another namespace)"
        ],
    );
    let _p = proxy(&b.model);
    let c = client();
    assert_eq!(get(&c, port, "shop.test", "/", &[]).await.backend(), "shop");
    assert_eq!(get(&c, port, "shop.test", "/api/x", &[]).await.backend(), "shop", "one namespace shares its hosts");
    assert_eq!(evil.hits(), 0);
}

/// A newer Ingress of another namespace with a lower `order` and rules that do not claim
/// the owner's host and path (no host, a wildcard, a sub-path) is accepted, but does not
/// take requests for the owned host that the owner's rules match; it serves the rest.
#[tokio::test]
async fn order_does_not_let_another_namespace_take_an_owned_host() {
    let port = free_port();
    let (shop, evil) = (echo("shop", Duration::ZERO).await, echo("evil", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service("shop", "web", &[&shop])
        + &service("evil", "web", &[&evil])
        + &created(
            ingress("shop", "store", &[("listen-ports", &lp)], &rule("shop.test", &[("/", "Prefix", "web")])),
            "shop",
            "2026-01-01T00:00:00Z",
        )
        + &created(
            ingress(
                "evil",
                "grab",
                &[("listen-ports", &lp), ("order", "1")],
                &(rule("", &[("/", "Prefix", "web")])
                    + &rule("*.test", &[("/", "Prefix", "web")])
                    + &rule("shop.test", &[("/api", "Prefix", "web")])),
            ),
            "evil",
            "2026-06-01T00:00:00Z",
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    for path in ["/", "/api", "/api/x", "/cart"] {
        assert_eq!(get(&c, port, "shop.test", path, &[]).await.backend(), "shop", "shop.test{path}");
        assert_eq!(get(&c, port, "SHOP.test:80", path, &[]).await.backend(), "shop", "SHOP.test:80{path}");
    }
    assert_eq!(get(&c, port, "other.test", "/", &[]).await.backend(), "evil", "a host nobody owns");
    assert_eq!(get(&c, port, "www.test", "/", &[]).await.backend(), "evil");
    assert_eq!(evil.hits(), 2);
}
