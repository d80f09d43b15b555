//! Golden tests of the reference's "Listener configuration" examples.
use super::{golden, with_listeners};
use crate::annotations::clb::{
    Acl, AclType, ConnectionDrain, ForwardPort,
    ListenerProtocol::{Http, Https, Tcp, Udp},
    Scheduler, StickySession, TlsPolicy,
};

/// A Service named nginx with `annotations` (YAML lines) and `ports` (YAML list items).
fn svc(annotations: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  annotations:\n{annotations}  name: nginx\n  namespace: default\n\
         spec:\n  ports:\n{ports}  selector:\n    run: nginx\n  type: LoadBalancer\n"
    )
}

const TCP_80: &str = "  - port: 80\n    protocol: TCP\n    targetPort: 80\n";
const TCP_443: &str = "  - port: 443\n    protocol: TCP\n    targetPort: 443\n";
const TCP_443_TO_80: &str = "  - port: 443\n    protocol: TCP\n    targetPort: 80\n";
const P: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";

fn lines(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("    {P}{k}: \"{v}\"\n")).collect()
}

#[test]
fn golden_hostname() {
    // The reference writes <your-service-hostname>; a real name stands in for it.
    let (config, na) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: "http:80"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-hostname: "www.example.com"
  name: nginx-svc
  namespace: default
spec:
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 80
  selector:
    app: nginx
  type: LoadBalancer
"#,
    );
    let mut want = with_listeners(&[(Some("http"), 80, Http)]);
    want.hostname = Some("www.example.com".into());
    assert_eq!(config, want);
    assert!(na.is_empty());
}

#[test]
fn golden_scheduler_wrr() {
    let (config, _) = golden(&svc(&lines(&[("scheduler", "wrr")]), TCP_443));
    let mut want = with_listeners(&[(None, 443, Tcp)]);
    want.scheduler = Scheduler::Wrr;
    assert_eq!(config, want);
}

#[test]
fn golden_acl() {
    let (config, _) =
        golden(&svc(&lines(&[("acl-status", "on"), ("acl-id", "<your-acl-id>"), ("acl-type", "white")]), TCP_443));
    let Acl::On { id, kind } = &config.acl else { panic!("{:?}", config.acl) };
    assert_eq!((id.as_str(), *kind), ("<your-acl-id>", AclType::White));
}

#[test]
fn golden_persistence_timeout() {
    let (config, _) = golden(&svc(&lines(&[("persistence-timeout", "1800")]), TCP_443));
    let mut want = with_listeners(&[(None, 443, Tcp)]);
    want.l4.persistence_timeout_s = 1800;
    assert_eq!(config, want);
}

#[test]
fn golden_sticky_session_insert() {
    let (config, _) = golden(&svc(
        &lines(&[
            ("sticky-session", "on"),
            ("sticky-session-type", "insert"),
            ("cookie-timeout", "1800"),
            ("protocol-port", "http:80"),
        ]),
        TCP_80,
    ));
    let mut want = with_listeners(&[(None, 80, Http)]);
    want.http.sticky_session = StickySession::Insert { cookie_timeout_s: 1800 };
    assert_eq!(config, want);
}

#[test]
fn golden_http_to_https_redirect() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: "https:443,http:80"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-cert-id: "<your-cert-id>"
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-forward-port: "80:443"
  name: nginx
  namespace: default
spec:
  ports:
  - name: https
    port: 443
    protocol: TCP
    targetPort: 80
  - name: http
    port: 80
    protocol: TCP
    targetPort: 80
  selector:
    run: nginx
  type: LoadBalancer
"#,
    );
    let mut want = with_listeners(&[(Some("https"), 443, Https), (Some("http"), 80, Http)]);
    want.forward_ports = vec![ForwardPort { http_port: 80, https_port: 443 }];
    assert_eq!(config.tls.cert_id.as_ref().map(|c| c.as_str()), Some("<your-cert-id>"));
    want.tls.cert_id = config.tls.cert_id.clone();
    assert_eq!(config, want);
}

#[test]
fn golden_udp_listener() {
    let (config, _) = golden(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: nginx\n  namespace: default\nspec:\n  ports:\n  \
         - port: 80\n    protocol: UDP\n    targetPort: 80\n  selector:\n    run: nginx\n  type: LoadBalancer\n",
    );
    assert_eq!(config, with_listeners(&[(None, 80, Udp)]));
}

#[test]
fn golden_http_and_https_listeners() {
    let (config, _) = golden(&svc(&lines(&[("protocol-port", "http:80")]), TCP_80));
    assert_eq!(config, with_listeners(&[(None, 80, Http)]));
    let (config, _) =
        golden(&svc(&lines(&[("protocol-port", "https:443"), ("cert-id", "<your-cert-id>")]), TCP_443_TO_80));
    assert_eq!(config.listeners, with_listeners(&[(None, 443, Https)]).listeners);
    assert!(config.tls.http2, "http2 is on by default");
    assert_eq!(config.tls.cipher_policy, TlsPolicy::Tls10);
}

#[test]
fn golden_domain_extensions() {
    // The reference writes <domain-1>:<cert-id-1>,...; real names stand in for the domains.
    let (config, _) = golden(&svc(
        &lines(&[
            ("protocol-port", "https:443"),
            ("cert-id", "<your-cert-id>"),
            ("domain-extensions", "example.com:<cert-id-1>,api.example.com:<cert-id-2>"),
        ]),
        TCP_443_TO_80,
    ));
    let got: Vec<(&str, &str)> =
        config.tls.domain_extensions.iter().map(|d| (d.domain.as_str(), d.cert_id.as_str())).collect();
    assert_eq!(got, [("example.com", "<cert-id-1>"), ("api.example.com", "<cert-id-2>")]);
}

#[test]
fn golden_tls_cipher_policy() {
    let ports = "  - name: https\n    port: 443\n    protocol: TCP\n    targetPort: 443\n  \
                 - name: http\n    port: 80\n    protocol: TCP\n    targetPort: 80\n";
    let (config, _) = golden(&svc(
        &lines(&[
            ("protocol-port", "https:443,http:80"),
            ("cert-id", "<your-cert-id>"),
            ("tls-cipher-policy", "tls_cipher_policy_1_2"),
        ]),
        ports,
    ));
    assert_eq!(config.tls.cipher_policy, TlsPolicy::Tls12);
    assert_eq!(config.listeners, with_listeners(&[(Some("https"), 443, Https), (Some("http"), 80, Http)]).listeners);
}

#[test]
fn golden_tcp_and_udp_on_one_port() {
    let (config, _) = golden(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx
  namespace: default
spec:
  ports:
  - name: tcp
    port: 80
    protocol: TCP
    targetPort: 80
  - name: udp
    port: 80
    protocol: UDP
    targetPort: 81
  selector:
    app: nginx
  sessionAffinity: None
  type: LoadBalancer
"#,
    );
    assert_eq!(config, with_listeners(&[(Some("tcp"), 80, Tcp), (Some("udp"), 80, Udp)]));
}

#[test]
fn golden_proxy_protocol() {
    let (config, _) = golden(&svc(&lines(&[("proxy-protocol", "on")]), TCP_443));
    let mut want = with_listeners(&[(None, 443, Tcp)]);
    want.l4.proxy_protocol = true;
    assert_eq!(config, want);
}

#[test]
fn golden_connection_drain() {
    let (config, _) = golden(&svc(&lines(&[("connection-drain", "on"), ("connection-drain-timeout", "30")]), TCP_80));
    let mut want = with_listeners(&[(None, 80, Tcp)]);
    want.l4.connection_drain = ConnectionDrain::On { timeout_s: 30 };
    assert_eq!(config, want);
}

#[test]
fn golden_forwarded_headers() {
    let (config, _) = golden(&svc(
        &lines(&[
            ("protocol-port", "http:80"),
            ("xforwardedfor-proto", "on"),
            ("xforwardedfor-slbport", "on"),
            ("xforwardedfor-clientsrcport", "on"),
        ]),
        TCP_80,
    ));
    let mut want = with_listeners(&[(None, 80, Http)]);
    want.http.x_forwarded_proto = true;
    want.http.x_forwarded_slb_port = true;
    want.http.x_forwarded_client_src_port = true;
    assert_eq!(config, want);
}

#[test]
fn golden_idle_and_request_timeouts() {
    let (config, _) = golden(&svc(&lines(&[("protocol-port", "http:80"), ("idle-timeout", "30")]), TCP_80));
    assert_eq!((config.http.idle_timeout_s, config.http.request_timeout_s), (30, 60));
    let (config, _) = golden(&svc(&lines(&[("protocol-port", "http:80"), ("request-timeout", "60")]), TCP_80));
    assert_eq!((config.http.idle_timeout_s, config.http.request_timeout_s), (15, 60));
}

#[test]
fn golden_established_timeout() {
    let (config, _) = golden(&svc(&lines(&[("established-timeout", "60")]), TCP_80));
    let mut want = with_listeners(&[(None, 80, Tcp)]);
    want.l4.established_timeout_s = Some(60);
    assert_eq!(config, want);
}

#[test]
fn golden_http2_disabled() {
    let (config, _) = golden(&svc(
        &lines(&[("protocol-port", "https:443"), ("cert-id", "<your-cert-id>"), ("http2-enabled", "off")]),
        TCP_443_TO_80,
    ));
    assert!(!config.tls.http2);
}
