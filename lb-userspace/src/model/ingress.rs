//! ALB Ingresses, IngressClasses and AlbConfigs → validated L7 routing (turned into L7
//! listeners by [`super::l7`]).
use super::objects::ObjectSet;
use super::{Build, Notice, ObjectError, ObjectRef};
use crate::annotations::alb;

pub fn build(objects: &ObjectSet, out: &mut Build) {
    let err = |kind: &str, ns: &str, name: &str, field: &str, reason: &str| ObjectError {
        object: ObjectRef { kind: kind.into(), namespace: ns.into(), name: name.into() },
        field: field.into(),
        reason: reason.into(),
    };
    // Oldest first (objects read from files have no creation time: then the name decides), so
    // that of two AlbConfigs declaring one port the older keeps it.
    let mut configs: Vec<&serde_json::Value> = objects.alb_configs.iter().collect();
    configs.sort_by_key(|v| {
        let created = v["metadata"]["creationTimestamp"].as_str();
        (created.is_none(), created.map(str::to_string), v["metadata"]["name"].as_str().map(str::to_string))
    });
    let mut ports: std::collections::HashMap<u16, String> = std::collections::HashMap::new();
    for value in configs {
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
        match alb::parse_albconfig(value) {
            Ok(mut cfg) => {
                for n in &cfg.not_applicable {
                    out.notices.push(Notice {
                        object: ObjectRef::default_for("AlbConfig", &name),
                        field: n.annotation.clone(),
                        note: n.reason.clone(),
                    });
                }
                // Every AlbConfig listens on this node's addresses: a port is one listener.
                let mut index = 0;
                cfg.listeners.retain(|l| {
                    index += 1;
                    let owner = ports.entry(l.port).or_insert_with(|| name.clone());
                    if *owner == name {
                        return true;
                    }
                    out.errors.push(err(
                        "AlbConfig",
                        "",
                        &name,
                        &format!("spec.listeners[{}].port", index - 1),
                        &format!(
                            "port {} is already a listener of AlbConfig {owner:?} (every AlbConfig listens on this node's addresses): this listener is not served",
                            l.port
                        ),
                    ));
                    false
                });
                out.model.alb_configs.insert(name, cfg);
            }
            Err(errors) => {
                out.errors.extend(errors.iter().map(|e| err("AlbConfig", "", &name, &e.annotation, &e.reason)))
            }
        }
    }
    let mut classes = Vec::new();
    for c in &objects.ingress_classes {
        let name = c.metadata.name.clone().unwrap_or_default();
        match alb::parse_ingress_class(c) {
            Ok(Some(class)) => classes.push(class),
            Ok(None) => {}
            Err(errors) => {
                out.errors.extend(errors.iter().map(|e| err("IngressClass", "", &name, &e.annotation, &e.reason)))
            }
        }
    }
    let mut parsed = Vec::new();
    for ing in &objects.ingresses {
        let class_name = ing.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
        let Some(class) = alb::class_of(class_name, &classes) else { continue };
        let p = alb::parse_ingress(ing);
        let mut errors: Vec<_> = p.errors.clone();
        match out.model.alb_configs.get(&class.albconfig) {
            Some(cfg) => errors.extend(alb::check_against_albconfig(&p, cfg)),
            // Its listeners are the AlbConfig's ("ALB does not support creating listeners
            // directly through an Ingress"): without it the Ingress was served on any port
            // `listen-ports` named.
            None => errors.push(crate::annotations::AnnotationError::new(
                "spec.ingressClassName",
                format!(
                    "IngressClass {:?} names AlbConfig {:?}, which does not exist or was rejected: the Ingress is served on that AlbConfig's listeners",
                    class.name, class.albconfig
                ),
            )),
        }
        if !errors.is_empty() {
            out.errors.extend(errors.iter().map(|e| err("Ingress", &p.namespace, &p.name, &e.annotation, &e.reason)));
            continue;
        }
        parsed.push(p);
    }
    // Of two Ingresses with one `order` on a listener the newer is in error (objects read
    // from files have no creation time: then namespace and name decide).
    let created: std::collections::HashMap<(&str, &str), _> = objects
        .ingresses
        .iter()
        .map(|i| {
            let m = &i.metadata;
            let key = (m.namespace.as_deref().unwrap_or("default"), m.name.as_deref().unwrap_or_default());
            (key, m.creation_timestamp.as_ref().map(|t| t.0))
        })
        .collect();
    let conflicts = alb::order_conflicts(&parsed, |p| {
        let t = created.get(&(p.namespace.as_str(), p.name.as_str())).copied().flatten();
        (t.is_none(), t, p.namespace.clone(), p.name.clone())
    });
    for p in parsed {
        let key = format!("{}/{}", p.namespace, p.name);
        let object = ObjectRef { kind: "Ingress".into(), namespace: p.namespace.clone(), name: p.name.clone() };
        if let Some((_, e)) = conflicts.iter().find(|(k, _)| *k == key) {
            out.errors.push(ObjectError { object, field: e.annotation.clone(), reason: e.reason.clone() });
            continue;
        }
        for n in &p.not_applicable {
            out.notices.push(Notice { object: object.clone(), field: n.annotation.clone(), note: n.reason.clone() });
        }
        out.model.ingresses.insert(key, p);
    }
}
