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

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// In `ns`, answer every TCP connection and UDP datagram on `addr` with `name` followed by a
/// newline (after reading the TCP request line).
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
            while !stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut s, _)) => {
                        let reply = reply.clone();
                        thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                            let mut buf = [0u8; 256];
                            let _ = s.read(&mut buf);
                            let _ = s.write_all(&reply);
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
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

/// One TCP request/response: connect, send a line, read the reply until EOF.
pub fn tcp_request(to: SocketAddr, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&to, timeout).with_context(|| format!("connect {to}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"hello\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out).with_context(|| format!("read from {to}"))?;
    Ok(out.trim().to_string())
}

/// One UDP request/response from a socket connected to `to` (so only `to` can answer).
pub fn udp_request(to: SocketAddr, timeout: Duration) -> Result<String> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect(to)?;
    s.set_read_timeout(Some(timeout))?;
    s.send(b"hello\n")?;
    let mut buf = [0u8; 2048];
    let n = s.recv(&mut buf).with_context(|| format!("no UDP reply from {to}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}
