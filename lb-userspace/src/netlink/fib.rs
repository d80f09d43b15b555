//! The node's routing decision by destination, read in two dumps (its rules and its routes),
//! to resolve many backends at once: a first apply of 100,000 backends asked the kernel
//! 100,000 times (~0.9 s), though they share a handful of routes. It answers only where it
//! decides as the kernel does — the node has only the default rules (no policy routing), no
//! local-table route covers the address, and the longest main-table prefix that does is one
//! plain unicast route (one device; no multipath, nexthop object, TOS, source prefix, dead or
//! link-down flag; no other route for the same prefix) — and leaves every other address to a
//! kernel lookup.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
};

use rtnetlink::packet_route::{
    AddressFamily,
    route::{RouteAttribute, RouteFlags, RouteMessage, RouteType},
    rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage},
};

use super::{RT_TABLE_LOCAL, route_ip, route_table};

/// The main table (`table main`).
const RT_TABLE_MAIN: u32 = 254;
/// The default table (`table default`).
const RT_TABLE_DEFAULT: u32 = 253;
/// The local table, as a route's table number.
const LOCAL: u32 = RT_TABLE_LOCAL as u32;

/// What the routes say of one prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Via { gateway: Option<IpAddr>, ifindex: u32 },
    AskKernel,
}

/// One family's local and main tables, by prefix length (longest first).
#[derive(Debug, Default)]
struct Tables {
    local: Vec<(u8, HashSet<u128>)>,
    main: Vec<(u8, HashMap<u128, Decision>)>,
}

/// A copy of the routing decision of the node's IPv4 and IPv6 destinations.
#[derive(Debug, Default)]
pub struct Fib {
    /// `None`: the family has rules of its own (policy routing), or was not read: every
    /// address is asked.
    v4: Option<Tables>,
    v6: Option<Tables>,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn masked(addr: u128, width: u8, len: u8) -> u128 {
    if len == 0 { 0 } else { addr & (u128::MAX >> (128 - width) << (width - len.min(width))) }
}

/// Whether `rules` are a family's default ones: `lookup local` at 0, `lookup main` at 32766,
/// `lookup default` at 32767, nothing else and no selector.
pub(super) fn default_rules(rules: &[RuleMessage]) -> bool {
    rules.iter().all(|r| {
        let (mut priority, mut table) = (0, u32::from(r.header.table));
        let plain = r.attributes.iter().all(|a| match a {
            RuleAttribute::Priority(p) => {
                priority = *p;
                true
            }
            RuleAttribute::Table(t) => {
                table = *t;
                true
            }
            RuleAttribute::Protocol(_) => true,
            // Unset (-1); a set one (wg-quick's `suppress_prefixlength 0`) changes the lookup.
            RuleAttribute::SuppressPrefixLen(n) => *n == u32::MAX,
            _ => false,
        });
        plain
            && r.header.action == RuleAction::ToTable
            && (r.header.dst_len, r.header.src_len, r.header.tos) == (0, 0, 0)
            && (r.header.flags - RuleFlags::Permanent).is_empty()
            && matches!((priority, table), (0, LOCAL) | (32766, RT_TABLE_MAIN) | (32767, RT_TABLE_DEFAULT))
    })
}

impl Tables {
    /// The local and main tables of one family's `routes`.
    fn from_routes<'a>(routes: impl Iterator<Item = &'a RouteMessage>, width: u8) -> Tables {
        let mut local: HashMap<u8, HashSet<u128>> = HashMap::new();
        let mut main: HashMap<u8, HashMap<u128, Decision>> = HashMap::new();
        for r in routes {
            let len = r.header.destination_prefix_length;
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => route_ip(d),
                _ => None,
            });
            let key = masked(dst.map_or(0, |d| bits(d).0), width, len);
            match route_table(r) {
                LOCAL => {
                    local.entry(len).or_default().insert(key);
                }
                RT_TABLE_MAIN => {
                    let decision = plain_unicast(r);
                    main.entry(len)
                        .or_default()
                        .entry(key)
                        // Two routes for one prefix (metrics, TOS): the kernel decides.
                        .and_modify(|d| *d = Decision::AskKernel)
                        .or_insert(decision);
                }
                _ => {}
            }
        }
        let mut local: Vec<_> = local.into_iter().collect();
        let mut main: Vec<_> = main.into_iter().collect();
        local.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        main.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        Tables { local, main }
    }

    fn lookup(&self, addr: u128, width: u8) -> Option<(Option<IpAddr>, u32)> {
        if self.local.iter().any(|(len, set)| set.contains(&masked(addr, width, *len))) {
            return None;
        }
        let decision = self.main.iter().find_map(|(len, map)| map.get(&masked(addr, width, *len)))?;
        match decision {
            Decision::Via { gateway, ifindex } => Some((*gateway, *ifindex)),
            Decision::AskKernel => None,
        }
    }
}

/// The decision of a main-table route: where it sends, when it is a plain unicast route.
fn plain_unicast(r: &RouteMessage) -> Decision {
    let h = &r.header;
    if h.kind != RouteType::Unicast
        || h.tos != 0
        || h.source_prefix_length != 0
        || h.flags.intersects(RouteFlags::Dead | RouteFlags::Linkdown)
    {
        return Decision::AskKernel;
    }
    let (mut gateway, mut ifindex) = (None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::MultiPath(_)
            | RouteAttribute::NhId(_)
            | RouteAttribute::Via(_)
            | RouteAttribute::Encap(_)
            | RouteAttribute::EncapType(_) => {
                return Decision::AskKernel;
            }
            _ => {}
        }
    }
    match ifindex {
        Some(ifindex) if ifindex != 0 => Decision::Via { gateway, ifindex },
        _ => Decision::AskKernel,
    }
}

impl Fib {
    /// The decision of the node's routes for each family read (`Some` rules) whose rules are
    /// the defaults.
    pub(super) fn new(
        rules_v4: Option<&[RuleMessage]>,
        rules_v6: Option<&[RuleMessage]>,
        routes: &[RouteMessage],
    ) -> Fib {
        let family = |v4: bool| routes.iter().filter(move |r| (r.header.address_family == AddressFamily::Inet) == v4);
        Fib {
            v4: rules_v4.is_some_and(default_rules).then(|| Tables::from_routes(family(true), 32)),
            v6: rules_v6.is_some_and(default_rules).then(|| Tables::from_routes(family(false), 128)),
        }
    }

    /// The next hop and device of `dst` (the gateway, or `dst` itself on a link), if the copy
    /// decides as the kernel would; `None`: ask the kernel.
    pub fn lookup(&self, dst: IpAddr) -> Option<(IpAddr, u32)> {
        let (addr, width) = bits(dst);
        let tables = if dst.is_ipv4() { self.v4.as_ref()? } else { self.v6.as_ref()? };
        let (gateway, ifindex) = tables.lookup(addr, width)?;
        Some((gateway.unwrap_or(dst), ifindex))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_prefix_bits() {
        let v4 = |s: &str| bits(s.parse().unwrap()).0;
        assert_eq!(masked(v4("10.1.2.3"), 32, 16), v4("10.1.0.0"));
        assert_eq!(masked(v4("10.1.2.3"), 32, 32), v4("10.1.2.3"));
        assert_eq!(masked(v4("10.1.2.3"), 32, 0), 0);
        let v6 = |s: &str| bits(s.parse().unwrap()).0;
        assert_eq!(masked(v6("2001:db8:1:2::5"), 128, 48), v6("2001:db8:1::"));
        assert_eq!(masked(v6("2001:db8:1:2::5"), 128, 128), v6("2001:db8:1:2::5"));
    }
}
