//! The tc programs through BPF_PROG_TEST_RUN: crafted frames in, verdict and exact bytes out.
//!
//! The namespace is the XDP tests' ([`Bed`]): interface `a` (198.18.0.1/24) and `b`
//! (198.18.1.1/24, static neighbours for the backends). Here neither is an XDP port: they
//! stand for a bridge with client pods behind it (`a`) and a bridge or overlay device the
//! backends are reached through (`b`), so the whole datapath runs in `lb_tc`. One test keeps
//! `a` an XDP NIC to check the hand-over from XDP to tc.
//!
//! BPF_PROG_TEST_RUN builds skbs without a partial checksum: these tests check the complete
//! checksum arithmetic through the kernel's helpers; the e2e tests (pods with default
//! offloads) check partial checksums.
//!
//! A test is a fixture (below, one line each): whether `a` is an XDP NIC, the model, and a
//! table of cases played by [`lb_tests::fixture::run`] — each case a name, the frame in and
//! where it goes in ([`At`]: `lb_tc` on `a` or `b`, `lb_tc_egress`, `lb_xdp`), the verdict,
//! and a check of the frame out. The tables live in modules by subject: [`nat`] (NAT both
//! ways, fragments, the hand-over from XDP, the node as a client) and [`proxy`] (the PROXY
//! header inserted by moving the payload).
mod nat;
mod proxy;

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_tests::{
    fixture::{self, Hook, Side, Step},
    privileged,
    testbed::{Bed, pin_to_cpu0, run_frame, run_skb},
};
use lb_userspace::{
    dataplane::{Dataplane, Options},
    model::Model,
};

lb_tests::fixtures! {
    tc_full_nat_both_ways_tcp_udp_ipv6 => nat::tc_full_nat_both_ways_tcp_udp_ipv6(),
    tc_fragments_follow_their_first_fragment => nat::tc_fragments_follow_their_first_fragment(),
    xdp_hands_frames_bound_for_tc_devices_to_tc => nat::xdp_hands_frames_bound_for_tc_devices_to_tc(),
    the_node_itself_as_a_client => nat::the_node_itself_as_a_client(),
    tc_inserts_the_proxy_header_by_moving_the_payload => proxy::tc_inserts_the_proxy_header_by_moving_the_payload(),
}

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Where a case's frame goes in.
#[derive(Clone, Copy, Debug)]
enum At {
    /// `lb_tc` on a frame arriving on this side's interface (`a` faces clients, `b` backends).
    Tc(Side),
    /// `lb_tc_egress` on a frame leaving by `a`: sent by this node's own stack (`local`), or
    /// forwarded (it has an input interface).
    Egress { local: bool },
    /// `lb_xdp` on a frame arriving on `a` (an XDP NIC in the hand-over fixture).
    Xdp,
}

/// `lb_tc` on a frame arriving on `a` (from a client pod).
const A: At = At::Tc(Side::Client);
/// `lb_tc` on a frame arriving on `b` (from a backend).
const B: At = At::Tc(Side::Backend);

/// The loaded datapath in its namespace.
struct Tc {
    dp: Dataplane,
    a: u32,
    b: u32,
    b_mac: [u8; 6],
}

impl Tc {
    fn counter(&self, name: &str) -> u64 {
        self.dp.stats().unwrap().datapath[name].packets
    }
}

impl Hook<At> for Tc {
    fn run(&mut self, frame: &[u8], at: At) -> (u32, Vec<u8>) {
        let (v, out, _) = match at {
            At::Tc(side) => {
                let ifindex = match side {
                    Side::Client => self.a,
                    Side::Backend => self.b,
                };
                run_skb(self.dp.tc_program(lb_common::TC_PROGRAM).unwrap(), frame, ifindex, false, 1)
            }
            At::Egress { local } => {
                run_skb(self.dp.tc_program(lb_common::TC_EGRESS_PROGRAM).unwrap(), frame, self.a, local, 1)
            }
            At::Xdp => run_frame(self.dp.program().unwrap(), frame, self.a, 1),
        };
        (v, out)
    }

    fn backend_side_mac(&self) -> [u8; 6] {
        self.b_mac
    }
}

/// What a test plays: whether `a` is an XDP NIC (else both interfaces are tc devices), the
/// model, and the table.
struct Fixture {
    xdp_a: bool,
    model: Model,
    steps: Vec<Step<Tc, At>>,
}

impl Fixture {
    fn new(model: Model, steps: Vec<Step<Tc, At>>) -> Fixture {
        Fixture { xdp_a: false, model, steps }
    }
}

/// Build the namespace, load the datapath with `a` and `b` as tc devices (or `a` an XDP NIC
/// when `xdp_a`) and the fixture's model, and play its table on a thread inside the
/// namespace, pinned to CPU 0.
fn play(test: &str, fx: Fixture) {
    if !privileged(test) {
        return;
    }
    let bed = Bed::new().unwrap();
    let (ai, bi, b_mac) = (bed.a, bed.b, bed.b_mac);
    bed.ns.run(move || {
        pin_to_cpu0();
        let mut dp = Dataplane::load(&Options::default()).expect("load datapath");
        if fx.xdp_a {
            dp.add_port(ai, Some(Ipv4Addr::new(198, 18, 0, 1)), Some(v6("2001:db8::1"))).unwrap();
        } else {
            dp.set_snat(ai, Some(Ipv4Addr::new(198, 18, 0, 1)), Some(v6("2001:db8::1"))).unwrap();
        }
        dp.set_snat(bi, Some(SNAT), Some(v6("2001:db8:1::1"))).unwrap();
        dp.apply(&fx.model).unwrap();
        fixture::run(&mut Tc { dp, a: ai, b: bi, b_mac }, fx.steps);
    });
}
