//! `Dataplane::apply` on the real object (issue #15, item 4): every listener and ACL is
//! applied on its own, so one that does not fit keeps its last good state (or stays absent)
//! while the others load, and the failure names its object; a freed listener or backend id
//! is not handed out again while drained flows still name it.
//!
//! Each test loads the datapath in a namespace of its own ([`Bed`]) and sends frames through
//! `lb_xdp` with BPF_PROG_TEST_RUN.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use lb_tests::{
    packet::{Flow, Frame, SYN, parse},
    privileged,
    testbed::{Bed, listener, model, pin_to_cpu0, run_frame},
};
use lb_userspace::{
    dataplane::{Dataplane, DataplaneError, Options, Rejected, conntrack::SweepOptions, keep_served},
    model::{Acl, AclBinding, AclMode, Model, ObjectRef, Protocol, Scheduler},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
const B3: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 4);

fn be(a: Ipv4Addr) -> (IpAddr, u16, u32) {
    (IpAddr::V4(a), 8080, 1)
}

/// The datapath loaded with `opts` in a fresh namespace, its client side `a`.
struct Loaded {
    dp: Dataplane,
    a: u32,
}

impl Loaded {
    /// A datagram from `CLIENT:sport` to `VIP:port`: the verdict, and the backend it went to.
    fn udp(&mut self, sport: u16, port: u16) -> (u32, Option<IpAddr>) {
        let frame = Frame::udp(Flow::new(CLIENT, sport, VIP, port)).payload(b"ping").bytes();
        let (verdict, out, _) = run_frame(self.dp.program().unwrap(), &frame, self.a, 1);
        (verdict, (verdict == XDP_REDIRECT).then(|| parse(&out).flow.2))
    }

    /// A SYN from `CLIENT:sport` to `VIP:port`: the verdict, and the backend it went to.
    fn syn(&mut self, sport: u16, port: u16) -> (u32, Option<IpAddr>) {
        let frame = Frame::tcp(Flow::new(CLIENT, sport, VIP, port), SYN).bytes();
        let (verdict, out, _) = run_frame(self.dp.program().unwrap(), &frame, self.a, 1);
        (verdict, (verdict == XDP_REDIRECT).then(|| parse(&out).flow.2))
    }
}

fn with_datapath(test: &str, opts: Options, body: impl FnOnce(&mut Loaded) + Send + 'static) {
    if !privileged(test) {
        return;
    }
    let bed = Bed::new().unwrap();
    let (a, b) = (bed.a, bed.b);
    bed.ns.run(move || {
        pin_to_cpu0();
        let mut dp = Dataplane::load(&opts).expect("load datapath");
        dp.add_port(a, Some(Ipv4Addr::new(198, 18, 0, 1)), None).unwrap();
        dp.add_port(b, Some(Ipv4Addr::new(198, 18, 1, 1)), None).unwrap();
        body(&mut Loaded { dp, a });
    });
}

/// The objects `apply` could not take (it must have failed with exactly those).
fn rejected(r: Result<(), DataplaneError>) -> Vec<Rejected> {
    match r {
        Err(DataplaneError::Rejected(r)) => r,
        other => panic!("expected some objects rejected, got {other:?}"),
    }
}

fn l(port: u16, scheduler: Scheduler, backends: &[Ipv4Addr]) -> lb_userspace::model::L4Listener {
    let backends: Vec<_> = backends.iter().map(|b| be(*b)).collect();
    listener(IpAddr::V4(VIP), port, Protocol::Tcp, scheduler, &backends)
}

/// Issue #15, item 4 (per-listener error isolation): a listener that does not fit the
/// backend table (a Maglev table takes 16381 entries, the table here has 64) is reported on
/// its Service and port; the listeners after it still load, and a listener that stops
/// fitting keeps its last good version.
#[test]
fn a_listener_that_does_not_fit_leaves_the_others_applied() {
    let opts = Options { backend_table_entries: 64, ..Options::default() };
    with_datapath("a_listener_that_does_not_fit_leaves_the_others_applied", opts, |t| {
        let m1 = model(vec![l(80, Scheduler::Rr, &[B1]), l(82, Scheduler::Rr, &[B1])]);
        t.dp.apply(&m1).unwrap();

        // :81 cannot fit; :80 changes, :83 is new (after :81 in apply order).
        let m2 = model(vec![
            l(80, Scheduler::Rr, &[B2]),
            l(81, Scheduler::Sch, &[B1, B2]),
            l(82, Scheduler::Rr, &[B1]),
            l(83, Scheduler::Rr, &[B3]),
        ]);
        let r = rejected(t.dp.apply(&m2));
        assert_eq!(t.syn(1000, 83), (XDP_REDIRECT, Some(B3.into())), "the listener after the bad one is loaded");
        assert_eq!(t.syn(1001, 80), (XDP_REDIRECT, Some(B2.into())), "the listener before it is updated");
        assert_eq!(t.syn(1002, 81).0, XDP_PASS, "the one that does not fit is not served");
        assert_eq!(r.len(), 1, "{r:?}");
        let e = r[0].object_error();
        assert_eq!(e.object, ObjectRef { kind: "Service".into(), namespace: "t".into(), name: "l81".into() });
        assert_eq!(e.field, "spec.ports");
        assert!(
            e.reason.starts_with("listener 198.18.100.10:81/tcp not loaded into the datapath: backend table full"),
            "{e}"
        );
        assert!(e.reason.ends_with("; not served"), "{e}");
        let mut served2 = m2.clone();
        keep_served(&mut served2, &m1, &r);
        assert!(!served2.listeners.contains_key("198.18.100.10:81/tcp"), "never loaded: not in the served model");

        // Now :80 stops fitting while :81 is fixed: :80 keeps its last good version.
        let m3 = model(vec![
            l(80, Scheduler::Tch, &[B3]),
            l(81, Scheduler::Rr, &[B1]),
            l(82, Scheduler::Rr, &[B1]),
            l(83, Scheduler::Rr, &[B3]),
        ]);
        let r = rejected(t.dp.apply(&m3));
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].to_string().starts_with("Service t/l80: spec.ports: listener 198.18.100.10:80/tcp"), "{}", r[0]);
        assert!(r[0].reason.ends_with("; its last good version keeps serving"), "{}", r[0]);
        assert_eq!(t.syn(1003, 80), (XDP_REDIRECT, Some(B2.into())), "the last good version serves");
        assert_eq!(t.syn(1004, 81), (XDP_REDIRECT, Some(B1.into())), "the fixed one is loaded");
        let mut served3 = m3.clone();
        keep_served(&mut served3, &served2, &r);
        assert_eq!(served3.listeners["198.18.100.10:80/tcp"], m2.listeners["198.18.100.10:80/tcp"]);

        // Applying again retries it (the table is still too small: same answer, nothing else moves).
        assert_eq!(rejected(t.dp.apply(&m3)).len(), 1);
        assert_eq!(t.syn(1005, 83), (XDP_REDIRECT, Some(B3.into())));
    });
}

/// A backend removed from many listeners at once (a node drained of its pods), connection
/// drain off: every listener's flows to it are cut, in one walk of the flow tables for the
/// whole apply (one per listener blocked the agent for as many walks), and each flow's next
/// datagram is scheduled anew on what is left.
#[test]
fn a_backend_removed_from_every_listener_is_cut_in_one_walk() {
    with_datapath("a_backend_removed_from_every_listener_is_cut_in_one_walk", Options::default(), |t| {
        let udp = |port: u16, backends: &[Ipv4Addr]| {
            let backends: Vec<_> = backends.iter().map(|b| be(*b)).collect();
            listener(IpAddr::V4(VIP), port, Protocol::Udp, Scheduler::Rr, &backends)
        };
        let ports = 80..90;
        t.dp.apply(&model(ports.clone().map(|p| udp(p, &[B1])).collect())).unwrap();
        for p in ports.clone() {
            assert_eq!(t.udp(2000 + p, p), (XDP_REDIRECT, Some(B1.into())), ":{p}");
            assert_eq!(t.udp(3000 + p, p), (XDP_REDIRECT, Some(B1.into())), ":{p}");
        }
        // B1 goes from every listener, B2 comes.
        t.dp.apply(&model(ports.clone().map(|p| udp(p, &[B2])).collect())).unwrap();
        assert_eq!(t.dp.cut_walks(), 1, "one walk for ten listeners");
        for p in ports.clone() {
            assert_eq!(t.udp(2000 + p, p), (XDP_REDIRECT, Some(B2.into())), ":{p}: the flow was cut");
            assert_eq!(t.udp(3000 + p, p), (XDP_REDIRECT, Some(B2.into())), ":{p}: the flow was cut");
        }
        // Nothing removed: no walk.
        t.dp.apply(&model(ports.map(|p| udp(p, &[B2, B3])).collect())).unwrap();
        assert_eq!(t.dp.cut_walks(), 1);
    });
}

fn acl(name: &str, entries: impl IntoIterator<Item = ipnet::IpNet>) -> Acl {
    Acl {
        source: ObjectRef { kind: "AccessControlList".into(), namespace: String::new(), name: name.into() },
        entries: entries.into_iter().collect(),
    }
}

/// An ACL whose prefixes do not fit the trie (65,536 prefixes over all ACLs) keeps its last
/// good prefixes, or, if it never loaded, leaves its listeners unloaded rather than open;
/// the other ACLs are edited.
#[test]
fn an_acl_that_does_not_fit_keeps_its_last_good_prefixes() {
    with_datapath("an_acl_that_does_not_fit_keeps_its_last_good_prefixes", Options::default(), |t| {
        let office: ipnet::IpNet = "198.18.0.0/30".parse().unwrap();
        let white = |port: u16, name: &str| {
            let mut x = l(port, Scheduler::Rr, &[B1]);
            x.acl = Some(AclBinding { acl: name.into(), mode: AclMode::White });
            x
        };
        let mut m1 = model(vec![white(80, "office"), white(81, "other")]);
        m1.acls.insert("office".into(), acl("office", [office]));
        m1.acls.insert("other".into(), acl("other", ["198.18.0.64/26".parse().unwrap()]));
        t.dp.apply(&m1).unwrap();
        assert_eq!(t.syn(1000, 80).0, XDP_REDIRECT, "whitelisted");

        // 65,537 single addresses in 10.0.0.0/8: more than the trie holds.
        let huge = (0..=u16::MAX as u32).map(|i| {
            ipnet::IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))) // 10.0.x.y/32
        });
        let mut m2: Model = m1.clone();
        m2.acls.insert("office".into(), acl("office", huge.chain(["10.1.0.0/16".parse().unwrap()])));
        m2.acls.insert("other".into(), acl("other", [office]));
        m2.listeners.insert("198.18.100.10:82/tcp".into(), white(82, "new").into());
        m2.acls.insert("new".into(), acl("new", ["10.2.0.0/16".parse().unwrap()]));
        let r = rejected(t.dp.apply(&m2));
        let msgs: Vec<String> = r.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].starts_with("AccessControlList office: spec.entries: ACL office not loaded into the datapath"),
            "{msgs:?}"
        );
        assert!(msgs[0].ends_with("its last good prefixes stay in force"), "{msgs:?}");
        assert_eq!(t.syn(1001, 80).0, XDP_REDIRECT, "the whitelist keeps its last good prefixes");
        assert_eq!(t.syn(1002, 81).0, XDP_REDIRECT, "the other ACL is edited");
        assert_eq!(t.syn(1003, 82).0, XDP_DROP, "the new listener's whitelist does not list the client");
    });
}

/// Issue #15, item 4 (id quarantine): a removed listener's flows drain past the 2 s grace
/// period; the listener and backend ids they carry are not handed to a new listener and
/// backend until a conntrack sweep has cut them (before, the new listener took both ids after
/// 2 s, and the drained flow's packets were counted as its own).
#[test]
fn a_freed_id_is_not_reused_while_drained_flows_name_it() {
    with_datapath("a_freed_id_is_not_reused_while_drained_flows_name_it", Options::default(), |t| {
        let udp = |port: u16, backend: Ipv4Addr| {
            let mut x = listener(IpAddr::V4(VIP), port, Protocol::Udp, Scheduler::Rr, &[be(backend)]);
            x.drain_timeout = Some(3);
            x
        };
        t.dp.apply(&model(vec![udp(53, B1)])).unwrap();
        assert_eq!(t.udp(5000, 53), (XDP_REDIRECT, Some(B1.into())));
        // Removed: its flow drains for 3 s.
        t.dp.apply(&Model::default()).unwrap();
        std::thread::sleep(Duration::from_millis(2200));
        let next = model(vec![udp(54, B2)]);
        t.dp.apply(&next).unwrap();
        assert_eq!(t.udp(5000, 53), (XDP_REDIRECT, Some(B1.into())), "the drained flow goes on");
        let stats = t.dp.stats().unwrap();
        assert_eq!(stats.listeners["198.18.100.10:54/udp"].packets, 0, "not counted on the new listener: {stats:?}");
        assert_eq!(stats.backends["198.18.1.3:8080"].packets, 0, "nor on the new backend: {stats:?}");

        // Past the deadline a sweep cuts the flow; the ids are free again after it.
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(t.dp.sweep(&SweepOptions::default()).unwrap().drained, 1);
        assert_eq!(t.udp(5000, 53).0, XDP_PASS, "cut");
        let mut again = next.clone();
        again.listeners.extend(model(vec![udp(55, B3)]).listeners);
        t.dp.apply(&again).unwrap();
        assert_eq!(t.udp(5001, 55), (XDP_REDIRECT, Some(B3.into())));
        let stats = t.dp.stats().unwrap();
        assert_eq!(stats.listeners["198.18.100.10:55/udp"].packets, 1, "{stats:?}");
    });
}

/// The short way of `apply` (only the listeners that are not the same objects as at the last
/// apply are written) leaves the maps serving what the model says, as the full way does:
/// listeners added (on a second VIP too), removed, given other backends or schedulers, ACLs
/// bound, unbound and dropped from the model, in a seeded random sequence of models each
/// made from the last (unchanged listeners shared). After each apply, a SYN to every
/// address and port either reaches one of the listener's backends, is dropped by its ACL, or
/// passes (no listener).
#[test]
fn the_short_way_serves_what_the_model_says() {
    with_datapath("the_short_way_serves_what_the_model_says", Options::default(), |t| {
        const VIP2: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 11);
        let client: ipnet::IpNet = "198.18.0.0/30".parse().unwrap();
        let mut seed: u64 = 11;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut m = Model::default();
        m.acls.insert("deny".into(), acl("deny", [client]));
        m.acls.insert("allow".into(), acl("allow", [client]));
        let mut sport = 2000;
        for step in 0..40 {
            let vip = if next(3) == 0 { VIP2 } else { VIP };
            let port = 80 + next(6) as u16;
            let mut l = listener(IpAddr::V4(vip), port, Protocol::Tcp, Scheduler::Rr, &[]);
            let name = lb_userspace::model::listener_name(&l);
            match next(6) {
                0 => {
                    m.listeners.remove(&name);
                }
                1 if !m.acls.contains_key("deny") => {
                    m.acls.insert("deny".into(), acl("deny", [client]));
                }
                1 => {
                    // Dropped from the model: listeners that still name it keep it loaded.
                    m.acls.remove("deny");
                    let unbound: Vec<_> = m
                        .listeners
                        .iter()
                        .filter(|(_, l)| l.acl.as_ref().is_some_and(|b| b.acl == "deny"))
                        .map(|(k, l)| (k.clone(), l.clone()))
                        .collect();
                    for (k, l) in unbound {
                        let mut l = (*l).clone();
                        l.acl = None;
                        m.listeners.insert(k, l.into());
                    }
                }
                pick => {
                    let pool = [B1, B2, B3];
                    let first = next(3) as usize;
                    l.backends = (0..=next(3) as usize)
                        .map(|i| pool[(first + i) % 3])
                        .enumerate()
                        .map(|(i, b)| lb_userspace::model::Backend {
                            addr: b.into(),
                            port: 8080,
                            weight: if i == 0 { 1 } else { next(2) as u32 },
                        })
                        .collect();
                    l.scheduler = [Scheduler::Rr, Scheduler::Wrr, Scheduler::Sch][next(3) as usize];
                    l.acl = match pick {
                        2 if m.acls.contains_key("deny") => {
                            Some(AclBinding { acl: "deny".into(), mode: AclMode::Black })
                        }
                        3 => Some(AclBinding { acl: "allow".into(), mode: AclMode::White }),
                        _ => None,
                    };
                    m.listeners.insert(name, l.into());
                }
            }
            t.dp.apply(&m).unwrap_or_else(|e| panic!("step {step}: {e}"));
            // An ACL stays while the model or a listener names it, and no longer.
            let named: std::collections::BTreeSet<&str> = m
                .acls
                .keys()
                .map(String::as_str)
                .chain(m.listeners.values().filter_map(|l| l.acl.as_ref()).map(|b| b.acl.as_str()))
                .collect();
            assert_eq!(t.dp.loaded_acls().collect::<std::collections::BTreeSet<_>>(), named, "step {step}");
            for vip in [VIP, VIP2] {
                for port in 80..86 {
                    sport += 1;
                    let frame = Frame::tcp(Flow::new(CLIENT, sport, vip, port), SYN).bytes();
                    let (verdict, out, _) = run_frame(t.dp.program().unwrap(), &frame, t.a, 1);
                    let want = m.listeners.get(&format!("{vip}:{port}/tcp"));
                    let at = format!("step {step}, {vip}:{port}, {want:?}");
                    match want {
                        None => assert_eq!(verdict, XDP_PASS, "{at}"),
                        Some(l) if l.acl.as_ref().is_some_and(|b| b.mode == AclMode::Black) => {
                            assert_eq!(verdict, XDP_DROP, "{at}")
                        }
                        Some(l) => {
                            assert_eq!(verdict, XDP_REDIRECT, "{at}");
                            let to = parse(&out).flow.2;
                            assert!(l.backends.iter().any(|b| b.addr == to && b.weight > 0), "{at}: went to {to}");
                        }
                    }
                }
            }
        }
        assert!(t.dp.short_applies() >= 30, "the short way was taken {} times of 40", t.dp.short_applies());
    });
}
