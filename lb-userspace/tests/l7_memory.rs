//! 10,000 idle client connections on one L7 listener stay within the documented memory
//! (`docs/l7.md`, "Limits"): the proxy runs in this process, the clients in a child process
//! (this test binary again), and the growth of this process's resident memory is measured.
use std::{
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lb_userspace::l7::{Limits, Proxy};

#[path = "l7/support.rs"]
#[allow(dead_code)]
mod support;
use support::*;

const CONNECTIONS: usize = 10_000;
/// The documented budget for 10,000 idle connections (measured: see docs/l7.md).
const BUDGET_BYTES: u64 = 64 << 20;

/// Raises the soft limit of open files to the hard limit; returns it.
fn raise_nofile() -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the struct passed by pointer only.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        l.rlim_cur = l.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
    }
    l.rlim_cur
}

/// Resident memory of this process, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_stay_within_the_documented_memory() {
    let nofile = raise_nofile();
    assert!(nofile as usize > CONNECTIONS + 100, "RLIMIT_NOFILE hard limit {nofile} is below {CONNECTIONS}");
    let b = echo("b", Duration::ZERO).await;
    let port = free_port();
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service("mem", "b", &[&b])
        + &ingress("mem", "idle", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "b")]));
    let limits =
        Limits { max_connections: 2 * CONNECTIONS, max_connections_per_client: 2 * CONNECTIONS, ..Limits::default() };
    let mut p = Proxy::with_limits(vec!["127.0.0.1".parse().unwrap()], limits);
    assert!(p.apply(&model(&yaml).l7).is_empty());
    let c = client();
    assert_eq!(get(&c, port, "idle.test", "/", &[("connection", "close")]).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "hold_idle_connections", "--nocapture", "--test-threads=1"])
        .env("LB_IDLE_HOLDER", format!("{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let held = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let held = lines.by_ref().map_while(Result::ok).find(|l| l.starts_with("held "));
        // The rest of the child's output is read too (it must not fail writing it).
        std::thread::spawn(move || lines.for_each(drop));
        held
    });
    let accepted = || p.stats().as_object().unwrap().values().map(|v| v["connections"].as_u64().unwrap()).sum::<u64>();
    let held = match tokio::time::timeout(Duration::from_secs(20), held).await {
        Ok(h) => h.unwrap(),
        Err(_) => panic!("connecting took over 20 s; {} accepted", accepted()),
    };
    assert_eq!(held.as_deref(), Some(format!("held {CONNECTIONS}").as_str()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted() < 1 + CONNECTIONS as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(accepted(), 1 + CONNECTIONS as u64, "every connection accepted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grew = rss_bytes().saturating_sub(before);
    eprintln!(
        "{CONNECTIONS} idle connections: resident memory grew by {} KiB ({} B each)",
        grew / 1024,
        grew / CONNECTIONS as u64
    );
    // Normal requests are served with every idle connection open.
    let started = Instant::now();
    assert_eq!(get(&c, port, "idle.test", "/", &[]).await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    drop(child.stdin.take());
    let _ = child.wait();
    assert!(
        grew < BUDGET_BYTES,
        "{CONNECTIONS} idle connections took {} MiB, over the {} MiB documented",
        grew >> 20,
        BUDGET_BYTES >> 20
    );
}

/// The child process of the test above: opens the connections and holds them, silent,
/// until its stdin closes. Run only by that test (through LB_IDLE_HOLDER).
#[test]
#[ignore = "started by ten_thousand_idle_connections_stay_within_the_documented_memory"]
fn hold_idle_connections() {
    let port: u16 = std::env::var("LB_IDLE_HOLDER").expect("run by the memory test").parse().unwrap();
    raise_nofile();
    let mut held = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        held.push(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    // On a line of its own: libtest has written "test hold_idle_connections ... " before.
    println!("\nheld {}", held.len());
    std::io::stdout().flush().unwrap();
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}
