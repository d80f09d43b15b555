//! `AccessControlList`: the project's cluster-scoped object that names a list of source
//! prefixes, referred to by the CLB `acl-id` annotation (its `metadata.name` is the id).
//!
//! ```yaml
//! apiVersion: lb.dev/v1alpha1
//! kind: AccessControlList
//! metadata: {name: acl-office}
//! spec:
//!   entries:
//!   - {cidr: 198.18.0.0/24, comment: office}
//!   - {cidr: "2001:db8::/32"}
//! ```
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Acl, ObjectError, ObjectRef};

pub const KIND: &str = "AccessControlList";
pub const API_VERSION: &str = "lb.dev/v1alpha1";

/// The object as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AclObject {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    pub spec: AclSpec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AclSpec {
    #[serde(default)]
    pub entries: Vec<AclEntry>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AclEntry {
    /// A prefix (`198.18.0.0/24`, `2001:db8::/32`) or a single address.
    pub cidr: String,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Validate one object into an ACL.
pub fn build(obj: &AclObject) -> Result<Acl, ObjectError> {
    let source =
        ObjectRef { kind: KIND.into(), namespace: String::new(), name: obj.metadata.name.clone().unwrap_or_default() };
    let err = |field: String, reason: String| ObjectError { object: source.clone(), field, reason };
    if source.name.is_empty() {
        return Err(err("metadata.name".into(), "missing (it is the acl-id Services refer to)".into()));
    }
    let mut entries = Vec::with_capacity(obj.spec.entries.len());
    for (i, e) in obj.spec.entries.iter().enumerate() {
        let text = e.cidr.trim();
        let net = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| err(format!("spec.entries[{i}].cidr"), format!("{text:?} is not a CIDR or an IP address")))?;
        if net.trunc() != net {
            return Err(err(
                format!("spec.entries[{i}].cidr"),
                format!("{net} has host bits set (did you mean {}?)", net.trunc()),
            ));
        }
        entries.push(net);
    }
    Ok(Acl { source, entries })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::manifests;

    fn parse(yaml: &str) -> Result<super::Acl, super::ObjectError> {
        let mut set = manifests::ObjectSet::default();
        manifests::load_text(Path::new("acl.yaml"), yaml, &mut set);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        super::build(&set.acls[0])
    }

    #[test]
    fn entries_parse_as_prefixes_or_addresses() {
        let acl = parse(
            "apiVersion: lb.dev/v1alpha1\nkind: AccessControlList\nmetadata: {name: office}\nspec:\n  entries:\n  - {cidr: 198.18.0.0/24, comment: hq}\n  - {cidr: 198.18.9.9}\n  - {cidr: '2001:db8::/32'}\n",
        )
        .unwrap();
        let nets: Vec<String> = acl.entries.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["198.18.0.0/24", "198.18.9.9/32", "2001:db8::/32"]);
    }

    #[test]
    fn bad_entries_name_the_field() {
        let e = parse("apiVersion: lb.dev/v1alpha1\nkind: AccessControlList\nmetadata: {name: office}\nspec:\n  entries:\n  - {cidr: 10.0.0.0/8}\n  - {cidr: not-a-net}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "AccessControlList office: spec.entries[1].cidr: \"not-a-net\" is not a CIDR or an IP address"
        );
        let e = parse("apiVersion: lb.dev/v1alpha1\nkind: AccessControlList\nmetadata: {name: office}\nspec:\n  entries:\n  - {cidr: 10.0.0.1/8}\n").unwrap_err();
        assert!(e.reason.contains("host bits set (did you mean 10.0.0.0/8?)"), "{e}");
    }

    #[test]
    fn an_empty_list_is_valid() {
        assert!(
            parse("apiVersion: lb.dev/v1alpha1\nkind: AccessControlList\nmetadata: {name: open}\n")
                .unwrap()
                .entries
                .is_empty()
        );
    }
}
