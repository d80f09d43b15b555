//! Golden tests of the reference's "CLB instance configuration" examples: all cloud-only,
//! reported as not applicable, the listeners unchanged.
use super::{golden, with_listeners};
use crate::annotations::clb::{IpVersion, ListenerProtocol::Tcp};

#[test]
fn golden_internet_facing_default() {
    let (config, na) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx
  namespace: default
spec:
  ports:
  - port: 80
    protocol: TCP
    targetPort: 80
  selector:
    run: nginx
  type: LoadBalancer
"#,
    );
    assert_eq!(config, with_listeners(&[(None, 80, Tcp)]));
    assert!(na.is_empty());
}

#[test]
fn golden_internal_instance() {
    let (config, na) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type: "intranet"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-vswitch-id: "${YOUR_VSWITCH_ID}"
  name: nginx
  namespace: default
spec:
  ports:
  - port: 80
    protocol: TCP
    targetPort: 80
  selector:
    run: nginx
  type: LoadBalancer
"#,
    );
    assert_eq!(config, with_listeners(&[(None, 80, Tcp)]));
    assert_eq!(na, ["address-type", "vswitch-id"]);
}

/// An example's annotations (suffix, value) and the suffixes it reports not applicable.
type Example = (&'static [(&'static str, &'static str)], &'static [&'static str]);

/// The examples whose annotations are all cloud-only.
#[test]
fn golden_cloud_only_examples() {
    let cases: &[Example] = &[
        (&[("instance-charge-type", "PayBySpec"), ("spec", "slb.s1.small")], &["instance-charge-type", "spec"]),
        (&[("charge-type", "paybybandwidth"), ("bandwidth", "2")], &["bandwidth", "charge-type"]),
        (&[("id", "<your-clb-instance-id>")], &["id"]),
        (
            &[("id", "<your-clb-instance-id>"), ("force-override-listeners", "true")],
            &["force-override-listeners", "id"],
        ),
        (&[("master-zoneid", "cn-hangzhou-k"), ("slave-zoneid", "cn-hangzhou-j")], &["master-zoneid", "slave-zoneid"]),
        (&[("address-type", "intranet"), ("vswitch-id", "<your-vswitch-id>")], &["address-type", "vswitch-id"]),
        (&[("additional-resource-tags", "Key1=Value1,Key2=Value2")], &["additional-resource-tags"]),
        (&[("name", "your-svc-name")], &["name"]),
        (&[("resource-group-id", "rg-xxxx")], &["resource-group-id"]),
        (&[("delete-protection", "on")], &["delete-protection"]),
        (&[("modification-protection", "ConsoleProtection")], &["modification-protection"]),
        (&[("preserve-lb-on-delete", "true")], &["preserve-lb-on-delete"]),
        (&[("ignore-weight-update", "on")], &["ignore-weight-update"]),
    ];
    for (annotations, want) in cases {
        let lines: String = annotations
            .iter()
            .map(|(k, v)| format!("    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-{k}: \"{v}\"\n"))
            .collect();
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  annotations:\n{lines}  name: nginx\n  namespace: default\n\
             spec:\n  ports:\n  - port: 443\n    protocol: TCP\n    targetPort: 443\n  selector:\n    run: nginx\n  \
             type: LoadBalancer\n"
        );
        let (config, na) = golden(&yaml);
        assert_eq!(config, with_listeners(&[(None, 443, Tcp)]), "{annotations:?}");
        assert_eq!(na, *want, "{annotations:?}");
    }
}

#[test]
fn golden_static_internal_ip() {
    // The reference writes 192.168.x.x; a real address stands in for it.
    let (config, na) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type: "intranet"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-vswitch-id: "<your-vswitch-id>"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-ip: "192.168.0.10"
  name: nginx
  namespace: default
spec:
  type: LoadBalancer
  ports:
    - port: 80
      targetPort: 80
      name: http
  selector:
    app: nginx
"#,
    );
    assert_eq!(config, with_listeners(&[(Some("http"), 80, Tcp)]));
    assert_eq!(na, ["address-type", "ip", "vswitch-id"]);
}

#[test]
fn golden_ipv6() {
    let (config, na) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-ip-version: "ipv6"
  name: nginx
spec:
  ports:
  - port: 80
    protocol: TCP
    targetPort: 80
  selector:
    app: nginx
  type: LoadBalancer
"#,
    );
    let mut want = with_listeners(&[(None, 80, Tcp)]);
    want.ip_version = IpVersion::Ipv6;
    assert_eq!(config, want);
    assert!(na.is_empty());
}
