//! TLS through curl (a real client): certificates chosen by SNI from TLS Secrets, the
//! default certificate, ALPN h2, each cipher policy's protocol versions, certificate
//! rotation without restart, CLB cert-id + forward-port, certificates found by host.
use std::{path::Path, process::Command, time::Duration};

use super::support::*;

pub(super) const NS: &str = "tls";

pub(super) struct Ca {
    pub(super) ca: rcgen::Certificate,
    key: rcgen::KeyPair,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

pub(super) fn ca() -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "lb test CA");
    let ca = params.self_signed(&key).unwrap();
    let issuer = rcgen::Issuer::new(params, rcgen::KeyPair::from_pem(&key.serialize_pem()).unwrap());
    Ca { ca, key, issuer }
}

/// A leaf certificate for `names` (CN = first name) signed by the CA: (cert PEM, key PEM).
pub(super) fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let _ = &ca.key;
    (cert.pem(), key.serialize_pem())
}

/// The CA's certificate written to a file for curl (the directory lives as long as the file).
pub(super) fn ca_file(ca: &Ca) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, ca.ca.pem()).unwrap();
    (dir, file)
}

pub(super) fn secret(name: &str, (cert, key): &(String, String)) -> String {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let encode = |b: &[u8]| STANDARD.encode(b);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {NS}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
        encode(cert.as_bytes()),
        encode(key.as_bytes())
    )
}

pub(super) struct Curl {
    pub(super) status: u16,
    pub(super) http_version: String,
    pub(super) subject: String,
    pub(super) body: String,
    pub(super) ok: bool,
    pub(super) stderr: String,
}

/// curl `https://host:port/path` resolved to 127.0.0.1, trusting `ca_file`.
pub(super) fn curl(ca_file: &Path, host: &str, port: u16, path: &str, extra: &[&str]) -> Curl {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca_file)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-v", "-w", "\n%{http_code} %{http_version}\n"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl (installed by cargo xtask setup)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The body, then the `-w` line (the body may end in a newline of its own).
    let (body, written) = text.trim_end_matches('\n').rsplit_once('\n').unwrap_or_default();
    let body = body.to_owned();
    let mut status_line = written.split_whitespace();
    let status = status_line.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = status_line.next().unwrap_or("").to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // `*  subject: CN=a.test` in curl's verbose output.
    let subject =
        stderr.lines().find(|l| l.trim_start_matches(['*', ' ']).starts_with("subject:")).unwrap_or("").to_owned();
    Curl { status, http_version, subject, body, ok: out.status.success(), stderr }
}

fn https_ingress(port: u16, tls: &str, host_rules: &[&str]) -> String {
    let lp = format!("[{{\"HTTPS\": {port}}}]");
    let rules: String = host_rules.iter().map(|h| rule(h, &[("/", "Prefix", "web")])).collect();
    ingress(NS, "secure", &[("listen-ports", &lp)], &rules).replace("spec:\n", &format!("spec:\n  tls:\n{tls}"))
}

#[tokio::test]
async fn sni_default_certificate_alpn_and_rotation() {
    let port = free_port();
    let web = echo("web", Duration::ZERO).await;
    let ca = ca();
    let (_dir, ca_file) = ca_file(&ca);
    let tls = "  - hosts: [a.test]\n    secretName: cert-a\n  - hosts: ['*.b.test']\n    secretName: cert-b\n";
    let base = alb_class(&[(port, "HTTPS")]) + &service(NS, "web", &[&web]);
    let yaml = base.clone()
        + &secret("cert-a", &leaf(&ca, &["a.test"]))
        + &secret("cert-b", &leaf(&ca, &["*.b.test"]))
        + &https_ingress(port, tls, &["a.test", "*.b.test"]);
    let m = model(&yaml);
    let mut p = proxy(&m);
    let c = tokio::task::spawn_blocking({
        let f = ca_file.clone();
        move || {
            (
                curl(&f, "a.test", port, "/x", &["--http2"]),
                curl(&f, "x.b.test", port, "/", &["--http1.1"]),
                curl(&f, "other.test", port, "/", &["--insecure"]),
            )
        }
    })
    .await
    .unwrap();
    let (a, b, other) = c;
    assert!(a.ok && a.status == 200, "a.test: {} {}", a.status, a.stderr);
    assert!(a.subject.contains("CN=a.test") || a.subject.contains("CN = a.test"), "SNI a.test: {}", a.subject);
    assert_eq!(a.http_version, "2", "ALPN h2");
    assert!(a.body.contains("\"uri\":\"/x\""), "{}", a.body);
    assert!(b.ok && b.subject.contains("b.test"), "wildcard SNI: {} {}", b.subject, b.stderr);
    assert_eq!(b.http_version, "1.1");
    assert!(
        other.ok && other.subject.contains("a.test"),
        "unknown name gets the default (first) certificate: {}",
        other.subject
    );

    // TLS writes a handshake and its records in many small writes: Nagle is off from the
    // start (a connection that has not yet sent its ClientHello).
    let raw = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(proxy_side_nodelay(port, raw.local_addr().unwrap(), true).await, Some(true));
    drop(raw);

    // Rotation: a new certificate in the Secret is served by the next handshake.
    let rotated = base
        + &secret("cert-a", &leaf(&ca, &["a.test", "rotated.a.test"]))
        + &secret("cert-b", &leaf(&ca, &["*.b.test"]))
        + &https_ingress(port, tls, &["a.test", "*.b.test"]);
    assert!(p.apply(&model(&rotated).l7).is_empty());
    let f = ca_file.clone();
    let after = tokio::task::spawn_blocking(move || curl(&f, "a.test", port, "/", &[])).await.unwrap();
    assert!(after.ok, "{}", after.stderr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo | openssl s_client -connect 127.0.0.1:{port} -servername a.test 2>/dev/null | openssl x509 -noout -ext subjectAltName"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rotated.a.test"),
        "rotated certificate not served: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn cipher_policies_map_to_protocol_versions() {
    let web = echo("web", Duration::ZERO).await;
    let ca = ca();
    let (_dir, ca_file) = ca_file(&ca);
    // (policy, TLS 1.3 accepted, TLS 1.2 accepted, TLS 1.2 ChaCha20 accepted); "": the
    // listener names no policy (ALB's default, tls_cipher_policy_1_0).
    let table = [
        ("", true, true, false),
        ("tls_cipher_policy_1_0", true, true, false),
        ("tls_cipher_policy_1_1", true, true, false),
        ("tls_cipher_policy_1_2", true, true, false),
        ("tls_cipher_policy_1_2_strict", false, true, false),
        ("tls_cipher_policy_1_2_strict_with_1_3", true, true, false),
    ];
    let cert = leaf(&ca, &["p.test"]);
    for (policy, v13, v12, chacha) in table {
        let port = free_port();
        let extra = if policy.is_empty() { String::new() } else { format!("    securityPolicyId: {policy}\n") };
        let class = alb_class_with(&[(port, "HTTPS")], &extra);
        let yaml = class
            + &service(NS, "web", &[&web])
            + &secret("cert-p", &cert)
            + &https_ingress(port, "  - hosts: [p.test]\n    secretName: cert-p\n", &["p.test"]);
        let _p = proxy(&model(&yaml));
        let f = ca_file.clone();
        let (r13, r12, rc) = tokio::task::spawn_blocking(move || {
            (
                curl(&f, "p.test", port, "/", &["--tlsv1.3"]),
                curl(&f, "p.test", port, "/", &["--tlsv1.2", "--tls-max", "1.2"]),
                curl(
                    &f,
                    "p.test",
                    port,
                    "/",
                    &[
                        "--tlsv1.2",
                        "--tls-max",
                        "1.2",
                        "--ciphers",
                        "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305",
                    ],
                ),
            )
        })
        .await
        .unwrap();
        assert_eq!(r13.ok, v13, "{policy}: TLS 1.3 {}", r13.stderr);
        assert_eq!(r12.ok, v12, "{policy}: TLS 1.2 {}", r12.stderr);
        assert_eq!(rc.ok, chacha, "{policy}: ChaCha20 {}", rc.stderr);
    }
}

#[tokio::test]
async fn clb_https_listener_with_cert_id_and_forward_port() {
    let (http_port, https_port) = (free_port(), free_port());
    let web = echo("web", Duration::ZERO).await;
    let ca = ca();
    let (_dir, ca_file) = ca_file(&ca);
    let vip = "127.0.0.8";
    let yaml = secret("my-cert", &leaf(&ca, &["shop.test"]))
        + &clb_service(
            NS,
            "shop",
            vip,
            &[
                ("protocol-port", &format!("https:{https_port},http:{http_port}")),
                ("cert-id", "my-cert"),
                ("forward-port", &format!("{http_port}:{https_port}")),
            ],
            &[("https", https_port), ("http", http_port)],
            &web,
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let resp = c
        .request(
            http::Request::get(format!("http://{vip}:{http_port}/cart?id=1"))
                .header("host", "shop.test")
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], format!("https://shop.test:{https_port}/cart?id=1"));
    let f = ca_file.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&f)
            .args(["--resolve", &format!("shop.test:{https_port}:{vip}")])
            .arg(format!("https://shop.test:{https_port}/cart"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"backend\":\"web\""));
}

#[test]
fn bad_certificates_are_rejected_with_the_secret_named() {
    let yaml = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: tls\n  annotations:\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: \"https:443\"\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-cert-id: \"broken\"\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 127.0.0.9\n  ports:\n  - {name: https, port: 443}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: broken, namespace: tls}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: bm90IGEgY2VydA==\n  tls.key: bm90IGEga2V5\n";
    let b = build(yaml);
    assert_eq!(b.errors.len(), 1, "{:?}", b.errors);
    let e = b.errors[0].to_string();
    assert!(e.contains("Service tls/s") && e.contains("cert-id") && e.contains("Secret tls/broken"), "{e}");
    // A CLB certificate ID, as the reference's Services carry: it names no Secret, and the
    // error says what to do instead of "not found".
    let id = "1231579085529123_166f8204689_1714763408_709017";
    let b = build(&yaml.replace("cert-id: \"broken\"", &format!("cert-id: \"{id}\"")));
    assert_eq!(b.errors.len(), 1, "{:?}", b.errors);
    let e = b.errors[0].to_string();
    assert!(e.contains(&format!("{id:?} is not the name of a Secret")), "{e}");
    assert!(e.contains("not a CLB certificate ID") && e.contains("kubectl create secret tls"), "{e}");
}

/// An HTTPS listener whose Ingresses name no usable TLS Secret (`spec.tls` with hosts only,
/// as the reference's examples that rely on the cloud's certificate discovery) is an error
/// of `lb check` naming the Ingress; it passed and the listener then failed to start.
#[test]
fn an_https_listener_without_a_certificate_is_rejected() {
    let port = free_port();
    let web = Echo { addr: "127.0.0.1:9".parse().unwrap(), hits: Default::default(), seen: Default::default() };
    let base = alb_class(&[(port, "HTTPS")]) + &service(NS, "web", &[&web]);
    let b = build(&(base.clone() + &https_ingress(port, "  - hosts: [a.test]\n", &["a.test"])));
    assert!(b.model.l7.is_empty(), "{:?}", b.model.l7.keys().collect::<Vec<_>>());
    let e = b.errors.iter().find(|e| e.object.name == "secure").expect("the Ingress is in error");
    assert_eq!(e.field, "spec.tls");
    assert!(e.reason.contains(&format!("HTTPS listener {port} has no certificate")), "{}", e.reason);
    // A Secret that does not exist is no certificate either; one that does makes the listener.
    let missing = https_ingress(port, "  - hosts: [a.test]\n    secretName: nope\n", &["a.test"]);
    assert!(build(&(base.clone() + &missing)).errors.iter().any(|e| e.field == "spec.tls"));
    let good = https_ingress(port, "  - hosts: [a.test]\n    secretName: cert-a\n", &["a.test"]);
    let b = build(&(base + &good + &secret("cert-a", &leaf(&ca(), &["a.test"]))));
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    assert_eq!(b.model.l7.len(), 1);
}

/// The reference's ssl-redirect example (`spec.tls` hosts without a Secret, HTTP:80 and
/// HTTPS:443): with no certificate for its HTTPS listener, the Ingress is in error on
/// `spec.tls` for that listener only, and its rules on the HTTP listener serve (the whole
/// Ingress was rejected, its HTTP rules and redirect with it).
#[tokio::test]
async fn an_ingress_without_a_certificate_serves_its_http_rules() {
    let (http, https, moved) = (free_port(), free_port(), free_port());
    let web = echo("web", Duration::ZERO).await;
    let on = |http: u16| {
        let lp = format!("[{{\"HTTP\": {http}}}, {{\"HTTPS\": {https}}}]");
        alb_class(&[(http, "HTTP"), (https, "HTTPS")])
            + &service(NS, "web", &[&web])
            + &ingress(NS, "secure", &[("listen-ports", &lp)], &rule("a.test", &[("/", "Prefix", "web")]))
                .replace("spec:\n", "spec:\n  tls:\n  - hosts: [a.test]\n")
    };
    let yaml = on(http);
    let b = build(&yaml);
    let reasons: Vec<String> = b.errors.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with(&format!("spec.tls: HTTPS listener {https} has no certificate")), "{reasons:?}");
    assert!(reasons[0].ends_with(&format!("its rules on {https} are not served")), "{reasons:?}");
    assert_eq!(b.model.l7.len(), 1, "the HTTP listener only: {:?}", b.model.l7.keys().collect::<Vec<_>>());
    assert!(b.model.ingresses.values().any(|i| i.name == "secure"), "its status: served");
    let _p = proxy(&b.model);
    let got = get(&client(), http, "a.test", "/x", &[]).await;
    assert_eq!((got.status, got.backend()), (200, "web".to_owned()), "{}", got.body);

    // Served with a certificate, then its Secret gone: the HTTPS listener keeps its last good
    // routes and certificate, the HTTP listener has the new rules once (not the last good
    // ones beside them).
    let served = build(&(yaml.clone() + &secret("cert-a", &leaf(&ca(), &["a.test"]))));
    assert!(served.errors.is_empty() && served.model.l7.len() == 2, "{:?}", served.errors);
    let after = build_after(&yaml, &served.model);
    assert_eq!(after.errors.len(), 1, "{:?}", after.errors);
    assert_eq!(after.model.l7, served.model.l7, "as before: the new HTTP rules, the last good HTTPS ones");
    // Its HTTP rules move to another port: served there, not on the old one as last good.
    let next = build_after(&on(moved), &after.model);
    let mut keys: Vec<&String> = next.model.l7.keys().collect();
    keys.sort();
    let mut want = [format!("*:{moved}/http"), format!("*:{https}/https")];
    want.sort();
    assert_eq!(keys, want.iter().collect::<Vec<_>>());
}

/// A host's certificate comes from the namespace that owns the host (its oldest Ingress with
/// a rule on it): a newer Ingress of another namespace that lists the host in its `spec.tls`
/// does not get its certificate served for it, nor becomes the listener's default (the
/// first certificate by namespace/name order was served: `aaa` before `shop`).
#[tokio::test]
async fn a_hosts_certificate_comes_from_the_namespace_that_owns_it() {
    let port = free_port();
    let web = echo("web", Duration::ZERO).await;
    let ca = ca();
    let (_dir, ca_file) = ca_file(&ca);
    let lp = format!("[{{\"HTTPS\": {port}}}]");
    let in_ns = |yaml: String, ns: &str, ts: &str| {
        yaml.replace("namespace: tls\n", &format!("namespace: {ns}\n  creationTimestamp: \"{ts}\"\n"))
            .replace("namespace: tls}", &format!("namespace: {ns}}}"))
    };
    let owner = ingress(NS, "owner", &[("listen-ports", &lp)], &rule("shop.test", &[("/", "Prefix", "web")]))
        .replace("spec:\n", "spec:\n  tls:\n  - hosts: [shop.test]\n    secretName: owner-cert\n");
    let intruder = ingress(NS, "intruder", &[("listen-ports", &lp)], &rule("other.test", &[("/", "Prefix", "web")]))
        .replace("spec:\n", "spec:\n  tls:\n  - hosts: [shop.test, other.test]\n    secretName: intruder-cert\n");
    let yaml = alb_class(&[(port, "HTTPS")])
        + &in_ns(service(NS, "web", &[&web]), "shop", "2026-01-01T00:00:00Z")
        + &in_ns(service(NS, "web", &[&web]), "aaa", "2026-01-01T00:00:00Z")
        + &in_ns(owner, "shop", "2026-01-01T00:00:00Z")
        + &in_ns(secret("owner-cert", &leaf(&ca, &["shop.test"])), "shop", "2026-01-01T00:00:00Z")
        + &in_ns(intruder, "aaa", "2026-02-01T00:00:00Z")
        + &in_ns(secret("intruder-cert", &leaf(&ca, &["shop.test", "other.test"])), "aaa", "2026-02-01T00:00:00Z");
    let b = build(&yaml);
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let note = b.notices.iter().find(|n| n.object.name == "intruder").expect("a notice for the newer Ingress");
    assert!(note.note.contains("not served for shop.test"), "{}", note.note);
    let _p = proxy(&b.model);
    let f = ca_file.clone();
    let (shop, unknown) = tokio::task::spawn_blocking(move || {
        (curl(&f, "shop.test", port, "/", &[]), curl(&f, "nobody.test", port, "/", &["--insecure"]))
    })
    .await
    .unwrap();
    assert!(shop.ok, "{}", shop.stderr);
    let sans = move |host: &'static str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("echo | openssl s_client -connect 127.0.0.1:{port} -servername {host} 2>/dev/null | openssl x509 -noout -ext subjectAltName"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (shop_sans, default_sans) =
        tokio::task::spawn_blocking(move || (sans("shop.test"), sans("nobody.test"))).await.unwrap();
    assert!(!shop_sans.contains("other.test"), "the intruder's certificate served for shop.test: {shop_sans}");
    assert!(shop_sans.contains("shop.test"), "{shop_sans}");
    assert!(unknown.ok, "{}", unknown.stderr);
    assert!(!default_sans.contains("other.test"), "the default is the oldest Ingress's: {default_sans}");
}

/// An Ingress whose `spec.tls` names only hosts another namespace owns gives its HTTPS
/// listener no certificate: that listener is an error of `lb check`, as one with no
/// usable Secret (it counted as certified, then started without a certificate).
#[test]
fn a_certificate_only_for_another_namespaces_host_certifies_nothing() {
    let (http, https) = (free_port(), free_port());
    let web = Echo { addr: "127.0.0.1:9".parse().unwrap(), hits: Default::default(), seen: Default::default() };
    let in_ns = |yaml: String, ns: &str, ts: &str| {
        yaml.replace("namespace: tls\n", &format!("namespace: {ns}\n  creationTimestamp: \"{ts}\"\n"))
            .replace("namespace: tls}", &format!("namespace: {ns}}}"))
    };
    let owner = ingress(
        NS,
        "owner",
        &[("listen-ports", &format!("[{{\"HTTP\": {http}}}]"))],
        &rule("shop.test", &[("/", "Prefix", "web")]),
    );
    let intruder = |tls_hosts: &str| {
        ingress(
            NS,
            "intruder",
            &[("listen-ports", &format!("[{{\"HTTPS\": {https}}}]"))],
            &rule("other.test", &[("/", "Prefix", "web")]),
        )
        .replace("spec:\n", &format!("spec:\n  tls:\n  - hosts: [{tls_hosts}]\n    secretName: intruder-cert\n"))
    };
    let base = alb_class(&[(http, "HTTP"), (https, "HTTPS")])
        + &in_ns(service(NS, "web", &[&web]), "shop", "2026-01-01T00:00:00Z")
        + &in_ns(service(NS, "web", &[&web]), "aaa", "2026-01-01T00:00:00Z")
        + &in_ns(owner, "shop", "2026-01-01T00:00:00Z")
        + &in_ns(secret("intruder-cert", &leaf(&ca(), &["shop.test", "other.test"])), "aaa", "2026-02-01T00:00:00Z");
    let b = build(&(base.clone() + &in_ns(intruder("shop.test"), "aaa", "2026-02-01T00:00:00Z")));
    let e = b.errors.iter().find(|e| e.object.name == "intruder").expect("the intruder is in error");
    assert_eq!(e.field, "spec.tls");
    assert!(e.reason.contains(&format!("HTTPS listener {https} has no certificate")), "{}", e.reason);
    assert!(b.model.l7.values().all(|l| l.port != https), "{:?}", b.model.l7.keys().collect::<Vec<_>>());
    // With a host of its own too, the Secret serves that host and the listener starts.
    let b = build(&(base + &in_ns(intruder("shop.test, other.test"), "aaa", "2026-02-01T00:00:00Z")));
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let l = b.model.l7.values().find(|l| l.port == https).expect("the HTTPS listener");
    let certs = &l.tls.as_ref().unwrap().certificates;
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].hosts, ["other.test"]);
}

/// `spec.tls` hosts with no `secretName` (the reference's examples, where the ALB finds the
/// certificate by domain): each host is served with the first `kubernetes.io/tls` Secret of
/// the Ingress's namespace whose certificate covers it, a wildcard host with a wildcard
/// certificate; a host no Secret covers gets a notice (they were all left to the cloud,
/// and the listener had no certificate).
#[tokio::test]
async fn spec_tls_hosts_without_a_secret_find_theirs_by_host() {
    let port = free_port();
    let web = echo("web", Duration::ZERO).await;
    let ca = ca();
    let (_dir, ca_file) = ca_file(&ca);
    let tls = "  - hosts: [a.test, '*.w.test', none.test]\n";
    let yaml = alb_class(&[(port, "HTTPS")])
        + &service(NS, "web", &[&web])
        + &https_ingress(port, tls, &["a.test", "x.w.test", "none.test"])
        + &secret("another", &leaf(&ca, &["other.test"]))
        + &secret("for-a", &leaf(&ca, &["a.test"]))
        + &secret("for-w", &leaf(&ca, &["*.w.test"]))
        // Covers x.w.test by name, not the wildcard host: not chosen for it.
        + &secret("only-x", &leaf(&ca, &["x.w.test"]));
    let b = build(&yaml);
    assert!(b.errors.is_empty(), "{:?}", b.errors);
    let l = b.model.l7.values().find(|l| l.port == port).expect("the HTTPS listener");
    let certs: Vec<(String, Vec<String>)> =
        l.tls.as_ref().unwrap().certificates.iter().map(|c| (c.secret.name.clone(), c.hosts.clone())).collect();
    assert_eq!(certs, [("for-a".to_string(), vec!["a.test".to_string()]), ("for-w".into(), vec!["*.w.test".into()])]);
    let note = b.notices.iter().find(|n| n.field == "spec.tls").expect("a notice for none.test");
    assert!(note.note.contains("for none.test"), "{}", note.note);
    let _p = proxy(&b.model);
    let f = ca_file.clone();
    let (a, w) =
        tokio::task::spawn_blocking(move || (curl(&f, "a.test", port, "/", &[]), curl(&f, "x.w.test", port, "/", &[])))
            .await
            .unwrap();
    assert!(a.ok && a.status == 200, "{}", a.stderr);
    assert!(a.subject.contains("a.test"), "{}", a.subject);
    assert!(w.ok && w.status == 200, "{}", w.stderr);
    assert!(w.subject.contains("*.w.test"), "{}", w.subject);
}
