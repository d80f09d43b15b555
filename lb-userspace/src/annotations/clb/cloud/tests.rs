//! Tests of the cloud-only annotations: reported as not applicable with their reason, values
//! still checked and the reference's rules between them too, but what the cloud would refuse
//! is a notice: a cloud-only annotation never rejects a Service.
use super::super::testutil::{full, run, tcp};
use super::*;
use crate::annotations::clb::ServicePortInfo;

/// `pairs` parse without an error, and `key` has a notice saying the cloud would refuse it
/// for `reason`.
#[track_caller]
fn assert_ignored(pairs: &[(&str, &str)], ports: &[ServicePortInfo], key: &str, reason: &str) {
    let p = run(pairs, ports);
    assert!(p.errors.is_empty(), "{pairs:?}: {:?}", p.errors);
    let want = format!("ignored (cloud-only): {reason}; Alibaba Cloud would refuse this");
    assert!(
        p.not_applicable.iter().any(|n| n.annotation == full(key) && n.reason == want),
        "{pairs:?}: no notice {want:?} on {key} in {:?}",
        p.not_applicable
    );
}

/// Every cloud-only annotation with a valid value, the rules between them satisfied.
const ALL_VALID: [(&str, &str); 20] = [
    ("address-type", "intranet"),
    ("vswitch-id", "vsw-bp1s5fnvk4gn2tws0****"),
    ("instance-charge-type", "PayBySpec"),
    ("spec", "slb.s1.small"),
    ("charge-type", "paybybandwidth"),
    ("bandwidth", "2"),
    ("id", "lb-bp1ids9hmq5924m6***"),
    ("force-override-listeners", "true"),
    ("master-zoneid", "cn-hangzhou-k"),
    ("slave-zoneid", "cn-hangzhou-j"),
    ("ip", "192.168.0.10"),
    ("additional-resource-tags", "Key1=Value1,Key2=Value2"),
    ("name", "your-svc-name"),
    ("resource-group-id", "rg-xxxx"),
    ("delete-protection", "on"),
    ("modification-protection", "ConsoleProtection"),
    ("preserve-lb-on-delete", "true"),
    ("vgroup-port", "rsp-bp1:80"),
    ("weight", "60"),
    ("ignore-weight-update", "on"),
];

#[test]
fn every_cloud_annotation_is_reported_not_applicable() {
    let mut pairs = ALL_VALID.to_vec();
    // bandwidth applies to Internet-facing instances only: check it separately.
    pairs.retain(|(k, _)| *k != "bandwidth");
    let p = run(&pairs, &[tcp(80)]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let reported: Vec<&str> = p.not_applicable.iter().map(|n| n.annotation.as_str()).collect();
    let want: Vec<String> = pairs.iter().map(|(k, _)| full(k)).collect();
    assert_eq!(reported.len(), want.len());
    for w in &want {
        assert!(reported.contains(&w.as_str()), "{w} not reported");
    }
    for n in &p.not_applicable {
        assert!(!n.reason.is_empty() && !n.reason.contains('\n'), "{n:?}");
    }
    let p = run(&[("charge-type", "paybybandwidth"), ("bandwidth", "2")], &[tcp(80)]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.not_applicable.len(), 2);
    // The configuration is untouched by them.
    assert_eq!(p.config, run(&[], &[tcp(80)]).config);
}

#[test]
fn reasons_cover_every_cloud_key_once() {
    assert_eq!(REASONS.len(), ALL_VALID.len());
    for (suffix, _) in ALL_VALID {
        assert_eq!(REASONS.iter().filter(|(k, _)| k.suffix() == suffix).count(), 1, "{suffix}");
    }
}

#[test]
fn legacy_spelling_is_reported_as_written() {
    let key = "service.beta.kubernetes.io/alicloud-loadbalancer-charge-type";
    let p = run(&[(key, "paybytraffic")], &[tcp(80)]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.not_applicable[0].annotation, key);
}

#[test]
fn cloud_values_are_still_validated() {
    let ports = [tcp(80)];
    let cases: &[(&str, &str, &str)] = &[
        (
            "address-type",
            "Intranet",
            "\"Intranet\" is not one of internet, intranet (values are case-sensitive: intranet)",
        ),
        (
            "instance-charge-type",
            "paybyclcu",
            "\"paybyclcu\" is not one of PayBySpec, PayByCLCU (values are case-sensitive: PayByCLCU)",
        ),
        (
            "charge-type",
            "PayByTraffic",
            "\"PayByTraffic\" is not one of paybytraffic, paybybandwidth (values are case-sensitive: paybytraffic)",
        ),
        ("spec", "s1.small", "\"s1.small\" is not an instance spec like slb.s1.small or slb.s3.large"),
        ("spec", "slb.s1.", "\"slb.s1.\" is not an instance spec like slb.s1.small or slb.s3.large"),
        ("force-override-listeners", "yes", "\"yes\" is not one of true, false"),
        ("delete-protection", "true", "\"true\" is not one of on, off"),
        ("modification-protection", "None", "\"None\" is not one of ConsoleProtection, NonProtection"),
        ("ignore-weight-update", "1", "\"1\" is not one of on, off"),
        ("resource-group-id", "rg 1", "\"rg 1\" contains ' '; an ID is one word without spaces or commas"),
        ("additional-resource-tags", "k1=v1,k1=v2", "tag k1 is listed twice"),
        ("additional-resource-tags", "k1", "\"k1\" is not key=value"),
        ("additional-resource-tags", "=v", "\"=v\" has an empty tag key"),
        ("name", "a", "an instance name has 2..=128 characters, not 1"),
        ("name", "1svc", "\"1svc\" does not start with a letter"),
        ("name", "svc/x", "\"svc/x\" contains '/'; letters, digits, '.', '_' and '-' only"),
    ];
    for (key, value, reason) in cases {
        assert_ignored(&[(key, value)], &ports, key, reason);
    }
    assert!(run(&[("name", "负载均衡-1")], &ports).errors.is_empty());
    assert!(run(&[("name", &"n".repeat(128))], &ports).errors.is_empty());
    assert_ignored(&[("name", &"n".repeat(129))], &ports, "name", "an instance name has 2..=128 characters, not 129");
    assert!(run(&[("spec", "slb.s3.xlarge")], &ports).errors.is_empty());
}

#[test]
fn bandwidth_rules() {
    let ports = [tcp(80)];
    let by_bw = ("charge-type", "paybybandwidth");
    for bad in ["0", "-1", "2M", ""] {
        assert_ignored(
            &[by_bw, ("bandwidth", bad)],
            &ports,
            "bandwidth",
            &format!("{bad:?} is not a positive whole number of Mbps"),
        );
    }
    assert_ignored(&[("bandwidth", "50")], &ports, "bandwidth", "requires charge-type paybybandwidth");
    assert_ignored(
        &[by_bw, ("bandwidth", "50"), ("address-type", "intranet")],
        &ports,
        "bandwidth",
        "applies only to Internet-facing instances, not intranet",
    );
}

#[test]
fn instance_rules() {
    let ports = [tcp(80)];
    assert_ignored(
        &[("instance-charge-type", "PayByCLCU"), ("spec", "slb.s1.small")],
        &ports,
        "spec",
        "cannot be set with instance-charge-type PayByCLCU",
    );
    assert!(run(&[("instance-charge-type", "PayByCLCU")], &ports).errors.is_empty());
    assert_ignored(
        &[("force-override-listeners", "true")],
        &ports,
        "force-override-listeners",
        "true requires alibaba-cloud-loadbalancer-id (the instance whose listeners to override)",
    );
    assert!(run(&[("force-override-listeners", "false")], &ports).errors.is_empty());
    assert_ignored(&[("master-zoneid", "cn-hangzhou-k")], &ports, "master-zoneid", "requires slave-zoneid as well");
    assert_ignored(&[("slave-zoneid", "cn-hangzhou-j")], &ports, "slave-zoneid", "requires master-zoneid as well");
}

#[test]
fn static_ip_rules() {
    let ports = [tcp(80)];
    let base = [("address-type", "intranet"), ("vswitch-id", "vsw-1")];
    assert_ignored(
        &[base[0], base[1], ("ip", "192.168.1.300")],
        &ports,
        "ip",
        "\"192.168.1.300\" is not an IPv4 address",
    );
    assert_ignored(&[base[0], base[1], ("ip", "fd00::1")], &ports, "ip", "\"fd00::1\" is not an IPv4 address");
    assert_ignored(&[base[1], ("ip", "192.168.1.3")], &ports, "ip", "requires address-type intranet");
    assert_ignored(
        &[base[0], ("ip", "192.168.1.3")],
        &ports,
        "ip",
        "requires vswitch-id (the address is taken from that vSwitch)",
    );
}

#[test]
fn vserver_group_reuse_rules() {
    let ports = [tcp(80)];
    let id = ("id", "lb-1");
    assert!(run(&[id, ("vgroup-port", "rsp-1:80"), ("weight", "0")], &ports).errors.is_empty());
    assert!(run(&[id, ("vgroup-port", "rsp-1:80"), ("weight", "100")], &ports).errors.is_empty());
    assert_ignored(&[id, ("vgroup-port", "rsp-1:80"), ("weight", "101")], &ports, "weight", "101 is outside 0..=100");
    assert_ignored(
        &[id, ("vgroup-port", "rsp-1:8080")],
        &ports,
        "vgroup-port",
        "in \"rsp-1:8080\": the Service has no port 8080",
    );
    assert_ignored(
        &[id, ("vgroup-port", "rsp-1")],
        &ports,
        "vgroup-port",
        "\"rsp-1\" is not vgroup-id:port (e.g. rsp-bp1:80)",
    );
    assert_ignored(
        &[("vgroup-port", "rsp-1:80")],
        &ports,
        "vgroup-port",
        "requires alibaba-cloud-loadbalancer-id (vServer groups are reused from an existing instance)",
    );
    assert_ignored(
        &[("weight", "50")],
        &ports,
        "weight",
        "requires vgroup-port (the weight applies to a reused vServer group)",
    );
}

#[test]
fn preserve_lb_on_delete_takes_any_string() {
    for v in ["true", "", "yes please"] {
        let p = run(&[("preserve-lb-on-delete", v)], &[tcp(80)]);
        assert!(p.errors.is_empty(), "{v:?}: {:?}", p.errors);
        assert_eq!(p.not_applicable.len(), 1);
    }
}
