//! The tc datapath's cost per packet (BPF_PROG_TEST_RUN), against its own floor (a tc
//! program that counts and drops) in the same run: `lb_tc` on the devices pods are behind,
//! as the XDP suite measures `lb_xdp` on NICs.
//!
//! Every case is one call per packet, averaged over many calls: BPF_PROG_TEST_RUN's
//! `repeat` runs the program again on the packet it already rewrote (a NATed packet is "not
//! ours" the second time), so only a fresh packet per call measures the case named. The
//! floor is measured the same way, and each case also by the program's own run time
//! (bpf_stats, [`cost`]).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use lb_tests::{
    packet::{ACK, Flow, Frame, PSH, SYN, parse},
    testbed::{Bed, pin_to_cpu0, run_skb},
};
use lb_userspace::{
    dataplane::{self, Dataplane, Options},
    model::{Model, ProxyProtocol, Scheduler, listener_name},
};
use serde_json::json;

use crate::{
    Plan, VIP,
    cost::{self, Sample},
    listener,
};

const TC_ACT_REDIRECT: u32 = 7;

pub fn suite(plan: &Plan) -> Result<serde_json::Value> {
    let bed = Bed::new().context("bench namespace")?;
    let (a, b) = (bed.a, bed.b);
    let (repeats, runs, new_flows) = (plan.repeats, plan.runs, plan.new_flows);
    let results = bed.ns.run(move || -> Result<Vec<(String, Vec<Sample>)>> {
        pin_to_cpu0();
        let v4 = |s: &str| IpAddr::V4(s.parse().unwrap());
        let two = [(v4("198.18.1.2"), 8080, 1), (v4("198.18.1.3"), 8080, 1)];
        let six = [(IpAddr::V6("2001:db8:1::2".parse::<Ipv6Addr>().unwrap()), 8080, 1)];
        let mut m = Model::default();
        let mut pp_l = listener(85, Scheduler::Rr, &two);
        pp_l.proxy_protocol = ProxyProtocol::V2;
        for l in [
            listener(80, Scheduler::Rr, &two),
            listener(82, Scheduler::Sch, &two),
            listener(443, Scheduler::Rr, &six),
            pp_l,
        ] {
            m.listeners.insert(listener_name(&l), std::sync::Arc::new(l));
        }
        // Both interfaces are tc devices (a bridge with client pods, one with backends).
        let mut dp = Dataplane::load(&Options::default())?;
        dp.set_snat(a, Some(Ipv4Addr::new(198, 18, 0, 1)), Some("2001:db8::1".parse()?))?;
        dp.set_snat(b, Some(Ipv4Addr::new(198, 18, 1, 1)), Some("2001:db8:1::1".parse()?))?;
        dp.apply(&m)?;
        let mut floor = dataplane::load_floor()?;
        let floor_prog: &mut aya::programs::SchedClassifier =
            floor.program_mut(dataplane::TC_FLOOR_PROGRAM).unwrap().try_into()?;

        let _stats = cost::enable_stats()?;
        let mut out: Vec<(String, Vec<Sample>)> = Vec::new();
        let client = Ipv4Addr::new(198, 18, 0, 2);
        let syn = |c: Ipv4Addr, sport: u16, port: u16| Frame::tcp(Flow::new(c, sport, VIP, port), SYN).bytes();
        let calls = runs.min(20_000) as usize;
        let mut repeated = |name: &str, prog: &mut aya::programs::SchedClassifier, frame: &[u8], ifindex: u32| {
            crate::progress(name);
            let v: Vec<Sample> =
                (0..repeats).map(|_| cost::tc_calls(prog, std::iter::repeat_n(frame, calls), ifindex)).collect();
            out.push((name.to_string(), v));
        };
        repeated("tc floor: TC_ACT_SHOT + counter", floor_prog, &syn(client, 1, 80), a);
        let prog = dp.tc_program(lb_common::TC_PROGRAM)?;
        repeated(
            "tc: not ours (UDP to another address)",
            prog,
            &Frame::udp(Flow::new(client, 1, Ipv4Addr::new(198, 18, 0, 1), 53)).bytes(),
            a,
        );
        let (v, fwd, _) = run_skb(prog, &syn(client, 40000, 80), a, false, 1);
        anyhow::ensure!(v == TC_ACT_REDIRECT, "tc bench flow not forwarded (verdict {v})");
        repeated(
            "tc: established TCP flow, IPv4",
            prog,
            &Frame::tcp(Flow::new(client, 40000, VIP, 80), ACK).bytes(),
            a,
        );
        let p = parse(&fwd);
        let reply = Frame { dst_mac: [0; 6], ..Frame::tcp(Flow::new(p.flow.2, 8080, p.flow.0, p.flow.1), ACK) }.bytes();
        repeated("tc: backend reply, IPv4", prog, &reply, b);
        let (c6, vip6): (Ipv6Addr, Ipv6Addr) = ("2001:db8::2".parse()?, "2001:db8:100::10".parse()?);
        run_skb(prog, &Frame::tcp(Flow::new(c6, 40000, vip6, 443), SYN).bytes(), a, false, 1);
        repeated("tc: established TCP flow, IPv6", prog, &Frame::tcp(Flow::new(c6, 40000, vip6, 443), ACK).bytes(), a);
        // PROXY protocol v2: the first segment (the payload moved up for the header, each
        // run), then a later segment once the backend acknowledged it (seq shifted).
        let ppf = Flow::new(client, 40000, VIP, 85);
        let (v, syn_out, _) = run_skb(prog, &Frame::tcp(ppf, SYN).seq_ack(1000, 0).bytes(), a, false, 1);
        anyhow::ensure!(v == TC_ACT_REDIRECT, "PROXY tc bench flow not forwarded (verdict {v})");
        let first = Frame::tcp(ppf, ACK | PSH).seq_ack(1001, 1).payload(&[b'x'; 64]).bytes();
        repeated("tc: PROXY v2 first segment (payload moved, header inserted), IPv4", prog, &first, a);
        // (each call inserts: the backend has not acknowledged the header yet)
        let p = parse(&syn_out);
        let ack = Frame {
            dst_mac: [0; 6],
            ..Frame::tcp(Flow::new(p.flow.2, 8080, p.flow.0, p.flow.1), ACK).seq_ack(1, 1001 + 28 + 64)
        }
        .bytes();
        run_skb(prog, &ack, b, false, 1);
        let later = Frame::tcp(ppf, ACK | PSH).seq_ack(1065, 1).payload(&[b'x'; 64]).bytes();
        repeated("tc: PROXY v2 later segment (seq shifted), IPv4", prog, &later, a);
        // New flows: a distinct flow per call.
        for (name, port) in [("tc: new TCP flow, rr", 80u16), ("tc: new TCP flow, Maglev (sch)", 82)] {
            crate::progress(name);
            let mut v = Vec::new();
            for r in 0..repeats {
                let c = Ipv4Addr::new(198, 18, 0, 10 + (r as u8) + (port as u8 - 80) * 16);
                let frames: Vec<Vec<u8>> = (1..=new_flows).map(|sport| syn(c, sport, port)).collect();
                let prog = dp.tc_program(lb_common::TC_PROGRAM)?;
                v.push(cost::tc_calls(prog, frames.iter().map(|f| f.as_slice()), a));
                cost::forget_flows(dp.ebpf_mut())?;
            }
            out.push((name.to_string(), v));
        }
        Ok(out)
    })?;
    let floor =
        results.iter().find(|(n, _)| n.starts_with("tc floor: ")).map(|(_, v)| cost::medians(v)).unwrap_or((1.0, 1.0));
    Ok(json!(results.iter().map(|(name, v)| cost::case_json(name, v, floor)).collect::<Vec<_>>()))
}
