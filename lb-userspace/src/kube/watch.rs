//! One watcher + reflector per watched kind: each keeps a local cache of its objects up to
//! date, retries with backoff when the API fails (the cache keeps its last contents), and
//! wakes the snapshot task after every change.
use std::{fmt::Debug, hash::Hash, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Secret, Service},
    discovery::v1::EndpointSlice,
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
use tokio::{sync::Notify, task::JoinSet};

/// Field selector of the Secrets watch: only TLS Secrets are listed and cached.
pub const TLS_SECRETS: &str = "type=kubernetes.io/tls";

/// The local caches, one per kind.
#[derive(Clone)]
pub struct Stores {
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub ingresses: Store<Ingress>,
    pub ingress_classes: Store<IngressClass>,
    pub secrets: Store<Secret>,
    pub alb_configs: Store<DynamicObject>,
    pub acls: Store<DynamicObject>,
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
    pub fn start(client: &Client, changed: &Arc<Notify>, tasks: &mut JoinSet<()>) -> Stores {
        let all = watcher::Config::default();
        let (alb, acl) = (alb_config_resource(), acl_resource());
        Stores {
            services: spawn(tasks, Api::all(client.clone()), all.clone(), (), "Service", changed),
            endpoint_slices: spawn(tasks, Api::all(client.clone()), all.clone(), (), "EndpointSlice", changed),
            ingresses: spawn(tasks, Api::all(client.clone()), all.clone(), (), "Ingress", changed),
            ingress_classes: spawn(tasks, Api::all(client.clone()), all.clone(), (), "IngressClass", changed),
            secrets: spawn(tasks, Api::all(client.clone()), all.clone().fields(TLS_SECRETS), (), "Secret", changed),
            alb_configs: spawn(tasks, Api::all_with(client.clone(), &alb), all.clone(), alb, "AlbConfig", changed),
            acls: spawn(tasks, Api::all_with(client.clone(), &acl), all, acl, "AccessControlList", changed),
        }
    }

    /// Wait until every cache holds its initial list, at most `timeout`; the kinds still
    /// not listed then.
    pub async fn wait_until_ready(&self, timeout: Duration) -> Vec<&'static str> {
        async fn ready<K>(kind: &'static str, store: &Store<K>, timeout: Duration) -> Option<&'static str>
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + Hash + Clone,
        {
            tokio::time::timeout(timeout, store.wait_until_ready()).await.ok().and_then(Result::ok).map_or(Some(kind), |()| None)
        }
        let r = futures::join!(
            ready("Service", &self.services, timeout),
            ready("EndpointSlice", &self.endpoint_slices, timeout),
            ready("Ingress", &self.ingresses, timeout),
            ready("IngressClass", &self.ingress_classes, timeout),
            ready("Secret", &self.secrets, timeout),
            ready("AlbConfig", &self.alb_configs, timeout),
            ready("AccessControlList", &self.acls, timeout),
        );
        [r.0, r.1, r.2, r.3, r.4, r.5, r.6].into_iter().flatten().collect()
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

fn spawn<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    config: watcher::Config,
    dyntype: K::DynamicType,
    kind: &'static str,
    changed: &Arc<Notify>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = Writer::new(dyntype);
    let store = writer.as_reader();
    let changed = changed.clone();
    tasks.spawn(async move {
        let stream = watcher(api, config)
            // managedFields are most of an object's size and never read.
            .modify(|o| o.managed_fields_mut().clear())
            .default_backoff()
            .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                    changed.notify_one();
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
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
