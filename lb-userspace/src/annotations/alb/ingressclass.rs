//! IngressClass: the classes whose controller is `ingress.k8s.alibabacloud/alb`, and the
//! AlbConfig their `parameters` name.
use k8s_openapi::api::networking::v1::IngressClass;
use serde::Serialize;

use super::super::AnnotationError;
use super::albconfig::API_VERSION;
use super::values::dns_name;

/// The controller name of ALB IngressClasses.
pub const ALB_CONTROLLER: &str = "ingress.k8s.alibabacloud/alb";
const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";

/// An ALB IngressClass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlbIngressClass {
    pub name: String,
    /// The AlbConfig (cluster-scoped) whose listeners the class's Ingresses use.
    pub albconfig: String,
    /// `ingressclass.kubernetes.io/is-default-class: "true"`: Ingresses without a class.
    pub is_default: bool,
}

/// `Ok(None)` for another controller's class; errors name the field.
pub fn parse_ingress_class(class: &IngressClass) -> Result<Option<AlbIngressClass>, Vec<AnnotationError>> {
    let spec = class.spec.as_ref();
    if spec.and_then(|s| s.controller.as_deref()) != Some(ALB_CONTROLLER) {
        return Ok(None);
    }
    let mut errors = Vec::new();
    let name = class.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        errors.push(AnnotationError::new("metadata.name", "is missing"));
    }
    let is_default = match class.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS)).map(|v| v.trim()) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            errors.push(AnnotationError::new(DEFAULT_CLASS, format!("{other:?} is not one of true, false")));
            false
        }
    };
    let group = API_VERSION.split('/').next().expect("group/version");
    let mut albconfig = String::new();
    match spec.and_then(|s| s.parameters.as_ref()) {
        None => errors.push(AnnotationError::new(
            "spec.parameters",
            format!("is missing: an ALB IngressClass names its AlbConfig (apiGroup {group}, kind AlbConfig, name)"),
        )),
        Some(p) => {
            if p.api_group.as_deref() != Some(group) {
                errors.push(AnnotationError::new(
                    "spec.parameters.apiGroup",
                    format!("must be {group}, not {:?}", p.api_group.as_deref().unwrap_or("")),
                ));
            }
            if p.kind != "AlbConfig" {
                errors
                    .push(AnnotationError::new("spec.parameters.kind", format!("must be AlbConfig, not {:?}", p.kind)));
            }
            if let Some(scope) = p.scope.as_deref().filter(|s| *s != "Cluster") {
                errors.push(AnnotationError::new(
                    "spec.parameters.scope",
                    format!("must be Cluster (AlbConfig is cluster-scoped), not {scope:?}"),
                ));
            }
            if p.namespace.is_some() {
                errors.push(AnnotationError::new(
                    "spec.parameters.namespace",
                    "must be empty: AlbConfig is cluster-scoped",
                ));
            }
            match dns_name(&p.name, false) {
                Ok(_) => albconfig = p.name.clone(),
                Err(e) => errors.push(AnnotationError::new("spec.parameters.name", e)),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(AlbIngressClass { name, albconfig, is_default }))
}

/// The class of an Ingress: its `ingressClassName`, or the single default ALB class when
/// it names none. `None`: not an ALB Ingress.
pub fn class_of<'a>(class_name: Option<&str>, classes: &'a [AlbIngressClass]) -> Option<&'a AlbIngressClass> {
    match class_name {
        Some(n) => classes.iter().find(|c| c.name == n),
        None => {
            let mut defaults = classes.iter().filter(|c| c.is_default);
            match (defaults.next(), defaults.next()) {
                (Some(c), None) => Some(c),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(yaml: &str) -> IngressClass {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const REF: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: alb\nspec:\n  controller: ingress.k8s.alibabacloud/alb\n  parameters:\n    apiGroup: alibabacloud.com\n    kind: AlbConfig\n    name: ackone-gateway-demo\n";

    #[test]
    fn reference_ingress_class() {
        let c = parse_ingress_class(&class(REF)).unwrap().unwrap();
        assert_eq!(
            c,
            AlbIngressClass { name: "alb".into(), albconfig: "ackone-gateway-demo".into(), is_default: false }
        );
        let classes = [c];
        assert_eq!(class_of(Some("alb"), &classes).map(|c| c.albconfig.as_str()), Some("ackone-gateway-demo"));
        assert_eq!(class_of(Some("nginx"), &classes), None);
        assert_eq!(class_of(None, &classes), None);
    }

    #[test]
    fn other_controllers_are_not_ours() {
        assert_eq!(
            parse_ingress_class(&class(&REF.replace("ingress.k8s.alibabacloud/alb", "k8s.io/ingress-nginx"))),
            Ok(None)
        );
    }

    #[test]
    fn parameters_are_checked() {
        let e = parse_ingress_class(&class(
            &REF.replace("alibabacloud.com", "example.com").replace("kind: AlbConfig", "kind: ConfigMap"),
        ))
        .unwrap_err();
        assert_eq!(
            e.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "spec.parameters.apiGroup: must be alibabacloud.com, not \"example.com\"",
                "spec.parameters.kind: must be AlbConfig, not \"ConfigMap\"",
            ]
        );
        let no_params = REF.split("  parameters:").next().unwrap();
        assert_eq!(parse_ingress_class(&class(no_params)).unwrap_err()[0].annotation, "spec.parameters");
        let ns = REF.replace("    name: ackone", "    scope: Namespace\n    namespace: x\n    name: ackone");
        assert_eq!(parse_ingress_class(&class(&ns)).unwrap_err().len(), 2);
    }

    #[test]
    fn default_class() {
        let d = REF.replace(
            "  name: alb\n",
            "  name: alb\n  annotations:\n    ingressclass.kubernetes.io/is-default-class: \"true\"\n",
        );
        let c = parse_ingress_class(&class(&d)).unwrap().unwrap();
        assert!(c.is_default);
        let classes = [c.clone()];
        assert_eq!(class_of(None, &classes), Some(&c));
        let two = [c.clone(), AlbIngressClass { name: "alb2".into(), ..c }];
        assert_eq!(class_of(None, &two), None);
        let bad = d.replace("\"true\"", "\"yes\"");
        assert!(parse_ingress_class(&class(&bad)).is_err());
    }
}
