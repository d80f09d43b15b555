//! Annotations that only make sense for a cloud CLB instance (billing, size, zones, tags,
//! instance and vServer group reuse...): their values and the reference's rules between
//! them are still checked, then each is reported as not applicable with its reason. What the
//! cloud would refuse is a notice too: a cloud-only annotation never rejects a Service.
use std::net::Ipv4Addr;

use super::{
    Cx, ServicePortInfo,
    keys::Key,
    values::{choice, list, number, on_off, quote, word},
};

/// Why each cloud-only annotation has no effect on a node balancer.
pub const REASONS: [(Key, &str); 20] = [
    (
        Key::AddressType,
        "the VIP is served on the nodes' interfaces; there is no cloud instance to make Internet-facing or internal",
    ),
    (
        Key::VswitchId,
        "no cloud instance is placed in a vSwitch; the VIP comes from spec.loadBalancerIP or status.loadBalancer.ingress",
    ),
    (Key::InstanceChargeType, "billing method of a cloud instance; a node balancer has none"),
    (Key::Spec, "size of a cloud instance; capacity here is the nodes' own"),
    (Key::ChargeType, "billing method of a cloud instance's traffic; a node balancer has none"),
    (Key::Bandwidth, "bandwidth cap of a pay-by-bandwidth cloud instance; a node balancer has no billing cap"),
    (Key::Id, "reuses an existing cloud instance; here the listeners are always created from this Service"),
    (
        Key::ForceOverrideListeners,
        "listener ownership on a reused cloud instance; here each Service owns its listeners",
    ),
    (Key::MasterZoneId, "zone placement of a cloud instance; the balancer runs on every node"),
    (Key::SlaveZoneId, "zone placement of a cloud instance; the balancer runs on every node"),
    (
        Key::Ip,
        "static address taken from a vSwitch by the cloud; the VIP comes from spec.loadBalancerIP or status.loadBalancer.ingress",
    ),
    (Key::AdditionalResourceTags, "tags of a cloud resource; a node balancer creates none"),
    (Key::Name, "name of a cloud instance; listeners here are named after the Service"),
    (Key::ResourceGroupId, "resource group of a cloud instance; a node balancer creates none"),
    (Key::DeleteProtection, "deletion protection of a cloud instance; a node balancer has no instance to delete"),
    (Key::ModificationProtection, "console protection of a cloud instance; a node balancer has no console"),
    (
        Key::PreserveLbOnDelete,
        "keeps a cloud instance after the Service is deleted; here the listeners go with the Service",
    ),
    (
        Key::VgroupPort,
        "reuses a vServer group of an existing cloud instance; backends here come from the Service's EndpointSlices",
    ),
    (Key::Weight, "splits a vServer group shared by Services of a reused cloud instance; a node balancer shares none"),
    (
        Key::IgnoreWeightUpdate,
        "keeps backend weights edited in the cloud console; here weights come only from Kubernetes",
    ),
];

pub(super) fn not_applicable(cx: &mut Cx, ports: &[ServicePortInfo]) {
    let start = cx.errors.len();
    values(cx, ports);
    rules(cx);
    for e in cx.errors.drain(start..).collect::<Vec<_>>() {
        cx.note(e.annotation, format!("ignored (cloud-only): {}; Alibaba Cloud would refuse this", e.reason));
    }
    for (key, reason) in REASONS {
        cx.not_applicable(key, reason);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Charge {
    Spec,
    Clcu,
    Traffic,
    Bandwidth,
}

#[derive(Clone, Copy, PartialEq)]
enum Address {
    Internet,
    Intranet,
}

fn values(cx: &mut Cx, ports: &[ServicePortInfo]) {
    for key in [Key::VswitchId, Key::Id, Key::MasterZoneId, Key::SlaveZoneId, Key::ResourceGroupId] {
        cx.value(key, word);
    }
    for key in [Key::DeleteProtection, Key::IgnoreWeightUpdate] {
        cx.value(key, on_off);
    }
    cx.value(Key::AddressType, |v| choice(v, &[("internet", Address::Internet), ("intranet", Address::Intranet)]));
    cx.value(Key::InstanceChargeType, |v| choice(v, &[("PayBySpec", Charge::Spec), ("PayByCLCU", Charge::Clcu)]));
    cx.value(Key::ChargeType, |v| {
        choice(v, &[("paybytraffic", Charge::Traffic), ("paybybandwidth", Charge::Bandwidth)])
    });
    cx.value(Key::Spec, spec);
    cx.value(Key::Bandwidth, |v| match v.parse::<u32>() {
        Ok(n) if n > 0 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("{} is not a positive whole number of Mbps", quote(v))),
    });
    cx.value(Key::ForceOverrideListeners, |v| choice(v, &[("true", true), ("false", false)]));
    cx.value(Key::Ip, |v| v.parse::<Ipv4Addr>().map_err(|_| format!("{} is not an IPv4 address", quote(v))));
    cx.value(Key::AdditionalResourceTags, tags);
    cx.value(Key::Name, name);
    cx.value(Key::ModificationProtection, |v| choice(v, &[("ConsoleProtection", ()), ("NonProtection", ())]));
    cx.value(Key::VgroupPort, |v| {
        for item in list(v)? {
            let (id, port) = item
                .split_once(':')
                .ok_or_else(|| format!("{} is not vgroup-id:port (e.g. rsp-bp1:80)", quote(item)))?;
            word(id).map_err(|e| format!("in {}: vServer group ID {e}", quote(item)))?;
            let port = number(port, 1, 65535).map_err(|e| format!("in {}: port {e}", quote(item)))?;
            if !ports.iter().any(|p| u32::from(p.port) == port) {
                return Err(format!("in {}: the Service has no port {port}", quote(item)));
            }
        }
        Ok(())
    });
    cx.value(Key::Weight, |v| number(v, 0, 100));
    // preserve-lb-on-delete: any non-empty string preserves, empty or unset deletes.
}

/// The rules of the reference between cloud-only annotations.
fn rules(cx: &mut Cx) {
    let value = |cx: &Cx, key: Key| cx.get(key).map(str::to_owned);
    if value(cx, Key::InstanceChargeType).as_deref() == Some("PayByCLCU") && cx.has(Key::Spec) {
        cx.cross(Key::Spec, &[Key::InstanceChargeType], "cannot be set with instance-charge-type PayByCLCU");
    }
    if value(cx, Key::ForceOverrideListeners).as_deref() == Some("true") && !cx.has(Key::Id) {
        cx.cross(
            Key::ForceOverrideListeners,
            &[],
            "true requires alibaba-cloud-loadbalancer-id (the instance whose listeners to override)",
        );
    }
    if cx.has(Key::Ip) {
        if value(cx, Key::AddressType).as_deref() != Some("intranet") {
            cx.cross(Key::Ip, &[Key::AddressType], "requires address-type intranet");
        }
        if !cx.has(Key::VswitchId) {
            cx.cross(Key::Ip, &[], "requires vswitch-id (the address is taken from that vSwitch)");
        }
    }
    if cx.has(Key::Bandwidth) {
        if value(cx, Key::ChargeType).as_deref() != Some("paybybandwidth") {
            cx.cross(Key::Bandwidth, &[Key::ChargeType], "requires charge-type paybybandwidth");
        }
        if value(cx, Key::AddressType).as_deref() == Some("intranet") {
            cx.cross(Key::Bandwidth, &[Key::AddressType], "applies only to Internet-facing instances, not intranet");
        }
    }
    for (key, other) in [(Key::MasterZoneId, Key::SlaveZoneId), (Key::SlaveZoneId, Key::MasterZoneId)] {
        if cx.has(key) && !cx.has(other) {
            cx.cross(key, &[], format!("requires {} as well", other.suffix()));
        }
    }
    if cx.has(Key::VgroupPort) && !cx.has(Key::Id) {
        cx.cross(
            Key::VgroupPort,
            &[],
            "requires alibaba-cloud-loadbalancer-id (vServer groups are reused from an existing instance)",
        );
    }
    if cx.has(Key::Weight) && !cx.has(Key::VgroupPort) {
        cx.cross(Key::Weight, &[], "requires vgroup-port (the weight applies to a reused vServer group)");
    }
}

/// `slb.s1.small`, `slb.s3.large`...: the reference lists some and defers to
/// CreateLoadBalancer for the rest, so the shape is checked.
fn spec(v: &str) -> Result<(), String> {
    let ok = v.strip_prefix("slb.s").and_then(|r| r.split_once('.')).is_some_and(|(generation, size)| {
        !generation.is_empty()
            && generation.bytes().all(|b| b.is_ascii_digit())
            && !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if ok { Ok(()) } else { Err(format!("{} is not an instance spec like slb.s1.small or slb.s3.large", quote(v))) }
}

/// `Key1=Value1,Key2=Value2`.
fn tags(v: &str) -> Result<(), String> {
    let mut seen = Vec::new();
    for item in list(v)? {
        let (k, _) = item.split_once('=').ok_or_else(|| format!("{} is not key=value", quote(item)))?;
        if k.trim().is_empty() {
            return Err(format!("{} has an empty tag key", quote(item)));
        }
        if seen.contains(&k) {
            return Err(format!("tag {k} is listed twice"));
        }
        seen.push(k);
    }
    Ok(())
}

/// 2..=128 characters, starting with a letter (Chinese characters included); letters,
/// digits, `.`, `_` and `-`.
fn name(v: &str) -> Result<(), String> {
    let len = v.chars().count();
    if !(2..=128).contains(&len) {
        return Err(format!("an instance name has 2..=128 characters, not {len}"));
    }
    if !v.chars().next().is_some_and(char::is_alphabetic) {
        return Err(format!("{} does not start with a letter", quote(v)));
    }
    if let Some(c) = v.chars().find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{} contains {c:?}; letters, digits, '.', '_' and '-' only", quote(v)));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
