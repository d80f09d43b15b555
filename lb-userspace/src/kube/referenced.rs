//! The Services ALB Ingresses route to, whatever their type (rule backends, the default
//! backend, `actions.*` forward groups, traffic mirrors): the snapshot carries them and their
//! EndpointSlices so that the L7 routes get endpoints, as from a manifest directory.
use std::collections::BTreeSet;

use k8s_openapi::api::{
    core::v1::Service,
    networking::v1::{Ingress, IngressBackend, IngressClass},
};

use crate::annotations::alb::{self, Action, Filter};

/// (namespace, name) of a Service.
pub type ServiceKey = (String, String);

/// The Services the ALB Ingresses among `ingresses` name (an Ingress of another class is
/// not served and names nothing). An Ingress whose annotations do not parse still names the
/// backends of its spec: the model may keep its last good routes.
pub fn ingress_backends(ingresses: &[Ingress], classes: &[IngressClass]) -> BTreeSet<ServiceKey> {
    let classes: Vec<_> = classes.iter().filter_map(|c| alb::parse_ingress_class(c).ok().flatten()).collect();
    let mut out = BTreeSet::new();
    for ing in ingresses {
        let spec = ing.spec.as_ref();
        if alb::class_of(spec.and_then(|s| s.ingress_class_name.as_deref()), &classes).is_none() {
            continue;
        }
        let ns = ing.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let mut add = |name: &str| {
            out.insert((ns.clone(), name.to_string()));
        };
        let backend = |b: &IngressBackend| b.service.as_ref().map(|s| s.name.clone());
        for b in spec.into_iter().flat_map(|s| {
            let rules = s.rules.iter().flatten().filter_map(|r| r.http.as_ref()).flat_map(|h| &h.paths);
            rules.map(|p| &p.backend).chain(s.default_backend.as_ref())
        }) {
            if let Some(name) = backend(b) {
                add(&name);
            }
        }
        for rule in alb::parse_ingress(ing).rules {
            if let Action::Forward { groups, .. } = &rule.action {
                groups.iter().for_each(|g| add(&g.service.name));
            }
            for f in &rule.filters {
                if let Filter::TrafficMirror(targets) = f {
                    targets.iter().for_each(|t| add(&t.name));
                }
            }
        }
    }
    out
}

/// Whether `svc` stands for an ALB server group (`lb.dev/server-group-id`): a ForwardGroup
/// `ServerGroupID` may route to it, so the snapshot carries it as a backend.
pub fn stands_for_server_group(svc: &Service) -> bool {
    svc.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(crate::annotations::lbdev::SERVER_GROUP_ID))
}

/// A Service taken only as an Ingress backend: never served as a load balancer of its own
/// (it may be another implementation's LoadBalancer Service), so the model sees it as what
/// an Ingress uses of it, a ClusterIP Service with ports and endpoints.
pub fn as_backend(svc: &Service) -> Service {
    let mut svc = svc.clone();
    if let Some(spec) = svc.spec.as_mut().filter(|s| s.type_.as_deref() == Some("LoadBalancer")) {
        spec.type_ = Some("ClusterIP".into());
    }
    svc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects<T: serde::de::DeserializeOwned>(yaml: &str) -> Vec<T> {
        serde_yaml_ng::Deserializer::from_str(yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
    }

    const CLASSES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: alb}
spec: {controller: ingress.k8s.alibabacloud/alb, parameters: {apiGroup: alibabacloud.com, kind: AlbConfig, name: alb}}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
"#;

    #[test]
    fn services_standing_for_a_server_group_are_backends() {
        let svcs: Vec<Service> = objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: ecs, namespace: demo, annotations: {lb.dev/server-group-id: sgp-1}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: demo}\n",
        );
        assert!(stands_for_server_group(&svcs[0]));
        assert!(!stands_for_server_group(&svcs[1]));
    }

    #[test]
    fn every_backend_of_alb_ingresses_only() {
        let ingresses: Vec<Ingress> = objects(
            r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: demo
  annotations:
    alb.ingress.kubernetes.io/actions.split: |
      [{"type": "ForwardGroup", "ForwardConfig": {"ServerGroups": [
        {"ServiceName": "tea", "Weight": 80, "ServicePort": 80},
        {"ServiceName": "coffee", "Weight": 20, "ServicePort": 80}]}}]
spec:
  ingressClassName: alb
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /split, pathType: Prefix, backend: {service: {name: split, port: {name: use-annotation}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other, namespace: demo}
spec:
  ingressClassName: nginx
  rules:
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: not-ours, port: {number: 80}}}}
"#,
        );
        let classes: Vec<IngressClass> = objects(CLASSES);
        let got: Vec<String> =
            ingress_backends(&ingresses, &classes).into_iter().map(|(ns, n)| format!("{ns}/{n}")).collect();
        assert_eq!(got, ["demo/coffee", "demo/fallback", "demo/split", "demo/tea", "demo/web"]);
    }

    #[test]
    fn a_backend_is_never_a_load_balancer_of_its_own() {
        let svc: Vec<Service> = objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer, loadBalancerClass: other.io/lb}\n",
        );
        assert_eq!(as_backend(&svc[0]).spec.unwrap().type_.as_deref(), Some("ClusterIP"));
    }
}
