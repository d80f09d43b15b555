//! How backends are reached, kept current from netlink events: the route to each distinct
//! backend is looked up once (in process, through rtnetlink) and again only when a route,
//! link or address event may have changed it; backends behind the XDP NICs get a managed
//! neighbour entry for their next hop; the devices other backends (a bridge, an overlay
//! device, a pod veth) and local clients are reached through get the tc datapath.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use anyhow::Result;
use futures::StreamExt;

use crate::{
    dataplane::Dataplane,
    model::Model,
    netif::{Iface, NodeChanges},
    netlink::{Event, Link, NetlinkError, Route, Rtnl},
};

/// Route lookups outstanding at once on the netlink socket (the kernel answers each at
/// once; this only keeps the socket's buffers small).
const ROUTE_LOOKUPS_IN_FLIGHT: usize = 64;

/// From this many backends to resolve at once, the node's routes are read (two dumps) and
/// resolve what they decide alone (see [`crate::netlink::Fib`]); fewer are looked up one by
/// one (a dump of a large table costs more than a few lookups).
const FIB_FROM: usize = 1024;

/// A route lookup's answer: the next hop and the interface index.
type NextHop = Result<(IpAddr, u32), NetlinkError>;

/// `/sys/class/net/DEV/type` of an Ethernet device.
const ARPHRD_ETHER: &str = "1";

/// One backend address: how many backends of the model have it, and its route.
#[derive(Debug, Clone, Copy)]
struct Known {
    refs: u32,
    route: Lookup,
}

/// Where a route lookup stands. The device's name is kept once per device (`names`), not
/// per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Not looked up yet (it is in `missing`).
    Pending,
    /// The lookup failed (warned once); tried again after an event concerning it.
    Failed,
    Hop {
        next_hop: IpAddr,
        ifindex: u32,
    },
}

pub struct BackendPaths {
    rtnl: Rtnl,
    /// The NICs XDP is attached to.
    nics: BTreeSet<String>,
    /// The first NIC's addresses: the SNAT source behind a device without an address.
    fallback: (Option<Ipv4Addr>, Option<Ipv6Addr>),
    /// Each backend address of the model: how many backends have it and its route, looked up
    /// once, and again when an event concerns it (one table: at 100,000 backends it is the
    /// agent's largest).
    backends: HashMap<IpAddr, Known>,
    /// The model's listeners at the last sync (shared with it): the next sync goes through the
    /// ones that differ from them.
    seen: crate::model::Listeners,
    /// Backend addresses without a route: new, or whose route an event made stale.
    missing: HashSet<IpAddr>,
    /// The names of the devices routes go through (a handful, shared by every route).
    names: HashMap<u32, Arc<str>>,
    /// The node's links at the last listing (`None`: to be listed again).
    links: Option<BTreeMap<u32, Link>>,
    /// Something changed since the last [`BackendPaths::sync`].
    dirty: bool,
    /// Events were lost: our neighbour entries are checked at the next sync.
    recheck_neighbours: bool,
    /// Every route is gone through at the next sync, not only new ones: an address changed
    /// (a device's SNAT source), or a neighbour entry or a device's tc datapath failed.
    full_pass: bool,
    /// Route lookups made (each distinct backend once, then once per event concerning it).
    pub lookups: u64,
    /// Backends whose route lookup failed or leads nowhere we serve, and devices the tc
    /// datapath could not be put on (each warned once).
    warned: BTreeSet<IpAddr>,
    warned_devs: BTreeSet<String>,
    /// Devices with the tc datapath, forwarding and their SNAT source set since the last full
    /// pass.
    ready_devs: BTreeSet<String>,
}

impl BackendPaths {
    pub fn new(rtnl: Rtnl, nics: BTreeSet<String>, fallback: (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> BackendPaths {
        BackendPaths {
            rtnl,
            nics,
            fallback,
            backends: HashMap::new(),
            seen: Default::default(),
            missing: HashSet::new(),
            names: HashMap::new(),
            links: None,
            dirty: false,
            recheck_neighbours: false,
            full_pass: false,
            lookups: 0,
            warned: BTreeSet::new(),
            warned_devs: BTreeSet::new(),
            ready_devs: BTreeSet::new(),
        }
    }

    /// Whether an event changed something since the last sync.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Forget what `event` may have changed: the routes of the backends it concerns, the
    /// link list when a link changed, our neighbour entry when it was deleted.
    pub fn on_event(&mut self, event: &Event, node: &mut NodeChanges) {
        match event {
            Event::NeighbourGone { addr, ifindex } => {
                if node.neighbour_gone(*addr, *ifindex) {
                    tracing::info!(next_hop = %addr, ifindex, "a managed neighbour entry of lb was deleted: made again");
                    self.dirty = true;
                }
            }
            Event::Link { link, deleted } => {
                let known = self.links.as_ref().and_then(|l| l.get(&link.index));
                if *deleted || known != Some(link) {
                    // The list of local client devices changes; routes through a link that went
                    // down or away go without an event of their own (IPv4), and a lookup that
                    // failed may succeed now.
                    self.links = None;
                    self.names.clear();
                    self.forget_routes(|_, route| match route {
                        Lookup::Hop { ifindex, .. } => ifindex == link.index,
                        Lookup::Failed | Lookup::Pending => true,
                    });
                    self.dirty = true;
                }
            }
            Event::Route { .. } => {
                self.dirty |= self.forget_routes(|addr, _| event.concerns(*addr)) > 0;
            }
            // The routes an address brings or takes come as events of their own; the address
            // itself may be the SNAT source of a tc device.
            Event::Address => {
                self.dirty = true;
                self.full_pass = true;
            }
            Event::Lost => {
                tracing::warn!("netlink events were lost: every route to a backend is looked up again");
                self.forget_routes(|_, _| true);
                self.links = None;
                self.names.clear();
                self.recheck_neighbours = true;
                self.dirty = true;
            }
        }
    }

    /// For every backend: a managed neighbour entry for its next hop when it is reached by a
    /// NIC; else the tc datapath on the device it is reached through, that device's address
    /// as the SNAT source (replies then come back the same way) and forwarding on it.
    ///
    /// Only new backends are looked up (many at once on the one netlink socket), and only
    /// their routes are gone through, unless a link changed, events were lost or something
    /// failed last time.
    pub async fn sync(&mut self, model: &Model, node: &mut NodeChanges, dp: &mut Dataplane) {
        self.dirty = false;
        self.follow(model);
        // Every route is gone through again after a link change, lost events or a failure;
        // else only the new backends' routes are.
        let mut full = std::mem::take(&mut self.full_pass) || self.links.is_none();
        if self.links.is_none() {
            match self.rtnl.links().await {
                Ok(links) => self.links = Some(links.into_iter().map(|l| (l.index, l)).collect()),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot list the node's bridges and veths (local clients)")
                }
            }
        }
        // Taken whole: a first apply's 100,000 would otherwise keep their room.
        let mut missing: Vec<IpAddr> = std::mem::take(&mut self.missing).into_iter().collect();
        let rtnl = &self.rtnl;
        // Many at once (a first apply): the node's routes are read once, and each address the
        // copy decides as the kernel does is resolved from it; the rest is asked one by one.
        let mut found: Vec<(IpAddr, NextHop)> = Vec::with_capacity(missing.len());
        if missing.len() >= FIB_FROM {
            match rtnl.fib(&missing).await {
                Ok(fib) => missing.retain(|addr| match fib.lookup(*addr) {
                    Some(hop) => {
                        found.push((*addr, Ok(hop)));
                        false
                    }
                    None => true,
                }),
                Err(e) => tracing::warn!(error = %e, "cannot read the node's routes: each backend is looked up"),
            }
        }
        let asked: Vec<(IpAddr, NextHop)> = futures::stream::iter(missing)
            .map(|addr| async move { (addr, rtnl.route_via(addr).await) })
            .buffer_unordered(ROUTE_LOOKUPS_IN_FLIGHT)
            .collect()
            .await;
        found.extend(asked);
        let mut new_routes = Vec::with_capacity(found.len());
        for (addr, found) in found {
            self.lookups += 1;
            // A lookup answered for an address the model no longer has is dropped.
            let Some(known) = self.backends.get_mut(&addr) else { continue };
            let named = found.and_then(|(next_hop, ifindex)| {
                device_name(&mut self.names, self.links.as_ref(), ifindex).map(|_| (next_hop, ifindex))
            });
            known.route = match named {
                Ok((next_hop, ifindex)) => {
                    tracing::debug!(backend = %addr, %next_hop, ifindex, "route to backend");
                    Lookup::Hop { next_hop, ifindex }
                }
                Err(e) => {
                    if self.warned.insert(addr) {
                        tracing::warn!(backend = %addr, error = %e, "cannot route to backend");
                    }
                    Lookup::Failed
                }
            };
            new_routes.push(addr);
        }
        if std::mem::take(&mut self.recheck_neighbours) {
            full = true;
            if let Err(e) = node.recheck_neighbours(&self.rtnl).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot list the neighbour entries");
            }
        }
        let mut devices = BTreeSet::new();
        let backends = &self.backends;
        let routes: Box<dyn Iterator<Item = (&IpAddr, &Known)>> = if full {
            Box::new(backends.iter())
        } else {
            Box::new(new_routes.iter().filter_map(|a| backends.get_key_value(a)))
        };
        for (addr, known) in routes {
            let Lookup::Hop { next_hop, ifindex } = known.route else { continue };
            let dev = match device_name(&mut self.names, self.links.as_ref(), ifindex) {
                Ok(dev) => dev,
                Err(e) => {
                    // Gone since the lookup: its events bring the route again.
                    tracing::debug!(backend = %addr, error = %e, "device of a route gone");
                    continue;
                }
            };
            let route = Route { next_hop, ifindex, dev };
            if self.nics.contains(&*route.dev) {
                if let Err(e) = node.ensure_neighbour(&self.rtnl, &route).await {
                    self.full_pass = true;
                    tracing::warn!(backend = %addr, error = %format!("{e:#}"), "cannot resolve next hop");
                }
            } else if &*route.dev == "lo" {
                if self.warned.insert(*addr) {
                    tracing::warn!(backend = %addr, "backend is an address of this node (host network): not served by the L4 datapath");
                }
            } else if !devices.contains(&*route.dev) {
                // Copied once per device, not once per backend behind it.
                devices.insert(route.dev.to_string());
            }
        }
        if full {
            dp.forget_gone_tc();
            if let Some(links) = &self.links {
                devices.extend(local_client_devices(links.values(), &self.nics));
            }
        }
        if full {
            self.ready_devs.clear();
        }
        for dev in devices {
            // A device made ready since the last full pass stays so until a link or address
            // changes (which brings a full pass).
            if self.ready_devs.contains(&dev) {
                continue;
            }
            match self.attach(&dev, node, dp) {
                Ok(()) => {
                    self.ready_devs.insert(dev);
                }
                Err(e) => {
                    self.full_pass = true;
                    if self.warned_devs.insert(dev.clone()) {
                        tracing::warn!(dev, error = %format!("{e:#}"), "cannot put the tc datapath on the device backends are reached through");
                    }
                }
            }
        }
    }

    /// Count the backends of the listeners that changed since the last sync: an address
    /// seen for the first time needs a route, one no longer used loses it.
    fn follow(&mut self, model: &Model) {
        for crate::model::ListenerChange { before, after, .. } in
            crate::model::changed_listeners(&self.seen, &model.listeners)
        {
            for b in after.iter().flat_map(|l| &l.backends) {
                let known = self.backends.entry(b.addr).or_insert(Known { refs: 0, route: Lookup::Pending });
                known.refs += 1;
                if known.refs == 1 {
                    self.missing.insert(b.addr);
                }
            }
            for b in before.iter().flat_map(|l| &l.backends) {
                if let Some(known) = self.backends.get_mut(&b.addr) {
                    known.refs -= 1;
                    if known.refs == 0 {
                        self.backends.remove(&b.addr);
                        self.missing.remove(&b.addr);
                    }
                }
            }
        }
        self.seen = model.listeners.clone();
    }

    /// Drop the routes `stale` picks (of those looked up); their backends are looked up
    /// again at the next sync. How many were dropped.
    fn forget_routes(&mut self, stale: impl Fn(&IpAddr, Lookup) -> bool) -> usize {
        let mut dropped = 0;
        for (addr, known) in &mut self.backends {
            if known.route != Lookup::Pending && stale(addr, known.route) {
                known.route = Lookup::Pending;
                self.missing.insert(*addr);
                dropped += 1;
            }
        }
        dropped
    }

    /// The tc datapath on `dev`, forwarding on, and the SNAT source for backends behind it:
    /// its own address, or (a per-pod veth has none) the first NIC's, which the pod's
    /// default route sends back through the same veth.
    fn attach(&mut self, dev: &str, node: &mut NodeChanges, dp: &mut Dataplane) -> Result<()> {
        // The datapath parses Ethernet frames: an L3 device (IPIP, WireGuard) has none.
        let link_type = std::fs::read_to_string(format!("/sys/class/net/{dev}/type")).unwrap_or_default();
        if link_type.trim() != ARPHRD_ETHER {
            anyhow::bail!("not an Ethernet device (link type {}): backends behind it are not served", link_type.trim());
        }
        let iface = Iface::lookup(dev)?;
        let (v4, v6) = match (iface.ipv4, iface.ipv6) {
            (None, None) => self.fallback,
            own => own,
        };
        node.enable_forwarding(dev, v6.is_some())?;
        dp.set_snat(iface.index, v4, v6)?;
        if dp.attach_tc(dev)? {
            tracing::info!(dev, index = iface.index, snat4 = ?v4, snat6 = ?v6, "tc datapath attached (backends or local clients behind it)");
        }
        Ok(())
    }
}

/// The name of device `ifindex`: from the names known, the node's links, else the kernel.
fn device_name(
    names: &mut HashMap<u32, Arc<str>>,
    links: Option<&BTreeMap<u32, Link>>,
    ifindex: u32,
) -> Result<Arc<str>, NetlinkError> {
    if let Some(name) = names.get(&ifindex) {
        return Ok(name.clone());
    }
    let name: Arc<str> = match links.and_then(|l| l.get(&ifindex)) {
        Some(link) => link.name.as_str().into(),
        None => crate::netlink::ifname(ifindex)?.into(),
    };
    names.insert(ifindex, name.clone());
    Ok(name)
}

/// Devices local clients (pods on this node) reach the node through: bridges (a bridge
/// CNI's cni0, docker0) and veths that are no bridge's port (per-pod veths with /32 routes,
/// Calico-style), up and not in `except` (the XDP NICs).
fn local_client_devices<'a>(
    links: impl Iterator<Item = &'a Link>,
    except: &BTreeSet<String>,
) -> impl Iterator<Item = String> {
    use rtnetlink::packet_route::link::InfoKind;
    links
        .filter(|l| l.up)
        .filter(|l| match &l.kind {
            Some(InfoKind::Bridge) => true,
            Some(InfoKind::Veth) => l.master.is_none(),
            _ => false,
        })
        .filter(|l| !except.contains(&l.name))
        .map(|l| l.name.clone())
        .collect::<Vec<_>>()
        .into_iter()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::L4Listener;

    fn route(next_hop: &str, ifindex: u32) -> Known {
        Known { refs: 1, route: Lookup::Hop { next_hop: next_hop.parse().unwrap(), ifindex } }
    }

    /// The addresses with a route (or a failed lookup), in order.
    fn routed(paths: &BackendPaths) -> Vec<String> {
        let mut left: Vec<IpAddr> =
            paths.backends.iter().filter(|(_, k)| k.route != Lookup::Pending).map(|(a, _)| *a).collect();
        left.sort();
        left.iter().map(ToString::to_string).collect()
    }

    /// Which cached routes each event drops (to be looked up again), and which leave all.
    #[tokio::test]
    async fn events_drop_only_the_routes_they_concern() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut paths = BackendPaths::new(Rtnl::connect().unwrap(), BTreeSet::new(), (None, None));
        let mut node = NodeChanges::default();
        let fill = |paths: &mut BackendPaths| {
            paths.backends = HashMap::from([
                (ip("10.1.0.2"), route("10.1.0.2", 2)),
                (ip("10.2.0.2"), route("10.2.0.1", 3)),
                (ip("10.3.0.2"), Known { refs: 1, route: Lookup::Failed }),
                (ip("2001:db8::2"), route("2001:db8::2", 2)),
            ]);
            paths.missing.clear();
            paths.dirty = false;
        };
        let left = routed;
        let all = ["10.1.0.2", "10.2.0.2", "10.3.0.2", "2001:db8::2"];

        fill(&mut paths);
        paths.on_event(&Event::Route { dst: ip("10.1.0.0"), len: 16 }, &mut node);
        assert_eq!(left(&paths), ["10.2.0.2", "10.3.0.2", "2001:db8::2"]);
        assert!(paths.dirty());

        fill(&mut paths);
        paths.on_event(&Event::Route { dst: ip("192.0.2.0"), len: 24 }, &mut node);
        assert_eq!(left(&paths), all);
        assert!(!paths.dirty(), "a route elsewhere changes nothing");

        fill(&mut paths);
        paths.on_event(&Event::Route { dst: ip("0.0.0.0"), len: 0 }, &mut node);
        assert_eq!(left(&paths), ["2001:db8::2"], "the IPv4 default route concerns every IPv4 backend");

        // A link that changed: the routes through it, and the lookups that had failed.
        fill(&mut paths);
        let link = Link { index: 3, name: "if3".into(), up: false, kind: None, master: None };
        paths.on_event(&Event::Link { link: link.clone(), deleted: false }, &mut node);
        assert_eq!(left(&paths), ["10.1.0.2", "2001:db8::2"]);
        assert!(paths.dirty() && paths.links.is_none());
        // The same link as listed: nothing changed.
        fill(&mut paths);
        paths.links = Some(BTreeMap::from([(3, link.clone())]));
        paths.on_event(&Event::Link { link, deleted: false }, &mut node);
        assert_eq!(left(&paths), all);
        assert!(!paths.dirty());

        // A neighbour entry lb did not make; an address (the SNAT sources only).
        fill(&mut paths);
        paths.on_event(&Event::NeighbourGone { addr: ip("10.2.0.1"), ifindex: 3 }, &mut node);
        assert!(!paths.dirty());
        paths.on_event(&Event::Address, &mut node);
        assert_eq!(left(&paths), all);
        assert!(paths.dirty());

        fill(&mut paths);
        paths.on_event(&Event::Lost, &mut node);
        assert!(left(&paths).is_empty() && paths.links.is_none() && paths.recheck_neighbours);
        assert_eq!(paths.missing.len(), 4, "each is looked up again");
    }

    /// A sync goes through the listeners that changed: an address new to the model needs a
    /// route, one a listener left for another keeps its route, one no listener has any more
    /// loses it; an event's stale route is looked up again at the next sync.
    #[tokio::test]
    async fn syncs_look_up_only_new_backends() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let listener = |port: u16, backends: &[&str]| {
            let backends =
                backends.iter().map(|b| crate::model::Backend { addr: ip(b), port: 80, weight: 1 }).collect();
            Arc::new(L4Listener::sample("s", ip("198.18.100.1"), port, backends))
        };
        let missing = |paths: &mut BackendPaths| {
            let mut m: Vec<String> = paths.missing.iter().map(ToString::to_string).collect();
            m.sort();
            // As a sync's lookups would: each gets a route.
            for a in paths.missing.drain() {
                paths.backends.get_mut(&a).unwrap().route = route("10.9.0.1", 2).route;
            }
            m
        };
        let mut paths = BackendPaths::new(Rtnl::connect().unwrap(), BTreeSet::new(), (None, None));
        let mut m = Model::default();
        m.listeners.insert("a".into(), listener(80, &["10.1.0.2", "10.1.0.3"]));
        m.listeners.insert("b".into(), listener(81, &["10.1.0.3"]));
        paths.follow(&m);
        assert_eq!(missing(&mut paths), ["10.1.0.2", "10.1.0.3"]);

        // a drops 10.1.0.3 (b still has it) and 10.1.0.2, takes 10.1.0.4; b is the same object.
        m.listeners.insert("a".into(), listener(80, &["10.1.0.4"]));
        paths.follow(&m);
        assert_eq!(missing(&mut paths), ["10.1.0.4"]);
        assert_eq!(routed(&paths), ["10.1.0.3", "10.1.0.4"], "no listener has 10.1.0.2: its route goes");

        paths.on_event(&Event::Route { dst: ip("10.1.0.3"), len: 32 }, &mut NodeChanges::default());
        assert_eq!(missing(&mut paths), ["10.1.0.3"]);
        m.listeners.clear();
        paths.follow(&m);
        assert!(paths.backends.is_empty() && paths.seen.is_empty());
    }
}
