//! Backend families: `backend-type` (eni: endpoints, ecs: nodes), `backend-label` (node
//! label filter) and `remove-unscheduled-backend`.
use serde::Serialize;

use super::{
    Cx,
    keys::Key,
    values::{choice, list, on_off, quote},
};

/// `service.beta.kubernetes.io/backend-type`; the reference's default depends on the
/// cluster's network plugin, so `None` when unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendType {
    /// Pod addresses (the endpoints) are the backends.
    Eni,
    /// Nodes are the backends.
    Ecs,
}

/// One `backend-label` requirement: the node must carry `key=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeLabel {
    pub key: String,
    pub value: String,
}

/// Which endpoints become backends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BackendOptions {
    pub backend_type: Option<BackendType>,
    /// `backend-label`: every label must match (AND); empty = every node.
    pub node_labels: Vec<NodeLabel>,
    /// `remove-unscheduled-backend` (default off): leave out cordoned nodes.
    pub remove_unscheduled: bool,
}

pub(super) fn options(cx: &mut Cx) -> BackendOptions {
    let backend_type =
        cx.value(Key::BackendType, |v| choice(v, &[("eni", BackendType::Eni), ("ecs", BackendType::Ecs)]));
    let node_labels = cx.value(Key::BackendLabel, node_labels).unwrap_or_default();
    if backend_type == Some(BackendType::Eni) && cx.has(Key::BackendLabel) {
        cx.cross_note(
            Key::BackendLabel,
            &[Key::BackendType],
            "has no effect: it is effective only with backend-type ecs, not eni",
        );
    }
    BackendOptions {
        backend_type,
        node_labels,
        remove_unscheduled: cx.value(Key::RemoveUnscheduledBackend, on_off).unwrap_or(false),
    }
}

/// `k=v,k2=v2` with Kubernetes label syntax.
fn node_labels(v: &str) -> Result<Vec<NodeLabel>, String> {
    let mut out: Vec<NodeLabel> = Vec::new();
    for item in list(v)? {
        let (key, value) = item.split_once('=').ok_or_else(|| format!("{} is not key=value", quote(item)))?;
        label_key(key).map_err(|e| format!("in {}: {e}", quote(item)))?;
        if !(value.is_empty() || label_name(value)) {
            return Err(format!(
                "in {}: value {} is not a label value (0..=63 letters, digits, '-', '_', '.', alphanumeric at both ends)",
                quote(item),
                quote(value)
            ));
        }
        if out.iter().any(|l| l.key == key) {
            return Err(format!("label {key} is listed twice"));
        }
        out.push(NodeLabel { key: key.to_owned(), value: value.to_owned() });
    }
    Ok(out)
}

/// `[prefix/]name`: prefix a lower-case DNS subdomain, name as [`label_name`].
fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(format!("key prefix {} is not a lower-case DNS subdomain", quote(p)));
        }
    }
    if !label_name(name) {
        return Err(format!(
            "key {} is not a label name (1..=63 letters, digits, '-', '_', '.', alphanumeric at both ends)",
            quote(name)
        ));
    }
    Ok(())
}

fn label_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_one_error, assert_one_note, run, tcp};
    use super::*;

    #[test]
    fn defaults_when_absent() {
        assert_eq!(run(&[], &[tcp(80)]).config.backends, BackendOptions::default());
    }

    #[test]
    fn backend_type_values() {
        let p = run(&[("backend-type", "eni")], &[tcp(80)]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.config.backends.backend_type, Some(BackendType::Eni));
        assert_eq!(run(&[("backend-type", "ecs")], &[tcp(80)]).config.backends.backend_type, Some(BackendType::Ecs));
        assert_one_error(&[("backend-type", "pod")], &[tcp(80)], "backend-type", "\"pod\" is not one of eni, ecs");
    }

    #[test]
    fn backend_label_parses_node_labels() {
        let p = run(
            &[("backend-label", "failure-domain.beta.kubernetes.io/zone=ap-southeast-5a, pool=edge,empty=")],
            &[tcp(80)],
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let got: Vec<(&str, &str)> =
            p.config.backends.node_labels.iter().map(|l| (l.key.as_str(), l.value.as_str())).collect();
        assert_eq!(
            got,
            vec![("failure-domain.beta.kubernetes.io/zone", "ap-southeast-5a"), ("pool", "edge"), ("empty", "")]
        );
        for (v, reason) in [
            ("zone", "\"zone\" is not key=value"),
            (
                "-zone=a",
                "in \"-zone=a\": key \"-zone\" is not a label name (1..=63 letters, digits, '-', '_', '.', alphanumeric at both ends)",
            ),
            ("Ex.com/zone=a", "in \"Ex.com/zone=a\": key prefix \"Ex.com\" is not a lower-case DNS subdomain"),
            (
                "zone=a b",
                "in \"zone=a b\": value \"a b\" is not a label value (0..=63 letters, digits, '-', '_', '.', alphanumeric at both ends)",
            ),
            ("a=1,a=2", "label a is listed twice"),
        ] {
            assert_one_error(&[("backend-label", v)], &[tcp(80)], "backend-label", reason);
        }
    }

    #[test]
    fn backend_label_needs_ecs_backends() {
        assert_one_note(
            &[("backend-type", "eni"), ("backend-label", "pool=edge")],
            &[tcp(80)],
            "backend-label",
            "has no effect: it is effective only with backend-type ecs, not eni",
        );
        assert!(run(&[("backend-type", "ecs"), ("backend-label", "pool=edge")], &[tcp(80)]).errors.is_empty());
    }

    #[test]
    fn remove_unscheduled_backend_on_off() {
        assert!(run(&[("remove-unscheduled-backend", "on")], &[tcp(80)]).config.backends.remove_unscheduled);
        assert!(!run(&[("remove-unscheduled-backend", "off")], &[tcp(80)]).config.backends.remove_unscheduled);
        assert_one_error(
            &[("remove-unscheduled-backend", "true")],
            &[tcp(80)],
            "remove-unscheduled-backend",
            "\"true\" is not one of on, off",
        );
    }
}
