//! A datapath case's cost per packet, two ways over the same BPF_PROG_TEST_RUN calls: the
//! kernel's time per run (`duration`, which includes the call's fixed cost when a call runs
//! one packet) and the program's own run time (bpf_stats `run_time_ns / run_cnt`, enabled
//! with BPF_ENABLE_STATS for the suite; tail-called programs count in their caller's time).
use anyhow::Result;
use aya::programs::{SchedClassifier, Xdp};
use lb_tests::testbed::{run_frame, run_skb};

/// One measurement: (test_run ns per packet, program ns per packet).
pub type Sample = (f64, f64);

/// A program whose bpf_stats can be read.
pub trait Stats {
    fn stats(&self) -> (u64, u64);
}

impl Stats for Xdp {
    fn stats(&self) -> (u64, u64) {
        self.info().map(|i| (i.run_time().as_nanos() as u64, i.run_count())).unwrap_or((0, 0))
    }
}

impl Stats for SchedClassifier {
    fn stats(&self) -> (u64, u64) {
        self.info().map(|i| (i.run_time().as_nanos() as u64, i.run_count())).unwrap_or((0, 0))
    }
}

/// bpf_stats on for as long as the guard lives.
pub fn enable_stats() -> Result<std::os::fd::OwnedFd> {
    Ok(aya::sys::enable_stats(aya::sys::Stats::RunTime)?)
}

/// Run `call` (which runs `prog` and returns the kernel's ns for the packets it ran, and how
/// many) and read `prog`'s bpf_stats around it.
pub fn measure<P: Stats>(prog: &mut P, call: impl FnOnce(&mut P) -> (f64, u64)) -> Sample {
    let (t0, n0) = prog.stats();
    let (total_ns, packets) = call(prog);
    let (t1, n1) = prog.stats();
    let per = |t: f64, n: u64| if n == 0 { 0.0 } else { t / n as f64 };
    (per(total_ns, packets), per((t1 - t0) as f64, n1 - n0))
}

/// `frame` run `repeat` times in one call (the program sees the packet it already rewrote
/// from the second run on: only for packets it leaves unchanged).
pub fn xdp_repeated(prog: &mut Xdp, frame: &[u8], ifindex: u32, repeat: u32) -> Sample {
    measure(prog, |p| {
        let d = run_frame(p, frame, ifindex, repeat).2;
        (d.as_nanos() as f64 * repeat as f64, repeat as u64)
    })
}

/// Each of `frames` once, one call per packet (a fresh copy of the packet each call).
pub fn xdp_calls<'a>(prog: &mut Xdp, frames: impl Iterator<Item = &'a [u8]>, ifindex: u32) -> Sample {
    measure(prog, |p| {
        let (mut total, mut n) = (0.0, 0);
        for f in frames {
            total += run_frame(p, f, ifindex, 1).2.as_nanos() as f64;
            n += 1;
        }
        (total, n)
    })
}

/// The same for a tc program (`local`: as sent by this node's own stack).
pub fn tc_calls<'a>(prog: &mut SchedClassifier, frames: impl Iterator<Item = &'a [u8]>, ifindex: u32) -> Sample {
    measure(prog, |p| {
        let (mut total, mut n) = (0.0, 0);
        for f in frames {
            total += run_skb(p, f, ifindex, false, 1).2.as_nanos() as f64;
            n += 1;
        }
        (total, n)
    })
}

/// The flows new-flow cases opened, forgotten, so the next repeat finds free source ports
/// as a node whose handshakes complete does (the bench's SYNs are never answered).
pub fn forget_flows(ebpf: &mut aya::Ebpf) -> Result<()> {
    use lb_common::{CtEntry, FlowKey, RevEntry, map_names as names};
    for name in [names::HALF_OPEN, names::CONNTRACK] {
        let mut m: aya::maps::HashMap<_, FlowKey, CtEntry> = ebpf.map_mut(name).unwrap().try_into()?;
        let keys: Vec<FlowKey> = m.keys().filter_map(|k| k.ok()).collect();
        for k in keys {
            let _ = m.remove(&k);
        }
    }
    for name in [names::HALF_OPEN_REV, names::REVERSE_NAT] {
        let mut m: aya::maps::HashMap<_, FlowKey, RevEntry> = ebpf.map_mut(name).unwrap().try_into()?;
        let keys: Vec<FlowKey> = m.keys().filter_map(|k| k.ok()).collect();
        for k in keys {
            let _ = m.remove(&k);
        }
    }
    Ok(())
}

/// Min / median / max of each of the two figures, and the ratios of the medians to the
/// floor's (measured the same way in the same run).
pub fn case_json(name: &str, v: &[Sample], floor: Sample) -> serde_json::Value {
    let s = crate::stats(v.iter().map(|x| x.0).collect());
    let p = crate::stats(v.iter().map(|x| x.1).collect());
    let ratio = s["median"].as_f64().unwrap_or(0.0) / floor.0;
    let prog_ratio = p["median"].as_f64().unwrap_or(0.0) / floor.1;
    serde_json::json!({ "case": name, "ns": s, "ratio_to_floor": ratio, "prog_ns": p, "prog_ratio_to_floor": prog_ratio })
}

/// The medians of a floor's samples.
pub fn medians(v: &[Sample]) -> Sample {
    let med = |mut x: Vec<f64>| {
        x.sort_by(|a, b| a.partial_cmp(b).unwrap());
        x[x.len() / 2]
    };
    (med(v.iter().map(|x| x.0).collect()), med(v.iter().map(|x| x.1).collect()))
}
