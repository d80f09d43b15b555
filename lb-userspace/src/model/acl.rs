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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AclObject {
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    pub spec: AclSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AclSpec {
    #[serde(default)]
    pub entries: Vec<AclEntry>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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

    /// A whitelisted Service, its ACL and its endpoints (`ENDPOINT` and `CIDR` replaced).
    const ACL_SERVICE: &str = "apiVersion: lb.dev/v1alpha1\nkind: AccessControlList\nmetadata: {name: office}\nspec:\n  entries:\n  - {cidr: 198.18.0.0/24}\n  - {cidr: CIDR}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-acl-status: \"on\"\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-acl-id: office\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-acl-type: white\nspec: {type: LoadBalancer, loadBalancerIP: 198.18.100.10, ports: [{name: http, port: 80}]}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [ENDPOINT]}]\n";

    fn objects(cidr: &str, endpoint: &str) -> manifests::ObjectSet {
        let mut set = manifests::ObjectSet::default();
        let yaml = ACL_SERVICE.replace("CIDR", cidr).replace("ENDPOINT", endpoint);
        manifests::load_text(Path::new("t.yaml"), &yaml, &mut set);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        set
    }

    /// Issue #15, item 4 (ACL last-good): an AccessControlList that stops validating keeps
    /// the prefixes it last had (a whitelist must not close, a blacklist must not open), with
    /// an error naming the object, the field and the reason; the Services naming it keep
    /// updating.
    #[test]
    fn an_invalid_acl_keeps_its_last_good_prefixes() {
        use crate::model::{BuildCache, BuildOptions, Model, build_next};
        // One cache through the builds, as `lb run` keeps: an ACL's change reaches its Services.
        let mut cache = BuildCache::default();
        let opts = BuildOptions::default();
        let first = build_next(&objects("198.18.9.0/24", "198.18.11.2"), &opts, &Model::default(), &mut cache);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        let good = first.model.acls["office"].entries.clone();
        assert_eq!(good.len(), 2);

        // The ACL breaks and the Service's endpoint moves in the same update.
        let next = build_next(&objects("198.18.9.1/24", "198.18.12.2"), &opts, &first.model, &mut cache);
        let msgs: Vec<String> = next.errors.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 1, "only the ACL is rejected: {msgs:?}");
        assert!(
            msgs[0].starts_with("AccessControlList office: spec.entries[1].cidr: 198.18.9.1/24 has host bits set"),
            "{msgs:?}"
        );
        assert!(msgs[0].contains("last good"), "the error says what still applies: {msgs:?}");
        assert_eq!(next.model.acls["office"].entries, good, "the last good prefixes stay loaded");
        let l = &next.model.listeners["198.18.100.10:80/tcp"];
        assert_eq!(l.backends[0].addr.to_string(), "198.18.12.2", "the Service naming the ACL still updates");
        assert_eq!(l.acl.as_ref().map(|a| a.acl.as_str()), Some("office"));

        // Still broken one update later: still the same prefixes (the applied model carries them).
        let again = build_next(&objects("198.18.9.1/24", "198.18.12.2"), &opts, &next.model, &mut cache);
        assert_eq!(again.model.acls["office"].entries, good);
        // The API source could not even decode it: the same.
        let mut undecodable = objects("198.18.9.0/24", "198.18.12.2");
        undecodable.acls.clear();
        undecodable.undecodable.push(crate::model::ObjectRef::default_for(super::KIND, "office"));
        let kept = build_next(&undecodable, &opts, &next.model, &mut cache);
        assert_eq!(kept.model.acls["office"].entries, good);
        assert!(kept.errors.is_empty() && kept.model.listeners.contains_key("198.18.100.10:80/tcp"), "{kept:?}");
        // Fixed: the new prefixes.
        let fixed = build_next(&objects("198.18.8.0/24", "198.18.12.2"), &opts, &again.model, &mut cache);
        assert!(fixed.errors.is_empty(), "{:?}", fixed.errors);
        assert_eq!(fixed.model.acls["office"].entries[1].to_string(), "198.18.8.0/24");
        // Never valid: nothing to keep, and the Service naming it is rejected (as before).
        let never = build_next(&objects("198.18.9.1/24", "198.18.12.2"), &opts, &Model::default(), &mut cache);
        assert!(never.model.acls.is_empty() && never.model.listeners.is_empty(), "{:?}", never.model);
        assert_eq!(never.errors.len(), 2, "{:?}", never.errors);
    }

    /// A restarted agent (its cache restored from the last good objects the agent before it
    /// kept) serves an ACL invalid now with its last good prefixes, and a Service rejected
    /// now from its last good version on the current endpoints; the objects kept change only
    /// when a Service does.
    #[test]
    fn a_restarted_agent_serves_the_last_good_versions_of_before() {
        use crate::model::{BuildCache, BuildOptions, Model, build_next};
        let opts = BuildOptions::default();
        let mut before = BuildCache::default();
        let good = objects("198.18.9.0/24", "198.18.11.2");
        let first = build_next(&good, &opts, &Model::default(), &mut before);
        let kept = before.good_services_changed().expect("the first build's Services");
        assert_eq!(kept.len(), 1);
        build_next(&good, &opts, &first.model, &mut before);
        assert!(before.good_services_changed().is_none(), "nothing changed");
        // The status writer's patch: a new object, the same Service as built.
        let mut patched = good.clone();
        let mut svc = (*patched.services[0]).clone();
        svc.status = Some(
            serde_json::from_value(serde_json::json!({"loadBalancer": {"ingress": [{"ip": "198.18.100.10"}]}}))
                .unwrap(),
        );
        svc.metadata.resource_version = Some("7".into());
        patched.services[0] = std::sync::Arc::new(svc);
        build_next(&patched, &opts, &first.model, &mut before);
        assert!(before.good_services_changed().is_none(), "a status patch is no change of the last good set");
        // Through JSON, as the state file keeps them.
        let services = serde_json::from_value(serde_json::to_value(&kept).unwrap()).unwrap();
        let acls: Vec<crate::model::Acl> = first.model.acls.values().cloned().collect();

        // While it was down: the ACL broke, the Service got an invalid scheduler, its pod moved.
        let mut broken = objects("198.18.9.1/24", "198.18.12.2");
        let mut svc = (*broken.services[0]).clone();
        let scheduler = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler";
        svc.metadata.annotations.as_mut().unwrap().insert(scheduler.into(), "fastest".into());
        broken.services[0] = std::sync::Arc::new(svc);
        let mut after = BuildCache::default();
        after.restore(services, acls);
        let restarted = build_next(&broken, &opts, &Model::default(), &mut after);
        assert_eq!(restarted.errors.len(), 2, "both still rejected: {:?}", restarted.errors);
        assert_eq!(restarted.model.acls["office"], first.model.acls["office"], "the last good prefixes");
        let l = &restarted.model.listeners["198.18.100.10:80/tcp"];
        assert_eq!(l.backends[0].addr.to_string(), "198.18.12.2", "the last good Service on the current endpoints");
        assert!(after.good_services_changed().is_some(), "the restored objects are kept again");

        // Without them, as before: both dark.
        let fresh = build_next(&broken, &opts, &Model::default(), &mut BuildCache::default());
        assert!(fresh.model.acls.is_empty() && fresh.model.listeners.is_empty(), "{:?}", fresh.model);
    }

    /// The source could not list the AccessControlLists yet (API errors past the sync
    /// timeout): every last good list stays in force and the Services naming them serve;
    /// once listed, a list that is gone goes.
    #[test]
    fn acls_not_listed_yet_keep_their_last_good_prefixes() {
        use crate::model::{BuildCache, BuildOptions, Model, build_next};
        let opts = BuildOptions::default();
        let mut cache = BuildCache::default();
        let first = build_next(&objects("198.18.9.0/24", "198.18.11.2"), &opts, &Model::default(), &mut cache);
        let mut unlisted = objects("198.18.9.0/24", "198.18.12.2");
        unlisted.acls.clear();
        unlisted.acls_unlisted = true;
        let next = build_next(&unlisted, &opts, &first.model, &mut cache);
        assert!(next.errors.is_empty(), "{:?}", next.errors);
        assert_eq!(next.model.acls["office"], first.model.acls["office"]);
        let l = &next.model.listeners["198.18.100.10:80/tcp"];
        assert_eq!(l.backends[0].addr.to_string(), "198.18.12.2", "the Service naming it still updates");
        // Listed, and gone: the list goes, and the Service naming it is rejected.
        unlisted.acls_unlisted = false;
        let listed = build_next(&unlisted, &opts, &next.model, &mut cache);
        assert!(listed.model.acls.is_empty(), "{:?}", listed.model.acls);
        assert_eq!(listed.errors.len(), 1, "{:?}", listed.errors);
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
