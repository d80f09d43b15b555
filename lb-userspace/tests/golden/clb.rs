//! CLB: the example Services of `clb-service-annotations.txt`, one directory per part of
//! the reference (instance, listener, health check, backend server group), parsed by
//! `annotations::clb::parse` from their annotations and ports.
use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use lb_userspace::annotations::clb::{self, ClbParse, Protocol, ServicePortInfo};
use serde_json::{Value, json};

use crate::runner::run_family;

/// The annotations and ports of the Service in `yaml`, parsed.
fn parse(yaml: &str) -> ClbParse {
    let svc: Service = serde_yaml_ng::from_str(yaml).expect("a Service");
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
    clb::parse(&annotations, &ports)
}

/// The parse result, and per listener (`protocol:port`) the health check probe it gets and
/// that probe's timeout.
fn case(_: &Path, text: &str) -> Value {
    let p = parse(text);
    let hc = &p.config.health_check;
    let probes: Vec<Value> = p
        .config
        .listeners
        .iter()
        .map(|l| {
            let probe = hc.probe(l.protocol);
            json!({
                "listener": format!("{}:{}", l.protocol.as_str(), l.port),
                "probe": probe,
                "timeout_s": probe.map(|_| hc.timeout_s(l.protocol)),
            })
        })
        .collect();
    json!({"parse": p, "derived": {"probes": probes}})
}

/// "CLB instance configuration" (cloud-only annotations are reported as not applicable).
#[test]
fn clb_instance() {
    run_family("clb/instance", case);
}

/// "Listener configuration", up to "Disable HTTP/2".
#[test]
fn clb_listener() {
    run_family("clb/listener", case);
}

/// "Listener configuration": the health check examples (TCP, UDP, off, HTTP).
#[test]
fn clb_health() {
    run_family("clb/health", case);
}

/// "Backend server group configuration".
#[test]
fn clb_backend() {
    run_family("clb/backend", case);
}
