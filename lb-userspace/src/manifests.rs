//! The manifest-directory source: every YAML/JSON document under a directory, parsed into
//! the Kubernetes objects the agent understands.
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use crate::model::objects::{ManifestError, ObjectSet};

/// Read every `*.yaml`, `*.yml` and `*.json` file under `dir` (recursively, in name order).
pub fn load_dir(dir: &Path) -> std::io::Result<ObjectSet> {
    let mut set = ObjectSet::default();
    for file in manifest_files(dir)? {
        let text = fs::read_to_string(&file)?;
        load_text(&file, &text, &mut set);
    }
    Ok(set)
}

/// The manifest files under `dir`, sorted.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// A watched manifest directory. A file that stops parsing keeps contributing the objects
/// of its last good version, so a bad edit never takes down what already serves.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    last_good: std::collections::HashMap<PathBuf, ObjectSet>,
    fingerprint: Option<Vec<(PathBuf, u64, std::time::SystemTime)>>,
    /// Files that did not parse at the last read (read again at every change).
    failed: std::collections::HashSet<PathBuf>,
}

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>) -> DirSource {
        DirSource { dir: dir.into(), last_good: Default::default(), fingerprint: None, failed: Default::default() }
    }

    /// The objects, if anything in the directory changed since the last call.
    pub fn poll(&mut self) -> std::io::Result<Option<ObjectSet>> {
        let files = manifest_files(&self.dir)?;
        let mut fingerprint = Vec::with_capacity(files.len());
        for f in &files {
            let meta = fs::metadata(f)?;
            fingerprint.push((f.clone(), meta.len(), meta.modified()?));
        }
        if self.fingerprint.as_ref() == Some(&fingerprint) {
            return Ok(None);
        }
        // A file of the same length and modification time as at the last read, which parsed
        // then, gives the objects it gave then without being read again: one changed file out
        // of thousands costs its own parse only.
        let unchanged: std::collections::HashSet<PathBuf> = match &self.fingerprint {
            Some(old) => {
                let old: std::collections::HashSet<_> = old.iter().collect();
                fingerprint
                    .iter()
                    .filter(|e| old.contains(e) && !self.failed.contains(&e.0))
                    .map(|e| e.0.clone())
                    .collect()
            }
            None => Default::default(),
        };
        self.fingerprint = Some(fingerprint);
        let mut out = ObjectSet::default();
        let mut last_good = std::collections::HashMap::new();
        let mut failed = std::collections::HashSet::new();
        for file in files {
            let good = match self.last_good.remove(&file) {
                Some(prev) if unchanged.contains(&file) => prev,
                prev => {
                    let text = fs::read_to_string(&file)?;
                    let mut one = ObjectSet::default();
                    load_text(&file, &text, &mut one);
                    out.errors.append(&mut one.errors);
                    if out.errors.iter().any(|e| e.file == file) {
                        failed.insert(file.clone());
                        match prev {
                            Some(prev) => {
                                tracing::warn!(file = %file.display(), "keeping the last good version of this file");
                                prev
                            }
                            None => one,
                        }
                    } else {
                        one
                    }
                }
            };
            out.services.extend(good.services.iter().cloned());
            out.endpoint_slices.extend(good.endpoint_slices.iter().cloned());
            out.acls.extend(good.acls.iter().cloned());
            out.ingresses.extend(good.ingresses.iter().cloned());
            out.ingress_classes.extend(good.ingress_classes.iter().cloned());
            out.alb_configs.extend(good.alb_configs.iter().cloned());
            out.secrets.extend(good.secrets.iter().cloned());
            out.nodes.extend(good.nodes.iter().cloned());
            out.ignored.extend(good.ignored.iter().cloned());
            last_good.insert(file, good);
        }
        self.last_good = last_good;
        self.failed = failed;
        Ok(Some(out))
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        // Skip hidden entries, e.g. the `..data` links of a mounted ConfigMap.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        // The entry's type comes with the listing: only a symlink (a ConfigMap mount's) costs
        // a stat to know whether it leads to a directory.
        let file_type = entry.file_type()?;
        let is_dir = if file_type.is_symlink() { path.is_dir() } else { file_type.is_dir() };
        if is_dir {
            collect_files(&path, out)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parse every document of one file's text into `set`.
pub fn load_text(file: &Path, text: &str, set: &mut ObjectSet) {
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let err = |reason: String| ManifestError { file: file.to_path_buf(), document, reason };
        let value = match serde_yaml_ng::Value::deserialize(doc) {
            Ok(serde_yaml_ng::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                set.errors.push(err(format!("not valid YAML: {e}")));
                // The rest of a file after a syntax error cannot be trusted.
                break;
            }
        };
        if let Err(reason) = add_object(value, set) {
            set.errors.push(err(reason));
        }
    }
}

fn add_object(value: serde_yaml_ng::Value, set: &mut ObjectSet) -> Result<(), String> {
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
    let api_version = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default().to_string();
    if kind.is_empty() {
        return Err("no `kind`".into());
    }
    match (kind.as_str(), api_version.as_str()) {
        ("List", _) => {
            let items = value.get("items").and_then(|i| i.as_sequence()).cloned().unwrap_or_default();
            for item in items {
                add_object(item, set)?;
            }
            Ok(())
        }
        ("Service", "v1") => {
            set.services.push(std::sync::Arc::new(typed(value, &kind)?));
            Ok(())
        }
        ("EndpointSlice", "discovery.k8s.io/v1") => {
            set.endpoint_slices.push(std::sync::Arc::new(typed(value, &kind)?));
            Ok(())
        }
        (crate::model::acl::KIND, crate::model::acl::API_VERSION) => {
            set.acls.push(typed(value, &kind)?);
            Ok(())
        }
        ("Ingress", "networking.k8s.io/v1") => {
            set.ingresses.push(typed(value, &kind)?);
            Ok(())
        }
        ("IngressClass", "networking.k8s.io/v1") => {
            set.ingress_classes.push(typed(value, &kind)?);
            Ok(())
        }
        ("Secret", "v1") => {
            let secret: k8s_openapi::api::core::v1::Secret = typed(value, &kind)?;
            if secret.type_.as_deref() == Some("kubernetes.io/tls") {
                set.secrets.push(secret);
            } else {
                set.ignored.push(format!("{api_version}/{kind} (not kubernetes.io/tls)"));
            }
            Ok(())
        }
        ("Node", "v1") => {
            set.nodes.push(typed(value, &kind)?);
            Ok(())
        }
        ("AlbConfig", "alibabacloud.com/v1") => {
            set.alb_configs.push(typed(value, &kind)?);
            Ok(())
        }
        _ => {
            set.ignored.push(format!("{api_version}/{kind}"));
            Ok(())
        }
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml_ng::Value, kind: &str) -> Result<T, String> {
    serde_yaml_ng::from_value(value).map_err(|e| format!("invalid {kind}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_files_and_errors_per_document() {
        let text = r#"
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {type: LoadBalancer, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {ports: "not a list"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
---
kind: Service
apiVersion: v1
metadata: {name: d}
"#;
        let mut set = ObjectSet::default();
        load_text(Path::new("x.yaml"), text, &mut set);
        assert_eq!(set.services.len(), 2);
        assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
        assert_eq!(set.errors[0].document, 2);
        assert!(set.errors[0].to_string().contains("invalid Service"), "{}", set.errors[0]);
        assert_eq!(set.ignored, vec!["v1/ConfigMap".to_string()]);
    }

    #[test]
    fn only_changed_files_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: LoadBalancer}}\n")
        };
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        fs::write(&a, svc("a1")).unwrap();
        fs::write(&b, svc("b1")).unwrap();
        let mut src = DirSource::new(dir.path());
        assert_eq!(src.poll().unwrap().unwrap().services.len(), 2);
        // a.yaml's text changes, its length and modification time do not: it is not read
        // again when b.yaml changes (as a directory poll cannot see such a change at all).
        let when = fs::metadata(&a).unwrap().modified().unwrap();
        fs::write(&a, svc("a2")).unwrap();
        fs::File::options().write(true).open(&a).unwrap().set_modified(when).unwrap();
        fs::write(&b, svc("b22")).unwrap();
        let names: Vec<String> =
            src.poll().unwrap().unwrap().services.iter().map(|s| s.metadata.name.clone().unwrap_or_default()).collect();
        assert_eq!(names, ["a1", "b22"]);
    }

    #[test]
    fn a_file_that_breaks_keeps_its_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.yaml");
        let good = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer}\n";
        fs::write(&file, good).unwrap();
        let mut src = DirSource::new(dir.path());
        assert_eq!(src.poll().unwrap().unwrap().services.len(), 1);
        assert!(src.poll().unwrap().is_none(), "unchanged directory");
        fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: [broken\n").unwrap();
        let set = src.poll().unwrap().unwrap();
        assert_eq!(set.errors.len(), 1);
        assert_eq!(set.services.len(), 1, "last good version still served");
        fs::remove_file(&file).unwrap();
        assert!(src.poll().unwrap().unwrap().services.is_empty(), "a deleted file is gone");
    }

    #[test]
    fn broken_yaml_is_an_error_not_a_panic() {
        let mut set = ObjectSet::default();
        load_text(Path::new("bad.yaml"), "kind: [unclosed\n  - x: :", &mut set);
        assert_eq!(set.errors.len(), 1);
        assert!(set.services.is_empty());
    }
}
