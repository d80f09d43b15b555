//! A PROXY protocol backend for the end-to-end tests: a server-first TCP service (it writes
//! its banner before reading anything, then requires a PROXY header as the first bytes of
//! the stream) with upload and download commands checked by a hash, and a UDP receiver that
//! checks the v2 header of every datagram. Peers that are not ours (nginx, haproxy) are
//! started by the tests themselves.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use lb_common::proxy_header::{
    V1_MAX_LEN, V2_ADDR_LEN_V4, V2_ADDR_LEN_V6, V2_AF_INET, V2_AF_INET6, V2_DGRAM, V2_FIXED_LEN, V2_PROXY,
    V2_SIGNATURE, V2_STREAM,
};

use crate::{netns::Netns, servers::Server};

/// The banner the server writes first.
pub const BANNER: &str = "220 lb-test ready";

/// What a PROXY header said: (source, destination, version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub version: u8,
}

/// Parse a v2 header at the start of `b`: (header, its length).
pub fn parse_v2(b: &[u8], want_dgram: bool) -> Result<(Header, usize)> {
    if b.len() < V2_FIXED_LEN || b[..12] != V2_SIGNATURE {
        bail!("no v2 signature: {:02x?}", &b[..b.len().min(16)]);
    }
    if b[12] != V2_PROXY {
        bail!("version/command {:#x}, want {V2_PROXY:#x} (v2, PROXY)", b[12]);
    }
    let len = u16::from_be_bytes([b[14], b[15]]) as usize;
    if b.len() < V2_FIXED_LEN + len {
        bail!("header says {len} address bytes, {} present", b.len() - V2_FIXED_LEN);
    }
    let transport = b[13] & 0x0f;
    if transport != if want_dgram { V2_DGRAM } else { V2_STREAM } {
        bail!("transport {transport} (1 stream, 2 datagram)");
    }
    let a = &b[V2_FIXED_LEN..V2_FIXED_LEN + len];
    let (src, dst) = match b[13] & 0xf0 {
        V2_AF_INET if len >= V2_ADDR_LEN_V4 as usize => {
            let ip = |o: usize| IpAddr::from(<[u8; 4]>::try_from(&a[o..o + 4]).unwrap());
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (SocketAddr::new(ip(0), port(8)), SocketAddr::new(ip(4), port(10)))
        }
        V2_AF_INET6 if len >= V2_ADDR_LEN_V6 as usize => {
            let ip = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&a[o..o + 16]).unwrap());
            let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
            (SocketAddr::new(ip(0), port(32)), SocketAddr::new(ip(16), port(34)))
        }
        f => bail!("family {} with {len} address bytes", f >> 4),
    };
    Ok((Header { src, dst, version: 2 }, V2_FIXED_LEN + len))
}

/// Parse a v1 line (without its `\r\n`).
pub fn parse_v1(line: &str) -> Result<Header> {
    let f: Vec<&str> = line.split(' ').collect();
    if f.len() != 6 || f[0] != "PROXY" || !(f[1] == "TCP4" || f[1] == "TCP6") {
        bail!("bad v1 line {line:?}");
    }
    let ip = |s: &str| s.parse::<IpAddr>().with_context(|| format!("address {s:?}"));
    let port = |s: &str| s.parse::<u16>().with_context(|| format!("port {s:?}"));
    Ok(Header {
        src: SocketAddr::new(ip(f[2])?, port(f[4])?),
        dst: SocketAddr::new(ip(f[3])?, port(f[5])?),
        version: 1,
    })
}

/// Read the PROXY header that must start the stream (v1 or v2), and nothing more.
fn read_header(r: &mut impl Read) -> Result<Header> {
    let mut first = [0u8; 1];
    r.read_exact(&mut first).context("stream ended before any byte")?;
    if first[0] == b'P' {
        let mut line = vec![b'P'];
        while !line.ends_with(b"\r\n") {
            if line.len() > V1_MAX_LEN {
                bail!("v1 line longer than {V1_MAX_LEN} bytes");
            }
            let mut c = [0u8; 1];
            r.read_exact(&mut c)?;
            line.push(c[0]);
        }
        return parse_v1(std::str::from_utf8(&line[..line.len() - 2])?);
    }
    let mut b = vec![first[0]; 16];
    r.read_exact(&mut b[1..])?;
    let len = u16::from_be_bytes([b[14], b[15]]) as usize;
    b.resize(16 + len, 0);
    r.read_exact(&mut b[16..])?;
    Ok(parse_v2(&b, false)?.0)
}

/// 64-bit FNV-1a.
pub fn fnv(data: &[u8], mut h: u64) -> u64 {
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// `n` deterministic pseudo-random bytes from `seed` (xorshift64), in chunks to `f`.
pub fn stream_bytes(n: usize, seed: u64, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut x = seed | 1;
    let mut buf = vec![0u8; 65536];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len());
        for chunk in buf[..k].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = x.to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        f(&buf[..k])?;
        left -= k;
    }
    Ok(())
}

/// In `ns` on `port` (all addresses): the server-first TCP service and the UDP receiver.
///
/// TCP: writes [`BANNER`], reads the PROXY header, answers `200 <src> v<version>` (or
/// `500 <why>` and closes); then serves `UP <n>` (reads n bytes, answers `OK <fnv>`),
/// `DOWN <n> <seed>` (writes n bytes of [`stream_bytes`]) and `QUIT`.
/// UDP: answers each datagram with `ok <src> <payload>` when it starts with a valid v2
/// datagram header, else `bad <why>`.
pub fn start(ns: &Netns, port: u16) -> Result<Server> {
    let addr: SocketAddr = format!("[::]:{port}").parse()?;
    let (tcp, udp) = ns.run(move || -> Result<(TcpListener, UdpSocket)> {
        Ok((TcpListener::bind(addr).context("tcp bind")?, UdpSocket::bind(addr).context("udp bind")?))
    })?;
    tcp.set_nonblocking(true)?;
    udp.set_read_timeout(Some(Duration::from_millis(50)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let stop = stop.clone();
        threads.push(thread::spawn(move || {
            use std::os::fd::AsFd;
            while !stop.load(Ordering::Relaxed) {
                let mut fds = [nix::poll::PollFd::new(tcp.as_fd(), nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, 50u16);
                if let Ok((s, _)) = tcp.accept() {
                    thread::spawn(move || {
                        let _ = serve(s);
                    });
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let answer = match parse_v2(&buf[..n], true) {
                        Ok((h, hl)) => format!("ok {} {}", h.src, String::from_utf8_lossy(&buf[hl..n])),
                        Err(e) => format!("bad {e:#}"),
                    };
                    let _ = udp.send_to(answer.as_bytes(), from);
                }
            }
        }));
    }
    Ok(Server::from_parts(stop, threads))
}

fn serve(s: TcpStream) -> Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = s.try_clone()?;
    // Server first: the banner goes out before a single byte was read.
    w.write_all(format!("{BANNER}\r\n").as_bytes())?;
    let mut r = BufReader::new(s);
    match read_header(&mut r) {
        Ok(h) => w.write_all(format!("200 {} v{}\r\n", h.src, h.version).as_bytes())?,
        Err(e) => {
            w.write_all(format!("500 {e:#}\r\n").as_bytes())?;
            return Ok(());
        }
    }
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["UP", n] => {
                let mut left: usize = n.parse()?;
                let mut h = FNV_START;
                let mut buf = vec![0u8; 65536];
                while left > 0 {
                    let k = r.read(&mut buf[..left.min(65536)])?;
                    if k == 0 {
                        bail!("upload cut short");
                    }
                    h = fnv(&buf[..k], h);
                    left -= k;
                }
                w.write_all(format!("OK {h:016x}\n").as_bytes())?;
            }
            ["DOWN", n, seed] => stream_bytes(n.parse()?, seed.parse()?, |b| Ok(w.write_all(b)?))?,
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use lb_common::proxy_header::{self, Transport};

    use super::*;

    /// The parsers read back what the reference encoder writes.
    #[test]
    fn parsers_read_the_reference_encoding() {
        for (src, dst) in [("198.18.0.2:40000", "198.18.100.10:80"), ("[2001:db8::2]:50000", "[2001:db8:100::10]:81")] {
            let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
            let mut b = [0u8; proxy_header::MAX_LEN];
            for (transport, dgram) in [(Transport::Stream, false), (Transport::Datagram, true)] {
                let n = proxy_header::v2(&mut b, src, dst, transport).unwrap();
                assert_eq!(parse_v2(&b[..n], dgram).unwrap(), (Header { src, dst, version: 2 }, n));
                assert!(parse_v2(&b[..n], !dgram).is_err(), "the other transport is refused");
            }
            let n = proxy_header::v1(&mut b, src, dst).unwrap();
            let line = std::str::from_utf8(&b[..n - 2]).unwrap();
            assert_eq!(parse_v1(line).unwrap(), Header { src, dst, version: 1 });
            let mut stream = &b[..n];
            assert_eq!(read_header(&mut stream).unwrap(), Header { src, dst, version: 1 });
        }
        let mut local = [0u8; 16];
        let n = proxy_header::v2_local(&mut local).unwrap();
        assert!(parse_v2(&local[..n], false).is_err(), "a LOCAL header tells no client: refused");
    }
}
