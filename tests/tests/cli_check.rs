//! `lb check` as users script it: the examples validate, bad input is named and exits non-zero.
use std::{fs, path::Path, process::Command};

use lb_tests::daemon::lb_bin;

fn check(dir: &Path) -> (i32, serde_json::Value) {
    let out = Command::new(lb_bin()).args(["check", "--json", "--manifests"]).arg(dir).output().expect("run lb check");
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn every_example_validates() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (code, json) = check(&examples);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["schema"], 1, "the format's version is printed");
    assert!(json["model"]["listeners"].as_object().unwrap().len() >= 9, "{json}");
    for entry in fs::read_dir(&examples).unwrap() {
        let dir = entry.unwrap().path();
        if dir.is_dir() {
            let (code, json) = check(&dir);
            assert_eq!(code, 0, "{}: {json}", dir.display());
        }
    }
}

/// Exit codes as docs/check-json.md gives them: 2 for a usage error, 1 for a directory that
/// cannot be read.
#[test]
fn usage_errors_exit_2_and_unreadable_directories_1() {
    let code = |args: &[&str]| Command::new(lb_bin()).args(args).output().expect("run lb check").status.code();
    assert_eq!(code(&["check", "--json"]), Some(2), "no --manifests");
    assert_eq!(code(&["check", "--json", "--no-such-flag"]), Some(2));
    assert_eq!(code(&["check", "--json", "--manifests", "/nonexistent/lb-check"]), Some(1));
}

#[test]
fn a_bad_annotation_rejects_its_object_only() {
    let dir = tempfile::tempdir().unwrap();
    let svc = |name: &str, vip: &str, timeout: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: t\n  annotations:\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-persistence-timeout: \"{timeout}\"\nspec:\n  type: LoadBalancer\n  loadBalancerIP: {vip}\n  ports: [{{port: 80}}]\n"
        )
    };
    fs::write(dir.path().join("good.yaml"), svc("good", "198.18.100.20", "60")).unwrap();
    fs::write(dir.path().join("bad.yaml"), svc("bad", "198.18.100.21", "4000")).unwrap();
    fs::write(dir.path().join("broken.yaml"), "kind: Service\napiVersion: v1\nmetadata: [\n").unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 1);
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json}");
    assert_eq!(errors[0]["object"]["name"], "bad");
    assert_eq!(errors[0]["field"], "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-persistence-timeout");
    assert_eq!(errors[0]["reason"], "4000 is outside 0..=3600");
    assert_eq!(json["manifest_errors"].as_array().unwrap().len(), 1, "the broken file is named: {json}");
    assert!(json["model"]["listeners"]["198.18.100.20:80/tcp"].is_object(), "the good Service is still in the model");
}

/// `cargo xtask bench --quick` still works (a smoke run: no figure is asserted).
#[test]
fn bench_quick_smoke() {
    if !lb_tests::privileged("bench_quick_smoke") {
        return;
    }
    let bench = Path::new(env!("CARGO_BIN_EXE_lb-bench"));
    let out = Command::new(bench).arg("--quick").output().expect("run lb-bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/report.json");
    let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(report).unwrap()).unwrap();
    assert!(json["datapath_ns_per_packet"].as_array().unwrap().len() >= 8);
    assert!(json["control_plane"]["apply_all_ms"].as_f64().is_some());
    // L7: rows for the proxies that ran; a peer missing here is skipped with a note.
    let l7 = &json["l7"];
    assert!(!l7["cases"].as_array().unwrap().is_empty() || !l7["skipped"].as_array().unwrap().is_empty(), "{l7}");
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/l7-latency.svg").exists());
}

#[test]
fn a_bad_alb_annotation_rejects_its_ingress_only() {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/l7-alb");
    for f in ["alb.yaml", "ingress.yaml"] {
        fs::copy(examples.join(f), dir.path().join(f)).unwrap();
    }
    let bad = fs::read_to_string(examples.join("ingress.yaml"))
        .unwrap()
        .replace("name: shop\n", "name: bad\n")
        .replace("order: \"20\"", "order: \"1001\"");
    fs::write(dir.path().join("bad.yaml"), bad).unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 1, "{json}");
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json}");
    assert_eq!(errors[0]["object"]["name"], "bad");
    assert_eq!(errors[0]["field"], "alb.ingress.kubernetes.io/order");
    assert!(errors[0]["reason"].as_str().unwrap().contains("1001"), "{json}");
    assert!(json["model"]["ingresses"]["demo/shop"].is_object(), "the good Ingress stays: {json}");
}

/// A Service of `ports` TCP ports on `vip` (scheduler `scheduler`), each to one endpoint.
fn many_ports(name: &str, vip: &str, ports: u16, scheduler: &str) -> String {
    let svc_ports: String =
        (0..ports).map(|i| format!("  - {{name: p{i}, port: {}, targetPort: 8080}}\n", 1000 + i)).collect();
    let ep_ports: String = (0..ports).map(|i| format!("  - {{name: p{i}, port: 8080}}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: t\n  annotations:\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler: \"{scheduler}\"\nspec:\n  type: LoadBalancer\n  loadBalancerIP: {vip}\n  ports:\n{svc_ports}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: t, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports:\n{ep_ports}endpoints: [{{addresses: [198.18.1.2]}}]\n"
    )
}

/// Issue #15, item 4 (capacity checked by `lb check`): a model that does not fit the
/// datapath's sizes as `lb run` sets them by default is rejected per object, in the order
/// `lb run` would load it: here the backend table (4,194,304 entries) holds 256 Maglev
/// tables of 16,381 entries, and two Services ask for 300. Every valid Service port is
/// otherwise fine, so before this check `lb check` said yes and `lb run` failed to load.
#[test]
fn a_model_that_does_not_fit_the_datapath_is_rejected_per_listener() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.yaml"), many_ports("big-a", "198.18.100.30", 200, "sch")).unwrap();
    fs::write(dir.path().join("b.yaml"), many_ports("big-b", "198.18.100.31", 100, "tch")).unwrap();
    fs::write(dir.path().join("c.yaml"), many_ports("small", "198.18.100.32", 1, "rr")).unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 1, "{}", json["errors"]);
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 44, "the 44 listeners past 256 Maglev tables: {}", json["errors"]);
    for (e, port) in errors.iter().zip(1056..) {
        assert_eq!(e["object"]["name"], "big-b", "{e}");
        assert_eq!(e["field"], "spec.ports", "{e}");
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!(
                "listener 198.18.100.31:{port}/tcp does not fit the datapath: backend table full"
            )),
            "{e}"
        );
        assert!(reason.contains("16381 entries needed") && reason.contains("--backend-table-entries"), "{e}");
    }
    let listeners = json["model"]["listeners"].as_object().unwrap();
    assert_eq!(listeners.len(), 257, "what fits stays in the model");
    assert!(listeners.contains_key("198.18.100.31:1055/tcp") && !listeners.contains_key("198.18.100.31:1056/tcp"));
    assert!(listeners.contains_key("198.18.100.32:1000/tcp"), "a small listener after them still fits");

    // The same sizes as lb run's flags: a bigger table takes them all.
    let out = Command::new(lb_bin())
        .args(["check", "--json", "--backend-table-entries", "5000000", "--manifests"])
        .arg(dir.path())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", json["errors"]);
}
