//! The XDP program through BPF_PROG_TEST_RUN: crafted frames in, verdict and exact bytes out.
//!
//! Each test loads the datapath in a namespace of its own with real routes and neighbours,
//! so `bpf_fib_lookup` answers as it would on a node: interface `a` faces clients
//! (198.18.0.1/24, 2001:db8::1/64), interface `b` faces backends (198.18.1.1/24,
//! 2001:db8:1::1/64) with static neighbours for the backends.
//!
//! A test is a fixture (below, one line each): the datapath's options and model, and a table
//! of cases played through `lb_xdp` by [`lb_tests::fixture::run`] — each case a name, the
//! frame in and its side, the verdict, and a check of the frame out. The tables live in
//! modules by subject: [`nat`] (full NAT, what is not ours, IPv6, a full conntrack),
//! [`flows`] (schedulers, ACLs, persistence, the TCP handshake, TCP state), [`errors`]
//! (fragments, ICMP errors), [`proxy`] (PROXY protocol), [`ttl`] (TTL and hop limit),
//! [`cookies`] (SYN cookies), [`reclaim`] (source ports taken back under exhaustion).
mod cookies;
mod errors;
mod flows;
mod nat;
mod proxy;
mod reclaim;
mod ttl;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_tests::{
    fixture::{self, Hook, Seen, Side, Step, from, packet, parsed},
    packet::{ACK, Flow, Frame, SYN},
    privileged,
    testbed::{Bed, mac_of, pin_to_cpu0, run_frame},
};
use lb_userspace::{
    dataplane::{Dataplane, Options},
    model::Model,
};

lb_tests::fixtures! {
    full_nat_both_ways_and_everything_else_untouched => nat::full_nat_both_ways_and_everything_else_untouched(),
    ipv6_full_nat_with_extension_headers => nat::ipv6_full_nat_with_extension_headers(),
    new_flows_still_work_when_conntrack_is_full => nat::new_flows_still_work_when_conntrack_is_full(),
    schedulers_rr_wrr_sch_tch => flows::schedulers_rr_wrr_sch_tch(),
    acl_white_black_and_empty_lists => flows::acl_white_black_and_empty_lists(),
    session_persistence_holds_then_expires => flows::session_persistence_holds_then_expires(),
    persistence_skips_a_backend_another_listener_still_finds_healthy => flows::persistence_skips_a_backend_another_listener_still_finds_healthy(),
    tcp_state_reopen_and_conntrack_sweep => flows::tcp_state_reopen_and_conntrack_sweep(),
    a_flow_half_without_its_other_half_is_swept => flows::a_flow_half_without_its_other_half_is_swept(),
    a_lost_reverse_entry_comes_back_established_and_a_reopen_spares_anothers => flows::a_lost_reverse_entry_comes_back_established_and_a_reopen_spares_anothers(),
    only_a_syn_opens_a_tcp_flow_and_the_handshake_ack_establishes_it => flows::only_a_syn_opens_a_tcp_flow_and_the_handshake_ack_establishes_it(),
    fragments_follow_their_first_fragment => errors::fragments_follow_their_first_fragment(),
    fragments_of_two_clients_leave_with_identifications_of_their_own => errors::fragments_of_two_clients_leave_with_identifications_of_their_own(),
    ipv6_fragments_follow_their_first_fragment => errors::ipv6_fragments_follow_their_first_fragment(),
    icmp_errors_reach_the_right_side => errors::icmp_errors_reach_the_right_side(),
    icmpv6_packet_too_big_reaches_the_right_side => errors::icmpv6_packet_too_big_reaches_the_right_side(),
    proxy_v2_tcp_header_seq_ack_sack_mss => proxy::proxy_v2_tcp_header_seq_ack_sack_mss(),
    proxy_v1_and_ipv6_header_bytes => proxy::proxy_v1_and_ipv6_header_bytes(),
    proxy_udp_datagrams_get_a_v2_header_replies_do_not => proxy::proxy_udp_datagrams_get_a_v2_header_replies_do_not(),
    proxy_malformed_options_and_toggling => proxy::proxy_malformed_options_and_toggling(),
    proxy_forged_header_without_a_flow_is_dropped => proxy::proxy_forged_header_without_a_flow_is_dropped(),
    ttl_and_hop_limit_lose_one_hop_and_expire => ttl::ttl_and_hop_limit_lose_one_hop_and_expire(),
    syn_cookies_answer_syns_and_only_a_valid_cookie_opens_a_flow => cookies::syn_cookies_answer_syns_and_only_a_valid_cookie_opens_a_flow(),
    syn_cookies_ipv6_and_proxy_v2 => cookies::syn_cookies_ipv6_and_proxy_v2(),
    an_answered_handshake_keeps_its_port_longer_than_an_unanswered_one => reclaim::an_answered_handshake_keeps_its_port_longer_than_an_unanswered_one(),
    a_flow_that_lost_its_reverse_entry_leaves_its_port_to_the_flow_that_took_it => reclaim::a_flow_that_lost_its_reverse_entry_leaves_its_port_to_the_flow_that_took_it(),
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
const B3: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 4);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn be(a: Ipv4Addr, port: u16, weight: u32) -> (IpAddr, u16, u32) {
    (IpAddr::V4(a), port, weight)
}

/// The loaded datapath in its namespace.
struct Bench {
    dp: Dataplane,
    a: u32,
    b: u32,
    b_mac: [u8; 6],
}

impl Hook for Bench {
    fn run(&mut self, frame: &[u8], side: Side) -> (u32, Vec<u8>) {
        let ifindex = match side {
            Side::Client => self.a,
            Side::Backend => self.b,
        };
        let (verdict, out, _) = run_frame(self.dp.program().unwrap(), frame, ifindex, 1);
        (verdict, out)
    }

    fn backend_side_mac(&self) -> [u8; 6] {
        self.b_mac
    }
}

/// What a test plays: the datapath's options and model, and the table.
struct Fixture {
    opts: Options,
    model: Model,
    steps: Vec<Step<Bench>>,
}

impl Fixture {
    fn new(model: Model, steps: Vec<Step<Bench>>) -> Fixture {
        Fixture { opts: Options::default(), model, steps }
    }
}

/// Build the namespace, load the datapath with the fixture's model, and play its table on a
/// thread inside the namespace, pinned to CPU 0 (per-CPU round robin is then strictly
/// sequential).
fn play(test: &str, fx: Fixture) {
    if !privileged(test) {
        return;
    }
    let bed = Bed::new().unwrap();
    let (ai, bi, b_mac) = (bed.a, bed.b, bed.b_mac);
    bed.ns.run(move || {
        pin_to_cpu0();
        let mut dp = Dataplane::load(&fx.opts).expect("load datapath");
        dp.add_port(ai, Some(Ipv4Addr::new(198, 18, 0, 1)), Some(v6("2001:db8::1"))).unwrap();
        dp.add_port(bi, Some(SNAT), Some(v6("2001:db8:1::1"))).unwrap();
        dp.apply(&fx.model).unwrap();
        fixture::run(&mut Bench { dp, a: ai, b: bi, b_mac }, fx.steps);
    });
}

/// A client's SYN opening a TCP flow: redirected to a backend with valid checksums.
fn new_flow(name: impl Into<String>, client: IpAddr, sport: u16, vip: IpAddr, port: u16) -> Step<Bench> {
    let syn = Frame::tcp(Flow::new(client, sport, vip, port), SYN).bytes();
    packet(name, Side::Client, syn, XDP_REDIRECT, parsed(|p, _| assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}")))
}

/// The backend's SYN-ACK (ISN 1999) on the flow whose client packet case `of` sent to its
/// backend: back to the client. A client ACK with the default ack number (2000) then
/// acknowledges it and completes the handshake.
fn syn_ack(name: impl Into<String>, of: impl Into<String>) -> Step<Bench> {
    let of = of.into();
    let reply = from(move |s| {
        let (snat, snat_port, backend, bport) = s.parsed(&of).flow;
        let f = Frame::tcp(Flow::new(backend, bport, snat, snat_port), SYN | ACK).seq_ack(1999, 1001);
        Frame { dst_mac: s.b_mac, src_mac: mac_of(backend), ..f }.bytes()
    });
    packet(name, Side::Backend, reply, XDP_REDIRECT, parsed(|p, _| assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}")))
}

/// The backend case `name`'s frame went to.
fn backend_of(seen: &Seen, name: &str) -> IpAddr {
    seen.parsed(name).flow.2
}
