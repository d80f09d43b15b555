//! `sessionAffinity: ClientIP` of a Service as L4 session persistence: a client address keeps
//! its backend for `sessionAffinityConfig.clientIP.timeoutSeconds` (Kubernetes default 10800)
//! after it was last seen, on the TCP listeners, through the same datapath persistence map as
//! the CLB `persistence-timeout` annotation. The annotation is the more specific of the two:
//! when a Service has both, the annotation's value is used and a notice says so. UDP and
//! http/https listeners keep no client persistence (a notice each).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceSpec;

use super::{Notice, ObjectError, ObjectRef};
use crate::annotations::clb::{self, ListenerProtocol};

/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_CLIENT_IP_TIMEOUT_S: u32 = 10_800;
/// Kubernetes' upper bound of `timeoutSeconds` (one day).
pub const MAX_CLIENT_IP_TIMEOUT_S: u32 = 86_400;

const FIELD: &str = "spec.sessionAffinity";
const TIMEOUT_FIELD: &str = "spec.sessionAffinityConfig.clientIP.timeoutSeconds";

/// The persistence timeout (seconds, 0 = off) of the Service's TCP listeners: the CLB
/// `persistence-timeout` annotation when it is written, else `sessionAffinity: ClientIP`'s
/// timeout, else 0. Notices for a conflict and for listeners ClientIP does not apply to.
pub fn persistence_timeout(
    spec: &ServiceSpec,
    annotations: &BTreeMap<String, String>,
    cfg: &clb::ClbConfig,
    source: &ObjectRef,
    notices: &mut Vec<Notice>,
) -> Result<u32, ObjectError> {
    let annotation = u32::from(cfg.l4.persistence_timeout_s);
    let written = [clb::CLB_PREFIX, clb::LEGACY_PREFIX]
        .iter()
        .find(|p| annotations.contains_key(&format!("{}{p}persistence-timeout", clb::PREFIX)));
    let client_ip = match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => Some(client_ip_timeout(spec, source)?),
        Some(other) => {
            return Err(ObjectError {
                object: source.clone(),
                field: FIELD.into(),
                reason: format!("{other:?} is not a session affinity (None or ClientIP)"),
            });
        }
    };
    let Some(timeout) = client_ip else { return Ok(annotation) };
    let mut note = |note: String| notices.push(Notice { object: source.clone(), field: FIELD.into(), note });
    if let Some(prefix) = written {
        note(format!(
            "ClientIP (timeoutSeconds {timeout}) is overridden by the more specific {}{prefix}persistence-timeout ({annotation} s{})",
            clb::PREFIX,
            if annotation == 0 { ": persistence off" } else { "" }
        ));
    }
    let kinds = |p: &[ListenerProtocol]| cfg.listeners.iter().filter(|l| p.contains(&l.protocol)).count();
    if kinds(&[ListenerProtocol::Udp]) > 0 {
        note("ClientIP applies to TCP listeners only: UDP listeners keep no client persistence".into());
    }
    if kinds(&[ListenerProtocol::Http, ListenerProtocol::Https]) > 0 {
        note(format!(
            "ClientIP is not applied to http/https listeners: their persistence is the {}sticky-session cookie",
            clb::CLB_PREFIX
        ));
    }
    Ok(if written.is_some() { annotation } else { timeout })
}

/// `timeoutSeconds` of ClientIP affinity: 1..=86400, 10800 when absent.
fn client_ip_timeout(spec: &ServiceSpec, source: &ObjectRef) -> Result<u32, ObjectError> {
    let given =
        spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
    match given {
        None => Ok(DEFAULT_CLIENT_IP_TIMEOUT_S),
        Some(t) => {
            u32::try_from(t).ok().filter(|t| (1..=MAX_CLIENT_IP_TIMEOUT_S).contains(t)).ok_or_else(|| ObjectError {
                object: source.clone(),
                field: TIMEOUT_FIELD.into(),
                reason: format!("{t} is outside 1..={MAX_CLIENT_IP_TIMEOUT_S}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{manifests, model};

    const CLB: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";

    /// A Service with a TCP and a UDP port, `spec` lines added under `spec:` and
    /// `annotations` (flow map entries) on its metadata.
    fn build(spec: &str, annotations: &str) -> model::Build {
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop, annotations: {{{annotations}}}}}\nspec:\n  type: LoadBalancer\n  loadBalancerIP: 198.18.100.10\n{spec}  ports: [{{name: http, port: 80}}, {{name: dns, port: 53, protocol: UDP}}]\n"
        );
        let mut set = manifests::ObjectSet::default();
        manifests::load_text(Path::new("t.yaml"), &yaml, &mut set);
        model::build(&set, &model::BuildOptions::default())
    }

    fn timeouts(b: &model::Build) -> (u32, u32) {
        let l = &b.model.listeners;
        (l["198.18.100.10:80/tcp"].persistence_timeout, l["198.18.100.10:53/udp"].persistence_timeout)
    }

    fn notes(b: &model::Build) -> Vec<String> {
        b.notices.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn client_ip_affinity_is_tcp_persistence_with_its_timeout() {
        let b = build("  sessionAffinity: ClientIP\n", "");
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert_eq!(timeouts(&b), (10_800, 0), "Kubernetes' default timeout, TCP only");
        assert_eq!(
            notes(&b),
            [
                "Service shop/web: spec.sessionAffinity: ClientIP applies to TCP listeners only: UDP listeners keep no client persistence"
            ]
        );
        let b = build("  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 7}}\n", "");
        assert_eq!(timeouts(&b), (7, 0));
        assert_eq!(timeouts(&build("  sessionAffinity: None\n", "")), (0, 0));
        assert_eq!(timeouts(&build("", "")), (0, 0));
    }

    #[test]
    fn the_persistence_timeout_annotation_wins_with_a_notice() {
        let spec = "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 7}}\n";
        let b = build(spec, &format!("{CLB}persistence-timeout: \"60\""));
        assert_eq!(timeouts(&b), (60, 0));
        assert!(
            notes(&b).contains(&format!("Service shop/web: spec.sessionAffinity: ClientIP (timeoutSeconds 7) is overridden by the more specific {CLB}persistence-timeout (60 s)")),
            "{:?}",
            notes(&b)
        );
        let b = build(spec, &format!("{CLB}persistence-timeout: \"0\""));
        assert_eq!(timeouts(&b), (0, 0), "written as 0: persistence off");
        assert!(notes(&b).iter().any(|n| n.contains("(0 s: persistence off)")), "{:?}", notes(&b));
        let b = build("", &format!("{CLB}persistence-timeout: \"60\""));
        assert!(b.notices.is_empty(), "no ClientIP, no conflict: {:?}", b.notices);
    }

    #[test]
    fn bad_affinity_values_reject_the_service() {
        let errors = |spec: &str| build(spec, "").errors.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            errors("  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 86401}}\n"),
            ["Service shop/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is outside 1..=86400"]
        );
        assert_eq!(
            errors("  sessionAffinity: Cookie\n"),
            ["Service shop/web: spec.sessionAffinity: \"Cookie\" is not a session affinity (None or ClientIP)"]
        );
    }

    #[test]
    fn http_listeners_get_a_notice_not_persistence() {
        let b = build("  sessionAffinity: ClientIP\n", &format!("{CLB}protocol-port: \"http:80,udp:53\""));
        assert!(
            notes(&b).iter().any(|n| n.contains("ClientIP is not applied to http/https listeners")),
            "{:?}",
            notes(&b)
        );
    }
}
