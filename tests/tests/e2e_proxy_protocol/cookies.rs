//! SYN-cookie flows (`--syn-cookies always`) end to end, with real TCP stacks on both sides:
//! the server-first backend gets its PROXY header in the handshake's last ACK, which the
//! datapath makes from the backend's SYN-ACK, before the client sends a byte; multi-megabyte
//! transfers both ways keep their hashes through the sequence shift between the cookie's
//! numbers and the backend's (and the header's), on IPv4 (v2) and IPv6 (v1).
use std::net::{IpAddr, SocketAddr};

use anyhow::{Result, bail};
use lb_tests::{ppserver, topology::Shape};

use crate::{
    server_first::{server_first, transfer_both_ways},
    support::{Bed, ready, service},
};

const SIZE: usize = 3 << 20;
/// Counters shown when a connection fails.
const DEBUG: [&str; 12] = [
    "rx",
    "syncookies_sent",
    "syncookies_valid",
    "syncookie_handshakes",
    "new_flows",
    "drop_no_flow",
    "drop_half_open",
    "xdp_tx",
    "drop_pp",
    "fwd_to_backend",
    "fwd_to_client",
    "pass_not_ours",
];

pub fn syn_cookie_flows_carry_the_header_and_bulk_data(shape: Shape) {
    if !ready("syn_cookie_flows_carry_the_header_and_bulk_data", &[]) {
        return;
    }
    let tcp = [("TCP", 80, 8080)];
    let services = vec![
        service("ck4", "198.18.100.10".parse().unwrap(), "2", &tcp, &[IpAddr::V4(shape.backend_addr(1))]),
        service("ck6", "2001:db8:100::10".parse().unwrap(), "1", &tcp, &[IpAddr::V6(shape.backend_addr6(1))]),
    ];
    let (mut bed, _server) = Bed::start_args(shape, 1, &services, 2, &["--syn-cookies", "always"], |topo, _| {
        ppserver::start(&topo.backends[0], 8080)
    })
    .unwrap();
    for (vip, version) in [("198.18.100.10", 2u8), ("2001:db8:100::10", 1)] {
        let to = SocketAddr::new(vip.parse().unwrap(), 80);
        bed.topo
            .client
            .run(move || -> Result<()> {
                let (local, mut r, mut w, src, v) = server_first(to)?;
                if (src, v) != (local, version) {
                    bail!("{to}: header said {src} v{v}, want {local} v{version}");
                }
                transfer_both_ways(to, &mut r, &mut w, SIZE)
            })
            .unwrap_or_else(|e| {
                let c = bed.stop_counter(&DEBUG);
                panic!("{e:#}: {:?}", DEBUG.iter().zip(c).collect::<Vec<_>>())
            });
    }
    let c = bed.stop_counter(&["syncookies_valid", "syncookie_handshakes", "pp_inserted", "drop_pp", "new_flows"]);
    assert!(c[0] >= 2 && c[1] >= 2 && c[2] >= 2 && c[3] == 0, "{c:?}");
    assert_eq!(c[0], c[4], "every flow opened through a cookie: {c:?}");
}
