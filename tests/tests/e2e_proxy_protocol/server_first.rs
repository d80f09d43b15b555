//! A server-first backend (`ppserver`: it speaks first, then says what the header told it):
//! the header arrives first under 20% loss; multi-MB transfers both ways keep their hashes.
use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use lb_tests::{
    ppserver::{self, BANNER, FNV_START, fnv, stream_bytes},
    topology::Shape,
};

use crate::support::{Bed, Peer, dropped, inject_loss, one_loss_test_at_a_time, ready, service};

/// Open a connection to the server-first backend: read its banner and what it says the
/// header told it, without sending a byte. Returns (local address, header source, version).
pub fn server_first(to: SocketAddr) -> Result<(SocketAddr, BufReader<TcpStream>, TcpStream, SocketAddr, u8)> {
    let s = TcpStream::connect_timeout(&to, Duration::from_secs(30)).with_context(|| format!("connect {to}"))?;
    s.set_read_timeout(Some(Duration::from_secs(90)))?;
    let local = s.local_addr()?;
    let w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).with_context(|| format!("{local} → {to}: reading the banner"))?;
    if line.trim_end() != BANNER {
        bail!("banner {line:?}");
    }
    line.clear();
    r.read_line(&mut line).with_context(|| format!("{local} → {to}: reading the header's echo"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 3 || f[0] != "200" {
        bail!("the server did not get a PROXY header first: {line:?}");
    }
    let src: SocketAddr = f[1].parse()?;
    let version: u8 = f[2].trim_start_matches('v').parse()?;
    Ok((local, r, w, src, version))
}

pub fn server_first_protocol_gets_the_header_first_under_loss(shape: Shape) {
    let _turn = one_loss_test_at_a_time();
    if !ready("server_first_protocol_gets_the_header_first_under_loss", &["iptables"]) {
        return;
    }
    let tcp = [("TCP", 80, 8080)];
    let b4 = IpAddr::V4(shape.backend_addr(1));
    let b6 = IpAddr::V6(shape.backend_addr6(1));
    let plan: Vec<(IpAddr, u8)> = vec![
        ("198.18.100.10".parse().unwrap(), 2),
        ("198.18.100.11".parse().unwrap(), 1),
        ("2001:db8:100::10".parse().unwrap(), 2),
        ("2001:db8:100::11".parse().unwrap(), 1),
    ];
    let services: Vec<String> = plan
        .iter()
        .enumerate()
        .map(|(i, (vip, v))| {
            service(&format!("sf{i}"), *vip, &v.to_string(), &tcp, &[if vip.is_ipv4() { b4 } else { b6 }])
        })
        .collect();
    let (mut bed, _server) =
        Bed::start(shape, 1, &services, services.len(), |topo, _| ppserver::start(&topo.backends[0], 8080)).unwrap();
    let _pcap: Vec<Peer> = match std::env::var("PP_PCAP") {
        Ok(dir) => {
            let dir = PathBuf::from(dir);
            fs::create_dir_all(&dir).unwrap();
            let c = format!("{}c0", bed.topo.prefix);
            let b = format!("{}b1", bed.topo.prefix);
            let cf = dir.join("client.pcap");
            let bf = dir.join("backend.pcap");
            vec![
                Peer::start(
                    &bed.topo.client,
                    "tcpdump-c",
                    &dir,
                    "tcpdump",
                    &["-i", &c, "-s", "200", "-w", cf.to_str().unwrap(), "tcp"],
                )
                .unwrap(),
                Peer::start(
                    &bed.topo.backends[0],
                    "tcpdump-b",
                    &dir,
                    "tcpdump",
                    &["-i", &b, "-s", "200", "-w", bf.to_str().unwrap(), "tcp"],
                )
                .unwrap(),
            ]
        }
        Err(_) => Vec::new(),
    };
    std::thread::sleep(Duration::from_millis(500));
    inject_loss(&bed.topo.backends[0], 8080, "0.2").unwrap();
    let handles: Vec<_> = plan
        .iter()
        .map(|(vip, version)| {
            let (to, version) = (SocketAddr::new(*vip, 80), *version);
            bed.topo.client.spawn(move || -> Result<usize> {
                for _ in 0..5 {
                    let (local, mut r, mut w, src, v) = server_first(to)?;
                    if (src, v) != (local, version) {
                        bail!("{to}: header said {src} v{v}, want {local} v{version}");
                    }
                    // Then a little traffic both ways on the same connection (20% loss each
                    // way makes bulk transfers a matter of exponential backoff: those are
                    // `multi_megabyte_transfers_keep_their_checksums`'s, at 1%).
                    let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
                    w.write_all(format!("UP {}\n", data.len()).as_bytes())?;
                    w.write_all(&data)?;
                    let mut line = String::new();
                    r.read_line(&mut line).with_context(|| format!("{local} → {to}: reading the upload's hash"))?;
                    if line.trim() != format!("OK {:016x}", fnv(&data, FNV_START)) {
                        bail!("{to}: upload hash {line:?}");
                    }
                    w.write_all(b"QUIT\n")?;
                }
                Ok(5)
            })
        })
        .collect();
    for h in handles {
        if let Err(e) = h.join().unwrap() {
            // What each side holds of the stuck connection tells a lost handshake (no
            // socket on the backend: its SYN-ACK retries ran out) from a datapath fault.
            for (who, ns) in [("client", &bed.topo.client), ("backend", &bed.topo.backends[0])] {
                for cmd in [&["ss", "-tanoi"][..], &["nstat", "-a"][..]] {
                    if let Ok(o) = ns.exec(cmd) {
                        eprintln!("{who} {}:\n{}", cmd[0], String::from_utf8_lossy(&o.stdout));
                    }
                }
            }
            let names = ["pp_inserted", "drop_pp", "drop_pp_tc", "drop_half_open", "drop_no_flow", "handshakes"];
            let c = bed.stop_counter(&names);
            panic!("{e:#}; datapath: {:?}", names.iter().zip(c).collect::<Vec<_>>());
        }
    }
    let lost = dropped(&bed.topo.backends[0]);
    assert!(lost > 10, "the loss rules dropped {lost} segments");
    let c = bed.stop_counter(&["pp_inserted", "drop_pp"]);
    assert!(c[0] >= 20 && c[1] == 0, "{c:?}");
}

/// `size` bytes up (the server's hash must match ours), then `size` bytes down (ours must
/// match what the server sent), on a connection past its header.
pub fn transfer_both_ways(to: SocketAddr, r: &mut BufReader<TcpStream>, w: &mut TcpStream, size: usize) -> Result<()> {
    let mut h = FNV_START;
    w.write_all(format!("UP {size}\n").as_bytes())?;
    stream_bytes(size, 42, |b| {
        h = fnv(b, h);
        Ok(w.write_all(b)?)
    })?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.trim() != format!("OK {h:016x}") {
        bail!("{to}: upload of {size} bytes: {line:?}");
    }
    w.write_all(format!("DOWN {size} 7\n").as_bytes())?;
    let mut want = FNV_START;
    stream_bytes(size, 7, |b| {
        want = fnv(b, want);
        Ok(())
    })?;
    let (mut got, mut left, mut buf) = (FNV_START, size, vec![0u8; 65536]);
    while left > 0 {
        let n = r.read(&mut buf[..left.min(65536)])?;
        if n == 0 {
            bail!("{to}: download cut short with {left} bytes to go");
        }
        got = fnv(&buf[..n], got);
        left -= n;
    }
    if got != want {
        bail!("{to}: download of {size} bytes differs");
    }
    Ok(())
}

pub fn multi_megabyte_transfers_keep_their_checksums(shape: Shape) {
    if !ready("multi_megabyte_transfers_keep_their_checksums", &["iptables"]) {
        return;
    }
    let tcp = [("TCP", 80, 8080)];
    let services = vec![
        service("big4", "198.18.100.10".parse().unwrap(), "2", &tcp, &[IpAddr::V4(shape.backend_addr(1))]),
        service("big6", "2001:db8:100::10".parse().unwrap(), "1", &tcp, &[IpAddr::V6(shape.backend_addr6(1))]),
    ];
    let (mut bed, _server) =
        Bed::start(shape, 1, &services, 2, |topo, _| ppserver::start(&topo.backends[0], 8080)).unwrap();
    // A little loss: SACK blocks from the backend, retransmissions both ways.
    inject_loss(&bed.topo.backends[0], 8080, "0.01").unwrap();
    const SIZE: usize = 8 << 20;
    for vip in ["198.18.100.10", "2001:db8:100::10"] {
        let to = SocketAddr::new(vip.parse().unwrap(), 80);
        bed.topo
            .client
            .run(move || -> Result<()> {
                let (local, mut r, mut w, src, _) = server_first(to)?;
                assert_eq!(src, local);
                transfer_both_ways(to, &mut r, &mut w, SIZE)
            })
            .unwrap();
    }
    let c = bed.stop_counter(&["pp_inserted", "drop_pp"]);
    assert!(c[0] >= 2 && c[1] == 0, "{c:?}");
}
