//! Which addresses `lb` serves: the VIPs a Service may take (inside a `--vip-pool`, never a
//! special-purpose address nor one of the node's own), the endpoint addresses it forwards to
//! (never loopback, link-local, unspecified or multicast), and which of two Services claiming
//! one VIP, port and protocol keeps it (the older).
use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;

use super::slice::EndpointSlice;

use super::{Notice, ObjectRef};

/// What the VIP and endpoint checks depend on besides the objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// `--vip-pool`: a VIP must lie in one of these prefixes; empty = any VIP the other
    /// checks accept.
    pub vip_pools: Vec<IpNet>,
    /// The node's own addresses, never a VIP (`lb run`: every interface's, read at each
    /// build; `lb check`: `--node-address`).
    pub node_addresses: BTreeSet<IpAddr>,
    /// Accept loopback VIPs and endpoints. Only for in-process tests, where the L7 proxy and
    /// its backends share 127.0.0.0/8: `lb run` and `lb check` never set it.
    pub allow_loopback: bool,
}

/// Whether an error's reason is [`VipRefused::NodeAddress`]: a refusal of this node only
/// (another node, without that address, serves the VIP).
pub fn refused_on_this_node_only(reason: &str) -> bool {
    reason.contains(" is an address of this node: ")
}

/// Why an address cannot be a Service's VIP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipRefused {
    #[error("{0} is never a VIP ({1} address)")]
    Special(IpAddr, &'static str),
    #[error("{0} is an address of this node: the datapath would take the node's own traffic")]
    NodeAddress(IpAddr),
    #[error("{vip} is outside every --vip-pool ({pools})")]
    OutsidePools { vip: IpAddr, pools: String },
}

/// The class of a special-purpose address that is never a VIP nor an endpoint: loopback,
/// link-local, multicast, unspecified, broadcast (IPv4-mapped IPv6 addresses as their IPv4
/// address). `None` for an address that may be either.
pub fn special(addr: IpAddr) -> Option<&'static str> {
    match addr.to_canonical() {
        IpAddr::V4(a) if a.is_unspecified() => Some("unspecified"),
        IpAddr::V4(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V4(a) if a.is_link_local() => Some("link-local"),
        IpAddr::V4(a) if a.is_multicast() => Some("multicast"),
        IpAddr::V4(a) if a.is_broadcast() => Some("broadcast"),
        IpAddr::V6(a) if a.is_unspecified() => Some("unspecified"),
        IpAddr::V6(a) if a.is_loopback() => Some("loopback"),
        IpAddr::V6(a) if a.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(a) if a.is_multicast() => Some("multicast"),
        _ => None,
    }
}

impl AddressPolicy {
    /// The special-purpose class of `addr` this policy refuses, if any.
    fn refused_class(&self, addr: IpAddr) -> Option<&'static str> {
        special(addr).filter(|class| !(self.allow_loopback && *class == "loopback"))
    }

    /// Whether a Service may take `vip`.
    pub fn check_vip(&self, vip: IpAddr) -> Result<(), VipRefused> {
        if let Some(class) = self.refused_class(vip) {
            return Err(VipRefused::Special(vip, class));
        }
        if self.node_addresses.contains(&vip) || self.node_addresses.contains(&vip.to_canonical()) {
            return Err(VipRefused::NodeAddress(vip));
        }
        if !self.vip_pools.is_empty() && !self.vip_pools.iter().any(|p| p.contains(&vip)) {
            let pools: Vec<String> = self.vip_pools.iter().map(ToString::to_string).collect();
            return Err(VipRefused::OutsidePools { vip, pools: pools.join(", ") });
        }
        Ok(())
    }

    /// `slices` without the endpoint addresses this policy refuses (an endpoint left without
    /// addresses goes), with a notice on the Service for each address dropped.
    pub fn clean_slices(&self, slices: &[Arc<EndpointSlice>], notices: &mut Vec<Notice>) -> Vec<Arc<EndpointSlice>> {
        slices.iter().map(|slice| self.clean_slice(slice, notices)).collect()
    }

    /// One slice of [`clean_slices`](Self::clean_slices): the same object when it loses
    /// nothing.
    pub fn clean_slice(&self, slice: &Arc<EndpointSlice>, notices: &mut Vec<Notice>) -> Arc<EndpointSlice> {
        let refused = |a: &compact_str::CompactString| a.parse().ok().and_then(|a| self.refused_class(a));
        if !slice.endpoints.iter().flat_map(|e| &e.addresses).any(|a| refused(a).is_some()) {
            return slice.clone();
        }
        let meta = &slice.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let service = slice.service.as_ref();
        let mut clean = (**slice).clone();
        for (i, ep) in clean.endpoints.iter_mut().enumerate() {
            for (j, addr) in ep.addresses.iter().enumerate() {
                if let (Some(class), Some(service)) = (refused(addr), service) {
                    notices.push(Notice {
                        object: ObjectRef {
                            kind: "Service".into(),
                            namespace: namespace.clone(),
                            name: service.to_string(),
                        },
                        field: format!(
                            "EndpointSlice {namespace}/{}: endpoints[{i}].addresses[{j}]",
                            meta.name.as_deref().unwrap_or_default()
                        ),
                        note: format!("{addr} is not served ({class} address)"),
                    });
                }
            }
            ep.addresses.retain(|a| refused(a).is_none());
        }
        clean.endpoints.retain(|e| !e.addresses.is_empty());
        Arc::new(clean)
    }
}

/// Why a Service lost a listener to another: both claim one VIP, port and protocol, and the
/// other is older (`metadata.creationTimestamp`; without one, or at the same second, the
/// first by namespace and name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VIP conflict: {listener} is already served for {winner}, {why}")]
pub struct VipConflict {
    /// `vip:port/protocol`.
    pub listener: String,
    pub winner: ObjectRef,
    /// Which one is older, and how that was decided.
    pub why: String,
}

impl VipConflict {
    pub fn new(
        listener: String,
        winner: &ObjectRef,
        winner_created: Option<Timestamp>,
        created: Option<Timestamp>,
    ) -> Self {
        let why = match (winner_created, created) {
            (Some(w), Some(c)) if w == c => format!("created at the same time ({w}): namespace/name order decides"),
            (Some(w), Some(c)) => format!("which is older (created {w}, this one {c})"),
            (Some(w), None) => format!("which was created ({w}; this one has no creationTimestamp)"),
            (None, _) => "first by namespace/name (no creationTimestamp)".to_string(),
        };
        VipConflict { listener, winner: winner.clone(), why }
    }
}

/// How Services are ordered when they claim the same listener: the older first (those
/// without a `creationTimestamp` after every one with), then by namespace and name.
pub fn seniority<'s>(
    created: Option<Timestamp>,
    namespace: &'s str,
    name: &'s str,
) -> (bool, Option<Timestamp>, &'s str, &'s str) {
    (created.is_none(), created, namespace, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Issue #17, item 5: these were all accepted as VIPs.
    #[test]
    fn special_purpose_addresses_are_never_vips() {
        let any = AddressPolicy::default();
        for (vip, class) in [
            ("127.0.0.5", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("239.1.2.3", "multicast"),
            ("ff02::1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
        ] {
            assert_eq!(any.check_vip(ip(vip)), Err(VipRefused::Special(ip(vip), class)), "{vip}");
        }
        for vip in ["198.18.100.10", "2001:db8:100::10", "10.0.0.1", "203.0.113.9"] {
            assert_eq!(any.check_vip(ip(vip)), Ok(()), "no pool: any other VIP: {vip}");
        }
    }

    #[test]
    fn pools_and_node_addresses_bound_the_vips() {
        let policy = AddressPolicy {
            vip_pools: vec!["198.18.100.0/24".parse().unwrap(), "2001:db8:100::/64".parse().unwrap()],
            node_addresses: [ip("198.18.100.1")].into(),
            allow_loopback: false,
        };
        assert_eq!(policy.check_vip(ip("198.18.100.10")), Ok(()));
        assert_eq!(policy.check_vip(ip("2001:db8:100::10")), Ok(()));
        assert_eq!(policy.check_vip(ip("198.18.100.1")), Err(VipRefused::NodeAddress(ip("198.18.100.1"))));
        assert!(super::refused_on_this_node_only(&VipRefused::NodeAddress(ip("198.18.100.1")).to_string()));
        assert!(!super::refused_on_this_node_only(&VipRefused::Special(ip("127.0.0.5"), "loopback").to_string()));
        assert_eq!(
            policy.check_vip(ip("198.18.101.10")).unwrap_err().to_string(),
            "198.18.101.10 is outside every --vip-pool (198.18.100.0/24, 2001:db8:100::/64)"
        );
        // A pool never lets a special-purpose address in.
        let wide = AddressPolicy { vip_pools: vec!["0.0.0.0/0".parse().unwrap()], ..Default::default() };
        assert!(matches!(wide.check_vip(ip("127.0.0.1")), Err(VipRefused::Special(_, "loopback"))));
    }

    #[test]
    fn refused_endpoints_are_dropped_with_a_notice_naming_the_service() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["198.18.11.2"]},
                {"addresses": ["127.0.0.1"]},
                {"addresses": ["169.254.1.1", "198.18.12.2"]},
            ],
        }))
        .unwrap();
        let slices = [Arc::new(slice)];
        let mut notices = Vec::new();
        let clean = AddressPolicy::default().clean_slices(&slices, &mut notices);
        let left: Vec<&[compact_str::CompactString]> =
            clean[0].endpoints.iter().map(|e| e.addresses.as_slice()).collect();
        assert_eq!(left, [["198.18.11.2"], ["198.18.12.2"]]);
        let shown: Vec<String> = notices.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "Service shop/web: EndpointSlice shop/web-1: endpoints[1].addresses[0]: 127.0.0.1 is not served (loopback address)",
                "Service shop/web: EndpointSlice shop/web-1: endpoints[2].addresses[0]: 169.254.1.1 is not served (link-local address)",
            ]
        );
        let mut none = Vec::new();
        let tests = AddressPolicy { allow_loopback: true, ..Default::default() }.clean_slices(&slices, &mut none);
        assert_eq!(tests[0].endpoints.len(), 3, "loopback kept where allowed; link-local still goes");
        assert_eq!(none.len(), 1);
    }
}
