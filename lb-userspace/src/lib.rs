//! The load balancer's control agent: reads Kubernetes objects, validates them into a typed
//! model and loads that model into the XDP datapath.
pub mod admin;
pub mod agent;
pub mod annotations;
pub mod clusters;
pub mod dataplane;
pub mod health;
pub mod kube;
pub mod l7;
pub mod manifests;
pub mod metrics;
pub mod model;
pub mod netif;
pub mod netlink;
pub mod nodeprep;
pub mod paths;
pub mod reported;
pub mod source;
pub mod tls;
