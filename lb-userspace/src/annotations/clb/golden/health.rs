//! Golden tests of the reference's health check examples (TCP, UDP, off, HTTP).
use super::{golden, with_listeners};
use crate::annotations::clb::{
    HealthCheck, HealthCheckDomain, HealthCheckType, HttpCodeClass, HttpMethod,
    ListenerProtocol::{Http, Tcp, Udp},
    Probe,
};

#[test]
fn golden_tcp_health_check() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-switch: "on"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-type: "tcp"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-connect-timeout: "8"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-healthy-threshold: "4"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-unhealthy-threshold: "4"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-interval: "3"
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
    let mut want = with_listeners(&[(None, 80, Tcp)]);
    want.health_check = HealthCheck {
        connect_timeout_s: 8,
        healthy_threshold: 4,
        unhealthy_threshold: 4,
        interval_s: 3,
        ..HealthCheck::default()
    };
    assert_eq!(config, want);
    assert_eq!(config.health_check.probe(Tcp), Some(Probe::Tcp));
    assert_eq!(config.health_check.timeout_s(Probe::Tcp), 8);
}

#[test]
fn golden_udp_health_check() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-switch: "on"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-interval: "5"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-connect-timeout: "10"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-healthy-threshold: "3"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-unhealthy-threshold: "3"
  name: nginx
  namespace: default
spec:
  ports:
  - port: 80
    protocol: UDP
    targetPort: 80
  selector:
    run: nginx
  type: LoadBalancer
"#,
    );
    let mut want = with_listeners(&[(None, 80, Udp)]);
    want.health_check = HealthCheck { connect_timeout_s: 10, interval_s: 5, ..HealthCheck::default() };
    assert_eq!(config, want);
    assert_eq!(config.health_check.probe(Udp), Some(Probe::Udp));
}

#[test]
fn golden_health_check_off() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-switch: "off"
  name: nginx
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
    assert!(!config.health_check.switch);
    assert_eq!(config.health_check.probe(Tcp), None);
}

#[test]
fn golden_http_health_check() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-flag: "on"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-type: "http"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-uri: "/test/index.html"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-healthy-threshold: "4"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-unhealthy-threshold: "4"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-timeout: "10"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-interval: "3"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: "http:80"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-httpcode: "http_4xx"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-domain: "www.aliyun.com"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-health-check-method: "head"
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
    let hc = &config.health_check;
    assert_eq!(config.listeners, with_listeners(&[(None, 80, Http)]).listeners);
    assert!(hc.flag && hc.switch);
    assert_eq!(hc.check_type, HealthCheckType::Http);
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold, hc.interval_s), (4, 4, 3));
    assert_eq!(hc.http.uri.as_deref(), Some("/test/index.html"));
    assert_eq!(hc.http.timeout_s, 10);
    assert_eq!(hc.http.codes, [HttpCodeClass::Http4xx]);
    assert_eq!(hc.http.domain, HealthCheckDomain::Name("www.aliyun.com".into()));
    assert_eq!(hc.http.method, HttpMethod::Head);
    assert_eq!(hc.probe(Http), Some(Probe::Http));
    assert_eq!(hc.timeout_s(Probe::Http), 10);
}
