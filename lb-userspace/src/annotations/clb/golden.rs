//! Golden tests: the example Services of the CLB annotation reference, parsed from their
//! YAML as printed there (placeholders that are not valid values, such as `192.168.x.x`,
//! are replaced by real ones and marked), with the typed result asserted.
mod backend;
mod cloud;
mod health;
mod listener;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use super::Protocol;
use super::{ClbConfig, ClbParse, Listener, ListenerProtocol, ServicePortInfo, parse};

/// The annotations and ports of the Service in `yaml`, parsed.
fn parse_yaml(yaml: &str) -> ClbParse {
    let svc: Service = serde_yaml_ng::from_str(yaml).expect("example YAML parses");
    let annotations: BTreeMap<String, String> = svc.metadata.annotations.unwrap_or_default();
    let ports: Vec<ServicePortInfo> = svc
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePortInfo {
            name: p.name,
            port: u16::try_from(p.port).expect("port"),
            protocol: match p.protocol.as_deref().unwrap_or("TCP") {
                "UDP" => Protocol::Udp,
                _ => Protocol::Tcp,
            },
        })
        .collect();
    parse(&annotations, &ports)
}

/// Parse `yaml`, which must give no error, and return the configuration with the reported
/// not-applicable annotations (their key suffixes).
#[track_caller]
fn golden(yaml: &str) -> (ClbConfig, Vec<String>) {
    let p = parse_yaml(yaml);
    assert!(p.errors.is_empty(), "{:#?}", p.errors);
    let mut na: Vec<String> = p
        .not_applicable
        .iter()
        .map(|n| n.annotation.trim_start_matches("service.beta.kubernetes.io/alibaba-cloud-loadbalancer-").to_owned())
        .collect();
    na.sort();
    (p.config, na)
}

/// The defaults with `listeners`.
fn with_listeners(listeners: &[(Option<&str>, u16, ListenerProtocol)]) -> ClbConfig {
    ClbConfig {
        listeners: listeners
            .iter()
            .map(|(name, port, protocol)| Listener { name: name.map(str::to_owned), port: *port, protocol: *protocol })
            .collect(),
        ..ClbConfig::default()
    }
}
