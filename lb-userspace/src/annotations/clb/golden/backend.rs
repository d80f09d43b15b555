//! Golden tests of the reference's "Backend server group configuration" examples.
use super::{golden, with_listeners};
use crate::annotations::clb::{BackendType, ListenerProtocol::Tcp, NodeLabel, Scheduler};

#[test]
fn golden_backend_label() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-backend-label: "failure-domain.beta.kubernetes.io/zone=ap-southeast-5a"
  name: nginx
  namespace: default
spec:
  ports:
  - port: 443
    protocol: TCP
    targetPort: 443
  selector:
    run: nginx
  type: LoadBalancer
"#,
    );
    let mut want = with_listeners(&[(None, 443, Tcp)]);
    want.backends.node_labels =
        vec![NodeLabel { key: "failure-domain.beta.kubernetes.io/zone".into(), value: "ap-southeast-5a".into() }];
    assert_eq!(config, want);
}

#[test]
fn golden_local_traffic_policy_with_wrr() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler: "wrr"
  name: nginx
  namespace: default
spec:
  externalTrafficPolicy: Local
  ports:
  - port: 80
    protocol: TCP
    targetPort: 80
  selector:
    run: nginx
  type: LoadBalancer
"#,
    );
    assert_eq!(config.scheduler, Scheduler::Wrr);
}

#[test]
fn golden_remove_unscheduled_backend() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-remove-unscheduled-backend: "on"
  name: nginx
spec:
  externalTrafficPolicy: Local
  ports:
  - name: http
    port: 30080
    protocol: TCP
    targetPort: 80
  selector:
    app: nginx
  type: LoadBalancer
"#,
    );
    let mut want = with_listeners(&[(Some("http"), 30080, Tcp)]);
    want.backends.remove_unscheduled = true;
    assert_eq!(config, want);
}

#[test]
fn golden_backend_type_eni() {
    let (config, na) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/backend-type: "eni"
  name: nginx
spec:
  ports:
  - name: http
    port: 30080
    protocol: TCP
    targetPort: 80
  selector:
    app: nginx
  type: LoadBalancer
"#,
    );
    assert_eq!(config.backends.backend_type, Some(BackendType::Eni));
    assert!(na.is_empty());
}
