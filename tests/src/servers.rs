//! Small real servers and clients on kernel sockets, bounded in time: each server runs until
//! its handle is dropped, each client call has a timeout.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::netns::Netns;

/// A running server; stops when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Server {
    /// A server made of `threads` that watch `stop`.
    pub fn from_parts(stop: Arc<AtomicBool>, threads: Vec<thread::JoinHandle<()>>) -> Server {
        Server { stop, threads }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// In `ns`, answer every UDP datagram on `addr` with `name` and a newline, and every line a
/// TCP connection sends with the same, until the client closes. Bind `[::]:PORT` to serve
/// IPv4 and IPv6 alike.
pub fn name_server(ns: &Netns, addr: SocketAddr, name: &str) -> Result<Server> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tcp, udp) = ns.run(move || -> Result<(TcpListener, UdpSocket)> {
        let tcp = TcpListener::bind(addr).context("tcp bind")?;
        let udp = UdpSocket::bind(addr).context("udp bind")?;
        Ok((tcp, udp))
    })?;
    tcp.set_nonblocking(true)?;
    udp.set_read_timeout(Some(Duration::from_millis(50)))?;
    let reply = format!("{name}\n").into_bytes();
    let mut threads = Vec::new();
    {
        let stop = stop.clone();
        let reply = reply.clone();
        threads.push(thread::spawn(move || {
            use std::os::fd::AsFd;
            while !stop.load(Ordering::Relaxed) {
                // Wait for a connection (or 50 ms, to notice `stop`) instead of spinning.
                let mut fds = [nix::poll::PollFd::new(tcp.as_fd(), nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, 50u16);
                if let Ok((mut s, _)) = tcp.accept() {
                    let reply = reply.clone();
                    thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        let mut buf = [0u8; 4096];
                        // One reply per newline received; done at EOF or after 30 s idle.
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            for _ in buf[..n].iter().filter(|b| **b == b'\n') {
                                if s.write_all(&reply).is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&reply, from);
                }
            }
        }));
    }
    Ok(Server { stop, threads })
}

/// In `ns`, answer every HTTP/1.1 request on `addr` with `200` and `name` as the body
/// (followed by the request line it saw), keeping the connection open for more.
pub fn http_name_server(ns: &Netns, addr: SocketAddr, name: &str) -> Result<Server> {
    let stop = Arc::new(AtomicBool::new(false));
    let tcp = ns.run(move || TcpListener::bind(addr).context("tcp bind"))?;
    tcp.set_nonblocking(true)?;
    let name = name.to_owned();
    let stop2 = stop.clone();
    let thread = thread::spawn(move || {
        use std::os::fd::AsFd;
        while !stop2.load(Ordering::Relaxed) {
            let mut fds = [nix::poll::PollFd::new(tcp.as_fd(), nix::poll::PollFlags::POLLIN)];
            let _ = nix::poll::poll(&mut fds, 50u16);
            let Ok((mut s, _)) = tcp.accept() else { continue };
            let name = name.clone();
            thread::spawn(move || {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                        pending.drain(..end + 4);
                        let line = head.lines().next().unwrap_or("").to_owned();
                        let body = format!("{name}\n{line}\n");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok(Server { stop, threads: vec![thread] })
}

/// One TCP request/response: connect, send a line, half-close, read the reply until EOF.
pub fn tcp_request(to: SocketAddr, timeout: Duration) -> Result<String> {
    tcp_request_from(None, to, timeout)
}

/// [`tcp_request`] from a given source address.
pub fn tcp_request_from(from: Option<std::net::IpAddr>, to: SocketAddr, timeout: Duration) -> Result<String> {
    let mut s = Session::open(from, to, timeout)?;
    s.stream.write_all(b"hello\n")?;
    s.stream.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.stream.read_to_string(&mut out).with_context(|| format!("read from {to}"))?;
    Ok(out.trim().to_string())
}

/// A TCP connection kept open: each [`Session::ask`] sends a line and reads one back.
pub struct Session {
    pub stream: TcpStream,
}

impl Session {
    pub fn open(from: Option<std::net::IpAddr>, to: SocketAddr, timeout: Duration) -> Result<Session> {
        let domain = socket2::Domain::for_address(to);
        let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        if let Some(ip) = from {
            sock.bind(&SocketAddr::new(ip, 0).into())?;
        }
        sock.connect_timeout(&to.into(), timeout).with_context(|| format!("connect {to}"))?;
        let stream: TcpStream = sock.into();
        stream.set_read_timeout(Some(timeout))?;
        Ok(Session { stream })
    }

    pub fn ask(&mut self) -> Result<String> {
        self.stream.write_all(b"again\n")?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            if self.stream.read(&mut byte)? == 0 {
                anyhow::bail!("connection closed");
            }
            line.push(byte[0]);
        }
        Ok(String::from_utf8_lossy(&line).trim().to_string())
    }
}

/// One UDP request/response from a socket connected to `to` (so only `to` can answer).
pub fn udp_request(to: SocketAddr, timeout: Duration) -> Result<String> {
    let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    s.connect(to)?;
    s.set_read_timeout(Some(timeout))?;
    s.send(b"hello\n")?;
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).with_context(|| format!("no UDP reply from {to}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// In `ns` on `[::]:port`: greet each TCP connection with `name` and a newline, then
/// send back every byte it receives until it closes (or is idle for 30 s); answer every UDP
/// datagram with `name`, a space and the datagram.
pub fn greeting_echo_server(ns: &Netns, port: u16, name: &str) -> Server {
    let (tcp, udp) = ns
        .run(move || -> std::io::Result<_> { Ok((TcpListener::bind(("::", port))?, UdpSocket::bind(("::", port))?)) })
        .expect("echo server bind");
    tcp.set_nonblocking(true).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let greeting = format!("{name}\n");
    let accepting = {
        let stop = stop.clone();
        thread::spawn(move || {
            use std::os::fd::AsFd;
            while !stop.load(Ordering::Relaxed) {
                let mut fds = [nix::poll::PollFd::new(tcp.as_fd(), nix::poll::PollFlags::POLLIN)];
                let _ = nix::poll::poll(&mut fds, 50u16);
                let Ok((mut s, _)) = tcp.accept() else { continue };
                let greeting = greeting.clone();
                thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    if s.write_all(greeting.as_bytes()).is_err() {
                        return;
                    }
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        })
    };
    let answering = {
        let stop = stop.clone();
        let prefix = format!("{name} ").into_bytes();
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(&[&prefix[..], &buf[..n]].concat(), from);
                }
            }
        })
    };
    Server::from_parts(stop, vec![accepting, answering])
}
