//! The Kubernetes API source against recorded API-server responses (there is no API server
//! on the test machines): list fixtures, streamed watch events, and assertions on the
//! requests the source sent (status patches, Events).
mod fake_api;

use std::time::Duration;

use fake_api::{FakeApi, fixture};
use http::Method;
use lb_userspace::{
    kube::{KubeOptions, KubeSource, leader::LeaseOptions},
    manifests::ObjectSet,
    model::{self, BuildOptions},
};
use serde_json::json;

const SERVICES: &str = "/api/v1/services";

fn opts(write_status: bool) -> KubeOptions {
    KubeOptions {
        write_status,
        node_name: Some("node-a".into()),
        debounce: Duration::from_millis(50),
        sync_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// The next snapshot (at most 10 s away).
async fn next(src: &mut KubeSource) -> ObjectSet {
    tokio::time::timeout(Duration::from_secs(10), src.changed()).await.expect("no snapshot within 10 s");
    src.poll().expect("changed() resolved but poll() had nothing")
}

/// Let in-flight work (watch events, the reporter) finish, then drop any snapshot it made.
async fn settle(src: &mut KubeSource) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = src.poll();
}

fn names<T>(
    items: &[T],
    meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<String> {
    let mut v: Vec<String> = items
        .iter()
        .map(|o| {
            let m = meta(o);
            format!("{}/{}", m.namespace.as_deref().unwrap_or(""), m.name.as_deref().unwrap_or(""))
        })
        .collect();
    v.sort();
    v
}

/// Build like the agent, then report like the agent.
fn build_and_report(src: &mut KubeSource, set: &ObjectSet) -> model::Build {
    let build = model::build(set, &BuildOptions { node_name: Some("node-a".into()), ..Default::default() });
    src.report(&build.errors, &[], &build.model);
    build
}

/// Wait until `f` holds for the fake's requests (at most 10 s).
async fn wait_for(fake: &FakeApi, what: &str, f: impl Fn(&FakeApi) -> bool) {
    for _ in 0..1000 {
        if f(fake) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}; requests: {:#?}", fake.requests());
}

#[tokio::test]
async fn snapshot_holds_our_objects_only() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), opts(false));
    let set = next(&mut src).await;

    // Class filter: ours (web, and bad, which the model rejects); not the foreign class, not
    // the classless one (no --default-class), not the ClusterIP one.
    assert_eq!(names(&set.services, |s| &s.metadata), ["default/web", "shop/bad"]);
    // Only our Services' slices.
    assert_eq!(names(&set.endpoint_slices, |s| &s.metadata), ["default/web-7xk2p"]);
    assert_eq!(names(&set.ingresses, |s| &s.metadata), ["demo/other", "demo/shop"]);
    assert_eq!(names(&set.ingress_classes, |s| &s.metadata), ["/alb", "/nginx"]);
    assert_eq!(names(&set.secrets, |s| &s.metadata), ["demo/shop-tls"]);
    assert_eq!(set.alb_configs.len(), 1);
    assert_eq!(set.alb_configs[0]["spec"]["listeners"][0]["port"], 80);
    assert_eq!(names(&set.acls, |s| &s.metadata), ["/office"]);
    assert_eq!(set.acls[0].spec.entries[0].cidr, "203.0.113.0/24");
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    // managedFields are stripped from the cache.
    assert!(set.services[0].metadata.managed_fields.as_ref().is_none_or(|m| m.is_empty()));

    // Secrets are requested with the TLS field selector only (list and watch).
    let secrets = fake.requests_to(Method::GET, "/api/v1/secrets");
    assert!(!secrets.is_empty());
    for r in &secrets {
        assert!(r.query.contains("fieldSelector=type%3Dkubernetes.io%2Ftls"), "unfiltered Secrets request: {r:?}");
    }
    // Nothing is written without --write-status.
    assert!(fake.requests().iter().all(|r| r.method == Method::GET), "{:#?}", fake.requests());

    // The model sees what a manifest directory with the same objects would give.
    let build = model::build(&set, &BuildOptions::default());
    assert_eq!(build.model.listeners.keys().collect::<Vec<_>>(), ["192.0.2.10:80/tcp"]);
    let web = &build.model.listeners["192.0.2.10:80/tcp"];
    assert_eq!(web.backends.len(), 2);
    assert!(build.model.ingresses.contains_key("demo/shop"), "{:?}", build.errors);
    assert_eq!(build.errors.len(), 1, "{:?}", build.errors);
    assert_eq!(build.errors[0].object.name, "bad");
}

#[tokio::test]
async fn default_class_takes_classless_services() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), KubeOptions { default_class: true, ..opts(false) });
    let set = next(&mut src).await;
    assert_eq!(names(&set.services, |s| &s.metadata), ["default/classless", "default/web", "shop/bad"]);
}

#[tokio::test]
async fn watch_events_change_the_next_snapshot() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), opts(false));
    let first = next(&mut src).await;
    assert_eq!(
        first
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("web"))
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .load_balancer_ip
            .as_deref(),
        Some("192.0.2.10")
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(src.poll().is_none(), "no change, no snapshot (the initial lists make one)");

    // MODIFIED: web moves to another VIP; foreign switches to our class.
    fake.push(SERVICES, &fixture("watch/services-modified.jsonl")).await;
    let set = next(&mut src).await;
    assert_eq!(names(&set.services, |s| &s.metadata), ["default/foreign", "default/web", "shop/bad"]);
    let web = set.services.iter().find(|s| s.metadata.name.as_deref() == Some("web")).unwrap();
    assert_eq!(web.spec.as_ref().unwrap().load_balancer_ip.as_deref(), Some("192.0.2.30"));
    // Its slices follow it into the snapshot.
    assert_eq!(names(&set.endpoint_slices, |s| &s.metadata), ["default/foreign-9qz4m", "default/web-7xk2p"]);
    let build = model::build(&set, &BuildOptions::default());
    assert!(
        build.model.listeners.contains_key("192.0.2.30:80/tcp"),
        "{:?}",
        build.model.listeners.keys().collect::<Vec<_>>()
    );
    assert!(!build.model.listeners.contains_key("192.0.2.10:80/tcp"));

    // DELETED: web is gone, and its slice with it.
    settle(&mut src).await;
    fake.push(SERVICES, &fixture("watch/services-deleted.jsonl")).await;
    let set = next(&mut src).await;
    assert_eq!(names(&set.services, |s| &s.metadata), ["default/foreign", "shop/bad"]);
    assert_eq!(names(&set.endpoint_slices, |s| &s.metadata), ["default/foreign-9qz4m"]);
}

#[tokio::test]
async fn a_failing_list_is_retried() {
    let fake = FakeApi::new();
    fake.fail_lists(SERVICES, 2);
    let mut src = KubeSource::new(fake.client(), opts(false));
    let set = next(&mut src).await;
    assert_eq!(names(&set.services, |s| &s.metadata), ["default/web", "shop/bad"]);
    let lists = fake.requests_to(Method::GET, SERVICES).into_iter().filter(|r| !r.is_watch()).count();
    assert_eq!(lists, 3, "two failures, then the list that worked");
}

/// Services and EndpointSlices that have not listed by `sync_timeout` hold up the first
/// snapshot until they do (a snapshot without them, applied, would take every VIP of the
/// node down while the API server is away); other kinds do not.
#[tokio::test]
async fn the_first_snapshot_waits_for_services_and_endpoint_slices() {
    let fake = FakeApi::new();
    fake.fail_lists("/apis/discovery.k8s.io/v1/endpointslices", 2);
    let mut src =
        KubeSource::new(fake.client(), KubeOptions { sync_timeout: Duration::from_millis(100), ..opts(false) });
    let set = next(&mut src).await;
    assert_eq!(names(&set.services, |s| &s.metadata), ["default/web", "shop/bad"]);
    assert!(!set.endpoint_slices.is_empty(), "the first snapshot has the endpoints");
}

/// AccessControlLists whose lists keep failing past the sync timeout are "not listed yet"
/// (every last good list stays in force); listed, or their CRD not installed (404), they
/// are what the API server has.
#[tokio::test]
async fn acls_that_do_not_list_are_told_apart_from_none() {
    const ACLS: &str = "/apis/lb.dev/v1alpha1/accesscontrollists";
    let quick = || KubeOptions { sync_timeout: Duration::from_millis(100), ..opts(false) };
    let failing = FakeApi::new();
    failing.fail_lists(ACLS, 1000);
    let set = next(&mut KubeSource::new(failing.client(), quick())).await;
    assert!(set.acls_unlisted && set.acls.is_empty());
    let listed = FakeApi::new();
    let set = next(&mut KubeSource::new(listed.client(), quick())).await;
    assert!(!set.acls_unlisted && !set.acls.is_empty(), "{:?}", set.acls);
    let absent = FakeApi::new();
    absent.remove_route(ACLS);
    let set = next(&mut KubeSource::new(absent.client(), quick())).await;
    assert!(!set.acls_unlisted && set.acls.is_empty());
}

#[tokio::test]
async fn an_invalid_annotation_is_one_event() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), opts(true));
    let set = next(&mut src).await;
    let build = build_and_report(&mut src, &set);
    assert_eq!(build.errors.len(), 1);
    wait_for(&fake, "the Event", |f| !f.requests_to(Method::POST, "/events").is_empty()).await;

    // Same errors in the next cycles: no new Event.
    build_and_report(&mut src, &set);
    settle(&mut src).await;
    fake.push(SERVICES, &fixture("watch/services-label.jsonl")).await;
    let set = next(&mut src).await;
    build_and_report(&mut src, &set);
    settle(&mut src).await;

    let events = fake.requests_to(Method::POST, "/events");
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(e.path, "/apis/events.k8s.io/v1/namespaces/shop/events");
    let body = e.body.as_ref().unwrap();
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "InvalidAnnotation");
    assert_eq!(body["regarding"]["kind"], "Service");
    assert_eq!(body["regarding"]["namespace"], "shop");
    assert_eq!(body["regarding"]["name"], "bad");
    assert_eq!(body["regarding"]["uid"], "1f0c6a52-0d55-4c1e-9a55-000000000002");
    assert_eq!(body["reportingController"], "lb.dev/lb");
    assert_eq!(body["reportingInstance"], "node-a");
    let note = body["note"].as_str().unwrap();
    assert!(note.starts_with("service.beta.kubernetes.io/alibaba-cloud-loadbalancer-persistence-timeout: "), "{note}");
    assert!(note.contains("4000") && note.contains("3600"), "{note}");
}

/// Issue #17, item 5: a Service whose VIP lies outside every --vip-pool is rejected at run
/// time with a Warning Event that says why (the same build and report the agent runs).
#[tokio::test]
async fn a_vip_outside_the_pools_is_an_event() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), opts(true));
    let set = next(&mut src).await;
    let addresses =
        model::addresses::AddressPolicy { vip_pools: vec!["198.51.100.0/24".parse().unwrap()], ..Default::default() };
    let build = model::build(&set, &BuildOptions { node_name: Some("node-a".into()), addresses });
    src.report(&build.errors, &[], &build.model);
    assert!(build.model.listeners.is_empty(), "{:?}", build.model.listeners);
    wait_for(&fake, "the web Service's Event", |f| {
        f.requests_to(Method::POST, "/events")
            .iter()
            .any(|e| e.body.as_ref().is_some_and(|b| b["regarding"]["name"] == "web"))
    })
    .await;
    let events = fake.requests_to(Method::POST, "/events");
    let web = events.iter().find_map(|e| e.body.as_ref().filter(|b| b["regarding"]["name"] == "web")).unwrap();
    assert_eq!(web["type"], "Warning");
    assert_eq!(web["reason"], "VipNotAllowed");
    assert_eq!(web["regarding"]["namespace"], "default");
    assert_eq!(web["note"], "spec.loadBalancerIP: 192.0.2.10 is outside every --vip-pool (198.51.100.0/24)");
}

#[tokio::test]
async fn status_is_patched_once_and_not_repeated() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), opts(true));
    let set = next(&mut src).await;
    build_and_report(&mut src, &set);
    let svc_status = "/api/v1/namespaces/default/services/web/status";
    let ing_status = "/apis/networking.k8s.io/v1/namespaces/demo/ingresses/shop/status";
    wait_for(&fake, "both status patches", |f| {
        !f.requests_to(Method::PATCH, svc_status).is_empty() && !f.requests_to(Method::PATCH, ing_status).is_empty()
    })
    .await;

    // Another build before the watch shows the write: not written again.
    build_and_report(&mut src, &set);
    settle(&mut src).await;
    // The echo of the write: status equals what lb wants, nothing to write.
    fake.push(SERVICES, &fixture("watch/services-status-echo.jsonl")).await;
    let set = next(&mut src).await;
    build_and_report(&mut src, &set);
    settle(&mut src).await;
    // A later, unrelated change (a label): still nothing to write.
    fake.push(SERVICES, &fixture("watch/services-label.jsonl")).await;
    let set = next(&mut src).await;
    build_and_report(&mut src, &set);
    settle(&mut src).await;

    let patches = fake.requests_to(Method::PATCH, "/status");
    assert_eq!(patches.len(), 2, "{patches:#?}");
    let svc = fake.requests_to(Method::PATCH, svc_status);
    assert_eq!(svc.len(), 1);
    assert_eq!(svc[0].content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(
        svc[0].body,
        Some(json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "Proxy"}]}}}))
    );
    assert!(svc[0].query.contains("fieldManager=lb"), "{}", svc[0].query);
    // The Ingress gets the node's ExternalIP.
    let ing = fake.requests_to(Method::PATCH, ing_status);
    assert_eq!(ing[0].body, Some(json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}})));
    // The rejected Service gets no status; the Node was read once.
    assert!(fake.requests_to(Method::PATCH, "/services/bad/status").is_empty());
    assert_eq!(fake.requests_to(Method::GET, "/api/v1/nodes/node-a").len(), 1);
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/lb-system/leases/lb-status-writer";

fn leader_opts() -> KubeOptions {
    let mut lease = LeaseOptions::new("lb-system".into(), "node-a".into());
    lease.duration = Duration::from_secs(2);
    lease.retry = Duration::from_millis(100);
    KubeOptions { leader_election: Some(lease), ..opts(true) }
}

#[tokio::test]
async fn the_lease_holder_writes_and_the_others_wait() {
    let fake = FakeApi::new();
    // node-b holds the Lease and renewed it just now.
    let held = |renewed: k8s_openapi::jiff::Timestamp| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "lb-status-writer", "namespace": "lb-system"},
            "spec": {"holderIdentity": "node-b", "leaseDurationSeconds": 2, "renewTime": renewed.to_string(), "leaseTransitions": 3},
        })
    };
    fake.put_object(LEASE, held(k8s_openapi::jiff::Timestamp::now()));
    let mut src = KubeSource::new(fake.client(), leader_opts());
    let set = next(&mut src).await;
    build_and_report(&mut src, &set);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(fake.requests_to(Method::GET, LEASE).len() >= 2, "node-a keeps checking the Lease");
    assert!(fake.requests_to(Method::PATCH, "/status").is_empty(), "not the holder: no status");
    assert!(fake.requests_to(Method::POST, "/events").is_empty(), "not the holder: no Events");

    // node-b stops renewing: after 2 s node-a takes over and writes the latest report.
    wait_for(&fake, "the takeover", |f| f.object(LEASE).is_some_and(|l| l["spec"]["holderIdentity"] == "node-a")).await;
    let lease = fake.object(LEASE).unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 4);
    wait_for(&fake, "status and Event from the new holder", |f| {
        f.requests_to(Method::PATCH, "/services/web/status").len() == 1
            && f.requests_to(Method::POST, "/events").len() == 1
    })
    .await;
    // It renews.
    let renewed = lease["spec"]["renewTime"].clone();
    wait_for(&fake, "a renewal", |f| f.object(LEASE).is_some_and(|l| l["spec"]["renewTime"] != renewed)).await;
}

#[tokio::test]
async fn a_missing_lease_is_created() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), leader_opts());
    let set = next(&mut src).await;
    build_and_report(&mut src, &set);
    wait_for(&fake, "the status patch", |f| !f.requests_to(Method::PATCH, "/services/web/status").is_empty()).await;
    let created = fake.requests_to(Method::POST, "/namespaces/lb-system/leases");
    assert_eq!(created.len(), 1, "{created:#?}");
    let lease = fake.object(LEASE).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "node-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2);
}

#[tokio::test]
async fn a_custom_object_that_does_not_decode_is_an_error_and_an_event() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), opts(true));
    let set = next(&mut src).await;
    build_and_report(&mut src, &set);
    settle(&mut src).await;
    // An ACL with a field the CRD's schema would refuse too (`spec.mode`).
    fake.push("/apis/lb.dev/v1alpha1/accesscontrollists", &fixture("watch/acl-added-invalid.jsonl")).await;
    let set = next(&mut src).await;
    assert_eq!(names(&set.acls, |s| &s.metadata), ["/office"], "the bad one is left out");
    assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
    assert!(set.errors[0].to_string().contains("AccessControlList lab"), "{}", set.errors[0]);
    build_and_report(&mut src, &set);
    wait_for(&fake, "the ACL's Event", |f| {
        f.requests_to(Method::POST, "/events")
            .iter()
            .any(|r| r.body.as_ref().is_some_and(|b| b["regarding"]["name"] == "lab"))
    })
    .await;
    let event = fake
        .requests_to(Method::POST, "/events")
        .into_iter()
        .find(|r| r.body.as_ref().is_some_and(|b| b["regarding"]["name"] == "lab"))
        .unwrap();
    // Cluster-scoped: the Event goes to `default`.
    assert_eq!(event.path, "/apis/events.k8s.io/v1/namespaces/default/events");
    let body = event.body.unwrap();
    assert_eq!(body["regarding"]["apiVersion"], "lb.dev/v1alpha1");
    assert_eq!(body["regarding"]["kind"], "AccessControlList");
    assert_eq!(body["regarding"]["uid"], "4f0c6a52-0d55-4c1e-9a55-000000000001");
    assert_eq!(body["reason"], "InvalidSpec");
    assert!(body["note"].as_str().unwrap().contains("mode"), "{}", body["note"]);
}

/// The real client stack (kubeconfig, rustls with ring, hyper) builds, and an unreachable
/// API server means no snapshot and no panic: the watchers keep retrying.
#[tokio::test]
async fn an_unreachable_api_server_yields_nothing() {
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:9", "insecure-skip-tls-verify": true}}],
        "users": [{"name": "test", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }))
    .unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
    let client = kube::Client::try_from(config).expect("the rustls client builds");
    let mut src = KubeSource::new(client, KubeOptions { sync_timeout: Duration::from_secs(60), ..opts(false) });
    let waited = tokio::time::timeout(Duration::from_millis(1500), src.changed()).await;
    assert!(waited.is_err(), "a snapshot without any list");
    assert!(src.poll().is_none());
}

#[tokio::test]
async fn a_crd_that_is_not_installed_does_not_hold_up_the_first_snapshot() {
    let fake = FakeApi::new();
    fake.remove_route("/apis/alibabacloud.com/v1/albconfigs");
    let mut src = KubeSource::new(fake.client(), KubeOptions { sync_timeout: Duration::from_secs(60), ..opts(false) });
    let started = std::time::Instant::now();
    let set = next(&mut src).await;
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
    assert!(set.alb_configs.is_empty());
    assert_eq!(names(&set.services, |s| &s.metadata), ["default/web", "shop/bad"]);
}

/// Issue #18, item 5: the cluster's Nodes are listed and watched (CLB `backend-type: ecs`
/// backends): a cordon reaches the next snapshot.
#[tokio::test]
async fn nodes_are_listed_and_watched() {
    let fake = FakeApi::new();
    let mut src = KubeSource::new(fake.client(), opts(false));
    let set = next(&mut src).await;
    assert_eq!(names(&set.nodes, |n| &n.metadata), ["/node-a"]);
    assert_eq!(set.nodes[0].spec.as_ref().and_then(|s| s.unschedulable), None);
    settle(&mut src).await;
    let mut node: serde_json::Value = serde_json::from_str(&fixture("node-a.json")).unwrap();
    node["metadata"]["resourceVersion"] = json!("1001");
    node["spec"]["unschedulable"] = json!(true);
    node["status"]["conditions"] = json!([
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-12-03T11:00:00Z", "reason": "KubeletReady"},
        {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "2026-12-03T11:00:00Z"},
    ]);
    fake.push("/api/v1/nodes", &format!("{}\n", json!({"type": "MODIFIED", "object": node}))).await;
    let set = next(&mut src).await;
    assert_eq!(set.nodes[0].spec.as_ref().and_then(|s| s.unschedulable), Some(true), "cordoned");
    // A kubelet status report (new heartbeat times, images, resourceVersion) leaves the Node
    // as the model reads it unchanged: the model's caches, cleared by a changed Node list,
    // are kept.
    settle(&mut src).await;
    node["metadata"]["resourceVersion"] = json!("1002");
    node["status"]["images"] = json!([{"names": ["registry.example/app:v2"], "sizeBytes": 1000}]);
    for c in node["status"]["conditions"].as_array_mut().unwrap() {
        c["lastHeartbeatTime"] = json!("2026-12-03T12:00:00Z");
    }
    fake.push("/api/v1/nodes", &format!("{}\n", json!({"type": "MODIFIED", "object": node}))).await;
    let after = next(&mut src).await;
    assert_eq!(after.nodes, set.nodes, "a heartbeat changed the cached Node");
    let ready = after.nodes[0].status.as_ref().and_then(|s| s.conditions.as_ref()).unwrap();
    assert_eq!((ready.len(), ready[0].type_.as_str()), (1, "Ready"), "{ready:?}");
}
