//! One watcher + reflector per watched kind: each keeps a local cache of its objects up to
//! date, retries with backoff when the API fails (the cache keeps its last contents), and
//! wakes the snapshot task after every change.
use std::{collections::BTreeMap, fmt::Debug, hash::Hash, sync::Arc, time::Duration};

use crate::model::slice::EndpointSlice;
use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Node, Secret, Service},
    networking::v1::{Ingress, IngressClass},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use super::SecretScope;
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};

/// Field selector of the Secrets watch: only TLS Secrets are listed and cached.
pub const TLS_SECRETS: &str = "type=kubernetes.io/tls";

/// The local caches, one per kind.
#[derive(Clone)]
pub struct Stores {
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub ingresses: Store<Ingress>,
    pub ingress_classes: Store<IngressClass>,
    /// One cache per `--secret-namespace` (one for every namespace without).
    pub secrets: Vec<Store<Secret>>,
    pub alb_configs: Store<DynamicObject>,
    pub acls: Store<DynamicObject>,
    /// The cluster's Nodes (backends of CLB `backend-type: ecs` Services).
    pub nodes: Store<Node>,
    /// Per kind: the API server answers 404 to its list (a CRD that is not installed).
    /// Such a kind counts as listed (empty) for the first snapshot.
    absent: BTreeMap<&'static str, watch::Receiver<bool>>,
}

/// `alibabacloud.com/v1` `AlbConfig` (cluster-scoped).
pub fn alb_config_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("alibabacloud.com", "v1", "AlbConfig"), "albconfigs")
}

/// `lb.dev/v1alpha1` `AccessControlList` (cluster-scoped).
pub fn acl_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("lb.dev", "v1alpha1", crate::model::acl::KIND),
        "accesscontrollists",
    )
}

impl Stores {
    /// Start every watcher on `tasks`; `changed` is notified after each change.
    pub fn start(client: &Client, scope: &SecretScope, changed: &Arc<Notify>, tasks: &mut JoinSet<()>) -> Stores {
        let all = watcher::Config::default();
        let mut tls = all.clone().fields(TLS_SECRETS);
        if let Some(selector) = &scope.label_selector {
            tls = tls.labels(selector);
        }
        let secret_apis: Vec<Api<Secret>> = if scope.namespaces.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            scope.namespaces.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect()
        };
        let (alb, acl) = (alb_config_resource(), acl_resource());
        let mut w = Watches { tasks, changed, absent: BTreeMap::new() };
        Stores {
            services: w.spawn(Api::all(client.clone()), all.clone(), (), "Service"),
            endpoint_slices: w.spawn(Api::all(client.clone()), all.clone(), (), "EndpointSlice"),
            ingresses: w.spawn(Api::all(client.clone()), all.clone(), (), "Ingress"),
            ingress_classes: w.spawn(Api::all(client.clone()), all.clone(), (), "IngressClass"),
            // Secrets are a core kind: never absent (a namespace without any lists empty).
            secrets: secret_apis.into_iter().map(|api| w.spawn(api, tls.clone(), (), "Secret")).collect(),
            alb_configs: w.spawn(Api::all_with(client.clone(), &alb), all.clone(), alb, "AlbConfig"),
            acls: w.spawn(Api::all_with(client.clone(), &acl), all.clone(), acl, crate::model::acl::KIND),
            nodes: w.spawn_trimmed(Api::all(client.clone()), all, (), "Node", node_as_read),
            absent: w.absent,
        }
    }

    /// Wait until every cache holds its initial list, at most `timeout`; the kinds still
    /// not listed then.
    /// Whether the AccessControlLists are listed (or their CRD is not installed) now.
    pub fn acls_listed(&self) -> bool {
        let absent = self.absent.get(crate::model::acl::KIND).is_some_and(|a| *a.borrow());
        absent || futures::FutureExt::now_or_never(self.acls.wait_until_ready()).is_some_and(|r| r.is_ok())
    }

    pub async fn wait_until_ready(&self, timeout: Duration) -> Vec<&'static str> {
        let ready = async |kind: &'static str, listed: futures::future::BoxFuture<'_, bool>| {
            let mut absent = self.absent[kind].clone();
            let absent = async move { absent.wait_for(|a| *a).await.is_ok() };
            let settled = async {
                tokio::select! {
                    listed = listed => listed,
                    absent = absent => absent,
                }
            };
            match tokio::time::timeout(timeout, settled).await {
                Ok(true) => None,
                _ => Some(kind),
            }
        };
        fn listed<K>(store: &Store<K>) -> futures::future::BoxFuture<'_, bool>
        where
            K: Resource + Clone + Send + Sync + 'static,
            K::DynamicType: Eq + Hash + Clone + Send + Sync,
        {
            Box::pin(async move { store.wait_until_ready().await.is_ok() })
        }
        let r = futures::join!(
            ready("Service", listed(&self.services)),
            ready("EndpointSlice", listed(&self.endpoint_slices)),
            ready("Ingress", listed(&self.ingresses)),
            ready("IngressClass", listed(&self.ingress_classes)),
            ready(
                "Secret",
                Box::pin(async {
                    futures::future::join_all(self.secrets.iter().map(|s| s.wait_until_ready()))
                        .await
                        .iter()
                        .all(Result::is_ok)
                })
            ),
            ready("AlbConfig", listed(&self.alb_configs)),
            ready(crate::model::acl::KIND, listed(&self.acls)),
            ready("Node", listed(&self.nodes)),
        );
        [r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7].into_iter().flatten().collect()
    }
}

/// The cached object `object` names (kind aside: `store` is that kind's cache).
pub fn cached<K>(store: &Store<K>, dyntype: K::DynamicType, object: &crate::model::ObjectRef) -> Option<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let key = ObjectRef::new_with(&object.name, dyntype);
    store.get(&if object.namespace.is_empty() { key } else { key.within(&object.namespace) })
}

struct Watches<'a> {
    tasks: &'a mut JoinSet<()>,
    changed: &'a Arc<Notify>,
    absent: BTreeMap<&'static str, watch::Receiver<bool>>,
}

/// A Node as the model reads it (`model::nodes`): name, labels, `unschedulable`, taints,
/// addresses and the Ready condition's status. Kubelet's status reports (heartbeat times,
/// images, capacity; a new resourceVersion each) then leave the cached Node as it was, and
/// the model's caches, which a changed Node list clears, stay (on a large cluster they were
/// cleared several times a second). The watcher has read the resourceVersion before this.
fn node_as_read(n: &mut Node) {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};
    n.metadata =
        kube::api::ObjectMeta { name: n.metadata.name.take(), labels: n.metadata.labels.take(), ..Default::default() };
    n.spec = n.spec.take().map(|s| NodeSpec { unschedulable: s.unschedulable, taints: s.taints, ..Default::default() });
    n.status = n.status.take().map(|s| NodeStatus {
        addresses: s.addresses,
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == "Ready")
                .map(|c| NodeCondition { type_: c.type_, status: c.status, ..Default::default() })
                .collect()
        }),
        ..Default::default()
    });
}

impl Watches<'_> {
    fn spawn<K>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        dyntype: K::DynamicType,
        kind: &'static str,
    ) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        self.spawn_trimmed(api, config, dyntype, kind, |_| {})
    }

    /// [`Self::spawn`], each object cut down by `trim` before it is cached.
    fn spawn_trimmed<K>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        dyntype: K::DynamicType,
        kind: &'static str,
        trim: fn(&mut K),
    ) -> Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
    {
        let writer = Writer::new(dyntype);
        let store = writer.as_reader();
        let changed = self.changed.clone();
        let (absent_tx, absent_rx) = watch::channel(false);
        self.absent.insert(kind, absent_rx);
        self.tasks.spawn(async move {
            let stream = watcher(api, config)
                // managedFields are most of an object's size and never read.
                .modify(move |o| {
                    o.managed_fields_mut().clear();
                    trim(o);
                })
                .default_backoff()
                .reflect(writer);
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                        absent_tx.send_replace(false);
                        changed.notify_one();
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Err(watcher::Error::InitialListFailed(kube::Error::Api(s))) if s.code == 404 => {
                        if !absent_tx.send_replace(true) {
                            tracing::warn!(
                                kind,
                                "the API server does not serve this kind (CRD not installed?): none until it does; retrying"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(
                        kind,
                        error = %e,
                        "watch failed; retrying with backoff (the cached objects keep serving)"
                    ),
                }
            }
        });
        store
    }
}
