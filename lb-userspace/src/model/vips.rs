//! The VIPs of a Service: one from `spec.loadBalancerIP`, else the first
//! `status.loadBalancer.ingress[].ip`; a dual-stack Service (`spec.ipFamilies` with both
//! families, `ipFamilyPolicy` PreferDualStack or RequireDualStack) gets one per family, each
//! the first of those addresses in its family. A family without a VIP rejects a
//! RequireDualStack Service and is a notice on a PreferDualStack one.
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;

use super::{Notice, ObjectRef};

/// One VIP and the field it came from.
pub type Vip = (IpAddr, &'static str);

/// A Service's VIPs (one per family when it is dual-stack).
#[derive(Debug)]
pub struct Vips {
    pub vips: Vec<Vip>,
    pub dual_stack: bool,
}

const SPEC: &str = "spec.loadBalancerIP";
const STATUS: &str = "status.loadBalancer.ingress[].ip";

/// Whether `svc` asks for both families.
pub fn is_dual_stack(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else { return false };
    let families = spec.ip_families.as_deref().unwrap_or_default();
    let both = ["IPv4", "IPv6"].iter().all(|f| families.iter().any(|x| x == f));
    both && matches!(spec.ip_family_policy.as_deref(), Some("PreferDualStack" | "RequireDualStack"))
}

/// The Service's VIPs, or why it has none it may use: (field, reason).
pub fn vips(svc: &Service, source: &ObjectRef, notices: &mut Vec<Notice>) -> Result<Vips, (&'static str, String)> {
    let spec_ip = svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).filter(|s| !s.is_empty());
    let status_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref());
    let candidates: Vec<(&str, &'static str)> =
        spec_ip.map(|ip| (ip, SPEC)).into_iter().chain(status_ips.map(|ip| (ip, STATUS))).collect();
    if candidates.is_empty() {
        return Err((SPEC, "no VIP: set spec.loadBalancerIP or status.loadBalancer.ingress[].ip".to_string()));
    }
    let parse = |(text, field): (&str, &'static str)| match text.parse::<IpAddr>() {
        Ok(ip) => Ok((ip, field)),
        Err(_) => Err((field, format!("{text:?} is not an IP address"))),
    };
    if !is_dual_stack(svc) {
        return Ok(Vips { vips: vec![parse(candidates[0])?], dual_stack: false });
    }
    let parsed = candidates.into_iter().map(parse).collect::<Result<Vec<Vip>, _>>()?;
    let spec = svc.spec.as_ref().expect("dual-stack Services have a spec");
    let required = spec.ip_family_policy.as_deref() == Some("RequireDualStack");
    let mut vips = Vec::new();
    for family in spec.ip_families.iter().flatten() {
        let v6 = family == "IPv6";
        match parsed.iter().find(|(ip, _)| ip.is_ipv6() == v6) {
            Some(vip) => vips.push(*vip),
            None if required => {
                return Err((STATUS, format!("RequireDualStack: no {family} VIP among {SPEC} and {STATUS}")));
            }
            None => notices.push(Notice {
                object: source.clone(),
                field: "spec.ipFamilyPolicy".into(),
                note: format!("PreferDualStack: no {family} VIP among {SPEC} and {STATUS}: served on one family"),
            }),
        }
    }
    Ok(Vips { vips, dual_stack: true })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{manifests, model};

    fn build(spec: &str, status: &str) -> model::Build {
        build_annotated(spec, status, "")
    }

    /// A Service `web` with `spec` lines, `status` and `annotations` (flow map entries), and
    /// one EndpointSlice per family.
    fn build_annotated(spec: &str, status: &str, annotations: &str) -> model::Build {
        let yaml = format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop, annotations: {{{annotations}}}}}
spec:
  type: LoadBalancer
{spec}  ports: [{{name: http, port: 80}}]
status: {status}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-v4, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [198.18.11.2]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-v6, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv6
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: ["fd00:11::2"]}}]
"#
        );
        let mut set = manifests::ObjectSet::default();
        manifests::load_text(Path::new("t.yaml"), &yaml, &mut set);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        model::build(&set, &model::BuildOptions::default())
    }

    const DUAL: &str =
        "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n  loadBalancerIP: 198.18.100.10\n";
    const V6_STATUS: &str = "{loadBalancer: {ingress: [{ip: \"fd00:100::10\"}]}}";

    fn backends(b: &model::Build, key: &str) -> Vec<String> {
        b.model.listeners[key].backends.iter().map(|b| b.addr.to_string()).collect()
    }

    #[test]
    fn a_dual_stack_service_gets_a_vip_per_family_with_that_familys_endpoints() {
        let b = build(DUAL, V6_STATUS);
        assert!(b.errors.is_empty() && b.notices.is_empty(), "{:?} {:?}", b.errors, b.notices);
        let keys: Vec<&String> = b.model.listeners.keys().collect();
        assert_eq!(keys, ["198.18.100.10:80/tcp", "[fd00:100::10]:80/tcp"]);
        assert_eq!(backends(&b, "198.18.100.10:80/tcp"), ["198.18.11.2"]);
        assert_eq!(backends(&b, "[fd00:100::10]:80/tcp"), ["fd00:11::2"]);
    }

    #[test]
    fn single_stack_keeps_one_vip() {
        let b = build("  loadBalancerIP: 198.18.100.10\n", V6_STATUS);
        let keys: Vec<&String> = b.model.listeners.keys().collect();
        assert_eq!(keys, ["198.18.100.10:80/tcp"], "{:?}", b.errors);
        // Both families listed but SingleStack policy: one VIP.
        let b = build(&DUAL.replace("RequireDualStack", "SingleStack"), V6_STATUS);
        assert_eq!(b.model.listeners.len(), 1);
    }

    #[test]
    fn a_missing_family_rejects_require_and_is_a_notice_for_prefer() {
        let b = build(DUAL, "{}");
        assert_eq!(
            b.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "Service shop/web: status.loadBalancer.ingress[].ip: RequireDualStack: no IPv6 VIP among spec.loadBalancerIP and status.loadBalancer.ingress[].ip"
            ]
        );
        let b = build(&DUAL.replace("Require", "Prefer"), "{}");
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert_eq!(b.model.listeners.len(), 1);
        assert_eq!(
            b.notices.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "Service shop/web: spec.ipFamilyPolicy: PreferDualStack: no IPv6 VIP among spec.loadBalancerIP and status.loadBalancer.ingress[].ip: served on one family"
            ]
        );
    }

    #[test]
    fn ip_version_is_not_used_on_a_dual_stack_service() {
        let key = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-ip-version";
        let b = build_annotated(DUAL, V6_STATUS, &format!("{key}: ipv6"));
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert_eq!(b.model.listeners.len(), 2);
        assert_eq!(
            b.notices.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!(
                "Service shop/web: {key}: not used on a dual-stack Service: each family of spec.ipFamilies gets its own VIP"
            )]
        );
        let b = build("  loadBalancerIP: \"fd00:100::10\"\n", "{}");
        assert!(b.errors[0].to_string().contains("ipv4 does not match the vip fd00:100::10"), "{:?}", b.errors);
    }
}
