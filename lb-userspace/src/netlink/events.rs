//! The node's route, link, address and neighbour events (rtnetlink multicast groups, IPv4
//! and IPv6), as the changes that may change how backends are reached.
use std::net::IpAddr;

use futures::{StreamExt, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    MulticastGroup,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{AddressFamily, RouteNetlinkMessage, neighbour::NeighbourAttribute, route::RouteAttribute},
    sys::{AsyncSocket, SocketAddr},
};

use super::{Link, NetlinkError, neigh_ip, route_ip};

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
    pub fn subscribe() -> Result<Events, NetlinkError> {
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
