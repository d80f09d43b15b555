//! Clients on the load balancer's node get their header from the tc datapath.
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use anyhow::{Context, Result};
use lb_tests::topology::Shape;

use crate::{
    peers::{haproxy, nginx},
    support::{Bed, http_get, parse_addr, ready, service},
};

/// Clients on the load balancer's node (a client pod, the node itself: default offloads,
/// partial checksums) get their header from the tc datapath: on the handshake's final ACK,
/// and on the first data segment when it goes out before the backend acknowledged the
/// header (the payload is moved up to make room), small and multi-segment first writes.
pub fn local_clients_get_the_header_from_tc(shape: Shape) {
    if !ready("local_clients_get_the_header_from_tc", &["nginx", "haproxy"]) {
        return;
    }
    let http = [("TCP", 80, 8080)];
    let (n4, n6, h4, h6) = (
        IpAddr::V4(shape.backend_addr(1)),
        IpAddr::V6(shape.backend_addr6(1)),
        IpAddr::V4(shape.backend_addr(2)),
        IpAddr::V6(shape.backend_addr6(2)),
    );
    let services = vec![
        service("ngx4", "198.18.100.10".parse().unwrap(), "2", &http, &[n4]),
        service("ngx6", "2001:db8:100::10".parse().unwrap(), "2", &http, &[n6]),
        service("hap4", "198.18.100.11".parse().unwrap(), "1", &http, &[h4]),
        service("hap6", "2001:db8:100::11".parse().unwrap(), "1", &http, &[h6]),
    ];
    let (mut bed, peers) = Bed::start(shape, 2, &services, services.len(), |topo, work| {
        Ok((nginx(&topo.backends[0], &work.join("nginx"))?, haproxy(&topo.backends[1], &work.join("haproxy"))?))
    })
    .unwrap();
    let vips = ["198.18.100.10", "2001:db8:100::10", "198.18.100.11", "2001:db8:100::11"];
    let pod = bed.topo.client_pod.as_ref().expect("a cluster has a client pod");
    for (who, ns) in [("client pod", pod), ("node", &bed.topo.lb)] {
        for vip in vips {
            let to = SocketAddr::new(vip.parse().unwrap(), 80);
            for big in [false, true] {
                let got = ns.run(move || -> Result<(SocketAddr, String)> {
                    if !big {
                        return http_get(to);
                    }
                    // A request larger than a segment, written at once.
                    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
                    s.set_read_timeout(Some(Duration::from_secs(30)))?;
                    let local = s.local_addr()?;
                    let pad = "x".repeat(6000);
                    s.write_all(format!("GET / HTTP/1.0\r\nHost: lb-test\r\nX-Pad: {pad}\r\n\r\n").as_bytes())?;
                    let mut out = String::new();
                    s.read_to_string(&mut out)?;
                    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).context("no HTTP response")?;
                    Ok((local, body))
                });
                let (local, body) = got.unwrap_or_else(|e| {
                    let stats = bed
                        .topo
                        .lb
                        .exec(&[lb_tests::daemon::lb_bin().to_str().unwrap(), "stats"])
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                    panic!("{who} → {to} (big: {big}): {e:#}\n{stats:?}\n{}", bed.daemon.log_text())
                });
                assert_eq!(
                    parse_addr(&body),
                    Some(local),
                    "{who} → {to} (big: {big}): the backend saw the real client: {body:?}"
                );
            }
        }
    }
    drop(peers);
    let [inserted, drop_pp, gso] = bed.stop_counter(&["pp_inserted", "drop_pp", "drop_pp_tc"])[..] else {
        unreachable!()
    };
    assert!(inserted >= 16, "a header for each of the 16 connections: {inserted}");
    // A multi-segment first write (GSO) is dropped on purpose (drop_pp_tc) for its
    // one-segment retransmission to carry the header; nothing else may fail.
    assert_eq!(drop_pp, gso, "every header not inserted was a deliberate GSO drop");
}
