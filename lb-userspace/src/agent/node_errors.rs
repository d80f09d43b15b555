//! This node's own errors: objects its datapath or its L7 proxy could not take (a full table,
//! a port another program holds) and VIPs that are one of its addresses. They differ from
//! node to node, so every node reports its own (leader or not), apart from the errors of the
//! objects themselves, which every node finds alike and the leader reports for all.
use crate::{
    l7::ProxyError,
    model::{Model, ObjectError, addresses},
    reported::Reported,
};

#[derive(Default)]
pub struct NodeErrors {
    /// What the datapath rejected at the last apply.
    datapath: Vec<ObjectError>,
    /// The L7 listeners the proxy could not start or configure.
    l7: Vec<ProxyError>,
    logged: Reported,
}

impl NodeErrors {
    pub fn set_datapath(&mut self, errors: Vec<ObjectError>) {
        self.datapath = errors;
    }

    /// Takes the proxy's errors; whether they changed.
    pub fn set_l7(&mut self, errors: Vec<ProxyError>) -> bool {
        let changed = self.l7 != errors;
        self.l7 = errors;
        changed
    }

    /// `build`'s errors split into the objects' own and this node's (with the datapath's and
    /// the L7 proxy's, each L7 listener's error on every object it serves); this node's new
    /// ones are logged with their objects.
    pub fn split(&mut self, build: &[ObjectError], applied: &Model) -> (Vec<ObjectError>, Vec<ObjectError>) {
        let (mut node, objects): (Vec<ObjectError>, Vec<ObjectError>) =
            build.iter().cloned().partition(|e| addresses::refused_on_this_node_only(&e.reason));
        node.extend(self.datapath.iter().cloned());
        for e in &self.l7 {
            let Some(listener) = applied.l7.get(&e.listener) else { continue };
            node.extend(listener.sources.iter().map(|source| ObjectError {
                object: source.clone(),
                field: format!("L7 listener {}", e.listener),
                reason: format!("not loaded into the L7 proxy: {}", e.reason),
            }));
        }
        let changes = self.logged.update(node.iter().map(|e| (e.object.to_string(), e.to_string())));
        for (_, e) in &changes.new {
            tracing::warn!(error = %e, "not served on this node");
        }
        for object in &changes.cleared {
            tracing::info!(%object, "served on this node again");
        }
        (objects, node)
    }
}

#[cfg(test)]
mod tests {
    use super::NodeErrors;
    use crate::{
        l7::ProxyError,
        model::{self, BuildOptions, ObjectError, ObjectRef},
    };

    /// An L7 listener that could not start is an error of every object it serves, on this
    /// node; a VIP that is this node's address too; an invalid annotation is the object's.
    #[test]
    fn the_node_errors_are_told_apart_and_name_the_objects_of_each_l7_listener() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/l7-alb");
        let objects = crate::manifests::load_dir(&dir).unwrap();
        let build = model::build(&objects, &BuildOptions::default());
        let (key, listener) = build.model.l7.iter().next().expect("an ALB listener");
        let object = |kind: &str| ObjectRef { kind: kind.into(), namespace: "shop".into(), name: "web".into() };
        let error = |kind: &str, reason: &str| ObjectError {
            object: object(kind),
            field: "spec".into(),
            reason: reason.into(),
        };
        let build_errors = [
            error("Service", "10.0.0.1 is an address of this node: the datapath would take the node's own traffic"),
            error("Ingress", "no backend"),
        ];
        let mut node = NodeErrors::default();
        assert!(node.set_l7(vec![ProxyError { listener: key.clone(), reason: "binding: address in use".into() }]));
        assert!(!node.set_l7(vec![ProxyError { listener: key.clone(), reason: "binding: address in use".into() }]));
        node.set_datapath(vec![error("Service", "not loaded into the datapath: table full")]);
        let (objects, mine) = node.split(&build_errors, &build.model);
        assert_eq!(objects, [build_errors[1].clone()]);
        assert_eq!(mine[..2], [build_errors[0].clone(), error("Service", "not loaded into the datapath: table full")]);
        let l7: Vec<&ObjectError> = mine[2..].iter().collect();
        assert_eq!(l7.len(), listener.sources.len(), "{mine:?}");
        for (e, source) in l7.iter().zip(&listener.sources) {
            assert_eq!(e.object, *source);
            assert_eq!(e.field, format!("L7 listener {key}"));
            assert_eq!(e.reason, "not loaded into the L7 proxy: binding: address in use");
        }
    }
}
