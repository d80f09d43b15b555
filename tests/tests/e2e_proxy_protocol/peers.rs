//! nginx and haproxy as the PROXY protocol receivers: v1 and v2, IPv4 and IPv6, TLS 1.3
//! through nginx, 20% loss in the backends' namespaces; what they log is the real client.
use std::{
    collections::BTreeSet,
    fs,
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
};

use anyhow::{Context, Result};
use lb_tests::{netns::Netns, topology::Shape};

use crate::support::{
    Bed, Peer, dropped, http_get, https_get, inject_loss, one_loss_test_at_a_time, parse_addr, ready, service,
};

/// nginx in `ns`: HTTP on 8080 and HTTPS (TLS 1.3 only) on 8443, both `proxy_protocol`,
/// answering and logging `$proxy_protocol_addr:$proxy_protocol_port`.
pub fn nginx(ns: &Netns, dir: &Path) -> Result<Peer> {
    fs::create_dir_all(dir)?;
    let d = dir.display();
    Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=lb-test"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .context("openssl")?
        .status
        .success()
        .then_some(())
        .context("openssl req failed")?;
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    log_format pp '$proxy_protocol_addr:$proxy_protocol_port';
    access_log {d}/access.log pp;
    server {{
        listen 8080 proxy_protocol;
        listen [::]:8080 proxy_protocol;
        listen 8443 ssl proxy_protocol;
        listen [::]:8443 ssl proxy_protocol;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.3;
        location / {{ return 200 "$proxy_protocol_addr:$proxy_protocol_port\n"; }}
    }}
}}
"#
    );
    fs::write(dir.join("nginx.conf"), conf)?;
    let conf = dir.join("nginx.conf");
    let mut p = Peer::start(ns, "nginx", dir, "nginx", &["-c", conf.to_str().unwrap(), "-p", dir.to_str().unwrap()])?;
    p.wait_listening(ns, 8080)?;
    Ok(p)
}

/// haproxy in `ns`: HTTP on 8080 with `accept-proxy`, answering `%[src]:%[src_port]` and
/// logging `%ci:%cp` to stdout. One thread: haproxy's stdout logger drops a line rather than
/// wait when two threads write at once (`fd_write_frag_line` gives up after a few lock
/// attempts), which lost one line in twenty on two busy CI runs — the client had its right
/// answer and haproxy no socket left. A client timeout of 10 s bounds how long a stream the
/// injected loss keeps retransmitting can hold its line back.
pub fn haproxy(ns: &Netns, dir: &Path) -> Result<Peer> {
    fs::create_dir_all(dir)?;
    let conf = r#"global
    log stdout format raw local0
    nbthread 1
    maxconn 256
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind :::8080 v4v6 accept-proxy
    log-format "%ci:%cp"
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port]\n"
"#;
    fs::write(dir.join("haproxy.cfg"), conf)?;
    let cfg = dir.join("haproxy.cfg");
    let mut p = Peer::start(ns, "haproxy", dir, "haproxy", &["-db", "-f", cfg.to_str().unwrap()])?;
    p.wait_listening(ns, 8080)?;
    Ok(p)
}

pub fn nginx_and_haproxy_log_the_real_client_v1_v2_under_loss(shape: Shape) {
    let _turn = one_loss_test_at_a_time();
    if !ready(
        "nginx_and_haproxy_log_the_real_client_v1_v2_under_loss",
        &["nginx", "haproxy", "openssl", "curl", "iptables"],
    ) {
        return;
    }
    let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
    let (n4, n6, h4, h6) = (
        IpAddr::V4(shape.backend_addr(1)),
        IpAddr::V6(shape.backend_addr6(1)),
        IpAddr::V4(shape.backend_addr(2)),
        IpAddr::V6(shape.backend_addr6(2)),
    );
    let web = [("TCP", 80, 8080), ("TCP", 443, 8443)];
    // (name, VIP, version, backend)
    let plan: Vec<(&str, IpAddr, &str, IpAddr)> = vec![
        ("nginx-v2", v4("198.18.100.10"), "", n4),
        ("nginx-v1", v4("198.18.100.11"), "1", n4),
        ("haproxy-v2", v4("198.18.100.12"), "2", h4),
        ("haproxy-v1", v4("198.18.100.13"), "1", h4),
        ("nginx6-v1", v4("2001:db8:100::11"), "1", n6),
        ("nginx6-v2", v4("2001:db8:100::10"), "2", n6),
        ("haproxy6-v2", v4("2001:db8:100::12"), "2", h6),
        ("haproxy6-v1", v4("2001:db8:100::13"), "1", h6),
    ];
    let services: Vec<String> = plan.iter().map(|(name, vip, ver, b)| service(name, *vip, ver, &web, &[*b])).collect();
    let (mut bed, (ngx, hap)) = Bed::start(shape, 2, &services, services.len() * 2, |topo, work| {
        Ok((nginx(&topo.backends[0], &work.join("nginx"))?, haproxy(&topo.backends[1], &work.join("haproxy"))?))
    })
    .unwrap();
    for ns in &bed.topo.backends {
        inject_loss(ns, 8080, "0.2").unwrap();
        inject_loss(ns, 8443, "0.2").unwrap();
    }
    // Every Service, five requests each, in parallel (loss makes each take a while).
    const N: usize = 5;
    let handles: Vec<_> = plan
        .iter()
        .map(|(name, vip, _, _)| {
            let (name, to) = (name.to_string(), SocketAddr::new(*vip, 80));
            bed.topo.client.spawn(move || (name, (0..N).map(|_| http_get(to)).collect::<Vec<_>>()))
        })
        .collect();
    let mut clients: Vec<(String, SocketAddr)> = Vec::new();
    for h in handles {
        let (name, results) = h.join().unwrap();
        for r in results {
            let (local, body) = r.unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let seen = parse_addr(&body).unwrap_or_else(|| panic!("{name}: body {body:?}"));
            assert_eq!(seen, local, "{name}: the backend saw the real client");
            clients.push((name.clone(), local));
        }
    }
    // TLS 1.3 through nginx, header first, then the handshake.
    for vip in ["198.18.100.10", "198.18.100.11", "2001:db8:100::11"] {
        let to = SocketAddr::new(v4(vip), 443);
        let (local, body) = https_get(&bed.topo.client, to).unwrap_or_else(|e| panic!("TLS 1.3 via {to}: {e:#}"));
        assert_eq!(parse_addr(&body), Some(local), "TLS 1.3 via {to}: {body:?}");
        clients.push(("nginx-tls".into(), local));
    }
    // The logs say the same.
    // (Each server writes its log line after the answer: wait a bounded time for the last ones.)
    let logged = |text: &str| text.lines().filter_map(parse_addr).collect::<BTreeSet<SocketAddr>>();
    let read_logs = || {
        (
            logged(&fs::read_to_string(bed.work.path().join("nginx/access.log")).unwrap_or_default()),
            logged(&hap.output("out")),
        )
    };
    let all_logged = |(ngx, hap): &(BTreeSet<SocketAddr>, BTreeSet<SocketAddr>)| {
        clients
            .iter()
            .all(|(name, local)| if name.starts_with("nginx") { ngx.contains(local) } else { hap.contains(local) })
    };
    // haproxy logs a request when its stream ends, which retransmissions under loss delay
    // (the more so with the three shapes' runs sharing two CPUs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut logs = read_logs();
    while !all_logged(&logs) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        logs = read_logs();
    }
    if !all_logged(&logs) {
        // What the sockets were doing: a missing line is a stream haproxy or nginx still holds.
        for (who, ns) in
            [("client", &bed.topo.client), ("nginx", &bed.topo.backends[0]), ("haproxy", &bed.topo.backends[1])]
        {
            let ss = ns.exec(&["ss", "-tanoi"]).map(|o| String::from_utf8_lossy(&o.stdout).to_string());
            eprintln!("--- ss in {who}'s namespace:\n{}", ss.unwrap_or_default());
        }
        eprintln!("--- haproxy stderr:\n{}", hap.output("err"));
    }
    let (ngx_log, hap_log) = logs;
    for (name, local) in &clients {
        let log = if name.starts_with("nginx") { &ngx_log } else { &hap_log };
        assert!(log.contains(local), "{name}: {local} not in the access log: {log:?}");
    }
    let lost: u64 = bed.topo.backends.iter().map(dropped).sum();
    assert!(lost > 10, "the loss rules dropped {lost} segments");
    drop((ngx, hap));
    let c = bed.stop_counter(&["pp_inserted", "drop_pp", "new_flows"]);
    assert!(c[0] >= (plan.len() * N) as u64, "a header per connection at least: {c:?}");
    assert_eq!(c[1], 0, "no PROXY packet dropped by the datapath");
    eprintln!("{} connections, {lost} segments dropped by the loss rules, {} headers inserted", clients.len(), c[0]);
}
