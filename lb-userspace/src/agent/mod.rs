//! `lb run`: load the datapath, attach it, and keep its maps equal to the source (a manifest
//! directory or the Kubernetes API) until SIGINT/SIGTERM. A pinned datapath stays on the node
//! and keeps forwarding after that (the next `lb run` adopts it); an unpinned one goes, and
//! the node is left as it was found.
use std::{collections::BTreeSet, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

mod last_good;
mod node_errors;
mod retry;

pub use last_good::FILE as LAST_GOOD_FILE;
use node_errors::NodeErrors;
use retry::ApplyRetry;

use crate::{
    admin,
    dataplane::{self, Dataplane},
    health, l7,
    metrics::{self, Probes},
    model::{self, Model},
    netif::{Iface, NodeChanges},
    netlink::{Events, Rtnl},
    paths::BackendPaths,
    reported::Reported,
    source::{Source, SourceOptions},
};

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the objects come from.
    pub source: SourceOptions,
    /// The associated clusters of ALB multi-cluster gateways (`--cluster`).
    pub clusters: Vec<crate::clusters::ClusterSpec>,
    pub ifaces: Vec<String>,
    pub dataplane: dataplane::Options,
    /// Where the last good objects are kept across restarts ([`last_good`]).
    pub state_dir: std::path::PathBuf,
    /// How often the agent ticks (a manifest directory without inotify is listed then).
    pub poll: Duration,
    /// How often conntrack is swept.
    pub sweep: Duration,
    pub sweep_options: dataplane::conntrack::SweepOptions,
    pub build: model::BuildOptions,
    /// Where the admin endpoint listens; `None` = off.
    pub admin: Option<std::net::SocketAddr>,
    /// The L7 proxy: where it runs (its own process by default), binds, and its limits.
    pub l7: l7::supervise::FrontOptions,
}

pub async fn run(opts: RunOptions) -> Result<()> {
    large_blocks_mapped();
    let mut node = NodeChanges::default();
    // Routes, neighbours and links in process: `lb run` starts no child process for them.
    let rtnl = Rtnl::connect().context("opening a route-netlink socket")?;
    node.adopt_local_vips(&rtnl).await;
    let result = serve(&opts, &mut node, &rtnl).await;
    if opts.dataplane.pin.is_some() {
        // However lb ends, a pinned datapath stays and needs these.
        node.keep_datapath_settings();
    }
    node.restore(&rtnl).await;
    result
}

/// Blocks of [`MMAP_THRESHOLD`] bytes and more get a mapping of their own, given back to the
/// kernel when freed. glibc otherwise raises that threshold to the largest block freed (up
/// to 32 MiB): the agent's large tables, which double as a first apply fills them, then come
/// from the heap, and each one outgrown stays there as a hole the agent's resident memory
/// keeps (~4 MiB at 10,000 Services / 100,000 endpoints, measured with the control bench).
fn large_blocks_mapped() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; it is called before the agent's
    // threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// glibc's default threshold (before it adapts).
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

async fn serve(opts: &RunOptions, node: &mut NodeChanges, rtnl: &Rtnl) -> Result<()> {
    let pools = &opts.build.addresses.vip_pools;
    if pools.is_empty() {
        tracing::info!(
            "no --vip-pool: a Service may take any VIP but loopback, link-local, multicast, unspecified, broadcast and this node's addresses"
        );
    } else {
        let pools: Vec<String> = pools.iter().map(ToString::to_string).collect();
        tracing::info!(pools = %pools.join(","), "Services take their VIPs from these prefixes only");
    }
    let mut dp = Dataplane::load(&opts.dataplane).context("loading the XDP datapath")?;
    let (first, last) = opts.dataplane.snat_ports;
    node.reserve_ports(first, last)?;
    let mut attached = BTreeSet::new();
    let mut fallback = (None, None);
    for name in &opts.ifaces {
        let iface = Iface::lookup(name)?;
        node.enable_forwarding(&iface.name, iface.ipv6.is_some())?;
        dp.add_port(iface.index, iface.ipv4, iface.ipv6)?;
        if iface.ipv4.is_none() && iface.ipv6.is_none() {
            tracing::warn!(iface = %iface.name, "no address: backends behind it cannot be reached (no SNAT source)");
        }
        match dp.attach(&iface.name).with_context(|| format!("attaching XDP to {}", iface.name))? {
            Some(mode) => tracing::info!(iface = %iface.name, index = iface.index, ?mode, "XDP attached"),
            None => {
                tracing::info!(iface = %iface.name, index = iface.index, "XDP pinned: adopted once the model is loaded")
            }
        }
        if fallback == (None, None) {
            fallback = (iface.ipv4, iface.ipv6);
        }
        attached.insert(iface.name);
    }

    let (admin_tx, mut admin_rx) = tokio::sync::mpsc::channel::<admin::Request>(16);
    let probes = Arc::new(Probes::new(opts.poll.min(opts.sweep)));
    if let Some(addr) = opts.admin {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the admin endpoint {addr}"))?;
        tracing::info!(%addr, "admin endpoint: GET /metrics, /stats, /readyz, /livez");
        tokio::spawn(admin::serve(listener, admin_tx, probes.clone()));
    }
    let (health_tx, mut health_rx) = tokio::sync::mpsc::channel::<health::Change>(256);
    let mut checker = health::Checker::default();
    let source = Source::start(&opts.source).await.context("starting the source")?;
    let mut source = crate::clusters::WithClusters::start(source, &opts.clusters).await?;
    let mut applied = Model::default();
    // The model as the source wants it, and its objects' errors: what `applied` lacks of it
    // (listeners or ACLs the datapath rejected) is tried again at every sweep.
    let (mut desired, mut build_errors) = (Model::default(), Vec::new());
    // What this node could not serve of it (every node reports its own).
    let mut node_errors = NodeErrors::default();
    // What the next build reuses of the last (a change costs the objects it touches).
    let mut build_cache = model::BuildCache::default();
    // The last good objects of the run before (an object rejected now serves them), and of
    // this one for the next.
    let mut last_good = last_good::LastGood::open(&opts.state_dir, &mut build_cache);
    // The L7 proxy process: started now, restarted whenever it exits (the datapath is not
    // touched by either).
    let mut proxy = l7::supervise::L7Front::start(opts.l7.clone()).context("starting the L7 proxy")?;
    let mut agent_stats = AgentStats::default();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    tracing::info!(%source, "watching");
    let mut last_sweep = std::time::Instant::now();
    // Subscribed before the first lookup: no change between the two is missed.
    let mut events = Events::subscribe().context("subscribing to the node's route, link and neighbour events")?;
    let mut paths = BackendPaths::new(rtnl.clone(), attached, fallback);
    let mut model_loaded = false;
    let (mut logged_errors, mut logged_notices) = (Reported::default(), Reported::default());
    let mut logged_source = Reported::default();
    // An apply that could not reach the maps is owed again after a backoff (however the
    // source and health change meanwhile, the first model included).
    let mut retry = ApplyRetry::default();
    loop {
        probes.tick();
        if paths.dirty() {
            // Routes and links changed under us (pods come and go, an overlay is re-created).
            paths.sync(&applied, node, &mut dp).await;
        }
        // Not before the first model is loaded: the sweep's idle timeouts are per listener,
        // and a pinned datapath's flows would be judged by the defaults.
        let sweep_due = model_loaded && last_sweep.elapsed() >= opts.sweep;
        if sweep_due {
            last_sweep = std::time::Instant::now();
            proxy.retry_failed();
            if model_loaded && node_errors.set_l7(proxy.error_list()) {
                report(&mut source, &build_errors, &mut node_errors, &applied);
            }
            match dp.sweep(&opts.sweep_options) {
                Ok(r) if r.expired + r.drained + r.orphans > 0 => {
                    agent_stats.flows = Some(r.flows);
                    tracing::info!(
                        flows = r.flows,
                        expired = r.expired,
                        drained = r.drained,
                        orphans = r.orphans,
                        "conntrack swept"
                    )
                }
                Ok(r) => agent_stats.flows = Some(r.flows),
                Err(e) => tracing::warn!(error = %e, "conntrack sweep failed"),
            }
        }
        // The model as wanted, again: after an apply that could not reach the maps, once its
        // backoff is over; and at each sweep while the datapath rejects objects (a full table
        // may have room now).
        let retried = retry.due(std::time::Instant::now());
        if retried || (sweep_due && agent_stats.datapath_errors > 0) {
            let rejected_before = agent_stats.datapath_errors;
            let result = dp.apply(checker.effective(&desired));
            if settle(result, desired.clone(), &mut applied, &mut node_errors, &mut agent_stats, &mut retry) {
                if !model_loaded {
                    model_loaded = true;
                    first_loaded(&mut dp, &probes, &mut build_cache);
                }
                if rejected_before > 0 && agent_stats.datapath_errors == 0 {
                    tracing::info!("every object the datapath had rejected is loaded now");
                }
                if retried || agent_stats.datapath_errors != rejected_before {
                    tracing::info!(listeners = applied.listeners.len(), "model applied again");
                    report(&mut source, &build_errors, &mut node_errors, &applied);
                }
            }
        }
        // From reading the source (manifests parsed) to the maps filled, next hops included.
        let polled = std::time::Instant::now();
        match source.poll() {
            Ok(Some(objects)) => {
                let mut phases = Phases::start(polled);
                if !logged_source.update([]).cleared.is_empty() {
                    tracing::info!(%source, "the source reads again");
                }
                agent_stats.last_sync = Some(std::time::SystemTime::now());
                agent_stats.reloads += 1;
                agent_stats.manifests_rejected = objects.errors.len();
                let mut build_opts = opts.build.clone();
                match crate::netif::node_addresses() {
                    Ok(addrs) => build_opts.addresses.node_addresses = addrs,
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "VIPs are not checked against the node's addresses")
                    }
                }
                let build = model::build_next(&objects, &build_opts, &applied, &mut build_cache);
                last_good.update(&mut build_cache, &build.model.acls);
                phases.mark("build");
                log_changes(&mut logged_errors, &mut logged_notices, &objects.errors, &build);
                agent_stats.objects_rejected = build.errors.len();
                agent_stats.rejections_total += build.errors.len() as u64;
                desired = build.model.clone();
                build_errors = build.errors.clone();
                paths.sync(&build.model, node, &mut dp).await;
                phases.mark("paths");
                checker.sync(&build.model, &health_tx);
                phases.mark("health");
                node.sync_local_vips(rtnl, &build.model.l7.values().filter_map(|l| l.addr).collect()).await;
                let effective = checker.effective(&build.model);
                apply_l7(&mut proxy, effective, &mut agent_stats);
                phases.mark("l7");
                let result = dp.apply(effective);
                let loaded = settle(result, build.model, &mut applied, &mut node_errors, &mut agent_stats, &mut retry);
                if loaded && !model_loaded {
                    model_loaded = true;
                    first_loaded(&mut dp, &probes, &mut build_cache);
                }
                phases.mark("maps");
                node_errors.set_l7(proxy.error_list());
                report(&mut source, &build.errors, &mut node_errors, &applied);
                if loaded {
                    tracing::info!(
                        listeners = applied.listeners.len(),
                        ms = format!("{:.2}", polled.elapsed().as_secs_f64() * 1e3),
                        phases = %phases,
                        "model applied"
                    );
                }
            }
            Ok(None) => {
                if !logged_source.update([]).cleared.is_empty() {
                    tracing::info!(%source, "the source reads again");
                }
            }
            Err(e) => {
                // Once per distinct error, not at every poll.
                if !logged_source.update([(source.to_string(), e.to_string())]).new.is_empty() {
                    tracing::error!(%source, error = %e, "reading the source");
                }
            }
        }
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = source.changed() => {}
            () = proxy.errors_changed() => {
                if model_loaded && node_errors.set_l7(proxy.error_list()) {
                    report(&mut source, &build_errors, &mut node_errors, &applied);
                }
            }
            event = events.next() => match event {
                Some(event) => {
                    paths.on_event(&event, node);
                    // A burst (a pod's veth, addresses and routes) is taken in one go.
                    while let Some(event) = events.try_next() {
                        paths.on_event(&event, node);
                    }
                }
                None => {
                    tracing::error!("the netlink event socket closed: subscribing again, every route looked up again");
                    events = Events::subscribe().context("subscribing to the node's route, link and neighbour events")?;
                    paths.on_event(&crate::netlink::Event::Lost, node);
                }
            },
            Some(change) = health_rx.recv() => {
                checker.record(change);
                // A burst (a node's pods gone at once) is applied once.
                while let Ok(change) = health_rx.try_recv() {
                    checker.record(change);
                }
                let effective = checker.effective(&applied);
                apply_l7(&mut proxy, effective, &mut agent_stats);
                // `applied` lacks what the datapath rejected of `desired`: applying it clears
                // none of those rejections (the sweeps go on trying them).
                match dp.apply(effective) {
                    Ok(()) => {}
                    // Each failure is logged; the objects keep their last good state.
                    Err(dataplane::DataplaneError::Rejected(rejected)) => {
                        agent_stats.datapath_errors = agent_stats.datapath_errors.max(rejected.len())
                    }
                    Err(e) => {
                        let wait = retry.failed(std::time::Instant::now());
                        tracing::error!(error = %e, retry_in = ?wait, "applying a health change failed")
                    }
                }
            }
            Some(req) = admin_rx.recv() => match req {
                admin::Request::Stats(reply) => {
                    let json = match dp.stats().map(|s| serde_json::to_value(&s)) {
                        Ok(Ok(mut v)) => {
                            v["l7"] = proxy.counters().await.into_iter().map(|(k, c)| (k, c.to_json())).collect();
                            v["l7_proxy"] = proxy.status_json();
                            agent_stats.l7_errors = proxy.errors();
                            v["agent"] = agent_stats.to_json();
                            // Route lookups of backends: one per distinct backend, then one per
                            // event that concerns it (none per apply).
                            v["agent"]["route_lookups"] = paths.lookups.into();
                            serde_json::to_string_pretty(&v).unwrap_or_default()
                        }
                        Ok(Err(e)) => serde_json::json!({ "error": e.to_string() }).to_string(),
                        Err(e) => serde_json::json!({ "error": e.to_string() }).to_string(),
                    };
                    let _ = reply.send(json);
                }
                admin::Request::Metrics(reply) => {
                    let l7 = L7Scrape { listeners: proxy.snapshots().await, process: proxy.process() };
                    agent_stats.l7_errors = proxy.errors();
                    let _ = reply.send(scrape(opts, &dp, l7, &checker, &applied, &agent_stats, probes.ready()));
                }
            },
            _ = tokio::time::sleep(retry.wait(std::time::Instant::now(), opts.poll.min(opts.sweep))) => {}
        }
    }
    // Another pod takes over status and Events at once, not after the Lease expires.
    source.shutdown().await;
    proxy.shutdown_gracefully().await;
    drop(last_good);
    let stats = dp.stats()?;
    println!("{}", serde_json::json!({ "stats": stats }));
    if dp.pinned() {
        tracing::info!(
            "shutting down: L7 listeners drained; the pinned datapath keeps forwarding (lb uninstall removes it)"
        );
    } else {
        tracing::info!("shutting down: L7 listeners drained, XDP detached");
    }
    dp.detach_all();
    Ok(())
}

/// After an apply: the objects' errors and this node's to the source (Events, status).
fn report(
    source: &mut crate::clusters::WithClusters,
    build: &[model::ObjectError],
    node: &mut NodeErrors,
    applied: &Model,
) {
    let (objects, mine) = node.split(build, applied);
    source.report(&objects, &mine, applied);
}

/// An apply's outcome taken in: `applied` becomes what the datapath serves of `desired`
/// (a listener or ACL it rejected keeps its last good state, and the rejection is one of
/// `node`'s errors). False: the maps could not be reached, nothing is known applied, and
/// `retry` owes the apply again after its backoff.
fn settle(
    result: std::result::Result<(), dataplane::DataplaneError>,
    desired: Model,
    applied: &mut Model,
    node: &mut NodeErrors,
    stats: &mut AgentStats,
    retry: &mut ApplyRetry,
) -> bool {
    match result {
        Ok(()) => {
            stats.datapath_errors = 0;
            node.set_datapath(Vec::new());
            *applied = desired;
        }
        Err(dataplane::DataplaneError::Rejected(rejected)) => {
            // The rest is applied; each failure is reported on its object.
            stats.datapath_errors = rejected.len();
            let mut served = desired;
            dataplane::keep_served(&mut served, applied, &rejected);
            *applied = served;
            node.set_datapath(rejected.iter().map(dataplane::Rejected::object_error).collect());
        }
        Err(e) => {
            let wait = retry.failed(std::time::Instant::now());
            tracing::error!(error = %e, retry_in = ?wait, "applying the model failed");
            return false;
        }
    }
    retry.done();
    true
}

/// The first model is in the maps: a pinned datapath of the previous `lb`, which kept
/// serving until now, is taken over, and the pod goes Ready.
fn first_loaded(dp: &mut Dataplane, probes: &Probes, cache: &mut model::BuildCache) {
    cache.forget_restored();
    if let Err(e) = dp.finish_adoption() {
        tracing::error!(error = %e, "taking over the pinned datapath failed: it may not outlive this lb");
    }
    probes.set_ready();
    tracing::info!("ready: the first model is applied");
}

/// Where an apply's time went: each step's milliseconds since the one before (the first from
/// the poll that read the source), for the `model applied` log line.
struct Phases {
    last: std::time::Instant,
    marks: Vec<(&'static str, f64)>,
}

impl Phases {
    fn start(polled: std::time::Instant) -> Phases {
        let mut phases = Phases { last: polled, marks: Vec::new() };
        phases.mark("read");
        phases
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.marks.push((step, (now - self.last).as_secs_f64() * 1e3));
        self.last = now;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, ms)) in self.marks.iter().enumerate() {
            write!(f, "{}{step}:{ms:.1}", if i > 0 { "," } else { "" })?;
        }
        Ok(())
    }
}

/// Logs the manifests and objects rejected and the notices, each once per change of its
/// object (every reload builds them all again).
fn log_changes(
    errors: &mut Reported,
    notices: &mut Reported,
    manifests: &[model::objects::ManifestError],
    build: &model::Build,
) {
    let rejected = manifests
        .iter()
        .map(|e| (format!("{}#{}", e.file.display(), e.document), e.to_string()))
        .chain(build.errors.iter().map(|e| (e.object.to_string(), e.to_string())));
    let changes = errors.update(rejected);
    if !changes.new.is_empty() {
        // Objects whose last good listeners or routes `keep_last_good` kept.
        let l7_sources =
            build.model.l7.values().flat_map(|l| l.routes.iter().chain(&l.canaries)).map(|r| &r.rule.source);
        let serving: BTreeSet<String> =
            build.model.listeners.values().map(|l| &l.source).chain(l7_sources).map(ToString::to_string).collect();
        for (object, e) in &changes.new {
            tracing::error!(error = %e, last_good_serving = serving.contains(object), "object rejected");
        }
    }
    for object in &changes.cleared {
        tracing::info!(%object, "no longer rejected");
    }
    let changes = notices.update(build.notices.iter().map(|n| (n.object.to_string(), n.to_string())));
    for (_, n) in &changes.new {
        tracing::info!(notice = %n, "no effect on this node");
    }
}

/// One `/metrics` scrape: the datapath's counters (per-CPU arrays, no table walk), the L7
/// proxy's atomics, and what the agent keeps.
fn scrape(
    opts: &RunOptions,
    dp: &Dataplane,
    l7: L7Scrape,
    checker: &health::Checker,
    applied: &Model,
    stats: &AgentStats,
    ready: bool,
) -> String {
    use metrics::exposition::{AgentSnapshot, ListenerLabels, Snapshot};
    let datapath = match dp.stats() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "reading the datapath's counters for /metrics");
            Default::default()
        }
    };
    let listener_labels = applied
        .listeners
        .values()
        .map(|l| {
            let name = model::listener_name(l);
            let labels = ListenerLabels {
                listener: name.clone(),
                vip: l.vip.to_string(),
                port: l.port,
                protocol: match l.protocol {
                    model::Protocol::Tcp => "tcp",
                    model::Protocol::Udp => "udp",
                },
                service: format!("{}/{}", l.source.namespace, l.source.name),
            };
            (name, labels)
        })
        .collect();
    let unhealthy = checker.unhealthy();
    let health = checker
        .checked()
        .into_iter()
        .map(|(ip, port)| (std::net::SocketAddr::new(ip, port).to_string(), !unhealthy.contains_key(&(ip, port))))
        .collect();
    let (first, last) = opts.dataplane.snat_ports;
    Snapshot {
        datapath,
        listener_labels,
        conntrack_flows: stats.flows,
        conntrack_entries: u64::from(opts.dataplane.conntrack_entries),
        half_open_entries: u64::from(opts.dataplane.half_open_entries),
        snat_ports: u64::from(last - first) + 1,
        health,
        l7: l7.listeners,
        l7_proxy: l7.process,
        agent: AgentSnapshot {
            reloads: stats.reloads,
            rejections_total: stats.rejections_total,
            objects_rejected: stats.objects_rejected as u64,
            manifests_rejected: stats.manifests_rejected as u64,
            l7_listener_errors: stats.l7_errors as u64,
            datapath_errors: stats.datapath_errors as u64,
            last_sync: stats
                .last_sync
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs_f64()),
        },
        ready,
        leader: metrics::leader(),
    }
    .encode()
}

/// What `/metrics` shows of the L7 proxy: its listeners' counters, and (process mode)
/// whether the process is up and how often it was restarted.
struct L7Scrape {
    listeners: Vec<(String, metrics::exposition::L7Snapshot)>,
    process: Option<(bool, u64)>,
}

/// Reconciles the L7 listeners; a listener that cannot be (re)configured is logged (by the
/// proxy) and the others go on.
fn apply_l7(proxy: &mut l7::supervise::L7Front, model: &Model, stats: &mut AgentStats) {
    stats.l7_errors = proxy.apply(&model.l7);
}

/// What the agent counts (shown under `agent` by `/stats` and `lb stats`).
#[derive(Default)]
struct AgentStats {
    /// Times the source delivered a new set of objects.
    reloads: u64,
    /// Rejected now (the last build), and over the daemon's life (each build counts its own).
    objects_rejected: usize,
    rejections_total: u64,
    manifests_rejected: usize,
    /// L7 listeners that could not be (re)configured at the last apply.
    l7_errors: usize,
    /// L4 listeners and ACLs the datapath could not take at the last apply.
    datapath_errors: usize,
    /// When the source last delivered objects.
    last_sync: Option<std::time::SystemTime>,
    /// Flows in conntrack at the last sweep.
    flows: Option<u64>,
}

impl AgentStats {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "reloads": self.reloads,
            "objects_rejected": self.objects_rejected,
            "rejections_total": self.rejections_total,
            "manifests_rejected": self.manifests_rejected,
            "l7_listener_errors": self.l7_errors,
            "datapath_errors": self.datapath_errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An apply that could not reach the maps leaves `applied` as it was and owes a retry
    /// (it was retried only if the datapath had rejected objects, and a first model failed
    /// that way never went Ready); the retry that gets through applies the model as wanted.
    #[test]
    fn an_apply_that_could_not_reach_the_maps_is_owed_again() {
        let desired = Model { sub_clusters: [("gw".to_string(), vec!["c1".to_string()])].into(), ..Model::default() };
        let (mut applied, mut errors, mut stats, mut retry) =
            (Model::default(), NodeErrors::default(), AgentStats::default(), ApplyRetry::default());
        let failed = Err(dataplane::DataplaneError::Pin("the maps are gone".into()));
        assert!(!settle(failed, desired.clone(), &mut applied, &mut errors, &mut stats, &mut retry));
        assert_eq!(applied, Model::default(), "nothing is known applied");
        let now = std::time::Instant::now();
        assert!(retry.due(now + Duration::from_secs(1)), "a retry is owed");
        assert!(settle(Ok(()), desired.clone(), &mut applied, &mut errors, &mut stats, &mut retry));
        assert_eq!(applied, desired);
        assert!(errors.split(&[], &applied).1.is_empty());
        assert!(!retry.due(now + Duration::from_secs(3600)), "nothing owed once applied");
    }
}
