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
