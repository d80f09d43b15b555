//! Source-port reclaim under exhaustion: a new flow that finds no free port takes the port of
//! the oldest half-open flow past its grace, 50 ms for one its backend never answered, 1 s
//! for one it answered (that client may be connected on its side already and would never
//! send a SYN again: a port taken from it left it hanging). And a port a flow lost with its
//! reverse entry (the LRU) stays with the flow that took it.
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData};
use lb_common::{CtEntry, FlowKey, RevEntry};
use lb_tests::{
    fixture::{
        Out,
        Side::{Backend, Client},
        Step, from, packet, parsed, then,
    },
    packet::{ACK, Flow, Frame, SYN},
    testbed::{listener, mac_of, model},
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

/// Flow A loses its reverse entry to the LRU; a new flow B takes its source port (the only
/// one) and is half-open when A's next packet, a second on, would put A's reverse entry back:
/// B's SYN-ACK would then go to A's client, and B's handshake find its port taken. A keeps
/// away from a port a half-open flow holds (counted as `reverse_conflict`).
pub fn a_flow_that_lost_its_reverse_entry_leaves_its_port_to_the_flow_that_took_it() -> Fixture {
    let vip = VIP.into();
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)])]);
    let a = Flow::new(CLIENT, 47000, VIP, 80);
    let steps = vec![
        new_flow("A: SYN", CLIENT.into(), 47000, vip, 80),
        syn_ack("A: SYN-ACK", "A: SYN"),
        packet("A: handshake ACK", Client, Frame::tcp(a, ACK).seq_ack(1001, 2000).bytes(), XDP_REDIRECT, Out::Any),
        then("A's reverse entry lost, its client entry a second old", |t: &mut Bench, _| {
            let ebpf = t.dp.ebpf_mut();
            let mut cmap: BpfHashMap<&mut MapData, FlowKey, CtEntry> =
                ebpf.map_mut("CONNTRACK").unwrap().try_into().unwrap();
            let (key, mut ct) = cmap.iter().map(Result::unwrap).next().expect("A's flow");
            ct.last_seen_ns = 0;
            cmap.insert(key, ct, 0).unwrap();
            let mut rmap: BpfHashMap<&mut MapData, FlowKey, RevEntry> =
                ebpf.map_mut("REVERSE_NAT").unwrap().try_into().unwrap();
            rmap.remove(&ct.reverse_key(key.proto, key.family)).unwrap();
        }),
        new_flow("B: SYN", CLIENT.into(), 47001, vip, 80),
        packet(
            "A: a packet, a second after the last",
            Client,
            Frame::tcp(a, ACK).seq_ack(1001, 2000).bytes(),
            XDP_REDIRECT,
            Out::Any,
        ),
        then("A left the port alone", |t: &mut Bench, _| assert_eq!(counter(t, "reverse_conflict"), 1)),
        packet(
            "B: SYN-ACK",
            Backend,
            from(|s| {
                let (snat, snat_port, backend, bport) = s.parsed("B: SYN").flow;
                let f = Frame::tcp(Flow::new(backend, bport, snat, snat_port), SYN | ACK).seq_ack(1999, 1001);
                Frame { dst_mac: s.b_mac, src_mac: mac_of(backend), ..f }.bytes()
            }),
            XDP_REDIRECT,
            parsed(|p, _| assert_eq!(p.flow.3, 47001, "B's SYN-ACK went to another client port: {p:?}")),
        ),
        packet(
            "B: handshake ACK",
            Client,
            Frame::tcp(Flow::new(CLIENT, 47001, VIP, 80), ACK).seq_ack(1001, 2000).bytes(),
            XDP_REDIRECT,
            Out::Any,
        ),
        then("B established", |t: &mut Bench, _| assert_eq!(counter(t, "handshakes"), 2)),
    ];
    let opts = Options { snat_ports: (61000, 61000), syn_cookies: SynCookies::Off, ..Options::default() };
    Fixture { opts, ..Fixture::new(m, steps) }
}
