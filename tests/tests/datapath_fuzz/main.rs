//! Packet fuzzer (issue #15, item 5): random mutations of valid frames go through
//! BPF_PROG_TEST_RUN, tens of thousands per run, through the XDP entry program (`lb_xdp`)
//! and the tc programs (`lb_tc` on either side, `lb_tc_egress` for the node's own and for
//! forwarded packets), in three shapes of node ([`Shape`]: both interfaces XDP ports, both
//! tc devices, an XDP NIC handing frames over to a tc device). Every case must run without a
//! fault and get a verdict of its program's allowed set; a frame that is certainly not ours
//! ([`oracle`]) must be passed byte for byte; a frame the datapath rewrote that came in with
//! every checksum right must leave with every checksum right ([`csum`]). After the run the
//! counters must add up and the datapath must still serve a new flow both ways ([`after`]).
//!
//! The datapath runs in the packet tests' namespace ([`Bed`]: `a` faces clients, `b`
//! backends) with a model of every kind of listener: TCP and UDP, IPv4 and IPv6, PROXY
//! protocol v1 and v2, white and black ACLs, Maglev with persistence, one without backends.
//! The corpus: [`seeds`] (first packets, TCP and IPv4 options, IPv6 extension headers,
//! fragments, VLAN tags and other EtherTypes, not ours) and [`flows`] (a flow's later
//! packets both ways, ICMP errors quoting it). [`mutate`] changes them, [`run`] plays the
//! cases through a [`Runner`]; failures matching a finding not fixed yet are in [`known`].
//!
//! `LB_FUZZ_SEED` replays a run (each test prints its seed, and every failure names it);
//! `LB_FUZZ_CASES` sets the number of mutated cases per test.
mod after;
mod csum;
mod flows;
mod known;
mod layout;
mod mutate;
mod oracle;
mod rng;
mod run;
mod runner;
mod seeds;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use ipnet::IpNet;
use lb_tests::{
    privileged,
    testbed::{Bed, listener, model},
};
use lb_userspace::{
    dataplane::{Dataplane, Options, SynCookies},
    model::{Acl, AclBinding, AclMode, Model, ObjectRef, Protocol, ProxyProtocol, Scheduler},
};

use crate::{
    mutate::Palette,
    oracle::World,
    runner::{Counts, Runner, Shape},
};

/// Mutated cases per test when `LB_FUZZ_CASES` is not set (about 1 s per 30,000 here).
const XDP_CASES: usize = 30_000;
const TC_CASES: usize = 20_000;
const HANDOFF_CASES: usize = 10_000;
const COOKIE_CASES: usize = 10_000;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// A client the "office" ACL does not list.
const OUTSIDE_ACL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const SNAT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
const B3: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 4);
const B61: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const B62: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 3);

/// Both interfaces XDP ports: `lb_xdp` on either side.
#[test]
fn xdp_mutated_frames() {
    fuzz("xdp_mutated_frames", Shape::Xdp, XDP_CASES, SynCookies::Auto);
}

/// Both interfaces XDP ports, SYN cookies always on once the flows are open: every mutated
/// SYN goes to `lb_xdp_cookie` to be answered, every ACK for no flow has its cookie checked.
#[test]
fn xdp_mutated_frames_with_syn_cookies() {
    fuzz("xdp_mutated_frames_with_syn_cookies", Shape::Xdp, COOKIE_CASES, SynCookies::Always);
}

/// Both interfaces tc devices: `lb_tc` on either side, `lb_tc_egress`.
#[test]
fn tc_mutated_frames() {
    fuzz("tc_mutated_frames", Shape::Tc, TC_CASES, SynCookies::Auto);
}

/// `a` an XDP NIC, `b` a tc device: `lb_xdp` on `a` hands frames over to tc, `lb_tc` on
/// `b`, `lb_tc_egress` on `a`.
#[test]
fn xdp_handoff_mutated_frames() {
    fuzz("xdp_handoff_mutated_frames", Shape::Handoff, HANDOFF_CASES, SynCookies::Auto);
}

/// A listener of the fuzzed model.
pub struct Spec {
    pub vip: IpAddr,
    pub port: u16,
    pub udp: bool,
    pp: ProxyProtocol,
    acl: Option<AclMode>,
    scheduler: Scheduler,
    persist: u32,
    backends: Vec<(IpAddr, u16)>,
}

fn spec(vip: impl Into<IpAddr>, port: u16, udp: bool, backends: &[(IpAddr, u16)]) -> Spec {
    Spec {
        vip: vip.into(),
        port,
        udp,
        pp: ProxyProtocol::Off,
        acl: None,
        scheduler: Scheduler::Rr,
        persist: 0,
        backends: backends.to_vec(),
    }
}

/// Every kind of listener: plain, PROXY v1/v2, ACLs, Maglev with persistence, none.
fn specs() -> Vec<Spec> {
    let (b1, b2, b3, b61, b62) = (IpAddr::V4(B1), IpAddr::V4(B2), IpAddr::V4(B3), IpAddr::V6(B61), IpAddr::V6(B62));
    let pp = |mut s: Spec, v| {
        s.pp = v;
        s
    };
    let acl = |mut s: Spec, m| {
        s.acl = Some(m);
        s
    };
    vec![
        spec(VIP, 80, false, &[(b1, 8080), (b2, 8080)]),
        pp(spec(VIP, 81, false, &[(b1, 8081)]), ProxyProtocol::V1),
        pp(spec(VIP, 82, false, &[(b2, 8082)]), ProxyProtocol::V2),
        acl(spec(VIP, 83, false, &[(b3, 8083)]), AclMode::White),
        acl(spec(VIP, 84, false, &[(b3, 8084)]), AclMode::Black),
        Spec { scheduler: Scheduler::Sch, persist: 60, ..spec(VIP, 85, false, &[(b1, 8085), (b2, 8085), (b3, 8085)]) },
        spec(VIP, 90, false, &[]),
        spec(VIP, 53, true, &[(b1, 5353)]),
        pp(spec(VIP, 54, true, &[(b2, 5454)]), ProxyProtocol::V2),
        Spec { scheduler: Scheduler::Tch, ..spec(VIP, 55, true, &[(b1, 5555), (b3, 5555)]) },
        spec(VIP6, 443, false, &[(b61, 8443), (b62, 8443)]),
        pp(spec(VIP6, 444, false, &[(b61, 8444)]), ProxyProtocol::V2),
        pp(spec(VIP6, 445, false, &[(b62, 8445)]), ProxyProtocol::V1),
        acl(spec(VIP6, 446, false, &[(b61, 8446)]), AclMode::White),
        spec(VIP6, 53, true, &[(b61, 5353)]),
        pp(spec(VIP6, 54, true, &[(b62, 5454)]), ProxyProtocol::V2),
    ]
}

fn build_model(specs: &[Spec]) -> Model {
    let listeners = specs
        .iter()
        .map(|s| {
            let proto = if s.udp { Protocol::Udp } else { Protocol::Tcp };
            let backends: Vec<(IpAddr, u16, u32)> = s.backends.iter().map(|(a, p)| (*a, *p, 1)).collect();
            let mut l = listener(s.vip, s.port, proto, s.scheduler, &backends);
            l.proxy_protocol = s.pp;
            l.persistence_timeout = s.persist;
            l.acl = s.acl.map(|mode| AclBinding { acl: "office".into(), mode });
            l
        })
        .collect();
    let mut m = model(listeners);
    let entries = ["198.18.0.0/30", "198.18.0.64/26", "2001:db8::/64"];
    m.acls.insert(
        "office".into(),
        Acl {
            source: ObjectRef { kind: "AccessControlList".into(), namespace: String::new(), name: "office".into() },
            entries: entries.iter().map(|n| n.parse::<IpNet>().unwrap()).collect(),
        },
    );
    m
}

fn world(specs: &[Spec]) -> World {
    World {
        vips: vec![VIP.into(), VIP6.into()],
        snat: vec![SNAT.into(), SNAT6.into()],
        listeners: specs.iter().map(|s| (s.vip, if s.udp { 17 } else { 6 }, s.port)).collect(),
    }
}

fn palette(specs: &[Spec]) -> Palette {
    let v4 = [VIP, SNAT, CLIENT, OUTSIDE_ACL, B1, B2, B3, Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(10, 1, 2, 3)];
    let v6 = [VIP6, SNAT6, CLIENT6, B61, B62, "2001:db8::1".parse().unwrap(), "fe80::1".parse().unwrap()];
    let mut ports: Vec<u16> =
        specs.iter().flat_map(|s| [s.port].into_iter().chain(s.backends.iter().map(|b| b.1))).collect();
    ports.extend([40000, 40001, 40007, 9999, 10000, 29999, 61000, 65535]);
    Palette { addrs4: v4.iter().map(|a| a.octets()).collect(), addrs6: v6.iter().map(|a| a.octets()).collect(), ports }
}

/// Load the datapath in a fresh namespace in `shape`, open the flows, build the corpus,
/// fuzz, and check the end.
fn fuzz(test: &'static str, shape: Shape, default_cases: usize, cookies: SynCookies) {
    if !privileged(test) {
        return;
    }
    let seed = rng::seed_from_env();
    let cases = rng::cases_from_env(default_cases);
    eprintln!("{test}: LB_FUZZ_SEED={seed:#x} LB_FUZZ_CASES={cases}");
    let bed = Bed::new().unwrap();
    let (ai, bi, b_mac) = (bed.a, bed.b, bed.b_mac);
    bed.ns.run(move || {
        let started = Instant::now();
        let specs = specs();
        let mut dp = Dataplane::load(&Options::default()).expect("load datapath (verifier)");
        let (a4, a6) = (Some(Ipv4Addr::new(198, 18, 0, 1)), Some("2001:db8::1".parse().unwrap()));
        match shape {
            Shape::Xdp | Shape::Handoff => dp.add_port(ai, a4, a6).unwrap(),
            Shape::Tc => dp.set_snat(ai, a4, a6).unwrap(),
        }
        match shape {
            Shape::Xdp => dp.add_port(bi, Some(SNAT), Some(SNAT6)).unwrap(),
            Shape::Tc | Shape::Handoff => dp.set_snat(bi, Some(SNAT), Some(SNAT6)).unwrap(),
        }
        dp.apply(&build_model(&specs)).unwrap();
        let mut r = Runner { dp, shape, a: ai, b: bi, b_mac, counts: Counts::default() };
        let opened = flows::open(&mut r, &specs);
        assert!(opened.len() >= 12, "{test}: the setup opened only {} flows", opened.len());
        r.dp.set_syn_cookies(cookies).unwrap();
        let mut corpus = seeds::stateless(&specs);
        corpus.extend(flows::seeds(&opened, b_mac));
        let (world, palette) = (world(&specs), palette(&specs));
        let tag = shape as u64;
        let report = run::fuzz(
            &mut r,
            &run::Plan {
                seed: seed ^ tag,
                printed_seed: seed,
                cases,
                corpus: &corpus,
                world: &world,
                palette: &palette,
            },
        );
        let counters = after::counters(&r);
        // The new flow checked below is the half-open path's (mutated SYNs may have turned
        // cookies on under auto).
        r.dp.set_syn_cookies(SynCookies::Off).unwrap();
        after::still_serves(&mut r);
        eprintln!(
            "{test}: {} seeds, {} mutated cases ({} more the kernel would refuse), {} checked as not ours, {} \
             rewrites' checksums checked, {} known findings skipped, verdicts {:?}, {:.1?}; counters: {counters}",
            corpus.len(),
            cases,
            report.refused,
            report.not_ours,
            report.csum_checked,
            report.known,
            report.verdicts,
            started.elapsed()
        );
    });
}
