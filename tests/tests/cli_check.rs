//! `lb check` as users script it: the examples validate, bad input is named and exits non-zero.
use std::{fs, path::Path, process::Command};

use lb_tests::daemon::lb_bin;

fn check(dir: &Path) -> (i32, serde_json::Value) {
    check_with(dir, &[])
}

/// `lb check --json --manifests DIR ARGS...`: its exit code and its JSON.
fn check_with(dir: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(lb_bin())
        .args(["check", "--json", "--manifests"])
        .arg(dir)
        .args(args)
        .env_remove("LB_VIP_POOLS")
        .output()
        .expect("run lb check");
    let json =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), json)
}

/// Keys whose string values are the user's data (HTTP methods and header names, Kubernetes
/// kinds), not values of the format.
const DATA_KEYS: [&str; 4] = ["kind", "allow_methods", "allow_headers", "expose_headers"];

/// Every place in `v` where the format is not snake_case: an object key or string value
/// written as a Rust variant (`Forward`, `Wrr`, `HTTP`), a serde duration (`secs`/`nanos`).
fn not_snake_case(v: &serde_json::Value, path: &str, key: &str, found: &mut Vec<String>) {
    let variant = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
    };
    match v {
        serde_json::Value::Object(m) => {
            if m.contains_key("secs") || m.contains_key("nanos") {
                found.push(format!("{path}: a serde Duration {v}"));
            }
            for (k, x) in m {
                if variant(k) {
                    found.push(format!("{path}: key {k:?}"));
                }
                not_snake_case(x, &format!("{path}/{k}"), k, found);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                not_snake_case(x, &format!("{path}[{i}]"), key, found);
            }
        }
        serde_json::Value::String(s) if variant(s) && !DATA_KEYS.contains(&key) => {
            found.push(format!("{path}: value {s:?}"))
        }
        _ => {}
    }
}

/// Issue #17, item 4: the JSON of `lb check` is versioned, its values snake_case (no
/// `{"Forward": ...}`, no `"Wrr"` beside `"wrr"`, no `"TCP"`), its durations whole seconds (no
/// `{"secs": 2, "nanos": 0}`), on every example and on the ALB golden cases, which use
/// nearly every annotation (their invalid objects are errors; what validates is walked).
#[test]
fn the_json_is_versioned_and_snake_case_with_durations_in_seconds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rich = tempfile::tempdir().unwrap();
    for f in fs::read_dir(root.join("examples/l7-alb")).unwrap() {
        let f = f.unwrap().path();
        fs::copy(&f, rich.path().join(f.file_name().unwrap())).unwrap();
    }
    for family in fs::read_dir(root.join("lb-userspace/tests/golden/alb")).unwrap() {
        let family = family.unwrap().path();
        for case in fs::read_dir(&family).unwrap() {
            let case = case.unwrap().path();
            if case.extension().is_some_and(|e| e == "yaml") {
                let name = format!(
                    "{}-{}",
                    family.file_name().unwrap().to_str().unwrap(),
                    case.file_name().unwrap().to_str().unwrap()
                );
                fs::copy(&case, rich.path().join(name)).unwrap();
            }
        }
    }
    for dir in [root.join("examples"), rich.path().to_path_buf()] {
        let (_, json) = check(&dir);
        assert_eq!(json["schema"], 1, "{}: the format's version", dir.display());
        let mut found = Vec::new();
        not_snake_case(&json, "", "", &mut found);
        assert!(found.is_empty(), "{}:\n{}", dir.display(), found.join("\n"));
        assert!(!json["model"]["l7"].as_object().unwrap().is_empty(), "{}: L7 listeners were walked", dir.display());
    }
    let (_, json) = check(&root.join("examples"));
    let l4 = &json["model"]["listeners"]["198.18.100.10:80/tcp"];
    assert_eq!(l4["protocol"], "tcp", "{l4}");
    let health = json["model"]["listeners"].as_object().unwrap().values().find_map(|l| l["health_check"].as_object());
    let health = health.expect("an example has a health check");
    assert!(health["interval_s"].is_u64() && health["timeout_s"].is_u64(), "{health:?}");
    let rule = &json["model"]["l7"]["*:80/http"]["routes"][0]["rule"];
    assert_eq!(rule["backend"]["scheduler"], "wrr", "{rule}");
    assert!(rule["action"]["forward"].is_object(), "{rule}");
    let (_, rich) = check(rich.path());
    let port = rich["model"]["ingresses"]
        .as_object()
        .unwrap()
        .values()
        .find_map(|i| i["rules"].as_array()?.iter().find_map(|r| r["service"]["port"].as_u64()));
    assert!(port.is_some(), "a Service port by number is a number");
}

/// A Service `name` on `vip`, port 80 (TCP), one endpoint at `endpoint`.
fn service(name: &str, vip: &str, endpoint: &str) -> String {
    let v6 = if vip.contains(':') {
        ", annotations: {service.beta.kubernetes.io/alibaba-cloud-loadbalancer-ip-version: ipv6}"
    } else {
        ""
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: t{v6}}}\nspec: {{type: LoadBalancer, loadBalancerIP: \"{vip}\", ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: t, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: {}\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"{endpoint}\"]}}]\n---\n",
        if vip.contains(':') { "IPv6" } else { "IPv4" }
    )
}

/// Issue #17, item 5 ("lb check rejects forbidden VIPs and says why"): loopback, link-local,
/// multicast, unspecified and broadcast VIPs (IPv4 and IPv6) are rejected with no pool given;
/// `--vip-pool` rejects what lies outside it and `--node-address` the node's own; each error
/// names the object, the field and the reason, and lb check exits 1.
#[test]
fn forbidden_vips_are_rejected_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let forbidden = [
        ("loop4", "127.0.0.5", "loopback"),
        ("loop6", "::1", "loopback"),
        ("meta", "169.254.169.254", "link-local"),
        ("ll6", "fe80::1", "link-local"),
        ("mcast", "224.0.0.18", "multicast"),
        ("mcast6", "ff02::1", "multicast"),
        ("zero", "0.0.0.0", "unspecified"),
        ("zero6", "::", "unspecified"),
        ("bcast", "255.255.255.255", "broadcast"),
    ];
    let mut yaml: String = forbidden
        .iter()
        .map(|(n, vip, _)| service(n, vip, if vip.contains(':') { "2001:db8:1::2" } else { "198.18.1.2" }))
        .collect();
    yaml += &service("good", "198.18.100.50", "198.18.1.2");
    yaml += &service("good6", "2001:db8:100::50", "2001:db8:1::2");
    fs::write(dir.path().join("svc.yaml"), yaml).unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 1, "{json}");
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), forbidden.len(), "{json}");
    for (name, vip, class) in forbidden {
        let e = errors.iter().find(|e| e["object"]["name"] == name).unwrap_or_else(|| panic!("{name}: {json}"));
        assert_eq!(e["object"]["kind"], "Service");
        assert_eq!(e["field"], "spec.loadBalancerIP", "{e}");
        assert_eq!(e["reason"], format!("{vip} is never a VIP ({class} address)"), "{e}");
    }
    let listeners = json["model"]["listeners"].as_object().unwrap();
    assert_eq!(listeners.len(), 2, "the good Services serve: {json}");

    // A pool: what lies outside is rejected; the node's address, too.
    let only_good = tempfile::tempdir().unwrap();
    let yaml = service("good", "198.18.100.50", "198.18.1.2")
        + &service("good6", "2001:db8:100::50", "2001:db8:1::2")
        + &service("other", "198.18.200.1", "198.18.1.2")
        + &service("node", "198.18.100.1", "198.18.1.2");
    fs::write(only_good.path().join("svc.yaml"), yaml).unwrap();
    let (code, json) = check_with(
        only_good.path(),
        &["--vip-pool", "198.18.100.0/24", "--vip-pool", "2001:db8:100::/64", "--node-address", "198.18.100.1"],
    );
    assert_eq!(code, 1, "{json}");
    let reasons: Vec<(String, String)> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["object"]["name"].as_str().unwrap().to_string(), e["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                "node".to_string(),
                "198.18.100.1 is an address of this node: the datapath would take the node's own traffic".to_string()
            ),
            (
                "other".to_string(),
                "198.18.200.1 is outside every --vip-pool (198.18.100.0/24, 2001:db8:100::/64)".to_string()
            ),
        ]
    );
    assert_eq!(json["model"]["listeners"].as_object().unwrap().len(), 2, "{json}");
    // The pool from the environment, as the DaemonSet passes the ConfigMap's LB_VIP_POOLS.
    let out = Command::new(lb_bin())
        .args(["check", "--json", "--manifests"])
        .arg(only_good.path())
        .env("LB_VIP_POOLS", "198.18.0.0/16,2001:db8:100::/64")
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{json}");
}

/// The examples fit the pools docs/deploy.md gives for them, so the demo and the e2e tests
/// keep serving with a pool as they do without one.
#[test]
fn the_examples_fit_their_documented_pools() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let (code, json) = check_with(&examples, &["--vip-pool", "198.18.100.0/24,2001:db8:100::/64"]);
    assert_eq!(code, 0, "{}", json["errors"]);
    let (code, json) = check_with(&examples, &["--vip-pool", "203.0.113.0/24"]);
    assert_eq!(code, 1);
    assert!(
        json["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["reason"].as_str().unwrap().contains("outside every --vip-pool"))
    );
    // The ConfigMap ships LB_VIP_POOLS empty: no pool.
    let out =
        Command::new(lb_bin()).args(["check", "--manifests"]).arg(&examples).env("LB_VIP_POOLS", "").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Issue #17, item 5: of two Services on one VIP:port/protocol the older keeps it and the
/// other's error names it (before: the first by name won).
#[test]
fn the_older_service_wins_a_vip_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let aged = |name: &str, created: &str| {
        service(name, "198.18.100.60", "198.18.1.2").replacen(
            &format!("metadata: {{name: {name}, namespace: t}}"),
            &format!("metadata: {{name: {name}, namespace: t, creationTimestamp: \"{created}\"}}"),
            1,
        )
    };
    fs::write(
        dir.path().join("a.yaml"),
        aged("a-newer", "2025-03-01T10:00:00Z") + &aged("b-older", "2025-01-01T10:00:00Z"),
    )
    .unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["model"]["listeners"]["198.18.100.60:80/tcp"]["source"]["name"], "b-older", "{json}");
    let errors = json["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{json}");
    assert_eq!(errors[0]["object"]["name"], "a-newer");
    assert_eq!(errors[0]["field"], "spec.ports");
    assert_eq!(
        errors[0]["reason"],
        "VIP conflict: 198.18.100.60:80/tcp is already served for Service t/b-older, which is older (created 2025-01-01T10:00:00Z, this one 2025-03-01T10:00:00Z)"
    );
}

/// Issue #17, item 5: a loopback or link-local endpoint is not served (it would reach the
/// node's own ports); the Service is, and a notice names it and the address.
#[test]
fn loopback_and_link_local_endpoints_are_dropped_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = service("web", "198.18.100.70", "198.18.1.2").replace(
        "endpoints: [{addresses: [\"198.18.1.2\"]}]",
        "endpoints: [{addresses: [\"198.18.1.2\"]}, {addresses: [\"127.0.0.1\"]}, {addresses: [\"169.254.10.1\"]}]",
    );
    fs::write(dir.path().join("web.yaml"), yaml).unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 0, "a notice, not an error: {json}");
    let backends = json["model"]["listeners"]["198.18.100.70:80/tcp"]["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "{json}");
    assert_eq!(backends[0]["addr"], "198.18.1.2");
    let notes: Vec<&serde_json::Value> =
        json["notices"].as_array().unwrap().iter().filter(|n| n["object"]["name"] == "web").collect();
    assert_eq!(notes.len(), 2, "{json}");
    assert_eq!(notes[0]["note"], "127.0.0.1 is not served (loopback address)");
    assert_eq!(notes[0]["field"], "EndpointSlice t/web-1: endpoints[1].addresses[0]");
    assert_eq!(notes[1]["note"], "169.254.10.1 is not served (link-local address)");
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

/// Exit codes as docs/check-json.md gives them: 0 when nothing is rejected (every example),
/// 1 for a rejected object (the other tests) or a directory that cannot be read (its reason
/// in the JSON too), 2 for a usage error (clap's message on stderr, no JSON).
#[test]
fn usage_errors_exit_2_and_unreadable_directories_1() {
    let run = |args: &[&str]| Command::new(lb_bin()).args(args).output().expect("run lb check");
    for usage in [
        &["check", "--json"][..],
        &["check", "--json", "--no-such-flag"],
        &["check", "--json", "--manifests", ".", "--vip-pool", "nonsense"],
    ] {
        let out = run(usage);
        assert_eq!(out.status.code(), Some(2), "{usage:?}");
        assert!(out.stdout.is_empty() && !out.stderr.is_empty(), "{usage:?}");
    }
    let out = run(&["check", "--json", "--manifests", "/nonexistent/lb-check"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the error as JSON");
    assert_eq!(json["schema"], 1);
    assert_eq!(json["error"], "/nonexistent/lb-check: not a directory", "{json}");
    let text = run(&["check", "--manifests", "/nonexistent/lb-check"]);
    assert_eq!(text.status.code(), Some(1));
    assert!(text.stdout.is_empty(), "text mode: the reason on stderr only");
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
        // A Maglev table and its header.
        assert!(reason.contains("16382 entries needed") && reason.contains("--backend-table-entries"), "{e}");
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

/// Issue #18, item 5: what `lb check` says of ClientIP affinity beside the persistence-timeout
/// annotation, a PreferDualStack Service with one family's VIP, and a ServerGroupID no Service
/// stands for: notices (exit 0), each naming the object and the field, and the model shows
/// what is served (the annotation's timeout; one VIP; the Service group alone).
#[test]
fn affinity_dual_stack_and_server_group_notices() {
    let dir = tempfile::tempdir().unwrap();
    let affinity = service("sticky", "198.18.100.71", "198.18.1.2").replace(
        "namespace: t}\nspec: {type: LoadBalancer,",
        "namespace: t, annotations: {service.beta.kubernetes.io/alibaba-cloud-loadbalancer-persistence-timeout: \"60\"}}\nspec: {type: LoadBalancer, sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 30}},",
    );
    let dual = service("dual", "198.18.100.72", "198.18.1.3").replace(
        "spec: {type: LoadBalancer,",
        "spec: {type: LoadBalancer, ipFamilies: [IPv4, IPv6], ipFamilyPolicy: PreferDualStack,",
    );
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/l7-alb");
    fs::copy(examples.join("alb.yaml"), dir.path().join("alb.yaml")).unwrap();
    let group = r#"[{"type":"ForwardGroup","ForwardConfig":{"ServerGroups":[{"ServiceName":"tea","ServicePort":80,"Weight":30},{"ServerGroupID":"sgp-ecs","Weight":70}]}}]"#;
    let ingress = format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: split\n  namespace: t\n  annotations:\n    alb.ingress.kubernetes.io/actions.split: {}\nspec:\n  ingressClassName: alb\n  rules:\n  - host: s.test\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: split, port: {{name: use-annotation}}}}}}}}\n---\n{}",
        serde_json::to_string(group).unwrap(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: tea, namespace: t}\nspec: {ports: [{name: http, port: 80}]}\n"
    );
    fs::write(dir.path().join("svc.yaml"), affinity + &dual + &ingress).unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 0, "notices, not errors: {json}");
    let listeners = &json["model"]["listeners"];
    assert_eq!(listeners["198.18.100.71:80/tcp"]["persistence_timeout"], 60, "{json}");
    assert!(listeners["198.18.100.72:80/tcp"].is_object(), "{json}");
    let notes: Vec<String> = json["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| format!("{} {}: {}: {}", n["object"]["kind"], n["object"]["name"], n["field"], n["note"]))
        .map(|s| s.replace('"', ""))
        .collect();
    for want in [
        "Service sticky: spec.sessionAffinity: ClientIP (timeoutSeconds 30) is overridden by the more specific service.beta.kubernetes.io/alibaba-cloud-loadbalancer-persistence-timeout (60 s)",
        "Service dual: spec.ipFamilyPolicy: PreferDualStack: no IPv6 VIP among spec.loadBalancerIP and status.loadBalancer.ingress[].ip: served on one family",
        "Ingress split: alb.ingress.kubernetes.io/actions.split: ServerGroupID sgp-ecs (weight 70) is not served: no Service of namespace t has lb.dev/server-group-id: sgp-ecs; its share goes to the other groups, which keep their split: t/tea:80 100%",
    ] {
        assert!(notes.iter().any(|n| n == want), "{want}\nnot among {notes:#?}");
    }
}

/// Issue #18, item 5: `backend-type: ecs` in `lb check`: the backends are the Nodes'
/// InternalIP on the NodePort, a Node that is not Ready is left out with a notice, no Node at
/// all is a notice (served, no backends), a port without `nodePort` rejects the Service.
#[test]
fn ecs_backends_and_their_notices() {
    let dir = tempfile::tempdir().unwrap();
    let svc = |node_port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: ecs\n  namespace: t\n  annotations:\n    service.beta.kubernetes.io/backend-type: ecs\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 198.18.100.80\n  ports: [{{port: 80{node_port}}}]\n"
        )
    };
    let node = |name: &str, ip: &str, ready: &str| {
        format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus:\n  addresses: [{{type: InternalIP, address: {ip}}}]\n  conditions: [{{type: Ready, status: \"{ready}\"}}]\n"
        )
    };
    fs::write(dir.path().join("svc.yaml"), svc(", nodePort: 30080")).unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["model"]["listeners"]["198.18.100.80:80/tcp"]["backends"], serde_json::json!([]), "{json}");
    assert!(json["notices"][0]["note"].as_str().unwrap().starts_with("ecs: no Node objects"), "{json}");
    let nodes = node("n1", "10.0.0.1", "True") + &node("n2", "10.0.0.2", "Unknown");
    fs::write(dir.path().join("nodes.yaml"), nodes).unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 0, "{json}");
    let backends = &json["model"]["listeners"]["198.18.100.80:80/tcp"]["backends"];
    assert_eq!(backends, &serde_json::json!([{"addr": "10.0.0.1", "port": 30080, "weight": 100}]), "{json}");
    assert_eq!(json["notices"][0]["field"], "service.beta.kubernetes.io/backend-type");
    assert_eq!(json["notices"][0]["note"], "ecs: Node n2 is not Ready (Ready condition Unknown): not a backend");
    fs::write(dir.path().join("svc.yaml"), svc("")).unwrap();
    let (code, json) = check(dir.path());
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["errors"][0]["field"], "spec.ports[0].nodePort", "{json}");
}
