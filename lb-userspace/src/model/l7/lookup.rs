//! What the L7 builders look up: Services and their ready endpoints, TLS Secrets, the ALB
//! IngressClasses and the ACLs that validated.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::jiff::Timestamp;

use super::{Certificate, Endpoint, fleet::Fleet};
use crate::annotations::{
    alb::{self, AlbIngressClass, ServicePort, ServiceRef},
    lbdev,
    secret::{covers, tls_pair},
};
use crate::model::{
    ObjectRef, Protocol,
    endpoints::{self, SliceIndex},
    objects::ObjectSet,
};

/// What the L7 builder looks things up in.
pub struct Lookup<'a> {
    /// By namespace and name.
    pub services: BTreeMap<&'a str, BTreeMap<&'a str, &'a Service>>,
    pub secrets: BTreeMap<(String, String), &'a Secret>,
    pub slices: &'a SliceIndex<'a>,
    pub classes: Vec<AlbIngressClass>,
    /// Prefixes of the validated ACLs, by name.
    pub acls: BTreeMap<String, Vec<ipnet::IpNet>>,
    /// Each Ingress's `creationTimestamp`, by (namespace, name).
    pub ingress_created: BTreeMap<(String, String), Timestamp>,
    /// The EndpointSlices of each associated cluster of a multi-cluster gateway, by cluster ID.
    pub clusters: BTreeMap<String, SliceIndex<'a>>,
    /// The cluster's Nodes (CLB `backend-type: ecs` backends).
    pub nodes: &'a [k8s_openapi::api::core::v1::Node],
}

impl<'a> Lookup<'a> {
    pub fn new(objects: &'a ObjectSet, slices: &'a SliceIndex<'a>) -> Lookup<'a> {
        let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (m.namespace.clone().unwrap_or_else(|| "default".into()), m.name.clone().unwrap_or_default())
        };
        let mut services: BTreeMap<&str, BTreeMap<&str, &Service>> = BTreeMap::new();
        for s in &objects.services {
            let (ns, name) = (s.metadata.namespace.as_deref().unwrap_or("default"), s.metadata.name.as_deref());
            services.entry(ns).or_default().insert(name.unwrap_or_default(), s);
        }
        Lookup {
            services,
            secrets: objects.secrets.iter().map(|s| (key(&s.metadata), s)).collect(),
            slices,
            classes: objects
                .ingress_classes
                .iter()
                .filter_map(|c| alb::parse_ingress_class(c).ok().flatten())
                .collect(),
            acls: BTreeMap::new(),
            ingress_created: objects
                .ingresses
                .iter()
                .filter_map(|i| Some((key(&i.metadata), i.metadata.creation_timestamp.as_ref()?.0)))
                .collect(),
            clusters: BTreeMap::new(),
            nodes: &objects.nodes,
        }
    }

    /// A TLS Secret's certificate, or why it cannot be used.
    pub fn certificate(&self, namespace: &str, name: &str, hosts: Vec<String>) -> Result<Certificate, String> {
        let secret = self.secrets.get(&(namespace.to_owned(), name.to_owned())).ok_or_else(|| {
            if is_secret_name(name) {
                format!("TLS Secret {namespace}/{name} not found")
            } else {
                // A CLB certificate ID (`1231579085529123_166f8204689_...`), as on Alibaba Cloud.
                format!(
                    "{name:?} is not the name of a Secret (lowercase letters, digits, '-' and '.'): lb serves the \
                     certificate of a kubernetes.io/tls Secret of namespace {namespace}, not a CLB certificate ID; \
                     put the certificate and its key in a Secret (kubectl create secret tls NAME --cert=... \
                     --key=...) and write its name"
                )
            }
        })?;
        let pair = tls_pair(secret, namespace, name)?;
        Ok(Certificate {
            secret: ObjectRef { kind: "Secret".into(), namespace: namespace.into(), name: name.into() },
            hosts,
            cert_pem: pair.cert_pem,
            key_pem: pair.key_pem,
        })
    }

    /// The certificates for `hosts` found among the `kubernetes.io/tls` Secrets of
    /// `namespace`: for each host the first Secret by name whose certificate covers it (the
    /// hosts one Secret covers share its certificate, which comes in the order of its first
    /// host), and the hosts none covers. `spec.tls` hosts with no `secretName`, as the ALB
    /// finds a certificate by domain in the cloud's store. Each Secret is read once, and only
    /// while a host is left.
    pub fn discover_certificates<'h>(&self, namespace: &str, hosts: &'h [String]) -> (Vec<Certificate>, Vec<&'h str>) {
        let mut left: Vec<(usize, &str)> = hosts.iter().map(String::as_str).enumerate().collect();
        let mut found: Vec<(usize, Certificate)> = Vec::new();
        let from = (namespace.to_owned(), String::new());
        let secrets = self.secrets.range(from..).take_while(|((ns, _), _)| ns == namespace);
        for ((_, name), secret) in secrets.filter(|(_, s)| s.type_.as_deref() == Some("kubernetes.io/tls")) {
            if left.is_empty() {
                break;
            }
            let Ok(pair) = tls_pair(secret, namespace, name) else { continue };
            let names: Vec<&str> = left.iter().map(|(_, h)| *h).collect();
            let covered = covers(&pair.cert_pem, &names);
            let (mine, rest): (Vec<_>, Vec<_>) = left.into_iter().zip(covered).partition(|(_, c)| *c);
            left = rest.into_iter().map(|(h, _)| h).collect();
            if let Some(((first, _), _)) = mine.first() {
                found.push((
                    *first,
                    Certificate {
                        secret: ObjectRef { kind: "Secret".into(), namespace: namespace.into(), name: name.clone() },
                        hosts: mine.iter().map(|((_, h), _)| (*h).to_owned()).collect(),
                        cert_pem: pair.cert_pem,
                        key_pem: pair.key_pem,
                    },
                ));
            }
        }
        found.sort_by_key(|(first, _)| *first);
        (found.into_iter().map(|(_, c)| c).collect(), left.into_iter().map(|(_, h)| h).collect())
    }

    /// The ready endpoints of a Service port (the port by number or name), in the families asked.
    pub fn endpoints(&self, namespace: &str, svc: &ServiceRef, ipv6: bool) -> Result<Vec<Endpoint>, String> {
        self.endpoints_in(self.slices, namespace, svc, ipv6)
    }

    /// [`Lookup::endpoints`] of a multi-cluster gateway: the Service as the fleet defines it,
    /// its endpoints from each cluster serving the gateway, split as [`Fleet::split`] says.
    pub fn fleet_endpoints(
        &self,
        fleet: &Fleet<'_>,
        namespace: &str,
        svc: &ServiceRef,
        ipv6: bool,
    ) -> Result<Vec<Endpoint>, String> {
        let empty = SliceIndex::new();
        let mut per_cluster = Vec::new();
        for &id in &fleet.clusters {
            let slices = self.clusters.get(id).unwrap_or(&empty);
            per_cluster.push((id, self.endpoints_in(slices, namespace, svc, ipv6)?));
        }
        Ok(fleet.split(&per_cluster))
    }

    fn endpoints_in(
        &self,
        slices: &SliceIndex<'_>,
        namespace: &str,
        svc: &ServiceRef,
        ipv6: bool,
    ) -> Result<Vec<Endpoint>, String> {
        let service = self
            .services
            .get(namespace)
            .and_then(|by_name| by_name.get(svc.name.as_str()))
            .ok_or_else(|| format!("Service {namespace}/{} not found", svc.name))?;
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref()).cloned().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| match &svc.port {
                ServicePort::Number(n) => p.port == i32::from(*n),
                ServicePort::Name(n) => p.name.as_deref() == Some(n.as_str()),
            })
            .ok_or_else(|| format!("Service {namespace}/{} has no port {}", svc.name, port_text(&svc.port)))?;
        let slices = super::super::endpoints::of_service(slices, namespace, &svc.name);
        let port_name = port.name.clone().unwrap_or_default();
        let mut out = Vec::new();
        let mut families = vec![IpAddr::from([0, 0, 0, 0])];
        if ipv6 {
            families.push(IpAddr::from([0u16; 8]));
        }
        for family in families {
            let backends = endpoints::backends(slices, &port_name, Protocol::Tcp, family, None)?;
            out.extend(
                backends.into_iter().map(|b| Endpoint { addr: SocketAddr::new(b.addr, b.port), weight: b.weight }),
            );
        }
        Ok(out)
    }
}

impl Lookup<'_> {
    /// The Service port a ForwardGroup `ServerGroupID` stands for: the one Service of
    /// `namespace` whose `lb.dev/server-group-id` names `id` (another namespace's Services
    /// never take an Ingress's traffic), or why there is none.
    pub fn server_group(&self, namespace: &str, id: &str) -> Result<ServiceRef, String> {
        let key = lbdev::SERVER_GROUP_ID;
        let mut found = self.services.get(namespace).into_iter().flatten().filter_map(|(name, svc)| {
            let value = svc.metadata.annotations.as_ref()?.get(key)?;
            let (named, port) = lbdev::server_group_id(value);
            (named == id).then_some((name, *svc, port))
        });
        let Some((name, svc, port)) = found.next() else {
            return Err(format!("no Service of namespace {namespace} has {key}: {id}"));
        };
        if let Some((other, _, _)) = found.next() {
            return Err(format!("Services {namespace}/{name} and {namespace}/{other} both have {key}: {id}"));
        }
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(n) => ServicePort::Number(n),
                Err(_) => ServicePort::Name(p.to_owned()),
            },
            None => match svc.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default() {
                [one] => ServicePort::Number(u16::try_from(one.port).unwrap_or_default()),
                ports => {
                    return Err(format!(
                        "Service {namespace}/{name} has {} ports: {key} must name one (`{id}:PORT`)",
                        ports.len()
                    ));
                }
            },
        };
        Ok(ServiceRef { name: name.to_string(), port })
    }
}

/// A Service port as written: its number or name.
pub fn port_text(p: &ServicePort) -> String {
    match p {
        ServicePort::Number(n) => n.to_string(),
        ServicePort::Name(n) => n.clone(),
    }
}

/// Whether `name` can name a Secret (a DNS-1123 subdomain).
fn is_secret_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label)
}
