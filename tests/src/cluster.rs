//! Topologies shaped like Kubernetes nodes: a wire (a switch) joins a client host, the load
//! balancer's node (node-a) and a second node (node-b); pods sit behind a Linux bridge on
//! each node (a bridge CNI), and node-b's pods are reached from node-a through a VXLAN
//! device, flannel-style (each node's pod subnet routed `via <subnet>.0 dev vx onlink`, with
//! a static neighbour and FDB entry for the other node's VTEP).
//!
//! ```text
//!  client 198.18.0.2 ──┐            ┌── node-a 198.18.0.1 (NIC, XDP)          ┌─ pod a1..a3 198.18.10.2-4
//!  (host across wire)  ├── switch ──┤    cni0 198.18.10.1/24 ─────────────────┼─ client pod 198.18.10.10
//!                      │            │    vx 198.18.10.0/32 ⇄ VXLAN ⇄ node-b   
//!                      │            └── node-b 198.18.0.4 (NIC)
//!                      │                 cni0 198.18.11.1/24 ── pod b1..b3 198.18.11.2-4
//!  The wire's router (the nodes' default gateway) is 198.18.0.254 / 2001:db8::fe.
//!  IPv6: client 2001:db8::2, node-a 2001:db8::1, pods a 2001:db8:10::2-4 (+ ::10), pods b
//!  2001:db8:11::2-4; the VTEPs carry 2001:db8:ff::a / ::b.
//!            VIP 198.18.100.10 / 2001:db8:100::10 (on no interface: the datapath answers)
//! ```
//!
//! What each sender models: the client is a host across a wire, so it may (and does) turn TX
//! checksum offload off, as wire frames carry full checksums. Pods, the client pod and the
//! nodes keep their default offloads (TX checksum on: their frames carry partial checksums).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use crate::netns::{Netns, sh, unique_prefix};

/// Node names, as the pods' EndpointSlices give them (`lb run --node-name node-a`).
pub const NODE_A: &str = "node-a";
pub const NODE_B: &str = "node-b";
/// Pod network MTU: the VXLAN overhead below the 1500-byte wire (flannel's default).
pub const POD_MTU: &str = "1450";

/// One backend pod.
pub struct Pod {
    pub ns: Netns,
    pub addr: Ipv4Addr,
    pub addr6: Ipv6Addr,
    /// The node it runs on.
    pub node: &'static str,
    /// Its name as the test servers answer it.
    pub name: String,
}

/// Which pods a [`Cluster`] has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pods {
    /// Pods behind the bridge on node-a only.
    Bridge,
    /// Pods behind the bridge on node-b only, reached through VXLAN.
    Vxlan,
    /// Both.
    Both,
}

pub struct Cluster {
    pub prefix: String,
    pub wire: Netns,
    pub client: Netns,
    /// node-a: the load balancer runs here.
    pub lb: Netns,
    pub node_b: Netns,
    /// The client pod on node-a (default offloads).
    pub client_pod: Netns,
    pub client_pod_addr: Ipv4Addr,
    pub client_pod_addr6: Ipv6Addr,
    pub pods: Vec<Pod>,
    /// node-a's NIC (give it to `lb run --iface`).
    pub nic: String,
}

const VTEP_MAC_A: &str = "02:aa:00:00:00:0a";
const VTEP_MAC_B: &str = "02:aa:00:00:00:0b";

impl Cluster {
    /// The wire, both nodes and their overlay, the client pod, and `per_node` backend pods on
    /// the nodes `pods` says.
    pub fn new(pods: Pods, per_node: usize) -> Result<Cluster> {
        assert!((1..=7).contains(&per_node));
        // Pod addresses .2-.8 of each node's /24; the client pod is .10.
        let p = unique_prefix();
        let wire = Netns::new(&format!("{p}w"))?;
        let client = Netns::new(&format!("{p}c"))?;
        let lb = Netns::new(&format!("{p}a"))?;
        let node_b = Netns::new(&format!("{p}b"))?;
        let sw = format!("{p}sw");
        wire.ip(&["link", "add", &sw, "type", "bridge"])?;
        wire.ip(&["link", "set", &sw, "up"])?;
        // The wire's router: the nodes' default gateway.
        wire.ip(&["addr", "add", "198.18.0.254/24", "dev", &sw])?;
        wire.ip(&["addr", "add", "2001:db8::fe/64", "dev", &sw, "nodad"])?;
        let nic = format!("{p}n0");
        // The wire: client, node-a and node-b on one switch.
        for (host, port, host_if, v4, v6) in [
            (&client, format!("{p}wc"), format!("{p}c0"), "198.18.0.2/24", "2001:db8::2/64"),
            (&lb, format!("{p}wa"), nic.clone(), "198.18.0.1/24", "2001:db8::1/64"),
            (&node_b, format!("{p}wb"), format!("{p}n0"), "198.18.0.4/24", "2001:db8::4/64"),
        ] {
            sh(&[
                "ip", "link", "add", &host_if, "netns", &host.name, "type", "veth", "peer", "name", &port, "netns",
                &wire.name,
            ])?;
            host.ip(&["addr", "add", v4, "dev", &host_if])?;
            host.ip(&["link", "set", &host_if, "up"])?;
            wire.ip(&["link", "set", &port, "master", &sw, "up"])?;
            // A switch port is a NAPI device: frames an XDP program sends into its veth are
            // not dropped (the switch is part of the wire, not a host).
            wire.exec(&["ethtool", "-K", &port, "gro", "on"])?;
            host.ip(&["addr", "add", v6, "dev", &host_if, "nodad"])?;
        }
        client.ip(&["addr", "add", "198.18.0.3/24", "dev", &format!("{p}c0")])?;
        client.ip(&["route", "add", "default", "via", "198.18.0.1"])?;
        client.ip(&["-6", "route", "add", "default", "via", "2001:db8::1"])?;
        // The client stands for a host across a wire: its frames carry full checksums.
        client.exec(&["ethtool", "-K", &format!("{p}c0"), "tx", "off"])?;
        for node in [&lb, &node_b] {
            node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
            node.ip(&["route", "add", "default", "via", "198.18.0.254"])?;
            node.ip(&["-6", "route", "add", "default", "via", "2001:db8::fe"])?;
        }
        let cni = format!("{p}cni");
        let vx = format!("{p}vx");
        for (node, subnet, local, mac) in
            [(&lb, 10u8, "198.18.0.1", VTEP_MAC_A), (&node_b, 11u8, "198.18.0.4", VTEP_MAC_B)]
        {
            node.ip(&["link", "add", &cni, "mtu", POD_MTU, "type", "bridge"])?;
            node.ip(&["addr", "add", &format!("198.18.{subnet}.1/24"), "dev", &cni])?;
            node.ip(&["addr", "add", &format!("2001:db8:{subnet}::1/64"), "dev", &cni, "nodad"])?;
            node.ip(&["link", "set", &cni, "up"])?;
            node.ip(&[
                "link",
                "add",
                &vx,
                "address",
                mac,
                "type",
                "vxlan",
                "id",
                "42",
                "dstport",
                "8472",
                "local",
                local,
                "dev",
                &nic,
                "nolearning",
            ])?;
            node.ip(&["addr", "add", &format!("198.18.{subnet}.0/32"), "dev", &vx])?;
            let vtep6 = if subnet == 10 { "2001:db8:ff::a/128" } else { "2001:db8:ff::b/128" };
            node.ip(&["addr", "add", vtep6, "dev", &vx, "nodad"])?;
            node.ip(&["link", "set", &vx, "up"])?;
        }
        // Each node routes the other's pod subnet through the overlay (flannel's vxlan backend).
        for (node, other_subnet, other_vtep, other_mac, other_vtep6) in [
            (&lb, 11u8, "198.18.0.4", VTEP_MAC_B, "2001:db8:ff::b"),
            (&node_b, 10u8, "198.18.0.1", VTEP_MAC_A, "2001:db8:ff::a"),
        ] {
            let gw = format!("198.18.{other_subnet}.0");
            node.ip(&["route", "add", &format!("198.18.{other_subnet}.0/24"), "via", &gw, "dev", &vx, "onlink"])?;
            node.ip(&["neigh", "add", &gw, "lladdr", other_mac, "dev", &vx, "nud", "permanent"])?;
            node.ip(&["-6", "route", "add", other_vtep6, "dev", &vx])?;
            node.ip(&["-6", "route", "add", &format!("2001:db8:{other_subnet}::/64"), "via", other_vtep6, "dev", &vx])?;
            node.ip(&["-6", "neigh", "add", other_vtep6, "lladdr", other_mac, "dev", &vx, "nud", "permanent"])?;
            node.exec(&["bridge", "fdb", "append", other_mac, "dev", &vx, "dst", other_vtep])?;
        }
        let client_pod_addr = Ipv4Addr::new(198, 18, 10, 10);
        let client_pod_addr6: Ipv6Addr = "2001:db8:10::10".parse().unwrap();
        let client_pod =
            pod_ns(&lb, &cni, &format!("{p}ac"), &format!("{p}pc"), client_pod_addr, client_pod_addr6, 10)?;
        let mut all = Vec::new();
        for (node, name, subnet, tag) in [(&lb, NODE_A, 10u8, 'a'), (&node_b, NODE_B, 11u8, 'b')] {
            let wanted = match pods {
                Pods::Both => true,
                Pods::Bridge => name == NODE_A,
                Pods::Vxlan => name == NODE_B,
            };
            if !wanted {
                continue;
            }
            for i in 1..=per_node {
                let addr = Ipv4Addr::new(198, 18, subnet, 1 + i as u8);
                let addr6: Ipv6Addr = format!("2001:db8:{subnet}::{}", 1 + i).parse().unwrap();
                let ns = pod_ns(node, &cni, &format!("{p}{tag}{i}"), &format!("{p}p{tag}{i}"), addr, addr6, subnet)?;
                all.push(Pod { ns, addr, addr6, node: name, name: format!("pod-{tag}{i}") });
            }
        }
        Ok(Cluster {
            prefix: p,
            wire,
            client,
            lb,
            node_b,
            client_pod,
            client_pod_addr,
            client_pod_addr6,
            pods: all,
            nic,
        })
    }

    /// A pod on node-a the Calico way: its own veth with no bridge, a /32 host route to it,
    /// proxy ARP on the host side, and `169.254.1.1` as the pod's gateway. Default offloads.
    pub fn add_veth_pod(&mut self, i: u8) -> Result<()> {
        let addr = Ipv4Addr::new(198, 18, 12, i);
        let host_if = format!("{}cali{i}", self.prefix);
        let ns = Netns::new(&format!("{}v{i}", self.prefix))?;
        sh(&[
            "ip",
            "link",
            "add",
            "eth0",
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &host_if,
            "netns",
            &self.lb.name,
        ])?;
        self.lb.ip(&["link", "set", &host_if, "up"])?;
        self.lb.exec(&["sysctl", "-qw", &format!("net.ipv4.conf.{host_if}.proxy_arp=1")])?;
        self.lb.ip(&["route", "add", &format!("{addr}/32"), "dev", &host_if])?;
        ns.ip(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"])?;
        ns.ip(&["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"])?;
        // IPv4 only: `addr6` is unspecified.
        self.pods.push(Pod { ns, addr, addr6: Ipv6Addr::UNSPECIFIED, node: NODE_A, name: format!("pod-v{i}") });
        Ok(())
    }

    /// The pods' addresses with their node names, for an EndpointSlice.
    pub fn endpoints(&self, v6: bool) -> Vec<(IpAddr, &'static str)> {
        self.pods.iter().map(|p| (if v6 { IpAddr::V6(p.addr6) } else { IpAddr::V4(p.addr) }, p.node)).collect()
    }
}

/// A pod: its own namespace, a veth whose host side is a port of the node's bridge, the
/// bridge's address as its gateway, default offloads, the pod network's MTU.
fn pod_ns(
    node: &Netns,
    bridge: &str,
    name: &str,
    host_if: &str,
    addr: Ipv4Addr,
    addr6: Ipv6Addr,
    subnet: u8,
) -> Result<Netns> {
    let ns = Netns::new(name)?;
    sh(&[
        "ip", "link", "add", "eth0", "netns", &ns.name, "mtu", POD_MTU, "type", "veth", "peer", "name", host_if,
        "netns", &node.name,
    ])?;
    node.ip(&["link", "set", host_if, "mtu", POD_MTU, "master", bridge, "up"])?;
    ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
    ns.ip(&["addr", "add", &format!("{addr6}/64"), "dev", "eth0", "nodad"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    ns.ip(&["route", "add", "default", "via", &format!("198.18.{subnet}.1")])?;
    ns.ip(&["-6", "route", "add", "default", "via", &format!("2001:db8:{subnet}::1")])?;
    Ok(ns)
}
