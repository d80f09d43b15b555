//! The case loop: every seed once as it is, then mutated cases, each checked for a fault,
//! for a verdict outside the program's set, when the oracle says the frame is not ours for
//! a verdict other than PASS or a changed byte, and when the datapath rewrote a frame whose
//! checksums were right for a wrong one. Failures are collected (up to ten) and reported
//! together, each with the seed to replay and the frames in hex.
use std::{
    collections::BTreeMap,
    fmt::Write,
    panic::{AssertUnwindSafe, catch_unwind},
};

use lb_tests::fixture::Side;

use crate::{
    csum, known,
    mutate::{self, Palette},
    oracle::{self, World},
    rng::Rng,
    runner::{At, Runner, Shape},
    seeds::Seed,
};

const MAX_FAILURES: usize = 10;

pub struct Plan<'a> {
    /// The PRNG's seed for this test, and the seed printed (the run's).
    pub seed: u64,
    pub printed_seed: u64,
    pub cases: usize,
    pub corpus: &'a [Seed],
    pub world: &'a World,
    pub palette: &'a Palette,
}

/// What the run saw.
#[derive(Default)]
pub struct Report {
    /// Cases checked byte for byte as not ours.
    pub not_ours: usize,
    /// Failures matching a known finding ([`known`]), skipped.
    pub known: usize,
    /// Mutations the kernel would refuse to run in tc (an skb shorter than its IP header),
    /// replaced by others.
    pub refused: usize,
    /// Cases rewritten by the datapath that came in with every checksum right (and so had
    /// to leave with every checksum right).
    pub csum_checked: usize,
    /// Verdict (by name) → cases.
    pub verdicts: BTreeMap<&'static str, usize>,
}

/// What went wrong with a case.
pub enum Problem {
    /// BPF_PROG_TEST_RUN failed.
    Fault(String),
    /// A verdict outside the program's set.
    Verdict(u32),
    /// A frame that is not ours (why) got another verdict than PASS, or was changed.
    NotOurs { why: &'static str, verdict: u32 },
    /// Every checksum was right going in, one is wrong coming out (the verdict).
    Checksum(u32),
}

impl Problem {
    fn describe(&self, at: At) -> String {
        match self {
            Problem::Fault(msg) => format!("the run failed: {msg}"),
            Problem::Verdict(v) => {
                let allowed: Vec<&str> = at.allowed().iter().map(|a| at.verdict_name(*a)).collect();
                format!("verdict {v} ({}) is not one of {allowed:?}", at.verdict_name(*v))
            }
            Problem::NotOurs { why, verdict } if *verdict != at.pass() => {
                format!(
                    "not ours ({why}) but verdict {}, not {}",
                    at.verdict_name(*verdict),
                    at.verdict_name(at.pass())
                )
            }
            Problem::NotOurs { why, .. } => format!("not ours ({why}) but the frame was changed"),
            Problem::Checksum(v) => {
                format!("{}: every checksum was right going in, one is wrong coming out", at.verdict_name(*v))
            }
        }
    }
}

/// One case: the frame, where it goes in, and how it came to be.
struct Case<'a> {
    index: usize,
    seed: &'a Seed,
    mutations: Vec<String>,
    frame: Vec<u8>,
    at: At,
}

/// Play the plan through `r`; panics with every failure found (up to ten).
pub fn fuzz(r: &mut Runner, plan: &Plan) -> Report {
    let mut rng = Rng::new(plan.seed);
    let mut report = Report::default();
    let mut failures = Vec::new();
    // The oracle keeps its teeth: the seeds built as not ours are judged so.
    for s in plan.corpus.iter().filter(|s| s.name.starts_with("not ours")) {
        assert!(oracle::not_ours(&s.frame, plan.world).is_some(), "the oracle takes seed {:?} for ours", s.name);
    }
    // Every seed once, unmutated, where it belongs.
    let mut cases: Vec<Case> = plan
        .corpus
        .iter()
        .enumerate()
        .map(|(index, seed)| Case {
            index,
            seed,
            mutations: Vec::new(),
            frame: seed.frame.clone(),
            at: r.at(seed.side),
        })
        .collect();
    // Bounded: a case the kernel would refuse is replaced, at most `4 × cases` tries in all.
    let mut tries = 0;
    while cases.len() < plan.corpus.len() + plan.cases && tries < 4 * plan.cases {
        tries += 1;
        let seed = rng.pick(plan.corpus);
        let mut frame = seed.frame.clone();
        let mutations = mutate::mutate(&mut rng, &mut frame, plan.palette);
        let at = pick_at(&mut rng, r, seed.side);
        if !kernel_runs(&frame, at) {
            report.refused += 1;
            continue;
        }
        cases.push(Case { index: cases.len(), seed, mutations, frame, at });
    }
    for case in &cases {
        if !kernel_runs(&case.frame, case.at) {
            continue;
        }
        let expect = match case.at {
            At::Egress { local: false } => Some("a forwarded packet at tc egress"),
            _ => oracle::not_ours(&case.frame, plan.world),
        };
        let ran = catch_unwind(AssertUnwindSafe(|| r.run(&case.frame, case.at)));
        let (problem, out) = match ran {
            Err(e) => {
                let msg =
                    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                (Problem::Fault(msg.unwrap_or_default()), Vec::new())
            }
            Ok(ran) => {
                let (v, out, at) = (ran.verdict, ran.out, case.at);
                *report.verdicts.entry(at.verdict_name(v)).or_default() += 1;
                let problem = if !at.allowed().contains(&v) {
                    Problem::Verdict(v)
                } else if let Some(why) = expect {
                    report.not_ours += 1;
                    if v != at.pass() || out != case.frame || ran.handoff {
                        Problem::NotOurs { why, verdict: v }
                    } else {
                        continue;
                    }
                } else if out != case.frame && !at.is_drop(v) && csum::valid(&case.frame) == Some(true) {
                    report.csum_checked += 1;
                    if csum::valid(&out) == Some(false) {
                        Problem::Checksum(v)
                    } else {
                        continue;
                    }
                } else {
                    continue;
                };
                (problem, out)
            }
        };
        if known::finding(&problem, &case.frame).is_some() {
            report.known += 1;
            continue;
        }
        let problem = problem.describe(case.at);
        failures.push(describe(case, plan.printed_seed, &problem, &out));
        if failures.len() >= MAX_FAILURES {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing case(s) (replay: LB_FUZZ_SEED={:#x} LB_FUZZ_CASES={}):\n\n{}",
        failures.len(),
        plan.printed_seed,
        plan.cases,
        failures.join("\n\n")
    );
    report
}

/// Where a case goes in: its seed's side, sometimes the other; for tc, sometimes tc egress
/// (the node's own packet, or a forwarded one, which the program must leave alone), except
/// where both interfaces are XDP ports.
fn pick_at(rng: &mut Rng, r: &Runner, side: Side) -> At {
    let side = if rng.chance(10) {
        match side {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    } else {
        side
    };
    match (r.shape, rng.below(100)) {
        (Shape::Xdp, _) => r.at(side),
        (_, 0..=14) if side == Side::Client => At::Egress { local: true },
        (_, 15..=22) => At::Egress { local: false },
        _ => r.at(side),
    }
}

/// BPF_PROG_TEST_RUN refuses an skb whose EtherType is IPv4 or IPv6 but which is shorter
/// than that IP header (EINVAL); XDP takes any frame of an Ethernet header or more.
fn kernel_runs(frame: &[u8], at: At) -> bool {
    if matches!(at, At::Xdp(_)) {
        return true;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() >= 14 + 20,
        0x86dd => frame.len() >= 14 + 40,
        _ => true,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(b.len() * 2), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn describe(case: &Case, seed: u64, problem: &str, out: &[u8]) -> String {
    let first_diff = case.frame.iter().zip(out).position(|(a, b)| a != b).unwrap_or(case.frame.len().min(out.len()));
    format!(
        "case {} (LB_FUZZ_SEED={seed:#x}) from seed {:?}, mutations {:?}, in at {:?}: {problem}\n  \
         in  ({} bytes): {}\n  out ({} bytes, first difference at byte {first_diff}): {}",
        case.index,
        case.seed.name,
        case.mutations,
        case.at,
        case.frame.len(),
        hex(&case.frame),
        out.len(),
        hex(out)
    )
}
