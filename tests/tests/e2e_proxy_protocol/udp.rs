//! UDP: every datagram reaches the backend with a v2 header naming the real client.
use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::{Result, bail};
use lb_tests::{
    ppserver, privileged,
    topology::{CLIENT, CLIENT6, Shape},
};

use crate::support::{Bed, service};

pub fn udp_datagrams_each_carry_a_v2_header(shape: Shape) {
    if !privileged("udp_datagrams_each_carry_a_v2_header") {
        return;
    }
    let udp = [("UDP", 53, 8080)];
    let services = vec![
        service("u4", "198.18.100.10".parse().unwrap(), "", &udp, &[IpAddr::V4(shape.backend_addr(1))]),
        // v1 asked for: UDP still gets v2 (v1 has no datagram form).
        service("u4v1", "198.18.100.11".parse().unwrap(), "1", &udp, &[IpAddr::V4(shape.backend_addr(1))]),
        service("u6", "2001:db8:100::10".parse().unwrap(), "2", &udp, &[IpAddr::V6(shape.backend_addr6(1))]),
    ];
    let (bed, _server) =
        Bed::start(shape, 1, &services, 3, |topo, _| ppserver::start(&topo.backends[0], 8080)).unwrap();
    for (vip, client) in [
        ("198.18.100.10", IpAddr::V4(CLIENT)),
        ("198.18.100.11", IpAddr::V4(CLIENT)),
        ("2001:db8:100::10", IpAddr::V6(CLIENT6)),
    ] {
        let to = SocketAddr::new(vip.parse().unwrap(), 53);
        let answers = bed.topo.client.run(move || -> Result<Vec<(String, String)>> {
            let s = UdpSocket::bind(SocketAddr::new(client, 0))?;
            s.connect(to)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            let local = s.local_addr()?;
            let mut out = Vec::new();
            for i in 0..50 {
                let msg = format!("datagram {i} {}", "x".repeat(i * 20));
                // UDP may lose a datagram (the very first one waits for a neighbour entry):
                // up to three sends; every answer that comes is checked.
                // A late answer to an earlier datagram's resend (the first datagrams wait for
                // neighbour discovery) is skipped.
                let mut answered = false;
                'tries: for _ in 0..3 {
                    s.send(msg.as_bytes())?;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.recv(&mut buf) {
                        let got = String::from_utf8_lossy(&buf[..n]).to_string();
                        let earlier = (0..i).any(|j| got.starts_with(&format!("ok {local} datagram {j} ")));
                        if earlier {
                            continue;
                        }
                        out.push((got, format!("ok {local} {msg}")));
                        answered = true;
                        break 'tries;
                    }
                }
                if !answered {
                    bail!("no answer to datagram {i} via {to} in three tries");
                }
            }
            Ok(out)
        });
        let answers = match answers {
            Ok(a) => a,
            Err(e) => {
                let mut bed = bed;
                let out = bed.daemon.stop().unwrap_or_default();
                panic!("{e:#}\nlb: {out}\n{}", bed.daemon.log_text());
            }
        };
        for (got, want) in answers {
            assert_eq!(got, want, "via {to}: every datagram starts with a valid v2 header from the real client");
        }
    }
}
