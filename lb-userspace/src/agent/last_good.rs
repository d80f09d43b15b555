//! The last good version of every Service and AccessControlList, kept in a file of the state
//! directory (`--state-dir`) so that a restarted agent (a crash, an upgrade rolling node by
//! node) serves an object rejected at its first build as the agent before it did, instead of
//! taking it off the node. Written by a thread of its own whenever that set changes.
use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
    thread::JoinHandle,
};

use k8s_openapi::api::core::v1::Service;
use serde::{Deserialize, Serialize};

use crate::model::{Acl, BuildCache};

/// The file, in the state directory.
pub const FILE: &str = "last-good.json";
/// Its format; a file of another one is left unread (and replaced at the first write).
const VERSION: u32 = 1;

#[derive(Deserialize)]
struct Stored {
    version: u32,
    services: Vec<Service>,
    acls: Vec<Acl>,
}

#[derive(Serialize)]
struct ToStore<'a> {
    version: u32,
    services: Vec<&'a Service>,
    acls: Vec<&'a Acl>,
}

/// What is written: shared objects, serialized by the writer thread.
struct Snapshot {
    services: Vec<Arc<Service>>,
    acls: Vec<Acl>,
}

/// The state file and its writer.
pub struct LastGood {
    services: Vec<Arc<Service>>,
    acls: BTreeMap<String, Acl>,
    tx: Option<mpsc::Sender<Snapshot>>,
    writer: Option<JoinHandle<()>>,
}

impl LastGood {
    /// Read `dir`'s file into `cache` ([`BuildCache::restore`]) and start its writer.
    pub fn open(dir: &Path, cache: &mut BuildCache) -> LastGood {
        let path = dir.join(FILE);
        match read(&path) {
            Ok(Some(stored)) => {
                tracing::info!(
                    file = %path.display(),
                    services = stored.services.len(),
                    acls = stored.acls.len(),
                    "last good objects of the previous run restored: an object invalid now serves its last good version"
                );
                cache.restore(stored.services, stored.acls);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "last good objects not restored"),
        }
        let (tx, rx) = mpsc::channel();
        let dir = dir.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("lb-last-good".into())
            .spawn(move || write_each(&dir, rx))
            .map_err(|e| tracing::warn!(error = %e, "last good objects will not be kept across restarts"))
            .ok();
        LastGood { services: Vec::new(), acls: BTreeMap::new(), tx: writer.is_some().then_some(tx), writer }
    }

    /// After a build: write the file again if the last good Services (from `cache`) or the
    /// ACLs served (`acls`) changed.
    pub fn update(&mut self, cache: &mut BuildCache, acls: &BTreeMap<String, Acl>) {
        let services = cache.good_services_changed();
        let acls_changed = *acls != self.acls;
        if services.is_none() && !acls_changed {
            return;
        }
        if let Some(services) = services {
            self.services = services;
        }
        if acls_changed {
            self.acls = acls.clone();
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(Snapshot { services: self.services.clone(), acls: self.acls.values().cloned().collect() });
        }
    }
}

impl Drop for LastGood {
    /// Finish the last write.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The stored objects; `None` when there is no file.
fn read(path: &Path) -> Result<Option<Stored>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let v: Version = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if v.version != VERSION {
        return Err(format!("format {} (this lb reads {VERSION})", v.version));
    }
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    debug_assert_eq!(stored.version, VERSION);
    Ok(Some(stored))
}

/// Write each snapshot (the latest of those waiting) until the agent closes the channel.
fn write_each(dir: &Path, rx: mpsc::Receiver<Snapshot>) {
    let mut failing = false;
    while let Ok(mut snapshot) = rx.recv() {
        while let Ok(later) = rx.try_recv() {
            snapshot = later;
        }
        match write(dir, &snapshot) {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(dir = %dir.display(), "last good objects written again");
            }
            Ok(()) => {}
            // Once until it works again: the next change tries again.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(dir = %dir.display(), error = %e, "last good objects not written: a restart will not have them");
            }
            Err(_) => {}
        }
    }
}

/// The file replaced at once (a crash leaves the old one or the new one).
fn write(dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp: PathBuf = dir.join(format!(".{FILE}.tmp"));
    let stored = ToStore {
        version: VERSION,
        services: snapshot.services.iter().map(|s| &**s).collect(),
        acls: snapshot.acls.iter().collect(),
    };
    let file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    let mut file = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut file, &stored)?;
    file.flush()?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&tmp, dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(name: &str, cidr: &str) -> Acl {
        Acl {
            source: crate::model::ObjectRef {
                kind: "AccessControlList".into(),
                namespace: String::new(),
                name: name.into(),
            },
            entries: vec![cidr.parse().unwrap()],
        }
    }

    #[test]
    fn what_is_written_is_read_back_and_another_format_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"a": "b"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
        }))
        .unwrap();
        let snapshot = Snapshot { services: vec![Arc::new(svc.clone())], acls: vec![acl("office", "198.18.0.0/24")] };
        write(dir.path(), &snapshot).unwrap();
        let stored = read(&dir.path().join(FILE)).unwrap().unwrap();
        assert_eq!(stored.services, vec![svc]);
        assert_eq!(stored.acls, vec![acl("office", "198.18.0.0/24")]);
        assert!(read(&dir.path().join("none.json")).unwrap().is_none());

        fs::write(dir.path().join(FILE), r#"{"version": 2, "services": {}}"#).unwrap();
        let e = read(&dir.path().join(FILE)).err().unwrap();
        assert_eq!(e, "format 2 (this lb reads 1)");
    }
}
