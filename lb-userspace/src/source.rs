//! Where the agent's objects come from: a manifest directory (polled) or the Kubernetes
//! API (watched). Both yield [`ObjectSet`]s for the same build and apply code.
use std::{fmt, path::PathBuf, sync::Arc};

use crate::{
    kube::{KubeError, KubeOptions, KubeSource},
    manifests::{DirSource, ObjectSet},
    model::{Model, ObjectError},
};

/// Which source `lb run` uses.
// Built once at start: the size of the Kubernetes options costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SourceOptions {
    /// `--manifests DIR`.
    Dir(PathBuf),
    /// `--kubernetes`.
    Kube(KubeOptions),
}

pub enum Source {
    Dir(Box<DirSource>, PathBuf),
    Kube(Box<KubeSource>),
}

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("reading {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Kube(#[from] KubeError),
}

impl Source {
    pub async fn start(opts: &SourceOptions) -> Result<Source, SourceError> {
        Ok(match opts {
            SourceOptions::Dir(dir) => Source::Dir(Box::new(DirSource::new(dir)), dir.clone()),
            SourceOptions::Kube(k) => Source::Kube(Box::new(KubeSource::connect(k.clone()).await?)),
        })
    }

    /// The objects, if they changed since the last call. Never blocks. Shared: a directory
    /// patches the same set in place at the next change if the caller has dropped it.
    pub fn poll(&mut self) -> Result<Option<Arc<ObjectSet>>, SourceError> {
        match self {
            Source::Dir(d, dir) => d.poll().map_err(|source| SourceError::Dir { dir: dir.clone(), source }),
            Source::Kube(k) => Ok(k.poll().map(Arc::new)),
        }
    }

    /// Resolves when [`poll`](Self::poll) may have something new (a directory without
    /// inotify: never, it is polled on a timer).
    pub async fn changed(&mut self) {
        match self {
            Source::Dir(d, _) => d.changed().await,
            Source::Kube(k) => k.changed().await,
        }
    }

    /// On shutdown: in Kubernetes, stop writing and release the leader-election Lease.
    pub async fn shutdown(&mut self) {
        if let Source::Kube(k) = self {
            k.shutdown().await;
        }
    }

    /// After an apply: what was rejected (`node_errors`: on this node only) and what serves
    /// (Events and status, in Kubernetes).
    pub fn report(&mut self, errors: &[ObjectError], node_errors: &[ObjectError], applied: &Model) {
        if let Source::Kube(k) = self {
            k.report(errors, node_errors, applied);
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(_, dir) => write!(f, "manifest directory {}", dir.display()),
            Source::Kube(_) => f.write_str("Kubernetes API"),
        }
    }
}
