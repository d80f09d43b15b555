//! Issue #17, item 6: every `examples/` directory gives the same validated model (the `model`
//! of `lb check --json`, its notices and its errors) whether `lb` reads it as a manifest
//! directory or from an API server that stored its objects (the fake API server, which
//! adds what a real one adds to stored objects: uids, resourceVersions, managedFields,
//! defaulted fields).
mod fake_api;

use std::{path::PathBuf, time::Duration};

use fake_api::{FakeApi, documents};
use lb_userspace::{
    kube::{KubeOptions, KubeSource},
    manifests::{self, ObjectSet},
    model::{self, BuildOptions},
};
use serde_json::{Value, json};

fn examples() -> Vec<PathBuf> {
    let root = fake_api::examples_dir();
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

/// The first snapshot of a KubeSource reading `objects` from the fake API server.
async fn from_api(objects: &[Value], opts: KubeOptions) -> ObjectSet {
    let fake = FakeApi::serving(objects);
    let mut src = KubeSource::new(
        fake.client(),
        KubeOptions { debounce: Duration::from_millis(50), sync_timeout: Duration::from_secs(10), ..opts },
    );
    tokio::time::timeout(Duration::from_secs(10), src.changed()).await.expect("no snapshot within 10 s");
    src.poll().expect("changed() resolved but poll() had nothing")
}

/// What `lb check --json` says of a set: model, notices, errors.
fn verdict(set: &ObjectSet) -> Value {
    let build = model::build(set, &BuildOptions::default());
    json!({ "model": build.model, "notices": build.notices, "errors": build.errors })
}

fn assert_same(dir: &std::path::Path, from_dir: &Value, from_api: &Value, how: &str) {
    if from_dir != from_api {
        panic!(
            "{} ({how}): the API source's model differs from the directory's\n--- directory\n{}\n--- API\n{}",
            dir.display(),
            serde_json::to_string_pretty(from_dir).unwrap(),
            serde_json::to_string_pretty(from_api).unwrap()
        );
    }
}

#[tokio::test]
async fn every_example_is_the_same_from_a_directory_and_from_the_api() {
    let dirs = examples();
    assert!(dirs.len() >= 8, "examples/ has {} directories", dirs.len());
    for dir in &dirs {
        let set = manifests::load_dir(dir).unwrap();
        assert!(set.errors.is_empty(), "{}: {:?}", dir.display(), set.errors);
        let expected = verdict(&set);
        let model = &expected["model"];
        let served = ["listeners", "l7"].iter().map(|k| model[k].as_object().map_or(0, |m| m.len())).sum::<usize>();
        assert!(served > 0, "{}: the example serves nothing: {expected:#}", dir.display());
        assert!(expected["errors"].as_array().unwrap().is_empty(), "{}: {expected:#}", dir.display());

        let objects = documents(dir);
        // The examples have no loadBalancerClass: --default-class serves them.
        let api = from_api(&objects, KubeOptions { default_class: true, ..Default::default() }).await;
        assert_same(dir, &expected, &verdict(&api), "--default-class");

        // The same objects with lb's class, and without --default-class.
        let classed: Vec<Value> = objects
            .iter()
            .cloned()
            .map(|mut o| {
                if o["kind"] == "Service" && o["spec"]["type"] == "LoadBalancer" {
                    o["spec"]["loadBalancerClass"] = json!(lb_userspace::kube::DEFAULT_CLASS);
                }
                o
            })
            .collect();
        let api = from_api(&classed, KubeOptions::default()).await;
        assert_same(dir, &expected, &verdict(&api), "spec.loadBalancerClass lb.dev/xdp");
    }
}

/// The backends of an ALB Ingress are served whatever their type, and only as backends: a
/// LoadBalancer Service of another class that an Ingress routes to gives its endpoints to
/// the route and gets no listener of its own.
#[tokio::test]
async fn an_ingress_backend_of_another_class_is_a_backend_only() {
    let dir = examples().into_iter().find(|d| d.ends_with("l7-alb")).unwrap();
    let mut objects = documents(&dir);
    for o in objects.iter_mut().filter(|o| o["kind"] == "Service") {
        o["spec"]["type"] = json!("LoadBalancer");
        o["spec"]["loadBalancerClass"] = json!("other.io/lb");
        o["spec"]["loadBalancerIP"] = json!("198.18.100.99");
    }
    let api = from_api(&objects, KubeOptions::default()).await;
    let build = model::build(&api, &BuildOptions::default());
    assert!(build.model.listeners.is_empty(), "{:?}", build.model.listeners.keys().collect::<Vec<_>>());
    assert_eq!(build.model.l7.len(), 1, "{:?}", build.model.l7.keys());
    let l7 = build.model.l7.values().next().unwrap();
    let endpoints: Vec<String> = l7.routes[0].upstreams[0].endpoints.iter().map(|e| e.addr.to_string()).collect();
    assert_eq!(endpoints, ["198.18.1.2:8081", "198.18.2.2:8081", "198.18.3.2:8081"]);
    let on_ingress: Vec<_> = build.notices.iter().filter(|n| n.object.kind == "Ingress").collect();
    assert!(on_ingress.is_empty(), "{on_ingress:?}");
}
