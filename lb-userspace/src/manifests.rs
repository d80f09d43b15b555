//! The manifest-directory source: every YAML/JSON document under a directory, parsed into
//! the Kubernetes objects the agent understands.
use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use crate::model::objects::{ManifestError, ObjectSet};

mod merged;
mod watch;

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

/// A watched manifest directory. Files are read again only when they change: inotify says
/// which (a full listing, with each file's length and modification time, at the start, when
/// inotify cannot say: its queue overflowed, a directory or a ConfigMap mount's hidden links
/// changed, or inotify is unavailable; and every [`FULL_SCAN`] for changes inotify cannot see,
/// such as the target of a symlinked file). A file that stops parsing keeps contributing the
/// objects of its last good version, so a bad edit never takes down what already serves.
#[derive(Debug)]
pub struct DirSource {
    dir: PathBuf,
    files: std::collections::BTreeMap<PathBuf, FileState>,
    watch: Option<watch::DirWatch>,
    /// When the last full listing was made (`None`: never).
    scanned: Option<std::time::Instant>,
    /// Every file's objects as one set, handed out at each change.
    merged: merged::Merged,
    /// The files read again since the last poll (their place in `merged` is patched).
    touched: Vec<PathBuf>,
    /// The files whose last read had errors (read again at every change).
    failing: std::collections::BTreeSet<PathBuf>,
}

/// More files read again than this in one poll: the set is merged again from every file
/// (each patch walks the files before it).
const MERGE_AGAIN: usize = 64;

/// How often a watched directory is listed in full anyway.
pub const FULL_SCAN: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug)]
struct FileState {
    /// Length and modification time at the last read.
    fingerprint: (u64, std::time::SystemTime),
    /// The objects of the last version that parsed (boxed: a file gives one or two objects,
    /// and the set's empty kinds take ~300 bytes, in each of 10,000 entries of the file map).
    good: Box<ObjectSet>,
    /// The errors of the last read (read again at every change while there are any).
    errors: Vec<ManifestError>,
}

impl FileState {
    /// What the file gives the merged set.
    fn objects(&self) -> merged::FileObjects<'_> {
        (&*self.good, &self.errors)
    }
}

impl DirSource {
    pub fn new(dir: impl Into<PathBuf>) -> DirSource {
        let dir = dir.into();
        let watch = match watch::DirWatch::new() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no inotify: the directory is listed at every poll");
                None
            }
        };
        DirSource {
            dir,
            files: Default::default(),
            watch,
            scanned: None,
            merged: Default::default(),
            touched: Vec::new(),
            failing: Default::default(),
        }
    }

    /// Resolves when inotify has something (a change may be waiting for [`poll`](Self::poll));
    /// never without inotify.
    pub async fn changed(&mut self) {
        match &mut self.watch {
            Some(w) => w.readable().await,
            None => std::future::pending().await,
        }
    }

    /// The objects, if anything in the directory changed since the last call: the same
    /// shared set, patched where files changed (drop it before the next poll, or that poll
    /// copies it).
    pub fn poll(&mut self) -> std::io::Result<Option<std::sync::Arc<ObjectSet>>> {
        let events = self.watch.as_mut().map(watch::DirWatch::take);
        let full = match (&events, self.scanned) {
            (_, None) | (None, _) | (Some(watch::Changes::Unknown), _) => true,
            (Some(watch::Changes::Files(_)), Some(at)) => at.elapsed() >= FULL_SCAN,
        };
        let changed = if full {
            // The first listing always yields the objects (none, for an empty directory).
            // A listing that failed (the directory is not there yet) is tried again at the next
            // poll: the watch cannot say when it appears.
            let first = self.scanned.is_none();
            let changed = self.scan()?;
            self.scanned = Some(std::time::Instant::now());
            changed || first
        } else {
            let Some(watch::Changes::Files(paths)) = events else { unreachable!("a full scan otherwise") };
            let paths: Vec<PathBuf> = paths.into_iter().collect();
            for path in &paths {
                self.reread(path)?;
            }
            if !paths.is_empty() {
                self.reread_failed(&paths)?;
            }
            !paths.is_empty()
        };
        // Files read by a poll that failed half-way are merged now.
        if !changed && self.touched.is_empty() {
            return Ok(None);
        }
        if full || self.touched.len() > MERGE_AGAIN {
            self.merged.rebuild(self.files.iter().map(|(p, f)| (p, f.objects())));
        } else {
            self.touched.sort();
            self.touched.dedup();
            for path in &self.touched {
                self.merged.patch(path, self.files.get(path).map(FileState::objects));
            }
        }
        self.touched.clear();
        Ok(Some(self.merged.snapshot()))
    }

    /// List the directory: files of a new length or modification time, new files and files
    /// that did not parse are read; gone files are forgotten. Whether anything changed.
    fn scan(&mut self) -> std::io::Result<bool> {
        let mut dirs = Vec::new();
        let files = manifest_files_and_dirs(&self.dir, &mut dirs)?;
        if let Some(w) = &mut self.watch {
            for d in std::iter::once(&self.dir).chain(&dirs) {
                if let Err(e) = w.add(d) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch: its changes are seen at the next full listing");
                }
            }
        }
        let listed: std::collections::HashSet<&PathBuf> = files.iter().collect();
        let before = self.files.len();
        self.files.retain(|p, _| listed.contains(p));
        self.failing.retain(|p| listed.contains(p));
        let mut stale = Vec::new();
        for file in &files {
            let meta = fs::metadata(file)?;
            let fingerprint = (meta.len(), meta.modified()?);
            if self.files.get(file).map(|f| f.fingerprint) != Some(fingerprint) {
                stale.push(file);
            }
        }
        if stale.is_empty() && self.files.len() == before {
            return Ok(false);
        }
        for file in &stale {
            self.reread(file)?;
        }
        self.reread_failed(&stale)?;
        Ok(true)
    }

    /// Files that did not parse are read again at every change (but for `just_read`).
    fn reread_failed<P: AsRef<Path>>(&mut self, just_read: &[P]) -> std::io::Result<()> {
        let failed: Vec<PathBuf> =
            self.failing.iter().filter(|p| !just_read.iter().any(|r| r.as_ref() == p.as_path())).cloned().collect();
        for path in failed {
            self.reread(&path)?;
        }
        Ok(())
    }

    /// Read `path` again (forgotten if it is gone or no manifest file). Whether its objects
    /// or errors changed.
    fn reread(&mut self, path: &Path) -> std::io::Result<bool> {
        self.touched.push(path.to_path_buf());
        let meta = match fs::metadata(path) {
            Ok(m) if m.is_file() && is_manifest(path) => m,
            Ok(_) => return Ok(self.forget(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.forget(path)),
            Err(e) => return Err(e),
        };
        let fingerprint = (meta.len(), meta.modified()?);
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.forget(path)),
            Err(e) => return Err(e),
        };
        let mut one = ObjectSet::default();
        load_text(path, &text, &mut one);
        let errors = std::mem::take(&mut one.errors);
        let state = match self.files.remove(path) {
            Some(prev) if !errors.is_empty() => {
                tracing::warn!(file = %path.display(), "keeping the last good version of this file");
                FileState { fingerprint, good: prev.good, errors }
            }
            Some(prev) => FileState { fingerprint, good: Box::new(keep_unchanged(one, &prev.good)), errors },
            None => FileState { fingerprint, good: Box::new(one), errors },
        };
        if state.errors.is_empty() {
            self.failing.remove(path);
        } else {
            self.failing.insert(path.to_path_buf());
        }
        self.files.insert(path.to_path_buf(), state);
        Ok(true)
    }

    /// `path` is gone: whether it had given anything.
    fn forget(&mut self, path: &Path) -> bool {
        self.failing.remove(path);
        self.files.remove(path).is_some()
    }
}

/// `read` with the objects that did not change since `before` (same place in the file, equal)
/// taken from `before`: a source hands out the same shared object until it changes, so a file
/// that holds a Service and its EndpointSlice costs the build only the slice when an endpoint
/// changes.
fn keep_unchanged(mut read: ObjectSet, before: &ObjectSet) -> ObjectSet {
    fn keep<T: PartialEq>(now: &mut [std::sync::Arc<T>], before: &[std::sync::Arc<T>]) {
        for (n, b) in now.iter_mut().zip(before) {
            if **n == **b {
                *n = b.clone();
            }
        }
    }
    keep(&mut read.services, &before.services);
    keep(&mut read.endpoint_slices, &before.endpoint_slices);
    read
}

fn is_manifest(path: &Path) -> bool {
    let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
    !hidden && matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

/// The manifest files under `dir` (sorted) and the directories they are in.
fn manifest_files_and_dirs(dir: &Path, dirs: &mut Vec<PathBuf>) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    collect(dir, &mut files, &mut Some(dirs))?;
    files.sort();
    Ok(files)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    collect(dir, out, &mut None)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, dirs: &mut Option<&mut Vec<PathBuf>>) -> std::io::Result<()> {
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
            if let Some(dirs) = dirs {
                dirs.push(path.clone());
            }
            collect(&path, out, dirs)?;
        } else if is_manifest(&path) {
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

/// `value` as a `kind`; an error names the object and, for an annotation whose value is not
/// a string (`port: 80` unquoted, which the API server refuses too), the annotation.
fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml_ng::Value, kind: &str) -> Result<T, String> {
    let meta = value.get("metadata");
    let text = |field: &str| meta.and_then(|m| m.get(field)).and_then(|v| v.as_str());
    let object = match (text("namespace"), text("name")) {
        (Some(ns), Some(name)) => format!("{kind} {ns}/{name}"),
        (None, Some(name)) => format!("{kind} {name}"),
        (_, None) => kind.to_string(),
    };
    let annotations = meta.and_then(|m| m.get("annotations")).and_then(|a| a.as_mapping());
    for (key, v) in annotations.into_iter().flatten() {
        if !v.is_string() {
            let key = key.as_str().unwrap_or("?");
            let shown = serde_yaml_ng::to_string(v).unwrap_or_default();
            return Err(format!(
                "invalid {object}: metadata.annotations.{key}: the value must be a string (quote it: \"{}\")",
                shown.trim()
            ));
        }
    }
    serde_yaml_ng::from_value(value).map_err(|e| format!("invalid {object}: {e}"))
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
        assert!(set.errors[0].to_string().contains("invalid Service b: "), "{}", set.errors[0]);
        assert_eq!(set.ignored, vec!["v1/ConfigMap".to_string()]);
    }

    /// An unquoted number or boolean as an annotation value: the error names the object and
    /// the annotation (it named the file and document only).
    #[test]
    fn a_non_string_annotation_names_the_object_and_the_key() {
        let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-persistence-timeout: 1800\nspec: {type: LoadBalancer}\n";
        let mut set = ObjectSet::default();
        load_text(Path::new("x.yaml"), text, &mut set);
        let e = set.errors[0].to_string();
        assert!(
            e.contains("invalid Service shop/web: metadata.annotations.service.beta.kubernetes.io/alibaba-cloud-loadbalancer-persistence-timeout: the value must be a string (quote it: \"1800\")"),
            "{e}"
        );
    }

    /// A change reads the files that changed: the others give the objects they gave (the same
    /// objects, not parsed again). inotify names the changed files (even one rewritten with its
    /// length and modification time unchanged); without it, the listing compares those.
    #[test]
    fn only_changed_files_are_read_again() {
        for watched in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let svc = |name: &str| {
                format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: LoadBalancer}}\n")
            };
            let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
            fs::write(&a, svc("a1")).unwrap();
            fs::write(&b, svc("b1")).unwrap();
            let mut src = DirSource::new(dir.path());
            if !watched {
                src.watch = None;
            }
            let first = src.poll().unwrap().unwrap();
            assert_eq!(first.services.len(), 2);
            let when = fs::metadata(&a).unwrap().modified().unwrap();
            fs::write(&a, svc("a2")).unwrap();
            fs::File::options().write(true).open(&a).unwrap().set_modified(when).unwrap();
            fs::write(&b, svc("b22")).unwrap();
            let next = src.poll().unwrap().unwrap();
            let names: Vec<String> =
                next.services.iter().map(|s| s.metadata.name.clone().unwrap_or_default()).collect();
            if watched {
                assert_eq!(names, ["a2", "b22"], "inotify saw a.yaml written");
                fs::write(&b, svc("b3")).unwrap();
                let last = src.poll().unwrap().unwrap();
                assert!(std::sync::Arc::ptr_eq(&next.services[0], &last.services[0]), "a.yaml not read again");
            } else {
                assert_eq!(names, ["a1", "b22"], "a listing cannot see a.yaml's change");
                assert!(std::sync::Arc::ptr_eq(&first.services[0], &next.services[0]), "a.yaml not read again");
            }
            assert!(src.poll().unwrap().is_none(), "nothing new");
        }
    }

    /// A file written again with one object changed hands out the others as the same objects.
    #[test]
    fn a_rewritten_file_keeps_its_unchanged_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.yaml");
        let text = |ep: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: a}}\nspec: {{type: LoadBalancer}}\n---\n\
                 apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: a-1}}\n\
                 addressType: IPv4\nendpoints: [{{addresses: [\"{ep}\"]}}]\n"
            )
        };
        fs::write(&file, text("10.0.0.1")).unwrap();
        let mut src = DirSource::new(dir.path());
        let first = src.poll().unwrap().unwrap();
        fs::write(&file, text("10.0.0.2")).unwrap();
        let next = src.poll().unwrap().unwrap();
        assert!(std::sync::Arc::ptr_eq(&first.services[0], &next.services[0]), "the Service did not change");
        assert!(!std::sync::Arc::ptr_eq(&first.endpoint_slices[0], &next.endpoint_slices[0]));
        assert_eq!(next.endpoint_slices[0].endpoints[0].addresses.as_slice(), ["10.0.0.2"]);
    }

    /// Files added, rewritten (objects added, changed, dropped), broken and removed: after each
    /// poll the set patched in place is what merging every file again gives, and it is the
    /// same allocation (patched, not copied) when the caller dropped it.
    #[test]
    fn the_patched_set_is_what_merging_every_file_gives() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = DirSource::new(dir.path());
        assert!(src.watch.is_some(), "the patch path needs inotify");
        let doc = |kind: &str, name: String| match kind {
            "svc" => {
                format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{type: LoadBalancer}}\n")
            }
            "eps" => format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}}}\naddressType: IPv4\nendpoints: []\n"
            ),
            "cm" => format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\n"),
            _ => "apiVersion: v1\nkind: Service\nmetadata: [broken\n".to_string(),
        };
        let mut seed: u64 = 7;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        fs::write(dir.path().join("f0.yaml"), doc("svc", "s0".into())).unwrap();
        let mut last = std::sync::Arc::as_ptr(&src.poll().unwrap().unwrap());
        let mut patched = 0;
        for step in 0..60 {
            let file = dir.path().join(format!("f{}.yaml", next(6)));
            if next(5) == 0 {
                let _ = fs::remove_file(&file);
            } else {
                let text: Vec<String> = (0..next(4))
                    .map(|i| doc(["svc", "eps", "cm", "broken"][next(4) as usize], format!("o{step}-{i}")))
                    .collect();
                fs::write(&file, text.join("---\n")).unwrap();
            }
            let Some(set) = src.poll().unwrap() else { continue };
            let mut fresh = merged::Merged::default();
            fresh.rebuild(src.files.iter().map(|(p, f)| (p, f.objects())));
            assert_eq!(format!("{set:?}"), format!("{:?}", fresh.snapshot()), "step {step}");
            patched += usize::from(std::sync::Arc::as_ptr(&set) == last);
            last = std::sync::Arc::as_ptr(&set);
        }
        assert!(patched > 20, "patched in place {patched} times");
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

    /// A directory that is not there yet is listed at every poll until it is.
    #[test]
    fn a_directory_that_appears_later_is_read() {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("manifests");
        let mut src = DirSource::new(&dir);
        assert!(src.poll().is_err());
        assert!(src.poll().is_err());
        let staging = work.path().join("staging");
        fs::create_dir(&staging).unwrap();
        fs::write(
            staging.join("svc.yaml"),
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {type: LoadBalancer}\n",
        )
        .unwrap();
        fs::rename(&staging, &dir).unwrap();
        assert_eq!(src.poll().unwrap().expect("read once it is there").services.len(), 1);
        assert!(src.poll().unwrap().is_none());
    }

    #[test]
    fn broken_yaml_is_an_error_not_a_panic() {
        let mut set = ObjectSet::default();
        load_text(Path::new("bad.yaml"), "kind: [unclosed\n  - x: :", &mut set);
        assert_eq!(set.errors.len(), 1);
        assert!(set.services.is_empty());
    }
}
