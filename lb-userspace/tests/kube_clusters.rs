//! Issue #18, item 1: the associated clusters of an ALB multi-cluster gateway read through
//! their kubeconfig (`--cluster ID=kubeconfig:PATH`) from fake API servers listening on
//! loopback; a cluster counts as connected (in the object set and in the AlbConfig's
//! `status.loadBalancer.subClusters`) only once its API server listed its EndpointSlices.
mod fake_api;

use std::{path::Path, time::Duration};

use fake_api::{FakeApi, documents, examples_dir};
use http::Method;
use lb_userspace::{
    clusters::{ClusterFrom, ClusterSpec, WithClusters},
    kube::{KubeOptions, KubeSource},
    manifests::ObjectSet,
    model::{self, BuildOptions},
    source::{Source, SourceOptions},
};
use serde_json::{Value, json};

const GATEWAY: &str = "alb.ingress.kubernetes.io/remote-clusters";

/// The `l7-alb` example with its AlbConfig made a gateway of `clusters`.
fn gateway(clusters: &str) -> Vec<Value> {
    let mut objects = documents(&examples_dir().join("l7-alb"));
    let cfg = objects.iter_mut().find(|o| o["kind"] == "AlbConfig").expect("the example has an AlbConfig");
    cfg["metadata"]["annotations"] = json!({ GATEWAY: clusters });
    objects
}

/// An EndpointSlice of the example's Service `shop` in the associated cluster.
fn slice(name: &str, address: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "demo", "labels": {"kubernetes.io/service-name": "shop"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

/// A kubeconfig file in `dir` naming the fake at `addr`.
fn kubeconfig(dir: &Path, id: &str, addr: std::net::SocketAddr) -> ClusterSpec {
    let path = dir.join(format!("{id}.kubeconfig"));
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters: [{{name: {id}, cluster: {{server: \"http://{addr}\"}}}}]\n\
         users: [{{name: u, user: {{}}}}]\ncontexts: [{{name: {id}, context: {{cluster: {id}, user: u}}}}]\n\
         current-context: {id}\n"
    );
    std::fs::write(&path, config).unwrap();
    ClusterSpec { id: id.into(), from: ClusterFrom::Kubeconfig(path) }
}

/// Poll until `f` holds of an object set (at most 10 s).
async fn poll_until(s: &mut WithClusters, what: &str, f: impl Fn(&ObjectSet) -> bool) -> std::sync::Arc<ObjectSet> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(set) = s.poll().unwrap() {
            if f(&set) {
                return set;
            }
            last = Some(set.clusters.keys().cloned().collect::<Vec<_>>());
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), s.changed()).await;
    }
    panic!("timed out waiting for {what}; last clusters: {last:?}");
}

#[tokio::test]
async fn clusters_from_kubeconfigs_count_once_their_api_server_listed() {
    let fleet = tempfile::tempdir().unwrap();
    for (i, o) in gateway("c1,c2").iter().enumerate() {
        std::fs::write(fleet.path().join(format!("{i}.yaml")), serde_json::to_string(o).unwrap()).unwrap();
    }
    let c1 = FakeApi::serving(&[slice("shop-c1", "10.1.0.5")]);
    // c2's API server never answers its list: it is not connected.
    let c2 = FakeApi::serving(&[]);
    c2.hang("/endpointslices");
    let dir = tempfile::tempdir().unwrap();
    let specs = [kubeconfig(dir.path(), "c1", c1.listen().await), kubeconfig(dir.path(), "c2", c2.listen().await)];
    let main = Source::start(&SourceOptions::Dir(fleet.path().into())).await.unwrap();
    let mut s = WithClusters::start(main, &specs).await.unwrap();

    let set = poll_until(&mut s, "c1's EndpointSlices", |set| set.clusters.contains_key("c1")).await;
    assert!(!set.clusters.contains_key("c2"), "c2 never listed: not connected");
    let addresses: Vec<_> =
        set.clusters["c1"].iter().flat_map(|s| s.endpoints.iter()).flat_map(|e| &e.addresses).collect();
    assert_eq!(addresses, ["10.1.0.5"]);
    assert!(!c1.requests_to(Method::GET, "/apis/discovery.k8s.io/v1/endpointslices").is_empty());
    assert!(!c2.requests_to(Method::GET, "/apis/discovery.k8s.io/v1/endpointslices").is_empty(), "c2 was asked");

    let build = model::build(&set, &BuildOptions::default());
    assert_eq!(build.model.sub_clusters["alb"], ["c1"]);
    let not_connected = |n: &&model::Notice| n.note.contains("associated cluster c2 is not connected");
    assert!(build.notices.iter().any(|n| not_connected(&n)), "{:#?}", build.notices);

    // A change in c1 reaches the object set through the watch.
    c1.push(
        "/apis/discovery.k8s.io/v1/endpointslices",
        &json!({"type": "ADDED", "object": fake_api::stored(&slice("shop-c1b", "10.1.0.6"), 7)}).to_string(),
    )
    .await;
    let set = poll_until(&mut s, "c1's second slice", |set| set.clusters.get("c1").is_some_and(|c| c.len() == 2)).await;
    assert_eq!(set.clusters.len(), 1);

    // A burst of changes (20 within ~400 ms: pods rolling in c1) makes a few object sets, not
    // one per change (each is a full build and apply).
    let burst = async {
        for i in 0..20u8 {
            let slice = fake_api::stored(&slice("shop-c1b", &format!("10.1.1.{i}")), 8 + usize::from(i));
            c1.push(
                "/apis/discovery.k8s.io/v1/endpointslices",
                &json!({"type": "MODIFIED", "object": slice}).to_string(),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let sets = async {
        let (mut sets, mut last) = (0, String::new());
        while last != "10.1.1.19" {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.changed()).await;
            if let Some(set) = s.poll().unwrap() {
                sets += 1;
                let b = set.clusters["c1"].iter().find(|s| s.metadata.name.as_deref() == Some("shop-c1b"));
                last = b.map(|b| b.endpoints[0].addresses[0].to_string()).unwrap_or_default();
            }
        }
        sets
    };
    let (sets, ()) = tokio::time::timeout(Duration::from_secs(20), futures::future::join(sets, burst)).await.unwrap();
    assert!(sets <= 5, "{sets} object sets for one burst of 20 changes");
}

#[tokio::test]
async fn the_albconfig_status_lists_the_connected_sub_clusters() {
    let fake = FakeApi::serving(&gateway("c1,c2,c3"));
    let opts = KubeOptions {
        write_status: true,
        node_name: Some("node-a".into()),
        debounce: Duration::from_millis(50),
        sync_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let mut src = KubeSource::new(fake.client(), opts);
    tokio::time::timeout(Duration::from_secs(10), src.changed()).await.expect("no snapshot within 10 s");
    let mut set = src.poll().expect("a snapshot");
    // c3 is not connected; c9 is connected but not associated.
    for id in ["c2", "c1", "c9"] {
        set.clusters.insert(id.into(), Vec::new());
    }
    let build = model::build(&set, &BuildOptions { node_name: Some("node-a".into()), ..Default::default() });
    src.report(&build.errors, &[], &build.model);
    let path = "/apis/alibabacloud.com/v1/albconfigs/alb/status";
    for _ in 0..1000 {
        if !fake.requests_to(Method::PATCH, path).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let patches = fake.requests_to(Method::PATCH, path);
    assert_eq!(patches.len(), 1, "{:#?}", fake.requests());
    assert_eq!(patches[0].body.as_ref().unwrap(), &json!({"status": {"loadBalancer": {"subClusters": ["c1", "c2"]}}}));
}
