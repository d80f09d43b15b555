//! The node's network interfaces as the datapath needs them: index, IPv4 address, the
//! forwarding switch `bpf_fib_lookup` requires, and managed neighbour entries for next hops.
//!
//! Everything this module changes on the node is remembered and undone by [`NodeChanges::restore`].
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result, bail};

use crate::netlink::{Route, Rtnl};

/// One interface the datapath is attached to.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub ipv4: Option<Ipv4Addr>,
    /// The first global (not link-local) IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
}

impl Iface {
    pub fn lookup(name: &str) -> Result<Iface> {
        let index =
            nix::net::if_::if_nametoindex(name).with_context(|| format!("interface {name:?} does not exist"))?;
        let addrs: Vec<_> =
            nix::ifaddrs::getifaddrs()?.filter(|a| a.interface_name == name).filter_map(|a| a.address).collect();
        let ipv4 = addrs.iter().find_map(|s| s.as_sockaddr_in().map(|s| s.ip()));
        let ipv6 = addrs
            .iter()
            .filter_map(|s| s.as_sockaddr_in6().map(|s| s.ip()))
            .find(|ip| (ip.segments()[0] & 0xffc0) != 0xfe80);
        Ok(Iface { name: name.to_string(), index, ipv4, ipv6 })
    }
}

/// Every address of every interface of the node (a Service may not take one as its VIP).
pub fn node_addresses() -> Result<std::collections::BTreeSet<IpAddr>> {
    Ok(nix::ifaddrs::getifaddrs()
        .context("listing the node's addresses")?
        .filter_map(|a| a.address)
        .filter_map(|s| {
            s.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())).or_else(|| s.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        })
        .collect())
}

/// Changes made to the node, to be undone on exit.
#[derive(Debug, Default)]
pub struct NodeChanges {
    /// (sysctl path, value before).
    sysctls: Vec<(String, String)>,
    /// (next hop, device index) of the managed neighbour entries we created.
    neighbours: Vec<(IpAddr, u32)>,
    /// VIPs of L7 listeners made local (`ip route add local VIP dev lo proto 252`).
    local_vips: std::collections::BTreeSet<IpAddr>,
    /// VIPs whose local-table route someone else made (left alone; warned once).
    foreign_vips: std::collections::BTreeSet<IpAddr>,
}

/// The routing protocol number `lb` marks the routes it makes with (`proto 252`, unassigned
/// in rtnetlink.h and /etc/iproute2/rt_protos). A route without it was made by someone else:
/// `lb` never replaces nor deletes it.
pub const ROUTE_PROTO: u8 = 252;

impl NodeChanges {
    /// `bpf_fib_lookup` answers "forwarding disabled" unless the ingress interface forwards
    /// (per family). IPv6 forwarding makes the kernel ignore router advertisements where
    /// `accept_ra` is 1, so that is raised to 2 (accept them anyway) for the time we run.
    /// Returns whether anything was changed.
    pub fn enable_forwarding(&mut self, iface: &str, ipv6: bool) -> Result<bool> {
        let mut changed = self.set_sysctl(&format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"), "1")?;
        if ipv6 {
            let ra = format!("/proc/sys/net/ipv6/conf/{iface}/accept_ra");
            if fs::read_to_string(&ra).map(|v| v.trim() == "1").unwrap_or(false) {
                changed |= self.set_sysctl(&ra, "2")?;
            }
            changed |= self.set_sysctl(&format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"), "1")?;
        }
        Ok(changed)
    }

    /// Keep the kernel from picking the full-NAT source ports for the node's own connections:
    /// the range is added to `net.ipv4.ip_local_reserved_ports` (which IPv6 follows too).
    /// Idempotent: a range already reserved (by an earlier `lb`, killed) is left as it is.
    /// Returns whether the list was changed.
    pub fn reserve_ports(&mut self, first: u16, last: u16) -> Result<bool> {
        let before = fs::read_to_string(RESERVED_PORTS).with_context(|| format!("reading {RESERVED_PORTS}"))?;
        let mut ports = parse_ports(&before);
        if (first..=last).all(|p| ports.contains(&p)) {
            return Ok(false);
        }
        ports.extend(first..=last);
        self.set_sysctl(RESERVED_PORTS, &format_ports(&ports))
    }

    /// Keep the settings the datapath needs while it runs without this process (pinned):
    /// forwarding, reserved ports, managed neighbours stay (`lb uninstall` releases the
    /// reserved ports), and the L7 VIP routes: an L7 proxy container outlives the agent, and
    /// the next `lb` adopts them ([`Self::adopt_local_vips`]).
    pub fn keep_datapath_settings(&mut self) {
        self.sysctls.clear();
        self.neighbours.clear();
        self.local_vips.clear();
    }

    /// Takes on the VIP routes a previous `lb` left (marked [`ROUTE_PROTO`]; after a crash,
    /// or kept with a pinned datapath): the first sync keeps those still served and removes
    /// the others.
    pub async fn adopt_local_vips(&mut self, rtnl: &Rtnl) {
        match rtnl.local_routes_of(ROUTE_PROTO).await {
            Ok(vips) => self.local_vips.extend(vips),
            Err(e) => tracing::warn!(error = %e, "cannot list the VIP routes a previous lb made"),
        }
    }

    /// Set a sysctl unless it has the value already; returns whether it was written. Where
    /// /proc/sys is read-only (an unprivileged container) the error says how to get it set.
    pub(crate) fn set_sysctl(&mut self, path: &str, value: &str) -> Result<bool> {
        let before = fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        if before.trim() == value {
            return Ok(false);
        }
        if let Err(e) = fs::write(path, value) {
            if matches!(e.raw_os_error(), Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)) {
                bail!(
                    "{path} must be {value} and cannot be written here ({e}): run `lb node-prep` with the same \
                     --iface and --snat-ports first, as the DaemonSet's init container does"
                );
            }
            return Err(e).with_context(|| format!("writing {path}"));
        }
        tracing::info!(path, value, "set (restored on exit)");
        self.sysctls.push((path.to_string(), before.trim().to_string()));
        Ok(true)
    }

    /// Keep the next hop of `route` (to a backend) resolved, so the datapath never meets an
    /// unresolved neighbour: a kernel-managed neighbour entry (NTF_EXT_MANAGED) is probed by
    /// the kernel itself. Made once per next hop and device (again after [`Self::neighbour_gone`]).
    pub async fn ensure_neighbour(&mut self, rtnl: &Rtnl, route: &Route) -> Result<()> {
        if self.neighbours.contains(&(route.next_hop, route.ifindex)) {
            return Ok(());
        }
        rtnl.managed_neighbour(route.next_hop, route.ifindex).await.with_context(|| format!("on {}", route.dev))?;
        self.neighbours.push((route.next_hop, route.ifindex));
        Ok(())
    }

    /// A neighbour entry was deleted (by someone, or with its link): whether it was one of
    /// ours, which the next [`Self::ensure_neighbour`] then makes again.
    pub fn neighbour_gone(&mut self, next_hop: IpAddr, ifindex: u32) -> bool {
        let before = self.neighbours.len();
        self.neighbours.retain(|n| *n != (next_hop, ifindex));
        self.neighbours.len() != before
    }

    /// After events were lost: forget those of our neighbour entries that are gone (the next
    /// [`Self::ensure_neighbour`] makes them again).
    pub async fn recheck_neighbours(&mut self, rtnl: &Rtnl) -> Result<()> {
        let present = rtnl.neighbours().await?;
        self.neighbours.retain(|n| present.contains(n));
        Ok(())
    }

    /// Makes exactly `vips` local to the node (a route of type local in the local table,
    /// marked [`ROUTE_PROTO`]), so that the kernel hands their traffic, which XDP passes up,
    /// to the L7 listeners bound on them. VIPs are not put on an interface: the node does not
    /// announce them. A route to a VIP in the local table that `lb` did not make (an address
    /// of the node, an announcer's route) is left as it is, with a warning.
    pub async fn sync_local_vips(&mut self, rtnl: &Rtnl, vips: &std::collections::BTreeSet<IpAddr>) {
        let gone: Vec<IpAddr> = self.local_vips.difference(vips).copied().collect();
        for vip in gone {
            let _ = rtnl.del_local_route(vip, ROUTE_PROTO).await;
            self.local_vips.remove(&vip);
        }
        self.foreign_vips.retain(|v| vips.contains(v));
        for vip in vips {
            if self.local_vips.contains(vip) {
                continue;
            }
            let made = match rtnl.local_route_protocols(*vip).await {
                Ok(protos) if protos.iter().any(|p| *p != ROUTE_PROTO) => {
                    if self.foreign_vips.insert(*vip) {
                        let protos: Vec<String> = protos.iter().map(|p| proto_name(*p)).collect();
                        tracing::warn!(%vip, proto = %protos.join(","), "the VIP has a route in the local table that lb did not make: left as it is (its L7 listeners get traffic only if that route delivers it here)");
                    }
                    continue;
                }
                Ok(_) => rtnl.replace_local_route(*vip, ROUTE_PROTO).await.map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            };
            match made {
                Ok(()) => {
                    self.foreign_vips.remove(vip);
                    self.local_vips.insert(*vip);
                    tracing::info!(%vip, proto = ROUTE_PROTO, "VIP made local (a route lb removes when it no longer serves it)");
                }
                Err(e) => {
                    tracing::warn!(%vip, error = %format!("{e:#}"), "cannot make the VIP local: its L7 listeners get no traffic")
                }
            }
        }
    }

    /// Undo every change, in reverse order. Errors are logged, not fatal.
    pub async fn restore(&mut self, rtnl: &Rtnl) {
        for vip in std::mem::take(&mut self.local_vips) {
            let _ = rtnl.del_local_route(vip, ROUTE_PROTO).await;
        }
        for (next_hop, ifindex) in self.neighbours.drain(..).rev() {
            let _ = rtnl.del_neighbour(next_hop, ifindex).await;
        }
        for (path, before) in self.sysctls.drain(..).rev() {
            // With a newline: an empty write would not reach the kernel (and an empty list is
            // a value to restore, e.g. no reserved ports).
            if let Err(e) = fs::write(&path, format!("{before}\n")) {
                tracing::warn!(path, error = %e, "could not restore sysctl");
            }
        }
    }
}

const RESERVED_PORTS: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";

/// Take the full-NAT range out of `net.ipv4.ip_local_reserved_ports` (`lb uninstall`).
/// Removes the VIP routes `lb` made (`lb uninstall`: kept with a pinned datapath); returns
/// how many.
pub async fn remove_vip_routes() -> Result<usize> {
    let rtnl = Rtnl::connect().context("opening a route-netlink socket")?;
    let vips = rtnl.local_routes_of(ROUTE_PROTO).await?;
    for vip in &vips {
        rtnl.del_local_route(*vip, ROUTE_PROTO).await?;
    }
    Ok(vips.len())
}

pub fn unreserve_ports(first: u16, last: u16) -> Result<()> {
    let before = fs::read_to_string(RESERVED_PORTS).with_context(|| format!("reading {RESERVED_PORTS}"))?;
    let mut ports = parse_ports(&before);
    if !(first..=last).any(|p| ports.contains(&p)) {
        return Ok(());
    }
    ports.retain(|p| !(first..=last).contains(p));
    fs::write(RESERVED_PORTS, format!("{}\n", format_ports(&ports)))
        .with_context(|| format!("writing {RESERVED_PORTS}"))
}

/// The ports of a port list as the kernel prints it (`1000,61000-65535`).
fn parse_ports(list: &str) -> std::collections::BTreeSet<u16> {
    let mut ports = std::collections::BTreeSet::new();
    for item in list.trim().split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (a, b) = item.split_once('-').unwrap_or((item, item));
        if let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) {
            ports.extend(a..=b);
        }
    }
    ports
}

/// A port set as a list of ranges.
fn format_ports(ports: &std::collections::BTreeSet<u16>) -> String {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match ranges.last_mut() {
            Some((_, last)) if *last as u32 + 1 == p as u32 => *last = p,
            _ => ranges.push((p, p)),
        }
    }
    let item = |(a, b): &(u16, u16)| if a == b { a.to_string() } else { format!("{a}-{b}") };
    ranges.iter().map(item).collect::<Vec<_>>().join(",")
}

/// A routing protocol as `ip` names it (rt_protos), else its number.
fn proto_name(p: u8) -> String {
    match p {
        0 => "unspec",
        1 => "redirect",
        2 => "kernel",
        3 => "boot",
        4 => "static",
        _ => return p.to_string(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::{format_ports, parse_ports};

    #[test]
    fn port_lists_round_trip_and_merge() {
        let ports = parse_ports("1000, 61000-65535,61000-65535\n");
        assert_eq!(format_ports(&ports), "1000,61000-65535");
        let mut ports = parse_ports("1000,2000-2002");
        ports.extend(2003..=2005);
        assert_eq!(format_ports(&ports), "1000,2000-2005");
        assert_eq!(format_ports(&parse_ports("")), "");
    }
}
