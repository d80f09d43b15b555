//! The node's routes, neighbours and links through rtnetlink, in process (no `ip`, no child
//! process): the route the kernel takes to an address, managed neighbour entries, the
//! local-table routes of L7 VIPs, the link list, and the events that change any of them.
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::{
    Handle, IpVersion,
    packet_route::{
        AddressFamily,
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType},
        rule::RuleMessage,
    },
};

mod events;
mod fib;
pub use events::{Event, Events};
pub use fib::Fib;

/// A netlink request the kernel refused, or a socket that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("{what}: {source}")]
    Request { what: String, source: rtnetlink::Error },
    #[error("{0}")]
    Answer(String),
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// The local routing table (`table local`).
const RT_TABLE_LOCAL: u8 = 255;

/// A route-netlink socket for requests (its connection runs as a tokio task).
#[derive(Clone)]
pub struct Rtnl {
    handle: Handle,
}

/// The route the kernel takes to an address (`ip route get`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The gateway, or the address itself when it is on a link of the node.
    pub next_hop: IpAddr,
    pub ifindex: u32,
    /// The device's name, shared by every route through it (a node's 100,000 backends go
    /// through a handful of devices).
    pub dev: std::sync::Arc<str>,
}

/// A link as the tc datapath's device choice needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    /// `IFLA_INFO_KIND`: bridge, veth, vxlan, ...
    pub kind: Option<InfoKind>,
    /// The bridge (or bond) it is a port of.
    pub master: Option<u32>,
}

impl Link {
    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
            master: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Controller(i) => link.master = Some(*i),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind =
                        infos.iter().find_map(|i| if let LinkInfo::Kind(k) = i { Some(k.clone()) } else { None })
                }
                _ => {}
            }
        }
        link
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

pub(crate) fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

pub(crate) fn neigh_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The name of interface `index`.
pub fn ifname(index: u32) -> Result<String> {
    nix::net::if_::if_indextoname(index)
        .map(|n| n.to_string_lossy().into_owned())
        .map_err(|e| NetlinkError::Answer(format!("interface {index}: {e}")))
}

fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

impl Rtnl {
    /// A socket for requests; its connection is a task of the current tokio runtime.
    pub fn connect() -> Result<Rtnl> {
        let (conn, handle, _unsolicited) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Rtnl { handle })
    }

    /// The next hop and the interface index of the route the kernel takes to `dst`
    /// (RTM_GETROUTE for one address, as `ip route get`; no interface name: a caller that
    /// looks up thousands of routes names the interfaces from one link listing).
    pub async fn route_via(&self, dst: IpAddr) -> Result<(IpAddr, u32)> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(dst.into()));
        let what = || format!("no route to {dst}");
        let routes: Vec<RouteMessage> =
            self.handle.route().get(msg).execute().try_collect().await.map_err(request(what()))?;
        let r = routes.first().ok_or_else(|| NetlinkError::Answer(what()))?;
        let (mut next_hop, mut ifindex) = (dst, 0);
        for a in &r.attributes {
            match a {
                RouteAttribute::Oif(i) => ifindex = *i,
                RouteAttribute::Gateway(gw) => next_hop = route_ip(gw).unwrap_or(dst),
                _ => {}
            }
        }
        if ifindex == 0 {
            return Err(NetlinkError::Answer(format!("the route to {dst} has no device")));
        }
        Ok((next_hop, ifindex))
    }

    /// The node's rules and routes of the families among `addrs`, as a [`Fib`] that resolves
    /// most of them without a request each (a family none of them has is not read).
    pub async fn fib(&self, addrs: &[IpAddr]) -> Result<Fib> {
        let rules = |v| async move {
            let rules: Vec<RuleMessage> = self
                .handle
                .rule()
                .get(v)
                .execute()
                .try_collect()
                .await
                .map_err(request("listing the routing rules"))?;
            Ok::<_, NetlinkError>(rules)
        };
        let (v4, v6) = (addrs.iter().any(IpAddr::is_ipv4), addrs.iter().any(IpAddr::is_ipv6));
        let rules_v4 = if v4 { Some(rules(IpVersion::V4).await?) } else { None };
        let rules_v6 = if v6 { Some(rules(IpVersion::V6).await?) } else { None };
        let mut routes = Vec::new();
        for (family, wanted) in [(AddressFamily::Inet, v4), (AddressFamily::Inet6, v6)] {
            if !wanted {
                continue;
            }
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            let mut dump = self.handle.route().get(msg).execute();
            while let Some(r) = dump.try_next().await.map_err(request("listing routes"))? {
                routes.push(r);
            }
        }
        Ok(Fib::new(rules_v4.as_deref(), rules_v6.as_deref(), &routes))
    }

    /// A kernel-managed neighbour entry (NTF_EXT_MANAGED) for `next_hop` on `ifindex`,
    /// created or replaced (`ip neigh replace NEXT_HOP dev DEV managed`): the kernel resolves
    /// it at once and keeps it resolved.
    pub async fn managed_neighbour(&self, next_hop: IpAddr, ifindex: u32) -> Result<()> {
        let mut req = self.handle.neighbours().add(ifindex, next_hop).state(NeighbourState::None).replace();
        req.message_mut().attributes.push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        req.execute().await.map_err(request(format!("managed neighbour {next_hop} on interface {ifindex}")))
    }

    /// Delete the neighbour entry of `next_hop` on `ifindex`.
    pub async fn del_neighbour(&self, next_hop: IpAddr, ifindex: u32) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(next_hop);
        msg.header.ifindex = ifindex;
        msg.attributes.push(NeighbourAttribute::Destination(match next_hop {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
        self.handle
            .neighbours()
            .del(msg)
            .execute()
            .await
            .map_err(request(format!("deleting neighbour {next_hop} on interface {ifindex}")))
    }

    /// Every neighbour entry of the node (IPv4 and IPv6), as (address, device index).
    pub async fn neighbours(&self) -> Result<std::collections::BTreeSet<(IpAddr, u32)>> {
        let all: Vec<NeighbourMessage> =
            self.handle.neighbours().get().execute().try_collect().await.map_err(request("listing neighbours"))?;
        Ok(all
            .iter()
            .filter_map(|n| {
                n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(d) => neigh_ip(d).map(|ip| (ip, n.header.ifindex)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Every link of the node.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let links: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(request("listing links"))?;
        Ok(links.iter().map(Link::from_message).collect())
    }

    /// `local VIP/32 (/128) dev lo table local proto PROTO` (scope host), as `ip route`
    /// makes it.
    fn local_route_message(vip: IpAddr, lo: u32, proto: u8) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header = RouteHeader {
            address_family: family(vip),
            destination_prefix_length: if vip.is_ipv4() { 32 } else { 128 },
            table: RT_TABLE_LOCAL,
            protocol: RouteProtocol::from(proto),
            scope: RouteScope::Host,
            kind: RouteType::Local,
            ..msg.header
        };
        msg.attributes.push(RouteAttribute::Destination(vip.into()));
        msg.attributes.push(RouteAttribute::Oif(lo));
        msg
    }

    /// Add or replace the local route to `vip` marked `proto`.
    pub async fn replace_local_route(&self, vip: IpAddr, proto: u8) -> Result<()> {
        let lo = nix::net::if_::if_nametoindex("lo").map_err(|e| NetlinkError::Answer(format!("lo: {e}")))?;
        let what = format!("route local {vip} dev lo table local proto {proto}");
        self.handle
            .route()
            .add(Self::local_route_message(vip, lo, proto))
            .replace()
            .execute()
            .await
            .map_err(request(what))
    }

    /// Delete the local route to `vip` marked `proto` (the kernel deletes only a route with
    /// that protocol).
    pub async fn del_local_route(&self, vip: IpAddr, proto: u8) -> Result<()> {
        let lo = nix::net::if_::if_nametoindex("lo").map_err(|e| NetlinkError::Answer(format!("lo: {e}")))?;
        let what = format!("deleting route local {vip} table local proto {proto}");
        self.handle.route().del(Self::local_route_message(vip, lo, proto)).execute().await.map_err(request(what))
    }

    /// The addresses with a host route in the local table marked `proto` (both families).
    pub async fn local_routes_of(&self, proto: u8) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for (family, host) in [(AddressFamily::Inet, 32), (AddressFamily::Inet6, 128)] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            msg.header.table = RT_TABLE_LOCAL;
            let routes: Vec<RouteMessage> =
                self.handle.route().get(msg).execute().try_collect().await.map_err(request("listing routes"))?;
            out.extend(
                routes
                    .iter()
                    .filter(|r| u8::from(r.header.protocol) == proto && r.header.destination_prefix_length == host)
                    .filter(|r| route_table(r) == u32::from(RT_TABLE_LOCAL))
                    .filter_map(|r| {
                        r.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Destination(d) => route_ip(d),
                            _ => None,
                        })
                    }),
            );
        }
        Ok(out)
    }

    /// The protocols of the routes to exactly `VIP/32` (`/128`) in the local table.
    pub async fn local_route_protocols(&self, vip: IpAddr) -> Result<Vec<u8>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(vip);
        msg.header.table = RT_TABLE_LOCAL;
        let routes: Vec<RouteMessage> =
            self.handle.route().get(msg).execute().try_collect().await.map_err(request("listing routes"))?;
        let len = if vip.is_ipv4() { 32 } else { 128 };
        Ok(routes
            .iter()
            .filter(|r| r.header.destination_prefix_length == len)
            .filter(|r| route_table(r) == u32::from(RT_TABLE_LOCAL))
            .filter(|r| {
                r.attributes.iter().any(|a| matches!(a, RouteAttribute::Destination(d) if route_ip(d) == Some(vip)))
            })
            .map(|r| u8::from(r.header.protocol))
            .collect())
    }
}

fn route_table(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
        .unwrap_or(u32::from(r.header.table))
}
