//! ForwardGroup `ServerGroupID`s through real requests: a group a Service stands for
//! (`lb.dev/server-group-id`) gets its share; a group no Service stands for is a notice and
//! the groups left keep their split.
use std::{collections::BTreeMap, time::Duration};

use super::{routing::NS, support::*};

#[tokio::test]
async fn server_group_ids_map_to_their_service_and_the_rest_keep_their_split() {
    let port = free_port();
    let (a, ecs) = (echo("a", Duration::ZERO).await, echo("ecs", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    // a 30, sgp-ecs 30 (the Service `ecs`), sgp-idc 40 (no Service): a and ecs keep 30:30.
    let group = r#"[{"type":"ForwardGroup","ForwardConfig":{"ServerGroups":[{"ServiceName":"a","ServicePort":80,"Weight":30},{"ServerGroupID":"sgp-ecs","Weight":30},{"ServerGroupID":"sgp-idc","Weight":40}]}}]"#;
    let ecs_service = service(NS, "ecs", &[&ecs]).replacen(
        "metadata: {name: ecs, namespace: demo}",
        "metadata: {name: ecs, namespace: demo, annotations: {lb.dev/server-group-id: sgp-ecs}}",
        1,
    );
    assert!(ecs_service.contains("sgp-ecs"), "{ecs_service}");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "a", &[&a])
        + &ecs_service
        + &ingress(
            NS,
            "groups",
            &[("listen-ports", &lp), ("actions.split", group)],
            &rule("g.test", &[("/", "Prefix", "split")]).replace("number: 80", "name: use-annotation"),
        );
    let b = build(&yaml);
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let notes: Vec<String> = b.notices.iter().filter(|n| n.object.kind == "Ingress").map(ToString::to_string).collect();
    assert_eq!(
        notes,
        [format!(
            "Ingress {NS}/groups: alb.ingress.kubernetes.io/actions.split: ServerGroupID sgp-idc (weight 40) is not served: no Service of namespace {NS} has lb.dev/server-group-id: sgp-idc; its share goes to the other groups, which keep their split: {NS}/a:80 50%, {NS}/ecs:80 50%"
        )]
    );
    let _p = proxy(&b.model);
    let c = client();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        *counts.entry(get(&c, port, "g.test", "/", &[]).await.backend()).or_default() += 1;
    }
    let share_a = *counts.get("a").unwrap_or(&0) as f64 / 200.0;
    assert!((0.38..0.62).contains(&share_a), "30:30 split gave {counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
}
