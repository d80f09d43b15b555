//! Services of type LoadBalancer, their CLB annotations and their EndpointSlices → L4
//! listeners.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use super::slice::EndpointSlice;

use super::backends::PortBackends;
use super::{AclBinding, AclMode, BuildContext, L4Listener, Notice, ObjectError, ObjectRef, Protocol, ProxyProtocol};
use crate::annotations::clb::{self, Acl, AclType, ConnectionDrain, IpVersion, ListenerProtocol, ServicePortInfo};
use crate::annotations::lbdev::{self, ProxyVersion};

use crate::annotations::lbdev::PROXY_PROTOCOL_VERSION;

/// What one Service asks for.
pub struct ServiceBuild {
    pub listeners: Vec<L4Listener>,
    pub l7: Vec<super::l7::L7Listener>,
    pub notices: Vec<Notice>,
}

/// The listeners a Service asks for, or every reason it cannot be served.
pub fn listeners(
    svc: &Service,
    my_slices: &[&EndpointSlice],
    cx: &BuildContext,
    lookup: &super::l7::Lookup<'_>,
) -> Result<ServiceBuild, Vec<ObjectError>> {
    let source = ObjectRef {
        kind: "Service".into(),
        namespace: svc.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        name: svc.metadata.name.clone().unwrap_or_default(),
    };
    let err = |field: &str, reason: String| vec![ObjectError { object: source.clone(), field: field.into(), reason }];
    let spec = svc.spec.as_ref().ok_or_else(|| err("spec", "missing".into()))?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return Ok(ServiceBuild { listeners: Vec::new(), l7: Vec::new(), notices: Vec::new() });
    }

    // Ports, as the annotations see them.
    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            other => return Err(err(&format!("{field}.protocol"), format!("{other} is not supported (TCP or UDP)"))),
        };
        let number = u16::try_from(port.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err(&format!("{field}.port"), format!("{} is outside 1..=65535", port.port)))?;
        let protocol = match protocol {
            Protocol::Tcp => clb::Protocol::Tcp,
            Protocol::Udp => clb::Protocol::Udp,
        };
        ports.push(ServicePortInfo { name: port.name.clone(), port: number, protocol });
    }

    let annotations: BTreeMap<String, String> = svc.metadata.annotations.clone().unwrap_or_default();
    let parsed = clb::parse(&annotations, &ports);
    let mut errors: Vec<ObjectError> = parsed
        .errors
        .iter()
        .map(|e| ObjectError { object: source.clone(), field: e.annotation.clone(), reason: e.reason.clone() })
        .collect();
    let cfg = &parsed.config;
    let mut notices: Vec<Notice> = parsed
        .not_applicable
        .iter()
        .map(|n| Notice { object: source.clone(), field: n.annotation.clone(), note: n.reason.clone() })
        .collect();
    let field = format!("metadata.annotations[{PROXY_PROTOCOL_VERSION}]");
    let proxy_protocol = if !cfg.l4.proxy_protocol {
        if annotations.contains_key(PROXY_PROTOCOL_VERSION) {
            notices.push(Notice {
                object: source.clone(),
                field: field.clone(),
                note: format!("has no effect while {}proxy-protocol is off", clb::CLB_PREFIX),
            });
        }
        ProxyProtocol::Off
    } else {
        match lbdev::proxy_protocol_version(&annotations) {
            Ok(None | Some(ProxyVersion::V2)) => ProxyProtocol::V2,
            Ok(Some(ProxyVersion::V1)) => {
                if ports.iter().any(|p| p.protocol == clb::Protocol::Udp) {
                    notices.push(Notice {
                        object: source.clone(),
                        field: field.clone(),
                        note: "UDP listeners send PROXY protocol v2 (v1 has no datagram form)".into(),
                    });
                }
                ProxyProtocol::V1
            }
            Err(reason) => {
                errors.push(ObjectError { object: source.clone(), field, reason });
                ProxyProtocol::Off
            }
        }
    };
    let vips = match super::vips::vips(svc, &source, &mut notices) {
        Ok(v) => v,
        Err((field, reason)) => {
            errors.extend(err(field, reason));
            return Err(errors);
        }
    };
    for &(vip, field) in &vips.vips {
        if let Err(refused) = cx.addresses.check_vip(vip) {
            errors.extend(err(field, refused.to_string()));
            return Err(errors);
        }
    }
    for &(vip, _) in vips.vips.iter().filter(|_| !vips.dual_stack) {
        let wanted = match cfg.ip_version {
            IpVersion::Ipv4 => vip.is_ipv4(),
            IpVersion::Ipv6 => vip.is_ipv6(),
        };
        if !wanted {
            errors.push(ObjectError {
                object: source.clone(),
                field: cfg.key("ip-version"),
                reason: format!("{:?} does not match the VIP {vip}", cfg.ip_version).to_lowercase(),
            });
        }
    }
    if let Some(key) = annotations.keys().find(|k| vips.dual_stack && k.ends_with("-loadbalancer-ip-version")) {
        notices.push(Notice {
            object: source.clone(),
            field: key.clone(),
            note: "not used on a dual-stack Service: each family of spec.ipFamilies gets its own VIP".into(),
        });
    }
    let persistence = match super::affinity::persistence_timeout(spec, &annotations, cfg, &source, &mut notices) {
        Ok(t) => t,
        Err(e) => {
            errors.push(e);
            0
        }
    };
    let acl = match &cfg.acl {
        Acl::Off => None,
        Acl::On { id, kind } => {
            if !cx.acls.contains(id.as_str()) {
                errors.push(ObjectError {
                    object: source.clone(),
                    field: cfg.key("acl-id"),
                    reason: format!("AccessControlList {} not found", id.as_str()),
                });
            }
            let mode = match kind {
                AclType::White => AclMode::White,
                AclType::Black => AclMode::Black,
            };
            Some(AclBinding { acl: id.as_str().to_string(), mode })
        }
    };
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    // Node backends under Local are weighted by the endpoints they host, which rr ignores.
    if local && cfg.backends.backend_type == Some(clb::BackendType::Ecs) && cfg.scheduler == clb::Scheduler::Rr {
        notices.push(Notice {
            object: source.clone(),
            field: cfg.key("scheduler"),
            note: "externalTrafficPolicy: Local weighs each node by the endpoints it hosts, which rr ignores: \
                   every node gets an equal share (Local mode requires wrr)"
                .into(),
        });
    }
    // With node backends (ecs), Local picks the nodes hosting endpoints: no node name needed.
    let node = if local && cfg.backends.backend_type != Some(clb::BackendType::Ecs) {
        match cx.node_name.as_deref() {
            Some(n) => Some(n),
            None => {
                errors.extend(err(
                    "spec.externalTrafficPolicy",
                    "Local needs this node's name (lb run --node-name, or NODE_NAME from the downward API)".into(),
                ));
                None
            }
        }
    } else {
        None
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    let spec_ports = spec.ports.as_deref().unwrap_or_default();
    let picked = PortBackends::new(spec_ports, cfg, my_slices, lookup.nodes, node, local, &source, &mut notices);
    let mut out = Vec::new();
    let pairs = cfg.listeners.iter().zip(&ports);
    for (vip, (listener, port)) in vips.vips.iter().flat_map(|&(vip, _)| pairs.clone().map(move |p| (vip, p))) {
        let protocol = match listener.protocol {
            ListenerProtocol::Tcp => Protocol::Tcp,
            ListenerProtocol::Udp => Protocol::Udp,
            ListenerProtocol::Http | ListenerProtocol::Https => continue,
        };
        let backends = picked.for_port(port.port, protocol, vip).map_err(|(field, reason)| err(&field, reason))?;
        if backends.len() > lb_common::MAX_BACKENDS_PER_LISTENER as usize {
            return Err(err(
                "spec.ports",
                format!(
                    "{} ready endpoints, at most {} per listener",
                    backends.len(),
                    lb_common::MAX_BACKENDS_PER_LISTENER
                ),
            ));
        }
        out.push(L4Listener {
            source: source.clone(),
            vip,
            port: port.port,
            protocol,
            scheduler: scheduler(cfg.scheduler),
            backends,
            persistence_timeout: if protocol == Protocol::Tcp { persistence } else { 0 },
            established_timeout: cfg.l4.established_timeout_s.map_or(super::DEFAULT_ESTABLISHED_TIMEOUT, u32::from),
            drain_timeout: match cfg.l4.connection_drain {
                ConnectionDrain::Off => None,
                ConnectionDrain::On { timeout_s } => Some(timeout_s as u32),
            },
            acl: acl.clone(),
            health_check: super::health::from_clb(&cfg.health_check, protocol)
                .map(|h| super::health::HealthCheck { proxy_protocol, ..h }),
            proxy_protocol,
        });
    }
    let mut l7 = Vec::new();
    for &(vip, _) in &vips.vips {
        l7.extend(super::l7::clb_listeners(&source, cfg, vip, acl.as_ref(), lookup, &picked)?);
    }
    Ok(ServiceBuild { listeners: out, l7, notices })
}

/// CLB `scheduler` → the L4 listener's.
fn scheduler(s: clb::Scheduler) -> super::Scheduler {
    match s {
        clb::Scheduler::Rr => super::Scheduler::Rr,
        clb::Scheduler::Wrr => super::Scheduler::Wrr,
        clb::Scheduler::Sch => super::Scheduler::Sch,
        clb::Scheduler::Tch => super::Scheduler::Tch,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{manifests, model};

    fn build(yaml: &str) -> model::Build {
        let mut set = manifests::ObjectSet::default();
        manifests::load_text(Path::new("t.yaml"), yaml, &mut set);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        model::build(&set, &model::BuildOptions::default())
    }

    const SVC: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: LoadBalancer
  loadBalancerIP: 198.18.100.10
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: [198.18.11.2]
- addresses: [198.18.12.2]
  conditions: {ready: true}
- addresses: [198.18.13.2]
  conditions: {ready: false}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: other
  namespace: elsewhere
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 9999}]
endpoints: [{addresses: [198.18.99.9]}]
"#;

    #[test]
    fn service_ports_become_listeners_with_ready_endpoints() {
        let b = build(SVC);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let tcp = &b.model.listeners["198.18.100.10:80/tcp"];
        let addrs: Vec<String> = tcp.backends.iter().map(|b| format!("{}:{}*{}", b.addr, b.port, b.weight)).collect();
        // The endpoint that is not ready takes no new flows (weight 0); its established ones
        // go on until it leaves the slice.
        assert_eq!(addrs, ["198.18.11.2:8080*100", "198.18.12.2:8080*100", "198.18.13.2:8080*0"]);
        let udp = &b.model.listeners["198.18.100.10:53/udp"];
        assert_eq!(udp.backends.len(), 3);
        assert_eq!(udp.backends[0].port, 5353);
    }

    #[test]
    fn vip_from_status_when_spec_has_none() {
        let yaml = SVC.replace("  loadBalancerIP: 198.18.100.10\n", "").replacen(
            "---",
            "status: {loadBalancer: {ingress: [{ip: 198.18.100.20}]}}\n---",
            1,
        );
        let b = build(&yaml);
        assert!(b.model.listeners.contains_key("198.18.100.20:80/tcp"), "{:?}", b);
    }

    #[test]
    fn bad_objects_are_rejected_alone_with_a_named_error() {
        let yaml = format!(
            "{SVC}\n---\n{}",
            r#"
apiVersion: v1
kind: Service
metadata: {name: novip, namespace: shop}
spec: {type: LoadBalancer, ports: [{port: 81}]}
---
apiVersion: v1
kind: Service
metadata: {name: sctp, namespace: shop}
spec: {type: LoadBalancer, loadBalancerIP: 198.18.100.11, ports: [{port: 81, protocol: SCTP}]}
---
apiVersion: v1
kind: Service
metadata: {name: zzz-dup, namespace: shop}
spec: {type: LoadBalancer, loadBalancerIP: 198.18.100.10, ports: [{port: 80}]}
"#
        );
        let b = build(&yaml);
        let msgs: Vec<String> = b.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("Service shop/novip: spec.loadBalancerIP: no VIP"), "{msgs:?}");
        assert!(msgs[1].contains("shop/sctp: spec.ports[0].protocol: SCTP is not supported"), "{msgs:?}");
        assert!(msgs[2].contains("zzz-dup") && msgs[2].contains("already served for Service shop/web"), "{msgs:?}");
        assert_eq!(b.model.listeners.len(), 2, "the good Service still serves");
    }

    #[test]
    fn external_traffic_policy_local_keeps_this_nodes_endpoints() {
        let yaml = SVC
            .replace(
                "  loadBalancerIP: 198.18.100.10\n",
                "  loadBalancerIP: 198.18.100.10\n  externalTrafficPolicy: Local\n",
            )
            .replace("- addresses: [198.18.11.2]\n", "- addresses: [198.18.11.2]\n  nodeName: node-a\n")
            .replace("- addresses: [198.18.12.2]\n", "- addresses: [198.18.12.2]\n  nodeName: node-b\n");
        let mut set = manifests::ObjectSet::default();
        manifests::load_text(Path::new("t.yaml"), &yaml, &mut set);
        let on_a = model::build(&set, &model::BuildOptions { node_name: Some("node-a".into()), ..Default::default() });
        let addrs: Vec<String> =
            on_a.model.listeners["198.18.100.10:80/tcp"].backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(addrs, ["198.18.11.2"], "only node-a's endpoint");
        let nowhere = model::build(&set, &model::BuildOptions::default());
        assert!(
            nowhere.errors[0].to_string().contains("externalTrafficPolicy: Local needs this node's name"),
            "{:?}",
            nowhere.errors
        );
    }

    #[test]
    fn proxy_protocol_on_with_its_version() {
        use crate::model::ProxyProtocol;
        let with = |ann: &str| {
            build(&SVC.replace(
                "metadata: {name: web, namespace: shop}",
                &format!("metadata:\n  name: web\n  namespace: shop\n  annotations:\n{ann}"),
            ))
        };
        let on = "    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-proxy-protocol: \"on\"\n";
        let b = with(on);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert_eq!(b.model.listeners["198.18.100.10:80/tcp"].proxy_protocol, ProxyProtocol::V2, "v2 by default");
        assert_eq!(b.model.listeners["198.18.100.10:53/udp"].proxy_protocol, ProxyProtocol::V2);
        let b = with(&format!("{on}    lb.dev/proxy-protocol-version: \"1\"\n"));
        assert_eq!(b.model.listeners["198.18.100.10:80/tcp"].proxy_protocol, ProxyProtocol::V1);
        assert!(b.notices.iter().any(|n| n.note.contains("UDP listeners send PROXY protocol v2")), "{:?}", b.notices);
        let b = with(&format!("{on}    lb.dev/proxy-protocol-version: \"2\"\n"));
        assert_eq!(b.model.listeners["198.18.100.10:80/tcp"].proxy_protocol, ProxyProtocol::V2);
        let b = with(&format!("{on}    lb.dev/proxy-protocol-version: \"3\"\n"));
        assert_eq!(
            b.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            [
                "Service shop/web: metadata.annotations[lb.dev/proxy-protocol-version]: \"3\" is not a PROXY protocol version (\"1\" or \"2\")"
            ]
        );
        assert!(b.model.listeners.is_empty());
        let b = with("    lb.dev/proxy-protocol-version: \"1\"\n");
        assert_eq!(b.model.listeners["198.18.100.10:80/tcp"].proxy_protocol, ProxyProtocol::Off);
        assert!(b.notices.iter().any(|n| n.note.contains("no effect while")), "{:?}", b.notices);
        assert_eq!(build(SVC).model.listeners["198.18.100.10:80/tcp"].proxy_protocol, ProxyProtocol::Off);
    }

    fn build_with(yaml: &str, addresses: model::addresses::AddressPolicy) -> model::Build {
        let mut set = manifests::ObjectSet::default();
        manifests::load_text(Path::new("t.yaml"), yaml, &mut set);
        model::build(&set, &model::BuildOptions { addresses, ..Default::default() })
    }

    fn errors(b: &model::Build) -> Vec<String> {
        b.errors.iter().map(ToString::to_string).collect()
    }

    /// Issue #17, item 5: a VIP outside every --vip-pool, a special-purpose VIP and a node
    /// address are rejected on their Service, naming the field the VIP came from.
    #[test]
    fn vips_outside_the_pools_special_or_of_the_node_are_rejected() {
        use model::addresses::AddressPolicy;
        let pool = |p: &str| AddressPolicy { vip_pools: vec![p.parse().unwrap()], ..Default::default() };
        assert!(build_with(SVC, pool("198.18.100.0/24")).errors.is_empty(), "inside the pool");
        let b = build_with(SVC, pool("198.18.200.0/24"));
        assert_eq!(
            errors(&b),
            ["Service shop/web: spec.loadBalancerIP: 198.18.100.10 is outside every --vip-pool (198.18.200.0/24)"]
        );
        assert!(b.model.listeners.is_empty());
        for (vip, class) in [("127.0.0.5", "loopback"), ("169.254.169.254", "link-local"), ("224.0.0.5", "multicast")] {
            let b = build(&SVC.replace("198.18.100.10", vip));
            assert_eq!(
                errors(&b),
                [format!("Service shop/web: spec.loadBalancerIP: {vip} is never a VIP ({class} address)")],
                "no pool given: still refused"
            );
        }
        let from_status = SVC.replace("  loadBalancerIP: 198.18.100.10\n", "").replacen(
            "---",
            "status: {loadBalancer: {ingress: [{ip: \"::\"}]}}\n---",
            1,
        );
        assert_eq!(
            errors(&build(&from_status)),
            ["Service shop/web: status.loadBalancer.ingress[].ip: :: is never a VIP (unspecified address)"]
        );
        let node = AddressPolicy { node_addresses: ["198.18.100.10".parse().unwrap()].into(), ..Default::default() };
        assert_eq!(
            errors(&build_with(SVC, node)),
            [
                "Service shop/web: spec.loadBalancerIP: 198.18.100.10 is an address of this node: the datapath would take the node's own traffic"
            ]
        );
    }

    /// Issue #17, item 5: of two Services on one VIP:port/protocol the older keeps it, whatever
    /// their names (before, name order decided: `aaa` took it from the older `zzz`).
    #[test]
    fn the_older_service_keeps_a_contested_listener() {
        let svc = |name: &str, created: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop, creationTimestamp: \"{created}\"}}\nspec: {{type: LoadBalancer, loadBalancerIP: 198.18.100.10, ports: [{{port: 80}}]}}\n---\n"
            )
        };
        let yaml = svc("aaa", "2024-02-01T00:00:00Z") + &svc("zzz", "2024-01-01T00:00:00Z");
        let b = build(&yaml);
        assert_eq!(b.model.listeners["198.18.100.10:80/tcp"].source.name, "zzz");
        assert_eq!(
            errors(&b),
            [
                "Service shop/aaa: spec.ports: VIP conflict: 198.18.100.10:80/tcp is already served for Service shop/zzz, which is older (created 2024-01-01T00:00:00Z, this one 2024-02-01T00:00:00Z)"
            ]
        );
        // The same second: namespace/name decides.
        let b = build(&(svc("zzz", "2024-01-01T00:00:00Z") + &svc("aaa", "2024-01-01T00:00:00Z")));
        assert_eq!(b.model.listeners["198.18.100.10:80/tcp"].source.name, "aaa");
        assert!(errors(&b)[0].contains("created at the same time"), "{:?}", b.errors);
    }

    /// Issue #17, item 5: loopback, link-local, unspecified and multicast endpoints are not
    /// served (they would reach the node's own ports); the rest of the Service is, and a
    /// notice names the Service and the address. L4 and L7 listeners alike.
    #[test]
    fn refused_endpoint_addresses_are_dropped_with_a_notice() {
        let yaml = SVC
            .replace("- addresses: [198.18.11.2]\n", "- addresses: [198.18.11.2]\n- addresses: [127.0.0.1]\n- addresses: [169.254.0.9]\n")
            .replace(
                "metadata: {name: web, namespace: shop}",
                "metadata:\n  name: web\n  namespace: shop\n  annotations: {service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: \"http:80,udp:53\"}",
            );
        let b = build(&yaml);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let udp: Vec<String> =
            b.model.listeners["198.18.100.10:53/udp"].backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(udp, ["198.18.11.2", "198.18.12.2", "198.18.13.2"]);
        let l7 = &b.model.l7["198.18.100.10:80/http"];
        let http: Vec<String> = l7.routes[0].upstreams[0].endpoints.iter().map(|e| e.addr.ip().to_string()).collect();
        assert_eq!(http, ["198.18.11.2", "198.18.12.2", "198.18.13.2"]);
        let notes: Vec<String> = b.notices.iter().map(ToString::to_string).collect();
        assert!(
            notes.contains(&"Service shop/web: EndpointSlice shop/web-1: endpoints[1].addresses[0]: 127.0.0.1 is not served (loopback address)".to_string()),
            "{notes:?}"
        );
        assert!(notes.iter().any(|n| n.contains("169.254.0.9 is not served (link-local address)")), "{notes:?}");
    }

    #[test]
    fn non_loadbalancer_services_are_not_listeners() {
        let b = build(&SVC.replace("type: LoadBalancer", "type: ClusterIP"));
        assert!(b.model.listeners.is_empty() && b.errors.is_empty());
    }
}
