//! The end-to-end topologies, by [`Shape`]:
//! - `Routed`: a client namespace, the load balancer's namespace and N backend namespaces,
//!   each backend a host on its own link to the load balancer (wire to wire, XDP both ways);
//! - `Bridge`: N pods behind a bridge on the load balancer's node;
//! - `Vxlan`: N pods on a second node, reached through a VXLAN overlay.
//!
//! The last two are [`crate::cluster::Cluster`]s; all three give the same client addresses
//! and VIPs, so a test written once runs in each shape. The routed one:
//!
//! ```text
//!  client 198.18.0.2, .3 ── 198.18.0.1 [lb] 198.18.i.1 ── 198.18.i.2 backend i
//!  2001:db8::2            2001:db8::1     2001:db8:i::1  2001:db8:i::2
//!            VIP 198.18.100.10 / 2001:db8:100::10 (on no interface: XDP answers for it)
//! ```
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use crate::netns::{Netns, unique_prefix, veth};

pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const LB_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// A second address of the client (for ACL tests).
pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

/// Backend `i` (1-based) of the routed topology.
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Shape::Routed.backend_addr(i)
}

pub fn backend_addr6(i: usize) -> Ipv6Addr {
    Shape::Routed.backend_addr6(i)
}

/// Where the backends are, as seen from the load balancer's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Hosts across wires, each on its own link (XDP to XDP).
    Routed,
    /// Pods behind a bridge on the load balancer's node (default offloads).
    Bridge,
    /// Pods on another node behind a VXLAN overlay (default offloads).
    Vxlan,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Routed, Shape::Bridge, Shape::Vxlan];

    /// Backend `i`'s address (1-based).
    pub fn backend_addr(self, i: usize) -> Ipv4Addr {
        match self {
            Shape::Routed => Ipv4Addr::new(198, 18, i as u8, 2),
            Shape::Bridge => Ipv4Addr::new(198, 18, 10, 1 + i as u8),
            Shape::Vxlan => Ipv4Addr::new(198, 18, 11, 1 + i as u8),
        }
    }

    pub fn backend_addr6(self, i: usize) -> Ipv6Addr {
        match self {
            Shape::Routed => Ipv6Addr::new(0x2001, 0xdb8, i as u16, 0, 0, 0, 0, 2),
            Shape::Bridge => Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 1 + i as u16),
            Shape::Vxlan => Ipv6Addr::new(0x2001, 0xdb8, 0x11, 0, 0, 0, 0, 1 + i as u16),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Routed => "routed",
            Shape::Bridge => "bridge",
            Shape::Vxlan => "vxlan",
        }
    }
}

pub struct Topology {
    pub prefix: String,
    pub shape: Shape,
    pub client: Netns,
    pub lb: Netns,
    /// The backends' namespaces, backend 1 first.
    pub backends: Vec<Netns>,
    /// The interfaces given to `lb run --iface`: routed, the client side first, then one
    /// per backend; otherwise the node's NIC.
    pub lb_ifaces: Vec<String>,
    /// A cluster's client pod on the load balancer's node (default offloads).
    pub client_pod: Option<Netns>,
    /// The rest of a cluster (wire, second node), kept alive with it.
    pub others: Vec<Netns>,
}

impl Topology {
    /// The routed topology with `backends` backends.
    pub fn new(backends: usize) -> Result<Topology> {
        Topology::shaped(Shape::Routed, backends)
    }

    /// A topology of `shape` with `backends` backends.
    pub fn shaped(shape: Shape, backends: usize) -> Result<Topology> {
        let pods = match shape {
            Shape::Routed => return Topology::routed(backends),
            Shape::Bridge => crate::cluster::Pods::Bridge,
            Shape::Vxlan => crate::cluster::Pods::Vxlan,
        };
        let c = crate::cluster::Cluster::new(pods, backends)?;
        Ok(Topology {
            prefix: c.prefix,
            shape,
            client: c.client,
            lb: c.lb,
            backends: c.pods.into_iter().map(|p| p.ns).collect(),
            lb_ifaces: vec![c.nic],
            client_pod: Some(c.client_pod),
            others: vec![c.node_b, c.wire],
        })
    }

    fn routed(backends: usize) -> Result<Topology> {
        assert!((1..=99).contains(&backends));
        let p = unique_prefix();
        let client = Netns::new(&format!("{p}c"))?;
        let lb = Netns::new(&format!("{p}l"))?;
        let mut lb_ifaces = vec![format!("{p}lc")];
        veth(&client, &format!("{p}c0"), "198.18.0.2/24", &lb, &lb_ifaces[0], "198.18.0.1/24")?;
        client.ip(&["addr", "add", "198.18.0.3/24", "dev", &format!("{p}c0")])?;
        client.ip(&["route", "add", "default", "via", "198.18.0.1"])?;
        client.ip(&["addr", "add", "2001:db8::2/64", "dev", &format!("{p}c0"), "nodad"])?;
        lb.ip(&["addr", "add", "2001:db8::1/64", "dev", &lb_ifaces[0], "nodad"])?;
        client.ip(&["-6", "route", "add", "default", "via", "2001:db8::1"])?;
        edge_host(&client, &format!("{p}c0"))?;
        let mut bns = Vec::new();
        for i in 1..=backends {
            let ns = Netns::new(&format!("{p}b{i}"))?;
            let lb_if = format!("{p}l{i}");
            let be_if = format!("{p}b{i}");
            veth(&lb, &lb_if, &format!("198.18.{i}.1/24"), &ns, &be_if, &format!("198.18.{i}.2/24"))?;
            ns.ip(&["route", "add", "default", "via", &format!("198.18.{i}.1")])?;
            ns.ip(&["addr", "add", &format!("2001:db8:{i}::2/64"), "dev", &be_if, "nodad"])?;
            lb.ip(&["addr", "add", &format!("2001:db8:{i}::1/64"), "dev", &lb_if, "nodad"])?;
            ns.ip(&["-6", "route", "add", "default", "via", &format!("2001:db8:{i}::1")])?;
            edge_host(&ns, &be_if)?;
            lb_ifaces.push(lb_if);
            bns.push(ns);
        }
        Ok(Topology {
            prefix: p,
            shape: Shape::Routed,
            client,
            lb,
            backends: bns,
            lb_ifaces,
            client_pod: None,
            others: Vec::new(),
        })
    }

    /// Another host across a wire of its own into the load balancer (`{prefix}x{n}`, at
    /// 198.18.`net`.2/24, the load balancer at .1, which the interface list then includes),
    /// routing everything through it: for example an attacker whose traffic, and the answers
    /// to it, do not share the real client's link.
    pub fn add_wire_host(&mut self, net: u8) -> Result<Netns> {
        let p = &self.prefix;
        let host = Netns::new(&format!("{p}x{net}"))?;
        let (host_if, lb_if) = (format!("{p}x{net}"), format!("{p}lx{net}"));
        veth(&host, &host_if, &format!("198.18.{net}.2/24"), &self.lb, &lb_if, &format!("198.18.{net}.1/24"))?;
        host.ip(&["route", "add", "default", "via", &format!("198.18.{net}.1")])?;
        edge_host(&host, &host_if)?;
        self.lb_ifaces.push(lb_if);
        Ok(host)
    }

    /// `lb run` arguments for this topology besides `--iface`, then `extra`: in a cluster,
    /// the node's name (for `externalTrafficPolicy: Local`).
    pub fn lb_args<'a>(&self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = Vec::new();
        if self.shape != Shape::Routed {
            args.extend(["--node-name", crate::cluster::NODE_A]);
        }
        args.extend_from_slice(extra);
        args
    }

    /// The interfaces of the load balancer, comma separated, for `lb run --iface`.
    pub fn iface_list(&self) -> String {
        self.lb_ifaces.join(",")
    }
}

/// Make a host's veth behave like a NIC towards an XDP forwarder. Only for senders that
/// stand for hosts across a wire (the routed topology's client and backends, the cluster's
/// client): pods and nodes keep their default offloads.
/// - GRO on gives the veth a NAPI poller, without which frames XDP_REDIRECTed into it are
///   dropped silently;
/// - TX checksum offload off makes the host's stack write full checksums, as frames on a
///   wire carry (with offload a veth frame carries only a partial, pseudo-header checksum).
pub fn edge_host(ns: &Netns, iface: &str) -> Result<()> {
    ns.exec(&["ethtool", "-K", iface, "gro", "on", "tx", "off"])?;
    Ok(())
}
