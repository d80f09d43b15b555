//! Which backend a new flow gets (rr, wrr, sch, tch; persistence), who may open one (ACLs;
//! only a TCP SYN, and only the handshake ACK establishes it), and a flow's life (reopened
//! after a close, swept when idle or closed).
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use ipnet::IpNet;
use lb_common::{CtEntry, FlowKey, RevEntry};
use lb_tests::{
    fixture::{
        Out, Seen,
        Side::{Backend, Client},
        Step, from, packet, parsed, then,
    },
    packet::{ACK, FIN, Flow, Frame, PSH, Parsed, RST, SYN},
    testbed::{listener, mac_of, model},
};
use lb_userspace::{
    dataplane::{conntrack::SweepOptions, maglev, pairs},
    model::{Acl, AclBinding, AclMode, ObjectRef, Protocol, Scheduler},
};

use super::{B1, B2, B3, Bench, CLIENT, Fixture, VIP, XDP_DROP, XDP_REDIRECT, backend_of, be, new_flow, syn_ack};

/// How many of `picks` went to each backend.
fn count(picks: &[IpAddr]) -> BTreeMap<IpAddr, usize> {
    let mut m: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for p in picks {
        *m.entry(*p).or_default() += 1;
    }
    m
}

pub fn schedulers_rr_wrr_sch_tch() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let three = [be(B1, 8080, 1), be(B2, 8080, 1), be(B3, 8080, 1)];
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &three),
        listener(vip, 81, Protocol::Tcp, Scheduler::Wrr, &[be(B1, 8080, 30), be(B2, 8080, 10), be(B3, 8080, 0)]),
        listener(vip, 82, Protocol::Tcp, Scheduler::Sch, &three),
        listener(vip, 83, Protocol::Tcp, Scheduler::Tch, &three),
    ]);
    // The backend user space predicts from the same Maglev table and flow hash.
    let table = maglev::build_default(&three);
    let predict = |client: Ipv4Addr, sport: u16, port: u16, tuple: bool| {
        let key = lb_common::FlowKey {
            src: [u32::from(client).to_be(), 0, 0, 0],
            dst: [u32::from(VIP).to_be(), 0, 0, 0],
            sport: sport.to_be(),
            dport: port.to_be(),
            proto: lb_common::PROTO_TCP,
            family: lb_common::FAMILY_V4,
            _pad: [0; 2],
        };
        three[table[(lb_common::flow_hash(&key, tuple) % lb_common::MAGLEV_M) as usize]].0
    };
    let mut steps: Vec<Step<Bench>> = Vec::new();

    // rr: strict rotation over the three backends.
    steps.extend((0..9).map(|i| new_flow(format!("rr {i}"), CLIENT.into(), 30000 + i, vip, 80)));
    steps.push(then("rr rotates", |_, s| {
        let rr: Vec<IpAddr> = (0..9).map(|i| backend_of(s, &format!("rr {i}"))).collect();
        assert_eq!(count(&rr).values().copied().collect::<Vec<_>>(), vec![3, 3, 3], "{rr:?}");
        for w in rr.windows(3) {
            assert!(w[0] != w[1] && w[1] != w[2] && w[0] != w[2], "rotation: {rr:?}");
        }
    }));

    // wrr 30:10:0 — exactly 3:1 over whole rings, nothing to the weight-0 backend.
    steps.extend((0..8).map(|i| new_flow(format!("wrr {i}"), CLIENT.into(), 31000 + i, vip, 81)));
    steps.push(then("wrr follows the weights", |_, s| {
        let wrr: Vec<IpAddr> = (0..8).map(|i| backend_of(s, &format!("wrr {i}"))).collect();
        let c = count(&wrr);
        assert_eq!(
            (c.get(&IpAddr::V4(B1)), c.get(&IpAddr::V4(B2)), c.get(&IpAddr::V4(B3))),
            (Some(&6), Some(&2), None),
            "{wrr:?}"
        );
    }));

    // sch: one client lands on one backend whatever its port — the one user space predicts.
    let sch_name = |c: u8, i: u16| format!("sch: 198.18.0.{c} port {}", 32000 + i);
    for c in 2..40u8 {
        let client = Ipv4Addr::new(198, 18, 0, c);
        steps.extend((0..4).map(|i| new_flow(sch_name(c, i), client.into(), 32000 + i, vip, 82)));
        let predicted = predict(client, 0, 82, false);
        steps.push(then(format!("sch keeps {client} on one backend"), move |_, s| {
            let got: Vec<IpAddr> = (0..4).map(|i| backend_of(s, &sch_name(c, i))).collect();
            assert!(got.iter().all(|g| *g == got[0]), "sch keeps {client} on one backend: {got:?}");
            assert_eq!(got[0], predicted, "kernel and user space agree for {client}");
        }));
    }
    steps.push(then("sch spreads clients", move |_, s| {
        let per_client: Vec<IpAddr> = (2..40u8).map(|c| backend_of(s, &sch_name(c, 0))).collect();
        assert_eq!(count(&per_client).len(), 3, "sch spreads clients");
    }));

    // tch: one client's ports spread over the backends, each where user space predicts.
    for i in 0..30 {
        let predicted = predict(CLIENT, 33000 + i, 83, true);
        let syn = Frame::tcp(Flow::new(CLIENT, 33000 + i, VIP, 83), SYN).bytes();
        steps.push(packet(
            format!("tch {i}"),
            Client,
            syn,
            XDP_REDIRECT,
            parsed(move |p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!(p.flow.2, predicted);
            }),
        ));
    }
    steps.push(then("tch spreads one client's ports", |_, s| {
        let tch: Vec<IpAddr> = (0..30).map(|i| backend_of(s, &format!("tch {i}"))).collect();
        assert_eq!(count(&tch).len(), 3, "tch spreads one client's ports: {tch:?}");
    }));
    Fixture::new(m, steps)
}

pub fn acl_white_black_and_empty_lists() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let mut white = listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    white.acl = Some(AclBinding { acl: "office".into(), mode: AclMode::White });
    let mut black = listener(vip, 81, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    black.acl = Some(AclBinding { acl: "office".into(), mode: AclMode::Black });
    let mut empty_white = listener(vip, 82, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    empty_white.acl = Some(AclBinding { acl: "empty".into(), mode: AclMode::White });
    // IPv6 prefixes that cover the IPv4-mapped range (`::/0`) do not list IPv4 clients.
    let mut mixed_white = listener(vip, 83, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    mixed_white.acl = Some(AclBinding { acl: "office-and-all-ipv6".into(), mode: AclMode::White });
    let mut v6_black = listener(vip, 84, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    v6_black.acl = Some(AclBinding { acl: "no-ipv6".into(), mode: AclMode::Black });
    let mut all_white = listener(vip, 85, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    all_white.acl = Some(AclBinding { acl: "everyone".into(), mode: AclMode::White });
    let mut empty_black = listener(vip, 86, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    empty_black.acl = Some(AclBinding { acl: "empty".into(), mode: AclMode::Black });
    let mut m = model(vec![white, black, empty_white, mixed_white, v6_black, all_white, empty_black]);
    let acl = |name: &str, nets: &[&str]| Acl {
        source: ObjectRef { kind: "AccessControlList".into(), namespace: String::new(), name: name.into() },
        entries: nets.iter().map(|n| n.parse::<IpNet>().unwrap()).collect(),
    };
    m.acls.insert("office".into(), acl("office", &["198.18.0.0/30", "198.18.0.64/26", "2001:db8::/64"]));
    m.acls.insert("empty".into(), acl("empty", &[]));
    m.acls.insert("office-and-all-ipv6".into(), acl("office-and-all-ipv6", &["198.18.0.0/30", "::/0"]));
    m.acls.insert("no-ipv6".into(), acl("no-ipv6", &["::/0"]));
    m.acls.insert("everyone".into(), acl("everyone", &["0.0.0.0/0", "::/0"]));
    let m2 = {
        let mut m2 = m.clone();
        m2.acls.insert("office".into(), acl("office", &["198.18.0.9/32"]));
        m2
    };
    // The ACL emptied, then filled again: judged by its entries alone (its emptiness was a
    // flag of each listener naming it, written after the entries changed).
    let (emptied, filled) = {
        let mut emptied = m2.clone();
        emptied.acls.insert("office".into(), acl("office", &[]));
        (emptied, m2.clone())
    };
    let (inside, inside2, outside) =
        (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 70), Ipv4Addr::new(198, 18, 0, 9));
    // A SYN from `c:sport` to VIP:`port`, and the verdict it must get.
    let syn = |name: &str, c: Ipv4Addr, sport: u16, port: u16, verdict: u32| {
        packet(name, Client, Frame::tcp(Flow::new(c, sport, VIP, port), SYN).bytes(), verdict, Out::Any)
    };
    let steps = vec![
        syn("whitelisted /30", inside, 1000, 80, XDP_REDIRECT),
        syn("whitelisted /26", inside2, 1000, 80, XDP_REDIRECT),
        syn("not on the whitelist", outside, 1000, 80, XDP_DROP),
        syn("blacklisted", inside, 1001, 81, XDP_DROP),
        syn("not on the blacklist", outside, 1001, 81, XDP_REDIRECT),
        syn("an empty whitelist forwards all", outside, 1002, 82, XDP_REDIRECT),
        syn("an empty blacklist forwards all", inside, 1002, 86, XDP_REDIRECT),
        then("counters", |t: &mut Bench, _| {
            let stats = t.dp.stats().unwrap();
            assert_eq!(stats.packets("drop_acl"), 2);
            assert_eq!(stats.listeners["198.18.100.10:80/tcp"].acl_drops, 1);
        }),
        // An edit applies to the next new flow, without reloading anything else.
        then("the ACL edited", move |t: &mut Bench, _| t.dp.apply(&m2).unwrap()),
        syn("removed from the whitelist", inside, 1003, 80, XDP_DROP),
        syn("added to the whitelist", outside, 1003, 80, XDP_REDIRECT),
        syn("added to the blacklist", outside, 1004, 81, XDP_DROP),
        syn("IPv4 on a whitelist with ::/0", inside, 1005, 83, XDP_REDIRECT),
        syn("IPv4 not on a whitelist with ::/0", outside, 1005, 83, XDP_DROP),
        syn("IPv4 past a blacklist of ::/0", outside, 1006, 84, XDP_REDIRECT),
        syn("IPv4 on a whitelist of 0.0.0.0/0 and ::/0", outside, 1007, 85, XDP_REDIRECT),
        then("the ACL emptied", move |t: &mut Bench, _| t.dp.apply(&emptied).unwrap()),
        syn("an emptied whitelist forwards all", inside, 1008, 80, XDP_REDIRECT),
        syn("an emptied blacklist forwards all", outside, 1008, 81, XDP_REDIRECT),
        then("the ACL filled again", move |t: &mut Bench, _| t.dp.apply(&filled).unwrap()),
        syn("off the refilled whitelist", inside, 1009, 80, XDP_DROP),
        syn("on the refilled blacklist", outside, 1009, 81, XDP_DROP),
    ];
    Fixture::new(m, steps)
}

pub fn session_persistence_holds_then_expires() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let mut l = listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1), be(B2, 8080, 1)]);
    l.persistence_timeout = 1;
    let mut steps = vec![new_flow("first", CLIENT.into(), 20000, vip, 80)];
    for i in 1..6 {
        let name = format!("the client again, port {}", 20000 + i);
        steps.push(new_flow(name.clone(), CLIENT.into(), 20000 + i, vip, 80));
        steps.push(then(format!("{name} persisted"), move |_, s| {
            assert_eq!(backend_of(s, &name), backend_of(s, "first"), "persisted (rr would alternate)");
        }));
    }
    steps.extend([
        new_flow("another client", Ipv4Addr::new(198, 18, 0, 3).into(), 20000, vip, 80),
        then("another client scheduled", |_, s| {
            assert_ne!(backend_of(s, "another client"), backend_of(s, "first"), "another client is scheduled normally");
        }),
        then("persistence expires", |_, _| std::thread::sleep(Duration::from_millis(1300))),
        new_flow("a third client", Ipv4Addr::new(198, 18, 0, 4).into(), 20000, vip, 80),
        new_flow("the client after expiry", CLIENT.into(), 20100, vip, 80),
        then("scheduled again", |t: &mut Bench, s| {
            let third = backend_of(s, "a third client");
            assert_eq!(
                backend_of(s, "the client after expiry"),
                backend_of(s, "another client"),
                "expired: scheduled again (rr continues after {third})"
            );
            assert!(t.dp.stats().unwrap().packets("persist_hits") >= 5);
        }),
    ]);
    Fixture::new(model(vec![l]), steps)
}

/// The TCP and UDP listeners of one port share their backends (one id per address and
/// port) but not their health checks. A backend that fails the TCP listener's (weight 0
/// there) and passes the UDP one's: a persistent TCP client gets another backend, though
/// the UDP listener was written after (its write made the shared entry live again) and the
/// client's open flow refreshed its persistence.
pub fn persistence_skips_a_backend_another_listener_still_finds_healthy() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let with = move |tcp: [u32; 2], udp: [u32; 2]| {
        let mut t = listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, tcp[0]), be(B2, 8080, tcp[1])]);
        t.persistence_timeout = 60;
        let u = listener(vip, 80, Protocol::Udp, Scheduler::Rr, &[be(B1, 8080, udp[0]), be(B2, 8080, udp[1])]);
        model(vec![t, u])
    };
    let flow = Flow::new(CLIENT, 20000, VIP, 80);
    let steps = vec![
        new_flow("first", CLIENT.into(), 20000, vip, 80),
        syn_ack("SYN-ACK", "first"),
        packet("handshake ACK", Client, Frame::tcp(flow, ACK).bytes(), XDP_REDIRECT, Out::Any),
        then("its backend fails the TCP check, both pass the UDP one", move |t: &mut Bench, s| {
            let down = if backend_of(s, "first") == IpAddr::V4(B1) { [0, 1] } else { [1, 0] };
            // The UDP listener changes too, so it is written after the TCP one.
            t.dp.apply(&with(down, [1, 2])).unwrap();
        }),
        then("past the persistence refresh interval", |_, _| std::thread::sleep(Duration::from_millis(1100))),
        // The open flow goes on to its backend and refreshes the client's persistence.
        packet("data on the open flow", Client, Frame::tcp(flow, ACK | PSH).bytes(), XDP_REDIRECT, Out::Any),
        new_flow("a new connection", CLIENT.into(), 20001, vip, 80),
        then("not to the failed backend", |_, s| {
            assert_ne!(backend_of(s, "a new connection"), backend_of(s, "first"), "persisted onto a failed backend");
        }),
    ];
    Fixture::new(with([1, 1], [1, 1]), steps)
}

pub fn tcp_state_reopen_and_conntrack_sweep() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1), be(B2, 8080, 1)]),
        listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1)]),
    ]);
    let flow = Flow::new(CLIENT, 45000, VIP, 80);
    // A client frame of an open flow: to the backend case `of` put its flow on.
    let same_backend = |name: &str, frame: Frame, of: &'static str, why: &'static str| {
        packet(
            name,
            Client,
            frame.bytes(),
            XDP_REDIRECT,
            parsed(move |p, s| assert_eq!(p.flow.2, backend_of(s, of), "{why}")),
        )
    };
    let steps = vec![
        new_flow("SYN", CLIENT.into(), 45000, vip, 80),
        syn_ack("SYN-ACK", "SYN"),
        same_backend("data", Frame::tcp(flow, ACK | PSH), "SYN", "same flow"),
        // A retransmitted SYN of an open flow keeps its backend.
        new_flow("retransmitted SYN", CLIENT.into(), 45000, vip, 80),
        then("the retransmitted SYN keeps its backend", |_, s| {
            assert_eq!(backend_of(s, "retransmitted SYN"), backend_of(s, "SYN"));
        }),
        // Client closes (FIN) — then a new SYN on the same 4-tuple is a new connection.
        packet("FIN", Client, Frame::tcp(flow, FIN | ACK).bytes(), XDP_REDIRECT, Out::Any),
        new_flow("SYN after the FIN", CLIENT.into(), 45000, vip, 80),
        then("reopened", |t: &mut Bench, s| {
            assert_ne!(backend_of(s, "SYN after the FIN"), backend_of(s, "SYN"), "rescheduled (rr moves on)");
            assert_eq!(t.dp.stats().unwrap().packets("flow_reopened"), 1);
        }),
        // The new connection's SYN-ACK; its handshake ACK comes after the sweep.
        syn_ack("SYN-ACK after the FIN", "SYN after the FIN"),
        // Sweep: a flow that saw a RST and an idle UDP flow go; an open TCP flow (half-open:
        // SYN and SYN-ACK seen, within the SYN timeout) stays.
        packet("SYN 45001", Client, Frame::tcp(Flow::new(CLIENT, 45001, VIP, 80), SYN).bytes(), XDP_REDIRECT, Out::Any),
        syn_ack("SYN-ACK 45001", "SYN 45001"),
        packet("ACK 45001", Client, Frame::tcp(Flow::new(CLIENT, 45001, VIP, 80), ACK).bytes(), XDP_REDIRECT, Out::Any),
        packet("RST 45001", Client, Frame::tcp(Flow::new(CLIENT, 45001, VIP, 80), RST).bytes(), XDP_REDIRECT, Out::Any),
        packet("UDP 45002", Client, Frame::udp(Flow::new(CLIENT, 45002, VIP, 53)).bytes(), XDP_REDIRECT, Out::Any),
        then("sweep", |t: &mut Bench, _| {
            let report =
                t.dp.sweep(&SweepOptions {
                    udp_timeout: Duration::ZERO,
                    tcp_closed_timeout: Duration::ZERO,
                    tcp_syn_timeout: Duration::from_secs(60),
                })
                .unwrap();
            // Established: 45001 (RST) and the UDP flow, both expired; 45000 is half-open.
            assert_eq!((report.flows, report.expired), (2, 2), "{report:?}");
        }),
        // Its handshake ACK: the half-open flow survived the sweep and becomes established.
        same_backend(
            "ACK after the sweep",
            Frame::tcp(flow, ACK),
            "SYN after the FIN",
            "the open flow survived the sweep",
        ),
        then("handshakes", |t: &mut Bench, _| assert_eq!(t.dp.stats().unwrap().packets("handshakes"), 3)),
    ];
    Fixture::new(m, steps)
}

/// The datapath's tables are LRU: either half of a flow can be evicted alone. Simulated
/// here by deleting one half; two sweeps in a row that find it remove the other, and the
/// flow's next packet opens a whole flow again.
pub fn a_flow_half_without_its_other_half_is_swept() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1)])]);
    let (lost_reverse, lost_client) = (Flow::new(CLIENT, 47000, VIP, 53), Flow::new(CLIENT, 47001, VIP, 53));
    let udp = |name: &str, f: Flow| packet(name, Client, Frame::udp(f).bytes(), XDP_REDIRECT, Out::Any);
    let steps = vec![
        udp("flow A", lost_reverse),
        udp("flow B", lost_client),
        then("whole pairs; then A loses its reverse entry, B its client entry", |t: &mut Bench, _| {
            let (ct, rev) = pairs::read(t.dp.ebpf_mut()).unwrap();
            assert_eq!((ct.len(), rev.len()), (2, 2));
            assert!(pairs::broken(&ct, &rev).is_empty(), "{:?}", pairs::broken(&ct, &rev));
            let a = ct.iter().find(|(k, _)| k.sport == 47000u16.to_be()).unwrap();
            let b = *ct.iter().find(|(k, _)| k.sport == 47001u16.to_be()).unwrap();
            let a_rev = a.1.reverse_key(a.0.proto, a.0.family);
            let ebpf = t.dp.ebpf_mut();
            let mut rmap: BpfHashMap<&mut MapData, FlowKey, RevEntry> =
                ebpf.map_mut("REVERSE_NAT").unwrap().try_into().unwrap();
            rmap.remove(&a_rev).unwrap();
            let mut cmap: BpfHashMap<&mut MapData, FlowKey, CtEntry> =
                ebpf.map_mut("CONNTRACK").unwrap().try_into().unwrap();
            cmap.remove(&b.0).unwrap();
            let (ct, rev) = pairs::read(ebpf).unwrap();
            assert_eq!(pairs::broken(&ct, &rev).len(), 2);
        }),
        then("the first sweep suspects, the second removes", |t: &mut Bench, _| {
            let opts = SweepOptions::default();
            assert_eq!(t.dp.sweep(&opts).unwrap().orphans, 0, "one sight is not enough");
            assert_eq!(t.dp.sweep(&opts).unwrap().orphans, 2);
            let (ct, rev) = pairs::read(t.dp.ebpf_mut()).unwrap();
            assert_eq!((ct.len(), rev.len()), (0, 0), "both broken halves gone");
        }),
        // A's next datagram opens a whole flow again (before, its replies had nowhere to go).
        udp("flow A again", lost_reverse),
        then("a whole flow again", |t: &mut Bench, _| {
            let (ct, rev) = pairs::read(t.dp.ebpf_mut()).unwrap();
            assert_eq!((ct.len(), rev.len()), (1, 1));
            assert!(pairs::broken(&ct, &rev).is_empty());
            assert_eq!(t.dp.stats().unwrap().packets("new_flows"), 3);
        }),
    ];
    Fixture::new(m, steps)
}

fn reverse_nat(t: &mut Bench) -> BpfHashMap<&mut MapData, FlowKey, RevEntry> {
    t.dp.ebpf_mut().map_mut("REVERSE_NAT").unwrap().try_into().unwrap()
}

/// A reverse entry lost to the LRU alone is rebuilt by the flow's next client packet (a
/// second after the last) with what the sweep reads: the backend's SYN-ACK was seen, so the
/// flow keeps the established timeout (it got the SYN timeout). A reopening SYN removes the
/// closed flow's reverse entry only while it is that flow's: one another flow took since stays.
pub fn a_lost_reverse_entry_comes_back_established_and_a_reopen_spares_anothers() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)])]);
    let flow = Flow::new(CLIENT, 46000, VIP, 80);
    // The flow's reverse key, from its conntrack entry.
    let rkey = |t: &mut Bench| {
        let (ct, _) = pairs::read(t.dp.ebpf_mut()).unwrap();
        let (k, e) = ct.iter().find(|(k, _)| k.sport == 46000u16.to_be()).expect("the flow");
        e.reverse_key(k.proto, k.family)
    };
    let steps = vec![
        new_flow("SYN", CLIENT.into(), 46000, vip, 80),
        syn_ack("SYN-ACK", "SYN"),
        packet("ACK", Client, Frame::tcp(flow, ACK).bytes(), XDP_REDIRECT, Out::Any),
        then("the reverse entry is lost, and a second passes", move |t: &mut Bench, _| {
            let k = rkey(t);
            reverse_nat(t).remove(&k).unwrap();
            std::thread::sleep(Duration::from_millis(1100));
        }),
        packet("data", Client, Frame::tcp(flow, ACK | PSH).bytes(), XDP_REDIRECT, Out::Any),
        then("rebuilt, and swept as established", move |t: &mut Bench, _| {
            let k = rkey(t);
            assert!(reverse_nat(t).get(&k, 0).is_ok(), "rebuilt");
            let opts = SweepOptions { tcp_syn_timeout: Duration::ZERO, ..SweepOptions::default() };
            let report = t.dp.sweep(&opts).unwrap();
            assert_eq!((report.flows, report.expired), (1, 0), "{report:?}");
        }),
        packet("FIN", Client, Frame::tcp(flow, FIN | ACK).bytes(), XDP_REDIRECT, Out::Any),
        then("another flow holds the closed flow's reverse key", move |t: &mut Bench, _| {
            let k = rkey(t);
            let mut map = reverse_nat(t);
            let mut other = map.get(&k, 0).unwrap();
            other.client_port = 46999u16.to_be();
            map.insert(k, other, 0).unwrap();
        }),
        new_flow("SYN after the FIN", CLIENT.into(), 46000, vip, 80),
        then("the other flow's entry stays", move |t: &mut Bench, _| {
            let entries: Vec<RevEntry> = reverse_nat(t).iter().map(|r| r.unwrap().1).collect();
            assert!(entries.iter().any(|r| r.client_port == 46999u16.to_be()), "removed by the reopen");
            assert_eq!(t.dp.stats().unwrap().packets("flow_reopened"), 1);
        }),
    ];
    Fixture::new(m, steps)
}

pub fn only_a_syn_opens_a_tcp_flow_and_the_handshake_ack_establishes_it() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1), be(B2, 8080, 1)])]);
    // Packets that would open a flow per (spoofed) packet if anything but a SYN could: for
    // no flow at all, each is dropped and counted, none forwarded.
    let stray = Flow::new(CLIENT, 46000, VIP, 80);
    let no_flow = [
        ("ACK with no flow", Frame::tcp(stray, ACK)),
        ("data with no flow", Frame::tcp(stray, ACK | PSH).payload(b"GET / HTTP/1.1\r\n\r\n")),
        ("FIN with no flow", Frame::tcp(stray, FIN | ACK)),
        ("RST with no flow", Frame::tcp(stray, RST)),
        ("SYN-ACK from the client side", Frame::tcp(stray, SYN | ACK)),
        ("SYN with FIN", Frame::tcp(stray, SYN | FIN)),
    ];
    let mut steps: Vec<Step<Bench>> =
        no_flow.into_iter().map(|(name, f)| packet(name, Client, f.bytes(), XDP_DROP, Out::Any)).collect();
    steps.push(then("no flow: dropped and counted", |t: &mut Bench, _| {
        let stats = t.dp.stats().unwrap();
        assert_eq!(stats.packets("drop_no_flow"), 6, "{stats:?}");
        assert_eq!((stats.packets("new_flows"), stats.packets("fwd_to_backend")), (0, 0), "{stats:?}");
        let l = stats.listeners["198.18.100.10:80/tcp"];
        assert_eq!((l.no_flow_drops, l.new_flows, l.packets), (6, 0, 0), "{l:?}");
    }));

    // A half-open flow: only the client ACK that acknowledges the backend's SYN-ACK (ISN
    // 1999, so ack 2000) establishes it.
    let flow = Flow::new(CLIENT, 46100, VIP, 80);
    // The client's frame went to the backend and SNAT port the SYN got.
    let on_the_flow = |p: &Parsed, s: &Seen| {
        assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
        let syn = s.parsed("SYN").flow;
        assert_eq!((p.flow.1, p.flow.2, p.flow.3), (syn.1, syn.2, syn.3), "the SYN's SNAT port and backend");
    };
    let data = Frame::tcp(flow, ACK | PSH).seq_ack(1001, 2000).payload(b"GET / HTTP/1.1\r\n\r\n");
    steps.extend([
        new_flow("SYN", CLIENT.into(), 46100, vip, 80),
        packet("ACK before the SYN-ACK", Client, Frame::tcp(flow, ACK).seq_ack(1001, 2000).bytes(), XDP_DROP, Out::Any),
        syn_ack("SYN-ACK", "SYN"),
        packet("retransmitted SYN", Client, Frame::tcp(flow, SYN).bytes(), XDP_REDIRECT, parsed(on_the_flow)),
        packet("ACK of another ISN", Client, Frame::tcp(flow, ACK).seq_ack(1001, 1234).bytes(), XDP_DROP, Out::Any),
        packet("data acking one too far", Client, data.clone().seq_ack(1001, 2001).bytes(), XDP_DROP, Out::Any),
        then("half-open: dropped, not established", |t: &mut Bench, _| {
            let stats = t.dp.stats().unwrap();
            assert_eq!((stats.packets("drop_half_open"), stats.packets("handshakes")), (3, 0), "{stats:?}");
            assert_eq!(stats.packets("fwd_to_backend"), 2, "the SYN and its retransmission only");
        }),
        packet(
            "handshake ACK",
            Client,
            Frame::tcp(flow, ACK).seq_ack(1001, 2000).bytes(),
            XDP_REDIRECT,
            parsed(on_the_flow),
        ),
        then("established", |t: &mut Bench, _| {
            let stats = t.dp.stats().unwrap();
            assert_eq!((stats.packets("handshakes"), stats.packets("drop_half_open")), (1, 3), "{stats:?}");
            let l = stats.listeners["198.18.100.10:80/tcp"];
            assert_eq!((l.handshakes, l.new_flows), (1, 1), "{l:?}");
        }),
        packet(
            "data",
            Client,
            data.bytes(),
            XDP_REDIRECT,
            parsed(move |p, s| {
                on_the_flow(p, s);
                assert_eq!(p.payload, b"GET / HTTP/1.1\r\n\r\n");
            }),
        ),
        packet(
            "the backend's data",
            Backend,
            from(|s| {
                let (snat, snat_port, backend, bport) = s.parsed("SYN").flow;
                let f = Frame::tcp(Flow::new(backend, bport, snat, snat_port), ACK | PSH).seq_ack(2000, 1019);
                Frame { dst_mac: s.b_mac, src_mac: mac_of(backend), ..f.payload(b"HTTP/1.1 200 OK\r\n\r\n") }.bytes()
            }),
            XDP_REDIRECT,
            parsed(move |p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!(
                    (p.flow, p.payload.as_slice()),
                    ((vip, 80, IpAddr::V4(CLIENT), 46100), &b"HTTP/1.1 200 OK\r\n\r\n"[..])
                );
            }),
        ),
        // A RST from the client on a half-open flow goes to its backend.
        new_flow("SYN 46200", CLIENT.into(), 46200, vip, 80),
        packet(
            "RST on a half-open flow",
            Client,
            Frame::tcp(Flow::new(CLIENT, 46200, VIP, 80), RST).bytes(),
            XDP_REDIRECT,
            parsed(|p, s| {
                let syn = s.parsed("SYN 46200").flow;
                assert_eq!((p.flow.1, p.flow.2), (syn.1, syn.2), "the SYN's SNAT port and backend");
            }),
        ),
    ]);
    Fixture::new(m, steps)
}
