//! The Kubernetes API source (`lb run --kubernetes`): watch the objects the model is built
//! from, yield a fresh [`ObjectSet`](crate::manifests::ObjectSet) after every change, and
//! (on the status writer) report back with Events and `status.loadBalancer`.
//!
//! - [`watch`]: one watcher + reflector (a local cache) per kind, retried with backoff.
//! - [`source`]: [`KubeSource`], the debounced snapshots and the class filter.
//! - [`report`]: the background task that writes Events ([`events`]) and status ([`status`]),
//!   on the pod holding the [`leader`] Lease when leader election is on.
pub mod cli;
pub mod events;
pub mod leader;
pub mod outcome;
pub mod referenced;
pub mod report;
pub mod source;
pub mod status;
pub mod watch;

use std::time::Duration;

pub use source::KubeSource;

/// `spec.loadBalancerClass` of the Services `lb` serves by default.
pub const DEFAULT_CLASS: &str = "lb.dev/xdp";
/// The `reportingController` of `lb`'s Events (a qualified name, as events.k8s.io wants).
pub const CONTROLLER: &str = "lb.dev/lb";

/// How the API source selects objects and whether it writes back.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Services of `type: LoadBalancer` with this `spec.loadBalancerClass` are served.
    pub class: String,
    /// Also serve `type: LoadBalancer` Services that have no `spec.loadBalancerClass`.
    pub default_class: bool,
    /// Write `status.loadBalancer` of served Services and Ingresses, and Events for rejected
    /// objects. One writer per cluster: every node would write the same thing.
    pub write_status: bool,
    /// With `write_status`: write only while holding the Lease (so every pod of the
    /// DaemonSet can have `write_status` on and one of them writes).
    pub leader_election: Option<leader::LeaseOptions>,
    /// This node (Events name it as the instance; Ingress status takes its addresses when
    /// neither `publish_service` nor `publish_status_addresses` is set).
    pub node_name: Option<String>,
    /// `--publish-service NS/NAME`: Ingress status takes this Service's addresses.
    pub publish_service: Option<(String, String)>,
    /// `--publish-status-address`: Ingress status holds these (before `publish_service`).
    pub publish_status_addresses: Vec<String>,
    /// Which Secrets are listed and cached (only TLS ones, in any case).
    pub secrets: SecretScope,
    /// Changes closer together than this make one snapshot.
    pub debounce: Duration,
    /// How long the first snapshot waits for every kind's initial list; kinds not listed by
    /// then contribute nothing until they are. (A kind the API server answers 404 for, a
    /// CRD that is not installed, counts as listed and empty at once.)
    pub sync_timeout: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            class: DEFAULT_CLASS.into(),
            default_class: false,
            write_status: false,
            leader_election: None,
            node_name: None,
            publish_service: None,
            publish_status_addresses: Vec::new(),
            secrets: SecretScope::default(),
            debounce: Duration::from_millis(200),
            sync_timeout: Duration::from_secs(30),
        }
    }
}

/// The Secrets the source lists, watches and caches: `kubernetes.io/tls` ones, in these
/// namespaces (every namespace when empty), with this label selector (any labels when
/// `None`). The model uses those Ingresses and Services refer to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretScope {
    pub namespaces: Vec<String>,
    pub label_selector: Option<String>,
}

/// Why the API source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("no Kubernetes client configuration (in-cluster service account or KUBECONFIG): {0}")]
    Config(#[source] ::kube::Error),
}
