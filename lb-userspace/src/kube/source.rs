//! [`KubeSource`]: the watched objects as a fresh [`ObjectSet`] after every change
//! (debounced), filtered to what this `lb` serves.
use std::{collections::BTreeSet, path::PathBuf, sync::Arc};

use k8s_openapi::api::core::v1::Service;
use kube::{Client, api::DynamicObject};
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};

use super::{KubeError, KubeOptions, referenced, report, watch::Stores};
use crate::{
    manifests::{ManifestError, ObjectSet},
    model::{Model, ObjectError, ObjectRef, acl},
};

/// Services, EndpointSlices, Ingresses, IngressClasses, TLS Secrets, AlbConfigs,
/// AccessControlLists and Nodes from the API server. [`poll`](Self::poll) never blocks; await
/// [`changed`](Self::changed) to learn when it has something new.
pub struct KubeSource {
    opts: KubeOptions,
    stores: Stores,
    generation: watch::Receiver<u64>,
    /// `changed` saw a new generation that `poll` has not taken yet.
    pending: bool,
    /// Objects that reached the cache but are not valid objects of their kind.
    decode_errors: Vec<ObjectError>,
    reporter: Option<report::Handle>,
    /// Watchers, the snapshot task and the reporter: aborted when the source is dropped.
    _tasks: JoinSet<()>,
}

impl KubeSource {
    /// Connect with the in-cluster service account, else `KUBECONFIG`/`~/.kube/config`.
    pub async fn connect(opts: KubeOptions) -> Result<KubeSource, KubeError> {
        let client = Client::try_default().await.map_err(KubeError::Config)?;
        Ok(KubeSource::new(client, opts))
    }

    /// Start watching through `client` (inside a tokio runtime).
    pub fn new(client: Client, opts: KubeOptions) -> KubeSource {
        let mut tasks = JoinSet::new();
        let changed = Arc::new(Notify::new());
        let stores = Stores::start(&client, &opts.secrets, &changed, &mut tasks);
        let (tx, generation) = watch::channel(0u64);
        tasks.spawn(debounce(stores.clone(), changed, tx, opts.clone()));
        let reporter = opts.write_status.then(|| report::Handle::spawn(client, stores.clone(), &opts, &mut tasks));
        KubeSource { opts, stores, generation, pending: false, decode_errors: Vec::new(), reporter, _tasks: tasks }
    }

    /// The objects, if anything changed since the last call.
    pub fn poll(&mut self) -> Option<ObjectSet> {
        let fresh = std::mem::take(&mut self.pending) | self.generation.has_changed().unwrap_or(false);
        if !fresh {
            return None;
        }
        self.generation.borrow_and_update();
        let (set, decode_errors) = snapshot(&self.stores, &self.opts);
        self.decode_errors = decode_errors;
        Some(set)
    }

    /// Resolves when [`poll`](Self::poll) has a new snapshot (never, if the snapshot task
    /// is gone).
    pub async fn changed(&mut self) {
        if self.pending {
            return;
        }
        if self.generation.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.pending = true;
    }

    /// Stop writing status and Events and release the leader-election Lease if this pod
    /// holds it (`lb run` calls it on SIGTERM). The watches stop when the source is dropped.
    pub async fn shutdown(&mut self) {
        if let Some(reporter) = &mut self.reporter {
            reporter.shutdown().await;
        }
    }

    /// After a build was applied: the errors to record as Events (`node_errors`: this node's
    /// own, recorded by every node, leader or not) and the model whose Services and Ingresses
    /// get their status. Does nothing unless `write_status`.
    pub fn report(&mut self, errors: &[ObjectError], node_errors: &[ObjectError], applied: &Model) {
        if let Some(reporter) = &self.reporter {
            let mut all = self.decode_errors.clone();
            all.extend_from_slice(errors);
            reporter.send(report::Report::new(all, node_errors.to_vec(), applied));
        }
    }
}

/// The kinds the first snapshot waits for however long the API takes.
const ESSENTIAL_KINDS: [&str; 2] = ["Service", "EndpointSlice"];

/// Bump the generation once every cache has its initial list (or `sync_timeout` passed, for
/// kinds other than [`ESSENTIAL_KINDS`]), then once per burst of changes: the first change of a burst waits `debounce`, and what
/// arrives meanwhile joins it.
async fn debounce(stores: Stores, changed: Arc<Notify>, tx: watch::Sender<u64>, opts: KubeOptions) {
    let mut missing = stores.wait_until_ready(opts.sync_timeout).await;
    // Without Services or EndpointSlices a first snapshot would be a cluster with no
    // listeners or no backends: applied, it would take every VIP of this node down (an API
    // server that is down while the agent restarts). The datapath keeps what it served
    // until both are listed; the other kinds may follow.
    while missing.iter().any(|k| ESSENTIAL_KINDS.contains(k)) {
        tracing::warn!(
            kinds = ?missing,
            "not listed yet (API errors above): waiting for Services and EndpointSlices before the first apply; the datapath serves what it served"
        );
        missing = stores.wait_until_ready(opts.sync_timeout).await;
    }
    if !missing.is_empty() {
        tracing::warn!(
            kinds = ?missing,
            "not listed yet (API errors above): serving without them until they are"
        );
    }
    tracing::info!("Kubernetes objects listed");
    // The initial lists rang the bell (each right after its cache filled): the first
    // snapshot includes them.
    tokio::time::sleep(opts.debounce).await;
    let _ = futures::FutureExt::now_or_never(changed.notified());
    loop {
        tx.send_modify(|g| *g += 1);
        changed.notified().await;
        tokio::time::sleep(opts.debounce).await;
    }
}

/// Whether `lb` serves this Service: `type: LoadBalancer` and our class (or no class, with
/// `default_class`).
pub fn serves(svc: &Service, class: &str, default_class: bool) -> bool {
    let Some(spec) = &svc.spec else { return false };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return false;
    }
    match spec.load_balancer_class.as_deref() {
        Some(c) => c == class,
        None => default_class,
    }
}

/// The cached objects as an [`ObjectSet`]: our Services, the Services ALB Ingresses route to,
/// and their EndpointSlices; every Ingress and IngressClass (the model keeps the ALB ones), TLS Secrets, AlbConfigs,
/// AccessControlLists and Nodes; plus the custom objects that do not decode.
pub fn snapshot(stores: &Stores, opts: &KubeOptions) -> (ObjectSet, Vec<ObjectError>) {
    let mut set = ObjectSet::default();
    let mut decode_errors = Vec::new();
    let ingresses: Vec<_> = stores.ingresses.state().iter().map(|i| (**i).clone()).collect();
    let ingress_classes: Vec<_> = stores.ingress_classes.state().iter().map(|c| (**c).clone()).collect();
    // Our LoadBalancer Services, and every Service an ALB Ingress routes to (as a backend
    // only, whatever its type: a ClusterIP Service's endpoints are what the proxy connects to).
    let backends = referenced::ingress_backends(&ingresses, &ingress_classes);
    let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default())
    };
    let mut included: BTreeSet<(String, String)> = BTreeSet::new();
    for svc in stores.services.state() {
        if serves(&svc, &opts.class, opts.default_class) {
            set.services.push(svc.clone());
        } else if backends.contains(&key(&svc.metadata)) || referenced::stands_for_server_group(&svc) {
            set.services.push(std::sync::Arc::new(referenced::as_backend(&svc)));
        } else {
            continue;
        }
        included.insert(key(&svc.metadata));
    }
    set.endpoint_slices = stores
        .endpoint_slices
        .state()
        .iter()
        .filter(|e| {
            e.service.as_ref().is_some_and(|svc| {
                included.contains(&(e.metadata.namespace.clone().unwrap_or_default(), svc.to_string()))
            })
        })
        .cloned()
        .collect();
    set.ingresses = ingresses;
    set.ingress_classes = ingress_classes;
    set.secrets = stores
        .secrets
        .iter()
        .flat_map(|store| store.state())
        .filter(|s| s.type_.as_deref() == Some("kubernetes.io/tls"))
        .map(|s| (*s).clone())
        .collect();
    set.nodes = stores.nodes.state().iter().map(|n| (**n).clone()).collect();
    for obj in stores.alb_configs.state() {
        match serde_json::to_value(&*obj) {
            Ok(v) => set.alb_configs.push(v),
            Err(e) => decode_error(&mut set, &mut decode_errors, "AlbConfig", &obj, e.to_string()),
        }
    }
    set.acls_unlisted = !stores.acls_listed();
    for obj in stores.acls.state() {
        match serde_json::to_value(&*obj).and_then(serde_json::from_value::<acl::AclObject>) {
            Ok(a) => set.acls.push(a),
            Err(e) => decode_error(&mut set, &mut decode_errors, acl::KIND, &obj, e.to_string()),
        }
    }
    sort(&mut set);
    (set, decode_errors)
}

fn decode_error(set: &mut ObjectSet, errors: &mut Vec<ObjectError>, kind: &str, obj: &DynamicObject, reason: String) {
    let object = ObjectRef {
        kind: kind.into(),
        namespace: obj.metadata.namespace.clone().unwrap_or_default(),
        name: obj.metadata.name.clone().unwrap_or_default(),
    };
    set.errors.push(ManifestError {
        file: PathBuf::from(format!("API: {object}")),
        document: 1,
        reason: reason.clone(),
    });
    set.undecodable.push(object.clone());
    errors.push(ObjectError { object, field: "spec".into(), reason: format!("invalid {kind}: {reason}") });
}

/// (namespace, name) order, as a directory's objects would have: the model is then the
/// same whichever order the watch delivered them in.
fn sort(set: &mut ObjectSet) {
    fn key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (Option<String>, Option<String>) {
        (m.namespace.clone(), m.name.clone())
    }
    set.services.sort_by_key(|o| key(&o.metadata));
    set.endpoint_slices.sort_by_key(|o| key(&o.metadata));
    set.ingresses.sort_by_key(|o| key(&o.metadata));
    set.ingress_classes.sort_by_key(|o| key(&o.metadata));
    set.secrets.sort_by_key(|o| key(&o.metadata));
    set.acls.sort_by_key(|o| key(&o.metadata));
    set.nodes.sort_by_key(|o| key(&o.metadata));
    set.alb_configs.sort_by_key(|v| v["metadata"]["name"].as_str().map(str::to_string));
}

#[cfg(test)]
mod tests {
    use super::serves;

    fn svc(type_: &str, class: Option<&str>) -> k8s_openapi::api::core::v1::Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"type": type_, "loadBalancerClass": class},
        }))
        .unwrap()
    }

    #[test]
    fn class_filter() {
        assert!(serves(&svc("LoadBalancer", Some("lb.dev/xdp")), "lb.dev/xdp", false));
        assert!(!serves(&svc("LoadBalancer", Some("other.io/lb")), "lb.dev/xdp", true));
        assert!(!serves(&svc("LoadBalancer", None), "lb.dev/xdp", false));
        assert!(serves(&svc("LoadBalancer", None), "lb.dev/xdp", true));
        assert!(!serves(&svc("ClusterIP", Some("lb.dev/xdp")), "lb.dev/xdp", true));
        assert!(!serves(&svc("NodePort", None), "lb.dev/xdp", true));
    }
}
