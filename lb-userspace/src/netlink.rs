//! The node's routes, neighbours and links through rtnetlink, in process (no `ip`, no child
//! process): the route the kernel takes to an address, managed neighbour entries, the
//! local-table routes of L7 VIPs, the link list, and the events that change any of them.
use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType},
    },
    sys::{AsyncSocket, SocketAddr},
};

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
    pub dev: String,
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
    fn from_message(m: &LinkMessage) -> Link {
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

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn neigh_ip(a: &NeighbourAddress) -> Option<IpAddr> {
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

    /// The route the kernel takes to `dst` (RTM_GETROUTE for one address, as `ip route get`).
    pub async fn route_get(&self, dst: IpAddr) -> Result<Route> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(dst.into()));
        let what = || format!("no route to {dst}");
        let routes: Vec<RouteMessage> =
            self.handle.route().get(msg).execute().try_collect().await.map_err(request(what()))?;
        let r = routes.first().ok_or_else(|| NetlinkError::Answer(what()))?;
        let mut route = Route { next_hop: dst, ifindex: 0, dev: String::new() };
        for a in &r.attributes {
            match a {
                RouteAttribute::Oif(i) => route.ifindex = *i,
                RouteAttribute::Gateway(gw) => route.next_hop = route_ip(gw).unwrap_or(dst),
                _ => {}
            }
        }
        if route.ifindex == 0 {
            return Err(NetlinkError::Answer(format!("the route to {dst} has no device")));
        }
        route.dev = ifname(route.ifindex)?;
        Ok(route)
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

/// A change of the node's network that may change how backends are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A route to `dst/len` was added or deleted (a lookup of an address inside it may answer
    /// otherwise now).
    Route { dst: IpAddr, len: u8 },
    /// A link was added, changed or deleted.
    Link { link: Link, deleted: bool },
    /// An address was added to or deleted from a link.
    Address,
    /// A neighbour entry was deleted.
    NeighbourGone { addr: IpAddr, ifindex: u32 },
    /// Events were lost (the socket's buffer overflowed): everything may have changed.
    Lost,
}

/// The route, link, address and neighbour events of the node (IPv4 and IPv6).
pub struct Events {
    rx: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
}

impl Events {
    pub fn subscribe() -> Result<Events> {
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ];
        let (mut conn, _handle, rx) = rtnetlink::new_multicast_connection(&groups)?;
        // Room for bursts (pods created by the hundred): past net.core.rmem_max where
        // CAP_NET_ADMIN allows (SO_RCVBUFFORCE). An overflow still ends in `Lost`.
        let socket = conn.socket_mut().socket_mut();
        let size: libc::c_int = 4 << 20;
        // SAFETY: a valid socket and an int option of the right size.
        let forced = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(socket),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if forced != 0 {
            let _ = socket.set_rx_buf_sz(size as usize);
        }
        tokio::spawn(conn);
        Ok(Events { rx })
    }

    /// The next event that matters; `None` when the socket is gone.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            let (msg, _) = self.rx.next().await?;
            if let Some(e) = Event::from_message(msg) {
                return Some(e);
            }
        }
    }

    /// The next event if one is waiting (a closed socket shows at the next [`Events::next`]).
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            let (msg, _) = self.rx.try_recv().ok()?;
            if let Some(e) = Event::from_message(msg) {
                return Some(e);
            }
        }
    }
}

impl Event {
    fn from_message(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<Event> {
        use RouteNetlinkMessage as M;
        match msg.payload {
            NetlinkPayload::Overrun(_) => Some(Event::Lost),
            NetlinkPayload::InnerMessage(M::NewRoute(r) | M::DelRoute(r)) => {
                let len = r.header.destination_prefix_length;
                let dst = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(d) => route_ip(d),
                    _ => None,
                });
                let dst = match (dst, r.header.address_family) {
                    (Some(d), _) => d,
                    (None, AddressFamily::Inet) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    (None, AddressFamily::Inet6) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                    _ => return None,
                };
                Some(Event::Route { dst, len })
            }
            NetlinkPayload::InnerMessage(M::NewLink(l)) => {
                Some(Event::Link { link: Link::from_message(&l), deleted: false })
            }
            NetlinkPayload::InnerMessage(M::DelLink(l)) => {
                Some(Event::Link { link: Link::from_message(&l), deleted: true })
            }
            NetlinkPayload::InnerMessage(M::NewAddress(_) | M::DelAddress(_)) => Some(Event::Address),
            NetlinkPayload::InnerMessage(M::DelNeighbour(n)) => {
                let addr = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(d) => neigh_ip(d),
                    _ => None,
                })?;
                Some(Event::NeighbourGone { addr, ifindex: n.header.ifindex })
            }
            _ => None,
        }
    }

    /// Whether a lookup of `addr` may answer otherwise after this event.
    pub fn concerns(&self, addr: IpAddr) -> bool {
        match self {
            Event::Route { dst, len } => prefix_contains(*dst, *len, addr),
            Event::Lost => true,
            // Routes through a link that goes down or away can go without an event (IPv4).
            Event::Link { .. } => true,
            // The routes an address brings or takes come as events of their own.
            Event::Address | Event::NeighbourGone { .. } => false,
        }
    }
}

/// Whether `dst/len` contains `addr` (of the same family).
fn prefix_contains(dst: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (dst, addr) {
        (IpAddr::V4(d), IpAddr::V4(a)) => ipnet::Ipv4Net::new(d, len.min(32)).is_ok_and(|n| n.contains(&a)),
        (IpAddr::V6(d), IpAddr::V6(a)) => ipnet::Ipv6Net::new(d, len.min(128)).is_ok_and(|n| n.contains(&a)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_event_concerns_the_addresses_inside_its_prefix_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let ev = Event::Route { dst: ip("10.1.0.0"), len: 16 };
        assert!(ev.concerns(ip("10.1.2.3")));
        assert!(!ev.concerns(ip("10.2.0.1")));
        assert!(!ev.concerns(ip("2001:db8::1")));
        let default = Event::Route { dst: ip("0.0.0.0"), len: 0 };
        assert!(default.concerns(ip("192.0.2.1")));
        assert!(!default.concerns(ip("2001:db8::1")));
        assert!(Event::Route { dst: ip("2001:db8::"), len: 32 }.concerns(ip("2001:db8:1::2")));
        assert!(!Event::NeighbourGone { addr: ip("10.1.2.3"), ifindex: 2 }.concerns(ip("10.1.2.3")));
    }
}
