//! Source-port reclaim under exhaustion: a new flow that finds no free port takes the port of
//! the oldest half-open flow past its grace, 50 ms for one its backend never answered, 1 s
//! for one it answered (that client may be connected on its side already and would never
//! send a SYN again: a port taken from it left it hanging).
use std::time::Duration;

use lb_tests::{
    fixture::{Out, Side::Client, Step, packet, then},
    packet::{ACK, Flow, Frame, SYN},
    testbed::{listener, model},
};
use lb_userspace::{
    dataplane::{Options, SynCookies},
    model::{Protocol, Scheduler},
};

use super::{B1, Bench, CLIENT, Fixture, VIP, XDP_DROP, XDP_REDIRECT, be, new_flow, syn_ack};

fn pause(name: &str, ms: u64) -> Step<Bench> {
    then(name, move |_: &mut Bench, _| std::thread::sleep(Duration::from_millis(ms)))
}

fn counter(t: &mut Bench, name: &str) -> u64 {
    t.dp.stats().unwrap().packets(name)
}

pub fn an_answered_handshake_keeps_its_port_longer_than_an_unanswered_one() -> Fixture {
    let vip = VIP.into();
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)])]);
    let steps = vec![
        // One source port: the first SYN takes it, and its backend never answers.
        new_flow("SYN never answered", CLIENT.into(), 47000, vip, 80),
        pause("past the 50 ms grace", 80),
        new_flow("SYN taking its port", CLIENT.into(), 47001, vip, 80),
        then("reclaimed", |t: &mut Bench, _| assert_eq!(counter(t, "half_open_reclaimed"), 1)),
        // This one's backend answers: its client is connected on its side.
        syn_ack("SYN-ACK", "SYN taking its port"),
        pause("past 50 ms, within 1 s", 80),
        packet("another SYN", Client, Frame::tcp(Flow::new(CLIENT, 47002, VIP, 80), SYN).bytes(), XDP_DROP, Out::Any),
        then("not reclaimed: no port", |t: &mut Bench, _| {
            assert_eq!(counter(t, "half_open_reclaimed"), 1, "an answered handshake lost its port");
            assert_eq!(counter(t, "drop_no_snat_port"), 1);
        }),
        packet(
            "its handshake ACK",
            Client,
            Frame::tcp(Flow::new(CLIENT, 47001, VIP, 80), ACK).seq_ack(1001, 2000).bytes(),
            XDP_REDIRECT,
            Out::Any,
        ),
        then("established", |t: &mut Bench, _| assert_eq!(counter(t, "handshakes"), 1)),
    ];
    let opts = Options { snat_ports: (61000, 61000), syn_cookies: SynCookies::Off, ..Options::default() };
    Fixture { opts, ..Fixture::new(m, steps) }
}
