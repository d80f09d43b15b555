//! The copy of the node's routes `lb run` resolves many backends from at once
//! (`lb_userspace::netlink::Fib`): wherever it answers, it answers as the kernel does; it
//! leaves to the kernel what a copy cannot decide alone (a more specific route inside a wider
//! one is followed; blackhole, multipath and local destinations are asked), and everything of
//! a family with rules of its own (policy routing). In a namespace of the test's own, with the
//! routes of a node with pods on a bridge and behind gateways.
use std::net::IpAddr;

use lb_tests::netns::{Netns, unique_prefix};
use lb_userspace::netlink::{Fib, Rtnl};

/// A next hop and a device index.
type Hop = Option<(IpAddr, u32)>;

/// The copy's answer and the kernel's for each of `addrs`, read inside `ns`.
fn answers(ns: &Netns, addrs: &[&str]) -> Vec<(IpAddr, Hop, Hop)> {
    answers_read_for(ns, addrs, addrs)
}

/// As [`answers`], with the copy read for the families of `read`.
fn answers_read_for(ns: &Netns, read: &[&str], addrs: &[&str]) -> Vec<(IpAddr, Hop, Hop)> {
    let read: Vec<IpAddr> = read.iter().map(|a| a.parse().unwrap()).collect();
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let rtnl = Rtnl::connect().unwrap();
            let fib: Fib = rtnl.fib(&read).await.unwrap();
            let mut out = Vec::new();
            for a in addrs {
                out.push((a, fib.lookup(a), rtnl.route_via(a).await.ok()));
            }
            out
        })
    })
}

#[test]
fn the_route_copy_answers_as_the_kernel_or_not_at_all() {
    if !lb_tests::privileged("the_route_copy_answers_as_the_kernel_or_not_at_all") {
        return;
    }
    let p = unique_prefix();
    let ns = Netns::new(&format!("{p}rc")).unwrap();
    let (wire, br) = (format!("{p}w"), format!("{p}br"));
    ns.ip(&["link", "add", &wire, "type", "veth", "peer", "name", &format!("{p}x")]).unwrap();
    ns.ip(&["link", "add", &br, "type", "bridge"]).unwrap();
    for dev in [&wire, &br, &format!("{p}x")] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    ns.ip(&["addr", "add", "198.18.1.1/24", "dev", &wire]).unwrap();
    ns.ip(&["addr", "add", "10.244.1.1/24", "dev", &br]).unwrap();
    ns.ip(&["-6", "addr", "add", "2001:db8:1::1/64", "dev", &wire, "nodad"]).unwrap();
    // Other nodes' pods behind gateways, one more specific route inside, a blackhole, a
    // multipath route and a default route.
    for route in [
        &["route", "add", "10.200.0.0/15", "via", "198.18.1.2"][..],
        &["route", "add", "10.200.5.0/24", "via", "198.18.1.3"],
        &["route", "add", "blackhole", "10.201.7.0/24"],
        &["route", "add", "10.202.0.0/16", "nexthop", "via", "198.18.1.2", "nexthop", "via", "198.18.1.3"],
        &["route", "add", "default", "via", "198.18.1.254"],
        &["-6", "route", "add", "2001:db8:2::/48", "via", "2001:db8:1::2"],
    ] {
        ns.ip(route).unwrap();
    }
    let addrs = [
        "10.244.1.7",   // a pod on the bridge: on the link
        "10.200.0.9",   // behind the /15's gateway
        "10.200.5.9",   // inside the more specific /24: its gateway
        "10.201.255.1", // the /15 again, after the /24
        "203.0.113.5",  // the default route
        "2001:db8:2::5",
        "2001:db8:1::9",
        "10.201.7.1", // blackhole: the kernel's
        "10.202.0.1", // multipath: the kernel's
        "198.18.1.1", // an address of the node: the kernel's
    ];
    let got = answers(&ns, &addrs);
    for (addr, copy, kernel) in &got {
        if let Some(copy) = copy {
            assert_eq!(Some(*copy), *kernel, "{addr}: the copy differs from the kernel");
        }
    }
    let answered: Vec<String> = got.iter().filter(|(_, c, _)| c.is_some()).map(|(a, _, _)| a.to_string()).collect();
    assert_eq!(answered, &addrs[..7], "the plain routes are answered, the rest left to the kernel");
    let via = |addr: &str| got.iter().find(|(a, _, _)| a.to_string() == addr).and_then(|g| g.1).unwrap().0.to_string();
    assert_eq!(via("10.200.5.9"), "198.18.1.3", "the more specific route");
    assert_eq!(via("10.244.1.7"), "10.244.1.7", "on the link: the address itself");

    // A family none of the addresses read for has is not read: its addresses go to the kernel.
    for (read, answered) in [("10.244.1.7", &addrs[..5]), ("2001:db8:2::5", &addrs[5..7])] {
        let got = answers_read_for(&ns, &[read], &addrs);
        let got: Vec<String> = got.iter().filter(|(_, c, _)| c.is_some()).map(|(a, _, _)| a.to_string()).collect();
        assert_eq!(got, answered, "read for {read}");
    }

    // Policy routing: the family's answers are left to the kernel.
    ns.ip(&["rule", "add", "from", "10.244.1.0/24", "lookup", "100", "priority", "100"]).unwrap();
    let got = answers(&ns, &addrs);
    let answered: Vec<String> = got.iter().filter(|(_, c, _)| c.is_some()).map(|(a, _, _)| a.to_string()).collect();
    assert_eq!(answered, ["2001:db8:2::5", "2001:db8:1::9"], "IPv4 has a rule of its own");
}
