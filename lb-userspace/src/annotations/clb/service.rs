//! Families that apply to every listener of the Service: `scheduler`, `ip-version`,
//! `hostname`, and the ACL (`acl-status`, `acl-id`, `acl-type`).
use serde::Serialize;

use super::values::Scheduler;
use super::{
    Cx, ResourceId,
    keys::Key,
    values::{choice, dns_name, on_off, quote, resource_id},
};

/// `ip-version` (default ipv4): the address family of the VIP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpVersion {
    #[default]
    Ipv4,
    Ipv6,
}

/// `acl-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AclType {
    /// Only addresses in the ACL may connect (an empty ACL lets everyone in).
    White,
    /// Addresses in the ACL may not connect (an empty ACL blocks no one).
    Black,
}

/// `acl-status` (default off) with `acl-id` and `acl-type`, both required when on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Acl {
    #[default]
    Off,
    On {
        id: ResourceId,
        kind: AclType,
    },
}

pub(super) fn scheduler(cx: &mut Cx) -> Scheduler {
    cx.value(Key::Scheduler, |v| {
        choice(v, &[("rr", Scheduler::Rr), ("wrr", Scheduler::Wrr), ("sch", Scheduler::Sch), ("tch", Scheduler::Tch)])
    })
    .unwrap_or_default()
}

pub(super) fn ip_version(cx: &mut Cx) -> IpVersion {
    cx.value(Key::IpVersion, |v| choice(v, &[("ipv4", IpVersion::Ipv4), ("ipv6", IpVersion::Ipv6)])).unwrap_or_default()
}

/// `hostname`: a DNS name, lowercase as Kubernetes requires of `status.loadBalancer.ingress[].hostname`.
pub(super) fn hostname(cx: &mut Cx) -> Option<String> {
    cx.value(Key::Hostname, |v| {
        let name = dns_name(v, false)?;
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("{} has upper-case letters; Kubernetes status hostnames are lower-case", quote(v)));
        }
        Ok(name)
    })
}

pub(super) fn acl(cx: &mut Cx) -> Acl {
    let status = cx.value(Key::AclStatus, on_off);
    let id = cx.value(Key::AclId, |v| {
        if v.contains(',') {
            return Err(format!("{}: multiple ACLs are not supported, set one ACL ID", quote(v)));
        }
        resource_id(v)
    });
    let kind = cx.value(Key::AclType, |v| choice(v, &[("white", AclType::White), ("black", AclType::Black)]));
    if status == Some(true) {
        if !cx.has(Key::AclId) {
            cx.cross(Key::AclStatus, &[], "on requires acl-id");
        }
        if !cx.has(Key::AclType) {
            cx.cross(Key::AclStatus, &[], "on requires acl-type (white or black)");
        }
        if let (Some(id), Some(kind)) = (id, kind) {
            return Acl::On { id, kind };
        }
    } else {
        for key in [Key::AclId, Key::AclType] {
            if status == Some(false) && !cx.failed(key) {
                // Switched off on purpose, the ACL kept for later: said, not an error that
                // would keep the Service's last good version, the ACL enforced, serving.
                cx.not_applicable(key, "has no effect while acl-status is off");
            } else if cx.has(key) {
                cx.cross(key, &[Key::AclStatus], "has no effect while acl-status is not on (default off)");
            }
        }
    }
    Acl::Off
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_one_error, assert_one_note, errors_of, run, tcp};
    use super::*;

    #[test]
    fn scheduler_values_and_default() {
        assert_eq!(run(&[], &[tcp(80)]).config.scheduler, Scheduler::Rr);
        for (v, want) in
            [("rr", Scheduler::Rr), ("wrr", Scheduler::Wrr), ("sch", Scheduler::Sch), ("tch", Scheduler::Tch)]
        {
            let p = run(&[("scheduler", v)], &[tcp(80)]);
            assert!(p.errors.is_empty(), "{:?}", p.errors);
            assert_eq!(p.config.scheduler, want);
        }
        assert_one_error(&[("scheduler", "lc")], &[tcp(80)], "scheduler", "\"lc\" is not one of rr, wrr, sch, tch");
        assert_one_error(
            &[("scheduler", "WRR")],
            &[tcp(80)],
            "scheduler",
            "\"WRR\" is not one of rr, wrr, sch, tch (values are case-sensitive: wrr)",
        );
    }

    #[test]
    fn ip_version_values_and_default() {
        assert_eq!(run(&[], &[tcp(80)]).config.ip_version, IpVersion::Ipv4);
        assert_eq!(run(&[("ip-version", "ipv4")], &[tcp(80)]).config.ip_version, IpVersion::Ipv4);
        assert_eq!(run(&[("ip-version", "ipv6")], &[tcp(80)]).config.ip_version, IpVersion::Ipv6);
        assert_one_error(&[("ip-version", "dual")], &[tcp(80)], "ip-version", "\"dual\" is not one of ipv4, ipv6");
    }

    #[test]
    fn hostname_is_a_lowercase_dns_name() {
        assert_eq!(run(&[], &[tcp(80)]).config.hostname, None);
        let p = run(&[("hostname", "www.example.com")], &[tcp(80)]);
        assert_eq!(p.config.hostname.as_deref(), Some("www.example.com"));
        assert!(p.errors.is_empty());
        assert_one_error(
            &[("hostname", "WWW.example.com")],
            &[tcp(80)],
            "hostname",
            "\"WWW.example.com\" has upper-case letters; Kubernetes status hostnames are lower-case",
        );
        assert_eq!(errors_of(&[("hostname", "www..example.com")], &[tcp(80)]).len(), 1);
        assert_eq!(errors_of(&[("hostname", "http://example.com")], &[tcp(80)]).len(), 1);
    }

    #[test]
    fn acl_on_with_id_and_type() {
        assert_eq!(run(&[], &[tcp(80)]).config.acl, Acl::Off);
        for (t, kind) in [("white", AclType::White), ("black", AclType::Black)] {
            let p = run(&[("acl-status", "on"), ("acl-id", "acl-bp1"), ("acl-type", t)], &[tcp(80)]);
            assert!(p.errors.is_empty(), "{:?}", p.errors);
            let Acl::On { id, kind: got } = &p.config.acl else { panic!("{:?}", p.config.acl) };
            assert_eq!((id.as_str(), *got), ("acl-bp1", kind));
        }
        assert_eq!(run(&[("acl-status", "off")], &[tcp(80)]).config.acl, Acl::Off);
    }

    #[test]
    fn acl_cross_rules() {
        let ports = [tcp(80)];
        assert_one_error(&[("acl-status", "on"), ("acl-type", "white")], &ports, "acl-status", "on requires acl-id");
        assert_one_error(
            &[("acl-status", "on"), ("acl-id", "acl-1")],
            &ports,
            "acl-status",
            "on requires acl-type (white or black)",
        );
        assert_one_note(
            &[("acl-status", "off"), ("acl-id", "acl-1")],
            &ports,
            "acl-id",
            "has no effect while acl-status is off",
        );
        assert_one_error(
            &[("acl-type", "black")],
            &ports,
            "acl-type",
            "has no effect while acl-status is not on (default off)",
        );
        assert_one_error(
            &[("acl-status", "on"), ("acl-id", "acl-1,acl-2"), ("acl-type", "white")],
            &ports,
            "acl-id",
            "\"acl-1,acl-2\": multiple ACLs are not supported, set one ACL ID",
        );
        assert_one_error(
            &[("acl-status", "on"), ("acl-id", "acl-1"), ("acl-type", "White")],
            &ports,
            "acl-type",
            "\"White\" is not one of white, black (values are case-sensitive: white)",
        );
        // An invalid acl-status reports that, not the rules it would have triggered.
        assert_one_error(
            &[("acl-status", "yes"), ("acl-id", "acl-1")],
            &ports,
            "acl-status",
            "\"yes\" is not one of on, off",
        );
    }
}
