//! The loaded datapath and where a frame goes in: `lb_xdp` or `lb_tc` on either interface,
//! `lb_tc_egress` on `a`; what each program may answer, and what counts as sending a frame
//! on. XDP's hand-over to tc (XDP_PASS with 8 bytes of metadata before the frame) is read
//! back: the metadata is taken off the frame out and noted.
use lb_common::{HANDOFF_MAGIC, TC_EGRESS_PROGRAM, TC_PROGRAM};
use lb_tests::{
    fixture::Side,
    testbed::{run_frame, run_skb},
};
use lb_userspace::dataplane::Dataplane;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// How the node's two interfaces are set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Both XDP ports: the whole datapath in `lb_xdp`.
    Xdp,
    /// Both tc devices (bridges, overlays): the whole datapath in `lb_tc`.
    Tc,
    /// `a` an XDP NIC, `b` a tc device: `lb_xdp` on `a` hands frames for `b` to tc.
    Handoff,
}

/// Where a case's frame goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// `lb_xdp` on a frame arriving on this side's interface.
    Xdp(Side),
    /// `lb_tc` on a frame arriving on this side's interface.
    Tc(Side),
    /// `lb_tc_egress` on a frame leaving by `a`: sent by this node (`local`) or forwarded.
    Egress { local: bool },
}

impl At {
    fn xdp(self) -> bool {
        matches!(self, At::Xdp(_))
    }

    /// The verdicts the program may answer (XDP_ABORTED and TC_ACT_UNSPEC are faults).
    pub fn allowed(self) -> &'static [u32] {
        if self.xdp() {
            &[XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT]
        } else {
            &[TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT]
        }
    }

    /// The verdict that hands a frame to the kernel.
    pub fn pass(self) -> u32 {
        if self.xdp() { XDP_PASS } else { TC_ACT_OK }
    }

    /// `XDP_PASS`, `TC_ACT_SHOT`...: the name of verdict `v` of this program.
    pub fn verdict_name(self, v: u32) -> &'static str {
        let names: &[&str] = if self.xdp() {
            &["XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_TX", "XDP_REDIRECT"]
        } else {
            &[
                "TC_ACT_OK",
                "TC_ACT_RECLASSIFY",
                "TC_ACT_SHOT",
                "TC_ACT_PIPE",
                "TC_ACT_STOLEN",
                "TC_ACT_QUEUED",
                "TC_ACT_REPEAT",
                "TC_ACT_REDIRECT",
            ]
        };
        names.get(v as usize).copied().unwrap_or("other")
    }

    pub fn is_drop(self, v: u32) -> bool {
        v == if self.xdp() { XDP_DROP } else { TC_ACT_SHOT }
    }
}

/// What a run gave: the verdict, the frame out (without hand-over metadata), and whether
/// XDP handed it to tc.
pub struct Ran {
    pub at: At,
    pub verdict: u32,
    pub out: Vec<u8>,
    pub handoff: bool,
}

/// How many runs reached the datapath's packet walk (for the counters' check).
#[derive(Default, Debug)]
pub struct Counts {
    pub handled: u64,
    pub handled_bytes: u64,
    pub tc_ingress: u64,
    pub egress_local: u64,
}

/// The loaded datapath in its namespace, and what ran through it.
pub struct Runner {
    pub dp: Dataplane,
    pub shape: Shape,
    pub a: u32,
    pub b: u32,
    pub b_mac: [u8; 6],
    pub counts: Counts,
}

impl Runner {
    /// Run `frame` at `at`. Panics on a failed BPF_PROG_TEST_RUN (the caller reports it with
    /// the case).
    pub fn run(&mut self, frame: &[u8], at: At) -> Ran {
        let ifindex = |side| if side == Side::Client { self.a } else { self.b };
        let (verdict, mut out, _) = match at {
            At::Xdp(side) => run_frame(self.dp.program().unwrap(), frame, ifindex(side), 1),
            At::Tc(side) => {
                let i = ifindex(side);
                run_skb(self.dp.tc_program(TC_PROGRAM).unwrap(), frame, i, false, 1)
            }
            At::Egress { local } => run_skb(self.dp.tc_program(TC_EGRESS_PROGRAM).unwrap(), frame, self.a, local, 1),
        };
        let handled = match at {
            At::Xdp(_) => true,
            At::Tc(_) => {
                self.counts.tc_ingress += 1;
                true
            }
            At::Egress { local } => {
                self.counts.egress_local += local as u64;
                local
            }
        };
        if handled {
            self.counts.handled += 1;
            self.counts.handled_bytes += frame.len() as u64;
        }
        // struct Handoff { magic: u16, flags: u16, ifindex: u32 }, in host byte order.
        let handoff = at.xdp()
            && verdict == XDP_PASS
            && out.len() >= frame.len() + 8
            && u16::from_ne_bytes([out[0], out[1]]) == HANDOFF_MAGIC;
        if handoff {
            out.drain(..8);
        }
        Ran { at, verdict, out, handoff }
    }

    /// Where a frame from `side` goes in, in this shape.
    pub fn at(&self, side: Side) -> At {
        match (self.shape, side) {
            (Shape::Xdp, _) | (Shape::Handoff, Side::Client) => At::Xdp(side),
            (Shape::Tc, _) | (Shape::Handoff, Side::Backend) => At::Tc(side),
        }
    }

    pub fn client(&mut self, frame: &[u8]) -> Ran {
        self.run(frame, self.at(Side::Client))
    }

    pub fn backend(&mut self, frame: &[u8]) -> Ran {
        self.run(frame, self.at(Side::Backend))
    }
}

impl Ran {
    /// The frame was sent on (XDP: TX, a devmap redirect, or handed to tc; tc: a redirect).
    pub fn forwarded(&self) -> bool {
        if self.at.xdp() {
            self.handoff || self.verdict == XDP_TX || self.verdict == XDP_REDIRECT
        } else {
            self.verdict == TC_ACT_REDIRECT
        }
    }
}
