//! The associated clusters of an ALB multi-cluster gateway (`lb run --cluster ID=DIR` or
//! `ID=kubeconfig:PATH`): each contributes its EndpointSlices to the objects of the main
//! source, and keeps its last good ones while it cannot be read.
use std::{
    collections::BTreeMap,
    fmt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::model::slice::EndpointSlice;
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use crate::{
    annotations::alb::cluster_id,
    manifests::{DirSource, ObjectSet},
    source::Source,
};

/// One `--cluster` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub id: String,
    pub from: ClusterFrom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterFrom {
    /// A manifest directory holding the cluster's EndpointSlices.
    Dir(PathBuf),
    /// The cluster's API server, through a kubeconfig file.
    Kubeconfig(PathBuf),
}

impl std::str::FromStr for ClusterSpec {
    type Err = String;

    /// `ID=DIR` or `ID=kubeconfig:PATH`.
    fn from_str(s: &str) -> Result<ClusterSpec, String> {
        let (id, from) = s.split_once('=').ok_or_else(|| format!("{s:?} is not ID=DIR or ID=kubeconfig:PATH"))?;
        let id = cluster_id(id)?;
        let from = match from.strip_prefix("kubeconfig:") {
            Some(path) if !path.is_empty() => ClusterFrom::Kubeconfig(path.into()),
            None if !from.is_empty() => ClusterFrom::Dir(from.into()),
            _ => return Err(format!("{s:?}: the cluster's directory or kubeconfig path is empty")),
        };
        Ok(ClusterSpec { id, from })
    }
}

/// Checks that no cluster ID is given twice.
pub fn check_unique(specs: &[ClusterSpec]) -> Result<(), String> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.id == s.id) {
            return Err(format!("--cluster {} is given twice", s.id));
        }
    }
    Ok(())
}

/// A running cluster source.
enum Feed {
    Dir(DirSource),
    Kube { store: reflector::Store<EndpointSlice>, changed: Arc<AtomicBool> },
}

struct Cluster {
    id: String,
    from: ClusterFrom,
    feed: Feed,
    slices: Vec<Arc<EndpointSlice>>,
    /// The source answered at least once (a directory was read, the API server listed): only
    /// then is the cluster connected (it counts in the object set and in `subClusters`).
    connected: bool,
    /// The last error logged, so that a source that keeps failing is logged once.
    failing: Option<String>,
}

/// The main source plus the associated clusters: every object set it yields carries the
/// connected clusters' EndpointSlices in [`ObjectSet::clusters`] (a cluster whose source never
/// answered is absent: it is not connected).
pub struct WithClusters {
    main: Source,
    clusters: Vec<Cluster>,
    /// The main source's last object set, yielded again when only a cluster changed.
    last: Option<Arc<ObjectSet>>,
    wake: Arc<tokio::sync::Notify>,
}

impl WithClusters {
    pub async fn start(main: Source, specs: &[ClusterSpec]) -> anyhow::Result<WithClusters> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let mut clusters = Vec::new();
        for spec in specs {
            let feed = match &spec.from {
                ClusterFrom::Dir(dir) => Feed::Dir(DirSource::new(dir)),
                ClusterFrom::Kubeconfig(path) => watch_slices(&spec.id, path, &wake).await?,
            };
            tracing::info!(cluster = %spec.id, from = %spec.from, "associated cluster");
            clusters.push(Cluster {
                id: spec.id.clone(),
                from: spec.from.clone(),
                feed,
                slices: Vec::new(),
                connected: false,
                failing: None,
            });
        }
        Ok(WithClusters { main, clusters, last: None, wake })
    }

    /// The objects, if the main source or a cluster changed since the last call.
    pub fn poll(&mut self) -> Result<Option<Arc<ObjectSet>>, crate::source::SourceError> {
        let main = self.main.poll()?;
        if self.clusters.is_empty() {
            // Passed through, not kept: the main source patches its set in place.
            return Ok(main);
        }
        let mut changed = main.is_some();
        if let Some(set) = main {
            self.last = Some(set);
        }
        for c in &mut self.clusters {
            changed |= c.poll();
        }
        if !changed {
            return Ok(None);
        }
        Ok(self.last.as_deref().map(|set| {
            let mut set = set.clone();
            set.clusters = self
                .clusters
                .iter()
                .filter(|c| c.connected)
                .map(|c| (c.id.clone(), c.slices.clone()))
                .collect::<BTreeMap<_, _>>();
            Arc::new(set)
        }))
    }

    /// Resolves when [`poll`](Self::poll) may have something new (directories are polled on
    /// the agent's timer). A cluster's changes are taken in bursts, as the main source's are:
    /// what arrives within [`DEBOUNCE`] of the first change is one build.
    pub async fn changed(&mut self) {
        tokio::select! {
            () = self.main.changed() => {}
            () = self.wake.notified() => tokio::time::sleep(DEBOUNCE).await,
        }
    }

    pub fn report(
        &mut self,
        errors: &[crate::model::ObjectError],
        node_errors: &[crate::model::ObjectError],
        applied: &crate::model::Model,
    ) {
        self.main.report(errors, node_errors, applied);
    }

    /// On shutdown: the main source stops writing and releases its Lease.
    pub async fn shutdown(&mut self) {
        self.main.shutdown().await;
    }
}

impl fmt::Display for WithClusters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.main)?;
        for c in &self.clusters {
            write!(f, ", cluster {} ({})", c.id, c.from)?;
        }
        Ok(())
    }
}

impl fmt::Display for ClusterFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterFrom::Dir(d) => write!(f, "manifest directory {}", d.display()),
            ClusterFrom::Kubeconfig(p) => write!(f, "kubeconfig {}", p.display()),
        }
    }
}

impl Cluster {
    /// Reads the cluster's EndpointSlices if they changed; whether they did. A cluster that
    /// cannot be read keeps its last good slices (logged once per distinct error).
    fn poll(&mut self) -> bool {
        match &mut self.feed {
            Feed::Dir(dir) => match dir.poll() {
                Ok(Some(set)) => {
                    for e in &set.errors {
                        tracing::warn!(cluster = %self.id, error = %e, "cluster manifest not read; its last good version serves");
                    }
                    self.recovered();
                    self.slices = set.endpoint_slices.clone();
                    self.connected = true;
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    self.failed(e.to_string());
                    false
                }
            },
            Feed::Kube { store, changed } => {
                if !changed.swap(false, Ordering::AcqRel) {
                    return false;
                }
                self.slices = store.state();
                self.connected = true;
                true
            }
        }
    }

    fn failed(&mut self, error: String) {
        if self.failing.as_ref() != Some(&error) {
            tracing::warn!(cluster = %self.id, from = %self.from, %error, endpoints = self.slices.len(),
                "associated cluster cannot be read; its last good EndpointSlices stay in service");
            self.failing = Some(error);
        }
    }

    fn recovered(&mut self) {
        if self.failing.take().is_some() {
            tracing::info!(cluster = %self.id, "associated cluster reads again");
        }
    }
}

/// How long a change of an associated cluster waits for the changes that follow it.
pub const DEBOUNCE: std::time::Duration = std::time::Duration::from_millis(200);

/// Watch a cluster's EndpointSlices through its kubeconfig; the watcher retries with backoff
/// and its cache keeps the last listed slices meanwhile. `changed` is raised once a list is
/// complete (never on a partial first list) and on every later change.
async fn watch_slices(id: &str, path: &std::path::Path, wake: &Arc<tokio::sync::Notify>) -> anyhow::Result<Feed> {
    use anyhow::Context;
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("--cluster {id}: reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("--cluster {id}: kubeconfig {}", path.display()))?;
    let client = kube::Client::try_from(config).with_context(|| format!("--cluster {id}: API client"))?;
    let (store, writer) = reflector::store();
    let changed = Arc::new(AtomicBool::new(false));
    let stream =
        watcher(kube::Api::<EndpointSlice>::all(client), watcher::Config::default()).default_backoff().reflect(writer);
    let (flag, wake, id) = (changed.clone(), wake.clone(), id.to_owned());
    tokio::spawn(async move {
        let mut failing: Option<String> = None;
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => {
                    if failing.take().is_some() {
                        tracing::info!(cluster = %id, "associated cluster's API server answers again");
                    }
                    flag.store(true, Ordering::Release);
                    wake.notify_one();
                }
                Err(e) => {
                    let e = e.to_string();
                    if failing.as_ref() != Some(&e) {
                        tracing::warn!(cluster = %id, error = %e,
                            "associated cluster's API server fails; its last good EndpointSlices stay in service");
                        failing = Some(e);
                    }
                }
            }
        }
    });
    Ok(Feed::Kube { store, changed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_arguments() {
        assert_eq!(
            "c1=/tmp/x".parse::<ClusterSpec>(),
            Ok(ClusterSpec { id: "c1".into(), from: ClusterFrom::Dir("/tmp/x".into()) })
        );
        assert_eq!(
            "c2=kubeconfig:/k".parse::<ClusterSpec>(),
            Ok(ClusterSpec { id: "c2".into(), from: ClusterFrom::Kubeconfig("/k".into()) })
        );
        assert!("c1".parse::<ClusterSpec>().unwrap_err().contains("not ID=DIR"));
        assert!("c_1=/x".parse::<ClusterSpec>().unwrap_err().contains("not a cluster ID"));
        assert!("c1=".parse::<ClusterSpec>().unwrap_err().contains("empty"));
        let twice = ["c1=/a".parse().unwrap(), "c1=/b".parse().unwrap()];
        assert_eq!(check_unique(&twice), Err("--cluster c1 is given twice".into()));
    }

    #[tokio::test]
    async fn a_cluster_that_cannot_be_read_keeps_its_last_slices() {
        let fleet = tempfile::tempdir().unwrap();
        let c1 = tempfile::tempdir().unwrap();
        let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: ns, labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\n";
        std::fs::write(c1.path().join("eps.yaml"), slice).unwrap();
        let main = Source::start(&crate::source::SourceOptions::Dir(fleet.path().into())).await.unwrap();
        let spec = ClusterSpec { id: "c1".into(), from: ClusterFrom::Dir(c1.path().into()) };
        let mut s = WithClusters::start(main, &[spec]).await.unwrap();
        let set = s.poll().unwrap().expect("first poll");
        assert_eq!(set.clusters["c1"].len(), 1);
        assert!(s.poll().unwrap().is_none());
        // The directory goes away: nothing new, the slices stay.
        let path = c1.path().to_owned();
        drop(c1);
        assert!(!path.exists());
        assert!(s.poll().unwrap().is_none());
        assert_eq!(s.clusters[0].slices.len(), 1);
        assert!(s.clusters[0].failing.is_some());
    }
}
