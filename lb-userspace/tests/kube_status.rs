//! Issue #17, item 6, against the fake API server: what the status writer writes
//! (`ipMode: Proxy`, the CLB `hostname`, Ingress status from `--publish-service` /
//! `--publish-status-address`), the Lease released on shutdown and judged by this pod's
//! own clock, and the Secrets listed only where `--secret-namespace` /
//! `--secret-label-selector` say.
mod fake_api;

use std::time::Duration;

use fake_api::{FakeApi, documents, examples_dir, stored};
use http::Method;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use lb_userspace::{
    kube::{KubeOptions, KubeSource, SecretScope, leader::LeaseOptions},
    manifests::ObjectSet,
    model::{self, BuildOptions},
};
use serde_json::{Value, json};

fn opts() -> KubeOptions {
    KubeOptions {
        write_status: true,
        default_class: true,
        node_name: Some("node-a".into()),
        debounce: Duration::from_millis(50),
        sync_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

async fn next(src: &mut KubeSource) -> ObjectSet {
    tokio::time::timeout(Duration::from_secs(10), src.changed()).await.expect("no snapshot within 10 s");
    src.poll().expect("changed() resolved but poll() had nothing")
}

async fn build_and_report(src: &mut KubeSource) -> model::Build {
    let set = next(src).await;
    let build = model::build(&set, &BuildOptions { node_name: Some("node-a".into()), ..Default::default() });
    src.report(&build.errors, &[], &build.model);
    build
}

async fn wait_for(fake: &FakeApi, what: &str, f: impl Fn(&FakeApi) -> bool) {
    for _ in 0..1000 {
        if f(fake) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}; requests: {:#?}", fake.requests());
}

fn example(name: &str) -> Vec<Value> {
    documents(&examples_dir().join(name))
}

/// The body of the one status patch of `path`.
fn patched(fake: &FakeApi, path: &str) -> Value {
    let patches = fake.requests_to(Method::PATCH, path);
    assert_eq!(patches.len(), 1, "{patches:#?}");
    patches[0].body.clone().unwrap()["status"]["loadBalancer"]["ingress"].clone()
}

#[tokio::test]
async fn services_get_ip_mode_proxy_or_their_hostname() {
    let mut objects = example("l4-basic");
    let mut clb = example("l7-clb-http");
    clb[0]["metadata"]["annotations"]["service.beta.kubernetes.io/alibaba-cloud-loadbalancer-hostname"] =
        json!("shop.example.com");
    // The same Service with the VIP an IPAM (MetalLB) wrote to its status.
    let mut assigned = clb.clone();
    assigned[0]["metadata"]["name"] = json!("assigned");
    assigned[0]["spec"].as_object_mut().unwrap().remove("loadBalancerIP");
    assigned[0]["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.18.100.30"}]}});
    assigned[1]["metadata"]["name"] = json!("assigned-abc12");
    assigned[1]["metadata"]["labels"]["kubernetes.io/service-name"] = json!("assigned");
    objects.extend(clb);
    objects.extend(assigned);
    let fake = FakeApi::serving(&objects);
    let mut src = KubeSource::new(fake.client(), opts());
    let build = build_and_report(&mut src).await;
    assert!(build.errors.is_empty(), "{:?}", build.errors);
    let echo = "/api/v1/namespaces/demo/services/echo/status";
    let shop = "/api/v1/namespaces/demo/services/shop/status";
    wait_for(&fake, "both Services' status", |f| {
        !f.requests_to(Method::PATCH, echo).is_empty() && !f.requests_to(Method::PATCH, shop).is_empty()
    })
    .await;
    assert_eq!(patched(&fake, echo), json!([{"ip": "198.18.100.10", "ipMode": "Proxy"}]));
    // The hostname replaces the VIP (as the cloud controller does); ipMode needs an ip.
    assert_eq!(patched(&fake, shop), json!([{"hostname": "shop.example.com"}]));
    // A VIP an IPAM wrote to the status: that status is the IPAM's, left as it is (MetalLB
    // rewrites it to [{ip}] whenever it differs: adding ipMode or the name looped). It is
    // written in the same pass as the two above, before them (by name).
    let assigned = "/api/v1/namespaces/demo/services/assigned/status";
    assert!(fake.requests_to(Method::PATCH, assigned).is_empty(), "{:?}", fake.requests_to(Method::PATCH, assigned));
}

/// A status write the API server fails (a 500 while etcd is busy) is made again after a
/// backoff, with no other change of the cluster (it waited for some object to change).
#[tokio::test]
async fn a_failed_status_write_is_retried() {
    let fake = FakeApi::serving(&example("l4-basic"));
    let echo = "/api/v1/namespaces/demo/services/echo/status";
    fake.fail_lists(echo, 1);
    let mut src = KubeSource::new(fake.client(), opts());
    let build = build_and_report(&mut src).await;
    assert!(build.errors.is_empty(), "{:?}", build.errors);
    wait_for(&fake, "the write made again", |f| f.requests_to(Method::PATCH, echo).len() >= 2).await;
    let patches = fake.requests_to(Method::PATCH, echo);
    let last = patches.last().unwrap().body.clone().unwrap()["status"]["loadBalancer"]["ingress"].clone();
    assert_eq!(last, json!([{"ip": "198.18.100.10", "ipMode": "Proxy"}]));
    // Written once it went through: not again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.requests_to(Method::PATCH, echo).len(), 2);
}

/// An ALB Ingress's status with the given flags.
async fn ingress_status(opts: KubeOptions) -> Value {
    let mut objects = example("l7-alb");
    objects.push(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "front", "namespace": "lb-system"},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "other.io/lb", "externalIPs": ["203.0.113.9"],
                 "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7", "ipMode": "VIP"}, {"hostname": "edge.example.com"}]}},
    }));
    let fake = FakeApi::serving(&objects);
    let mut src = KubeSource::new(fake.client(), opts);
    let build = build_and_report(&mut src).await;
    assert!(build.model.ingresses.contains_key("demo/shop"), "{:?}", build.errors);
    let path = "/apis/networking.k8s.io/v1/namespaces/demo/ingresses/shop/status";
    wait_for(&fake, "the Ingress status", |f| !f.requests_to(Method::PATCH, path).is_empty()).await;
    assert!(fake.requests_to(Method::PATCH, "/services/front/status").is_empty(), "not ours: no status");
    assert!(fake.requests_to(Method::GET, "/nodes/node-a").is_empty(), "the Node is not read");
    patched(&fake, path)
}

#[tokio::test]
async fn ingress_status_from_the_publish_service() {
    let status =
        ingress_status(KubeOptions { publish_service: Some(("lb-system".into(), "front".into())), ..opts() }).await;
    assert_eq!(status, json!([{"hostname": "edge.example.com"}, {"ip": "198.51.100.7"}, {"ip": "203.0.113.9"}]));
}

#[tokio::test]
async fn publish_status_address_comes_first() {
    let status = ingress_status(KubeOptions {
        publish_service: Some(("lb-system".into(), "front".into())),
        publish_status_addresses: vec!["192.0.2.80".into(), "lb.example.com".into()],
        ..opts()
    })
    .await;
    assert_eq!(status, json!([{"hostname": "lb.example.com"}, {"ip": "192.0.2.80"}]));
}

#[tokio::test]
async fn secrets_only_where_the_flags_say() {
    let secret = |ns: &str, name: &str, labelled: bool| {
        json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": ns, "labels": if labelled { json!({"lb.dev/tls": "true"}) } else { json!({}) }},
            "data": {"tls.crt": "", "tls.key": ""},
        })
    };
    let objects =
        [secret("demo", "a", true), secret("demo", "b", false), secret("shop", "c", true), secret("other", "d", true)];
    let fake = FakeApi::serving(&objects);
    let scope =
        SecretScope { namespaces: vec!["demo".into(), "shop".into()], label_selector: Some("lb.dev/tls=true".into()) };
    let mut src = KubeSource::new(fake.client(), KubeOptions { secrets: scope, write_status: false, ..opts() });
    let set = next(&mut src).await;
    let names: Vec<_> = set.secrets.iter().map(|s| s.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["a", "c"]);
    let requests: Vec<_> = fake.requests().into_iter().filter(|r| r.path.ends_with("/secrets")).collect();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            r.path == "/api/v1/namespaces/demo/secrets" || r.path == "/api/v1/namespaces/shop/secrets",
            "Secrets requested outside the namespaces: {r:?}"
        );
        assert!(r.query.contains("labelSelector=lb.dev%2Ftls%3Dtrue"), "{r:?}");
        assert!(r.query.contains("fieldSelector=type%3Dkubernetes.io%2Ftls"), "{r:?}");
    }
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/lb-system/leases/lb-status-writer";

fn leader_opts() -> KubeOptions {
    let mut lease = LeaseOptions::new("lb-system".into(), "node-a".into());
    lease.duration = Duration::from_secs(2);
    lease.retry = Duration::from_millis(100);
    KubeOptions { leader_election: Some(lease), ..opts() }
}

fn held_by_b(renewed: Timestamp) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "lb-status-writer", "namespace": "lb-system"},
        "spec": {"holderIdentity": "node-b", "leaseDurationSeconds": 2, "renewTime": renewed.to_string(), "leaseTransitions": 3},
    })
}

#[tokio::test]
async fn the_lease_is_released_on_shutdown() {
    let fake = FakeApi::serving(&example("l4-basic"));
    let mut src = KubeSource::new(fake.client(), leader_opts());
    build_and_report(&mut src).await;
    wait_for(&fake, "the status patch", |f| !f.requests_to(Method::PATCH, "/status").is_empty()).await;
    let held = fake.object(LEASE).unwrap();
    assert_eq!(held["spec"]["holderIdentity"], "node-a");

    src.shutdown().await;
    let lease = fake.object(LEASE).unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease:#}");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(lease["spec"]["leaseTransitions"], held["spec"]["leaseTransitions"]);
    // Nothing is written any more, and the Lease is not taken again.
    let writes = fake.requests().iter().filter(|r| r.method != Method::GET).count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = fake.requests();
    assert_eq!(after.iter().filter(|r| r.method != Method::GET).count(), writes, "{after:#?}");
    assert!(fake.object(LEASE).unwrap()["spec"]["holderIdentity"].is_null());
}

/// node-b's clock is an hour behind: its renewTime is always an hour old by node-a's clock,
/// but it keeps renewing, so node-a never takes over.
#[tokio::test]
async fn a_holder_whose_clock_is_behind_keeps_the_lease_while_it_renews() {
    let fake = FakeApi::serving(&example("l4-basic"));
    let skew = SignedDuration::from_hours(1);
    fake.put_object(LEASE, held_by_b(Timestamp::now() - skew));
    let mut src = KubeSource::new(fake.client(), leader_opts());
    build_and_report(&mut src).await;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.object(LEASE).unwrap()["spec"]["holderIdentity"], "node-b", "taken over while renewed");
        fake.put_object(LEASE, held_by_b(Timestamp::now() - skew));
    }
    assert!(fake.requests_to(Method::PATCH, "/status").is_empty(), "not the holder: no status");
}

/// node-b's clock is an hour ahead and it stopped renewing: node-a takes over once the Lease
/// has not changed for its duration by node-a's clock, not an hour later.
#[tokio::test]
async fn a_holder_whose_clock_is_ahead_is_taken_over_after_the_duration() {
    let fake = FakeApi::serving(&example("l4-basic"));
    fake.put_object(LEASE, held_by_b(Timestamp::now() + SignedDuration::from_hours(1)));
    let mut src = KubeSource::new(fake.client(), leader_opts());
    let started = std::time::Instant::now();
    build_and_report(&mut src).await;
    wait_for(&fake, "the takeover", |f| f.object(LEASE).is_some_and(|l| l["spec"]["holderIdentity"] == "node-a")).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(2), "took over after {waited:?}, before the Lease's duration");
    assert_eq!(fake.object(LEASE).unwrap()["spec"]["leaseTransitions"], 4);
}

/// A holder whose Lease requests stop being answered stops writing at its renew deadline
/// (2/3 of the duration), before another pod may take over.
#[tokio::test]
async fn a_holder_that_cannot_renew_stops_writing_at_the_deadline() {
    let objects = example("l4-basic");
    let fake = FakeApi::serving(&objects);
    let mut src = KubeSource::new(fake.client(), leader_opts());
    build_and_report(&mut src).await;
    let echo = "/api/v1/namespaces/demo/services/echo/status";
    wait_for(&fake, "the status patch", |f| !f.requests_to(Method::PATCH, echo).is_empty()).await;

    fake.hang(LEASE);
    // Past the renew deadline (1.33 s of the 2 s Lease).
    tokio::time::sleep(Duration::from_millis(2000)).await;
    no_status_written_for_a_moved_vip(&fake, &objects, &mut src, Duration::from_millis(500)).await;
}

/// The echo Service's VIP moves (a change that needs a new status): its status is not
/// written again within `wait` (only the first patch, from before, is there).
async fn no_status_written_for_a_moved_vip(fake: &FakeApi, objects: &[Value], src: &mut KubeSource, wait: Duration) {
    let svc = objects.iter().find(|o| o["kind"] == "Service").unwrap();
    let mut moved = stored(svc, 0);
    moved["spec"]["loadBalancerIP"] = json!("198.18.100.77");
    moved["metadata"]["resourceVersion"] = json!("200");
    let event = json!({"type": "MODIFIED", "object": moved}).to_string();
    fake.push("/api/v1/services", &event).await;
    let build = build_and_report(src).await;
    assert!(build.model.listeners.keys().any(|k| k.starts_with("198.18.100.77:")), "{:?}", build.model.listeners);
    tokio::time::sleep(wait).await;
    let patches = fake.requests_to(Method::PATCH, "/api/v1/namespaces/demo/services/echo/status");
    assert_eq!(patches.len(), 1, "written after the renew deadline: {patches:#?}");
}

/// A holder whose Lease requests fail at once (500s, not a hang) stops writing at its renew
/// deadline even while it waits for its next try: it used to sleep a whole retry past the
/// failed try and write until then, up to the moment another pod may take over.
#[tokio::test]
async fn a_holder_whose_renewals_fail_stops_writing_at_the_deadline_between_tries() {
    let objects = example("l4-basic");
    let fake = FakeApi::serving(&objects);
    let mut opts = leader_opts();
    let lease = opts.leader_election.as_mut().unwrap();
    // Renew deadline 2 s; tries every 1.5 s: the try after a renewal fails at 1.5 s, the
    // next would be at 3 s.
    (lease.duration, lease.retry) = (Duration::from_secs(3), Duration::from_millis(1500));
    let mut src = KubeSource::new(fake.client(), opts);
    build_and_report(&mut src).await;
    let echo = "/api/v1/namespaces/demo/services/echo/status";
    wait_for(&fake, "the status patch", |f| !f.requests_to(Method::PATCH, echo).is_empty()).await;
    // From the next renewal on, every Lease request fails.
    let renewals = fake.requests_to(Method::PUT, LEASE).len();
    wait_for(&fake, "a renewal", |f| f.requests_to(Method::PUT, LEASE).len() > renewals).await;
    fake.fail_lists(LEASE, 1000);
    // 2.4 s after it: past the deadline, before the try that would step down.
    tokio::time::sleep(Duration::from_millis(2400)).await;
    no_status_written_for_a_moved_vip(&fake, &objects, &mut src, Duration::from_millis(300)).await;
}

/// Every node records the objects it alone could not serve (its datapath, its L7 proxy, its
/// addresses), leader or not, with the node in the note; the objects' own errors, alike on
/// every node, only the holder records. A node that did not hold the Lease recorded nothing,
/// and the holder recorded its own node's errors as the cluster's.
#[tokio::test]
async fn every_node_records_its_own_errors_and_the_holder_the_objects() {
    let fake = FakeApi::serving(&example("l4-basic"));
    fake.put_object(LEASE, held_by_b(Timestamp::now()));
    let mut src = KubeSource::new(fake.client(), leader_opts());
    let set = next(&mut src).await;
    let build = model::build(&set, &BuildOptions { node_name: Some("node-a".into()), ..Default::default() });
    let echo = model::ObjectRef { kind: "Service".into(), namespace: "demo".into(), name: "echo".into() };
    let error = |field: &str, reason: &str| model::ObjectError {
        object: echo.clone(),
        field: field.into(),
        reason: reason.into(),
    };
    let objects = [error("metadata.annotations[lb.dev/x]", "an error of the object itself")];
    let mine = [error("L7 listener 198.18.100.1:443", "not loaded into the L7 proxy: binding: address in use")];
    src.report(&objects, &mine, &build.model);
    let notes = |f: &FakeApi| -> Vec<String> {
        let events = f.requests_to(Method::POST, "/events");
        events.iter().filter_map(|e| Some(e.body.as_ref()?["note"].as_str()?.to_owned())).collect()
    };
    wait_for(&fake, "node-a's own Event", |f| !notes(f).is_empty()).await;
    let event = fake.requests_to(Method::POST, "/events")[0].body.clone().unwrap();
    assert_eq!(
        event["note"],
        "on node node-a: L7 listener 198.18.100.1:443: not loaded into the L7 proxy: binding: address in use"
    );
    assert_eq!(event["reason"], "NotLoaded");
    assert_eq!(event["reportingInstance"], "node-a");
    assert_eq!(event["regarding"]["name"], "echo");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(notes(&fake).len(), 1, "not the holder: not the object's error");

    // node-b stops renewing: node-a holds the Lease and records the object's error too; its
    // own error is not recorded again.
    wait_for(&fake, "the takeover", |f| f.object(LEASE).is_some_and(|l| l["spec"]["holderIdentity"] == "node-a")).await;
    wait_for(&fake, "the object's Event", |f| notes(f).len() == 2).await;
    assert_eq!(notes(&fake)[1], "metadata.annotations[lb.dev/x]: an error of the object itself");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(notes(&fake).len(), 2);
}
