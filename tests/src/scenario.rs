//! An end-to-end scenario: the topology, a name server on `[::]:8080` (TCP and UDP) in each
//! backend namespace, a manifest directory, and `lb run` on it.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Result;

use crate::{
    daemon::Daemon,
    servers::{Server, name_server},
    topology::{Shape, Topology},
};

pub struct Scenario {
    pub topo: Topology,
    pub daemon: Daemon,
    pub manifests: PathBuf,
    servers: Vec<Option<Server>>,
    _work: tempfile::TempDir,
}

impl Scenario {
    /// `files` are (name, YAML) written to the manifest directory before `lb` starts; it is
    /// ready once it has loaded `listeners` listeners.
    pub fn start(backends: usize, files: &[(&str, &str)], listeners: usize, extra: &[&str]) -> Result<Scenario> {
        Scenario::start_in(Shape::Routed, backends, files, listeners, extra)
    }

    /// [`Scenario::start`] in a topology of `shape`.
    pub fn start_in(
        shape: Shape,
        backends: usize,
        files: &[(&str, &str)],
        listeners: usize,
        extra: &[&str],
    ) -> Result<Scenario> {
        Scenario::start_on(Topology::shaped(shape, backends)?, files, listeners, extra)
    }

    /// [`Scenario::start`] on a topology built (and extended) by the caller.
    pub fn start_on(topo: Topology, files: &[(&str, &str)], listeners: usize, extra: &[&str]) -> Result<Scenario> {
        let servers = topo
            .backends
            .iter()
            .enumerate()
            .map(|(i, ns)| name_server(ns, "[::]:8080".parse().unwrap(), &format!("backend-{}", i + 1)))
            .collect::<Result<Vec<_>>>()?;
        let work = tempfile::tempdir()?;
        let manifests = work.path().join("manifests");
        fs::create_dir(&manifests)?;
        for (name, yaml) in files {
            write_atomic(&manifests, name, yaml)?;
        }
        let daemon =
            Daemon::start_with(&topo.lb, &manifests, &topo.iface_list(), listeners, work.path(), &topo.lb_args(extra))?;
        Ok(Scenario { topo, daemon, manifests, servers: servers.into_iter().map(Some).collect(), _work: work })
    }

    /// Stop backend `i`'s server (1-based, as its name `backend-i`).
    pub fn stop_backend(&mut self, i: usize) {
        self.servers[i - 1] = None;
    }

    /// Start backend `i`'s server again.
    pub fn start_backend(&mut self, i: usize) -> Result<()> {
        self.servers[i - 1] =
            Some(name_server(&self.topo.backends[i - 1], "[::]:8080".parse().unwrap(), &format!("backend-{i}"))?);
        Ok(())
    }

    /// The manifest directory `lb` watches.
    pub fn manifests_dir(&self) -> &Path {
        &self.manifests
    }

    /// Replace a manifest file (write, then rename: never half-written).
    pub fn write(&self, name: &str, yaml: &str) -> Result<()> {
        write_atomic(&self.manifests, name, yaml)
    }
}

/// Write `name` in `dir` whole: a temporary file renamed over it (a watcher never reads half).
pub fn write_atomic(dir: &Path, name: &str, yaml: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, yaml)?;
    fs::rename(tmp, dir.join(name))?;
    Ok(())
}

/// A Service of type LoadBalancer on `vip` with one TCP and one UDP port 80 → 8080, the given
/// annotations and externalTrafficPolicy, and its EndpointSlice over `endpoints`
/// (address, optional weight).
pub fn service_yaml(
    name: &str,
    vip: &str,
    annotations: &[(&str, &str)],
    endpoints: &[(String, Option<u32>)],
) -> String {
    let eps: Vec<Endpoint> =
        endpoints.iter().map(|(a, w)| Endpoint { addr: a.clone(), weight: *w, node: None }).collect();
    render_service(name, vip, annotations, false, &eps)
}

/// [`service_yaml`] over endpoints on named nodes; `local`: `externalTrafficPolicy: Local`.
pub fn service_yaml_on_nodes(
    name: &str,
    vip: &str,
    annotations: &[(&str, &str)],
    local: bool,
    endpoints: &[(String, &str)],
) -> String {
    let eps: Vec<Endpoint> =
        endpoints.iter().map(|(a, n)| Endpoint { addr: a.clone(), weight: None, node: Some(n.to_string()) }).collect();
    render_service(name, vip, annotations, local, &eps)
}

/// One endpoint of an EndpointSlice.
pub struct Endpoint {
    pub addr: String,
    pub weight: Option<u32>,
    pub node: Option<String>,
}

fn render_service(name: &str, vip: &str, annotations: &[(&str, &str)], local: bool, endpoints: &[Endpoint]) -> String {
    let family = if vip.contains(':') { "IPv6" } else { "IPv4" };
    let ann: String = annotations.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    let weights: Vec<String> = endpoints.iter().filter_map(|e| e.weight.map(|w| format!("{}={w}", e.addr))).collect();
    let eps: String = endpoints
        .iter()
        .map(|e| {
            let node = e.node.as_ref().map(|n| format!("  nodeName: {n}\n")).unwrap_or_default();
            format!("- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n{node}", e.addr)
        })
        .collect();
    let policy = if local { "  externalTrafficPolicy: Local\n" } else { "" };
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: e2e
  annotations:
{ann}    e2e/none: ""
spec:
  type: LoadBalancer
  loadBalancerIP: "{vip}"
{policy}  ports:
  - {{name: tcp, protocol: TCP, port: 80, targetPort: 8080}}
  - {{name: udp, protocol: UDP, port: 80, targetPort: 8080}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: e2e
  labels: {{kubernetes.io/service-name: {name}}}
  annotations: {{lb.dev/endpoint-weights: "{weights}"}}
addressType: {family}
ports: [{{name: tcp, protocol: TCP, port: 8080}}, {{name: udp, protocol: UDP, port: 8080}}]
endpoints:
{eps}"#,
        weights = weights.join(",")
    )
}

/// The IngressClass `alb` and its AlbConfig `alb` with `listeners` (YAML flow mappings such
/// as `{port: 80, protocol: HTTP}`), as an ALB installation has them.
pub fn alb_class_yaml(listeners: &[&str]) -> String {
    let ls: String = listeners.iter().map(|l| format!("  - {l}\n")).collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: alb}}\nspec:\n  controller: ingress.k8s.alibabacloud/alb\n  parameters: {{apiGroup: alibabacloud.com, kind: AlbConfig, name: alb}}\n---\napiVersion: alibabacloud.com/v1\nkind: AlbConfig\nmetadata: {{name: alb}}\nspec:\n  config: {{name: alb, addressType: Intranet, zoneMappings: [{{vSwitchId: vsw-a}}]}}\n  listeners:\n{ls}---\n"
    )
}
