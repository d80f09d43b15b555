//! `lb`: the load balancer's daemon (`lb run`) and CLI (`lb check`).
use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lb_userspace::{admin, agent, clusters, dataplane, kube, l7, manifests, model, source::SourceOptions};

#[derive(Parser)]
#[command(name = "lb", version, about = "XDP L4 load balancer driven by Kubernetes Services")]
struct Cli {
    /// How log lines are written to stderr: text, or json (one object per line, for log
    /// collectors). Every subcommand takes it.
    #[arg(long, global = true, env = "LB_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

// Parsed once at start: the size of the `run` variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the daemon: attach XDP to the interfaces and serve the objects of a manifest
    /// directory or of the Kubernetes API, applying every change.
    #[command(after_help = "Examples:\n  \
        lb run --manifests /etc/lb/manifests --iface eth0\n  \
        lb run --manifests ./examples --iface eth0,eth1 --snat-ports 10000-29999\n  \
        lb run --kubernetes --iface eth0 --node-name \"$NODE_NAME\"\n  \
        lb run --kubernetes --iface eth0 --load-balancer-class example.com/lb --default-class --write-status\n  \
        lb run --kubernetes --iface eth0 --node-name \"$NODE_NAME\" --leader-election\n\n\
        With --kubernetes, lb uses the in-cluster service account (else KUBECONFIG or\n\
        ~/.kube/config) and serves Services of type LoadBalancer whose spec.loadBalancerClass\n\
        is --load-balancer-class (and, with --default-class, those without a class), their\n\
        EndpointSlices, ALB Ingresses, IngressClasses, AlbConfigs, AccessControlLists and TLS\n\
        Secrets. --write-status (one pod per cluster) or --leader-election (every pod; the\n\
        Lease holder writes) writes status.loadBalancer and an Event per rejected object.")]
    Run {
        /// Directory of Kubernetes YAML (Service, EndpointSlice, ...), watched for changes.
        #[arg(long, required_unless_present = "kubernetes", conflicts_with = "kubernetes")]
        manifests: Option<PathBuf>,
        /// Watch the Kubernetes API instead of a manifest directory.
        #[arg(long)]
        kubernetes: bool,
        /// With --kubernetes: serve the LoadBalancer Services of this spec.loadBalancerClass.
        #[arg(long, default_value = kube::DEFAULT_CLASS)]
        load_balancer_class: String,
        /// With --kubernetes: also serve LoadBalancer Services without a loadBalancerClass
        /// (only where no other load-balancer implementation takes them).
        #[arg(long)]
        default_class: bool,
        /// With --kubernetes: write status.loadBalancer.ingress of the served Services (their
        /// VIPs) and ALB Ingresses (this node's addresses), and an Event per rejected object.
        /// Enable it on one pod per cluster: every node would write the same.
        #[arg(long)]
        write_status: bool,
        /// With --kubernetes: every pod may run with this; the one holding the Lease
        /// lb-status-writer (in --lease-namespace) writes status and Events. Implies
        /// --write-status; needs --node-name (the pod's identity in the Lease).
        #[arg(long)]
        leader_election: bool,
        /// Namespace of the leader-election Lease (the pod's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "lb-system")]
        lease_namespace: String,
        #[command(flatten)]
        kube_flags: kube::cli::KubeFlags,
        /// Interfaces to attach to, comma separated (client side and backend side).
        #[arg(long, value_delimiter = ',', required = true)]
        iface: Vec<String>,
        /// Source ports used for full NAT, inclusive (added to net.ipv4.ip_local_reserved_ports
        /// while lb runs, so the node's own connections never take them). Each backend holds
        /// as many flows at once per node address as the range has ports. A range overlapping
        /// net.ipv4.ip_local_port_range or the NodePort range (30000-32767) is an error.
        #[arg(long, default_value = dataplane::DEFAULT_SNAT_PORTS_ARG, value_parser = parse_range)]
        snat_ports: (u16, u16),
        /// Where the datapath is pinned in bpffs: its programs stay attached and keep
        /// forwarding while lb is stopped, restarted or upgraded, and the next `lb run` with
        /// the same directory adopts its flows (docs/datapath.md, "Restarts and upgrades").
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Do not pin: the datapath is detached when lb exits, and its flows are lost.
        #[arg(long, conflicts_with = "pin_dir")]
        no_pin: bool,
        /// Where lb keeps the last good version of every Service and AccessControlList
        /// (last-good.json), so that after a restart an object rejected then keeps serving
        /// its last good version. A host directory in the DaemonSet; lb uninstall removes it.
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Flows the conntrack table holds.
        #[arg(long, default_value_t = lb_common::DEFAULT_CONNTRACK_ENTRIES)]
        conntrack_entries: u32,
        /// TCP flows between the client's SYN and its handshake ACK that the half-open table
        /// holds (a SYN flood churns this table only; see docs/datapath.md).
        #[arg(long, default_value_t = lb_common::DEFAULT_HALF_OPEN_ENTRIES)]
        half_open_entries: u32,
        /// When the datapath answers SYNs from a NIC itself with SYN cookies, so a flood from
        /// spoofed sources takes no state and no source port: auto (under pressure: see
        /// --syn-cookie-rate, or when a new flow finds no free source port), always, off.
        /// Cookie flows have no window scaling, SACK or timestamps (docs/datapath.md).
        #[arg(long, default_value_t = dataplane::SynCookies::Auto)]
        syn_cookies: dataplane::SynCookies,
        /// SYNs per second on one CPU above which --syn-cookies auto turns cookies on (0: only
        /// when no source port is free).
        #[arg(long, default_value_t = dataplane::DEFAULT_SYN_COOKIE_RATE)]
        syn_cookie_rate: u32,
        /// Entries of the table holding every listener's rr/wrr ring and Maglev table
        /// (a Maglev listener takes 16381, a ring one slot per backend turn; each twice
        /// while it is being replaced).
        #[arg(long, default_value_t = lb_common::DEFAULT_BACKEND_TABLE_ENTRIES)]
        backend_table_entries: u32,
        /// Distinct backends (address, port) over all listeners (per-backend counters take 40
        /// bytes per CPU each).
        #[arg(long, default_value_t = lb_common::MAX_BACKENDS)]
        max_backends: u32,
        /// Prefixes Services may take their VIPs from (repeatable, or comma separated in
        /// LB_VIP_POOLS); a Service whose VIP is outside every one is rejected. None given: any
        /// VIP but those always refused (loopback, link-local, multicast, unspecified,
        /// broadcast, the node's own addresses).
        #[arg(long = "vip-pool", value_name = "CIDR", env = "LB_VIP_POOLS", value_delimiter = ',', value_parser = parse_pool)]
        vip_pools: Vec<Option<ipnet::IpNet>>,
        /// An associated cluster of an ALB multi-cluster gateway (repeatable): `ID=DIR`, a
        /// directory of its EndpointSlices, or `ID=kubeconfig:PATH`, its API server. The
        /// Ingresses of an AlbConfig listing ID in remote-clusters take their endpoints from it.
        #[arg(long = "cluster", value_name = "ID=DIR|ID=kubeconfig:PATH")]
        clusters: Vec<clusters::ClusterSpec>,
        /// How often the agent ticks, in milliseconds: a manifest directory without inotify is
        /// listed then (with inotify, changes are read as they come).
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
        /// How often idle and drained flows are swept from conntrack, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        sweep_ms: u64,
        /// Idle timeout of a UDP flow, in seconds.
        #[arg(long, default_value_t = 120)]
        udp_timeout: u64,
        /// This node's name (externalTrafficPolicy: Local serves only its endpoints).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// Admin endpoint (GET /metrics, /stats, /readyz, /livez; /healthz = /livez); "off"
        /// to disable.
        #[arg(long, default_value = admin::DEFAULT_ADDR)]
        admin: String,
        #[command(flatten)]
        l7: l7::cli::L7Flags,
        #[command(flatten)]
        l7_mode: l7::cli::ModeFlags,
    },
    /// Run the L7 proxy alone: it binds the L7 listeners the agent sends over its control
    /// socket and serves them. `lb run` starts one itself (--l7-mode process, the default);
    /// a DaemonSet may run it as a container of its own next to `lb run --l7-mode external`.
    #[command(after_help = "Example:\n  lb proxy --control /run/lb/l7.sock --l7-max-memory-mib 1024")]
    Proxy {
        /// The agent's control socket (`lb run --l7-mode external --l7-control-socket PATH`):
        /// when the agent goes, the proxy keeps serving its last routes and connects again.
        #[arg(long, required_unless_present = "control_fd", conflicts_with = "control_fd")]
        control: Option<PathBuf>,
        /// A connected control socket inherited from `lb run`, which started this process:
        /// when it closes, the proxy drains and exits.
        #[arg(long, hide = true)]
        control_fd: Option<i32>,
        #[command(flatten)]
        l7: l7::cli::L7Flags,
    },
    /// Apply every privileged node setting `lb run` needs, idempotently: IPv4 forwarding (all
    /// interfaces, and those created later), IPv4 and IPv6 forwarding on the NICs, the
    /// full-NAT ports in net.ipv4.ip_local_reserved_ports, a bpffs for the pin directory. Run
    /// it (privileged) before `lb run`, which then needs only CAP_BPF, CAP_NET_ADMIN,
    /// CAP_PERFMON (and CAP_NET_BIND_SERVICE for L7 ports below 1024) and a read-only
    /// /proc/sys; the DaemonSet's init container does.
    #[command(
        after_help = "Example:\n  lb node-prep --iface eth0\n  lb node-prep --iface eth0,eth1 --snat-ports 10000-29999 --pin-dir /sys/fs/bpf/lb"
    )]
    NodePrep {
        /// The interfaces `lb run --iface` gets, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        iface: Vec<String>,
        /// The full-NAT source ports `lb run --snat-ports` gets.
        #[arg(long, default_value = dataplane::DEFAULT_SNAT_PORTS_ARG, value_parser = parse_range)]
        snat_ports: (u16, u16),
        /// The pin directory `lb run --pin-dir` gets (its bpffs is mounted if missing).
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// `lb run` runs with --no-pin: no bpffs needed.
        #[arg(long, conflicts_with = "pin_dir")]
        no_pin: bool,
    },
    /// Remove the datapath from the node: detach the pinned XDP and tc programs from every
    /// interface, delete the pinned maps (every flow), and release the full-NAT ports from
    /// net.ipv4.ip_local_reserved_ports. Stop `lb run` first.
    #[command(
        after_help = "Example:\n  lb uninstall\n  lb uninstall --pin-dir /sys/fs/bpf/lb --snat-ports 10000-29999"
    )]
    Uninstall {
        /// The pin directory `lb run` used.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// The state directory `lb run` used.
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The full-NAT source ports `lb run` reserved.
        #[arg(long, default_value = dataplane::DEFAULT_SNAT_PORTS_ARG, value_parser = parse_range)]
        snat_ports: (u16, u16),
    },
    /// Print the running daemon's counters: datapath-wide, per listener, per backend.
    #[command(after_help = "Example:\n  lb stats\n  lb stats --admin 127.0.0.1:9901 --json")]
    Stats {
        /// The daemon's admin endpoint.
        #[arg(long, default_value = admin::DEFAULT_ADDR)]
        admin: std::net::SocketAddr,
        /// Print the JSON as the daemon sends it.
        #[arg(long)]
        json: bool,
    },
    /// Validate a manifest directory offline: print the model, or every rejected object
    /// (including what would not fit the datapath's sizes, as `lb run` sets them).
    #[command(after_help = "Example:\n  lb check --manifests ./examples --json")]
    Check {
        #[arg(long)]
        manifests: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// The node to validate for (externalTrafficPolicy: Local).
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        /// The backend table's size, as given to `lb run`.
        #[arg(long, default_value_t = lb_common::DEFAULT_BACKEND_TABLE_ENTRIES)]
        backend_table_entries: u32,
        /// Distinct backends, as given to `lb run`.
        #[arg(long, default_value_t = lb_common::MAX_BACKENDS)]
        max_backends: u32,
        /// Prefixes Services may take their VIPs from (repeatable, or comma separated in
        /// LB_VIP_POOLS); a Service whose VIP is outside every one is rejected. None given: any
        /// VIP but those always refused (loopback, link-local, multicast, unspecified,
        /// broadcast, the node's own addresses).
        #[arg(long = "vip-pool", value_name = "CIDR", env = "LB_VIP_POOLS", value_delimiter = ',', value_parser = parse_pool)]
        vip_pools: Vec<Option<ipnet::IpNet>>,
        /// The node's own addresses, never a VIP (repeatable; `lb run` reads them from the
        /// node's interfaces). None given: that check is skipped.
        #[arg(long = "node-address", value_name = "ADDRESS", value_delimiter = ',')]
        node_addresses: Vec<std::net::IpAddr>,
        /// An associated cluster of an ALB multi-cluster gateway, as given to `lb run`
        /// (`ID=DIR`; repeatable).
        #[arg(long = "cluster", value_name = "ID=DIR")]
        clusters: Vec<clusters::ClusterSpec>,
        /// The full-NAT source ports, as given to `lb run`: an error when they overlap the
        /// NodePort range (30000-32767) or this machine's net.ipv4.ip_local_port_range.
        #[arg(long, default_value = dataplane::DEFAULT_SNAT_PORTS_ARG, value_parser = parse_range)]
        snat_ports: (u16, u16),
    },
}

/// Where `lb run` pins the datapath by default (the host's bpffs).
const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/lb";
const DEFAULT_STATE_DIR: &str = "/run/lb";

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected FIRST-LAST, e.g. 10000-29999")?;
    let a: u16 = a.trim().parse().map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b.trim().parse().map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || b < a {
        return Err(format!("{s}: need 1 <= FIRST <= LAST <= 65535"));
    }
    Ok((a, b))
}

/// A `--vip-pool`: a prefix, or one address (a /32 or /128); empty is none (an empty
/// `LB_VIP_POOLS`, as the ConfigMap ships it).
fn parse_pool(s: &str) -> Result<Option<ipnet::IpNet>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<ipnet::IpNet>()
        .map(|p| p.trunc())
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(Some)
        .map_err(|_| format!("{s:?} is not a CIDR prefix (e.g. 198.51.100.0/24, 2001:db8:1::/64)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let log_format = cli.log_format;
    match cli.command {
        Command::Run {
            manifests,
            kubernetes,
            load_balancer_class,
            default_class,
            write_status,
            leader_election,
            lease_namespace,
            kube_flags,
            iface,
            snat_ports,
            pin_dir,
            no_pin,
            state_dir,
            conntrack_entries,
            half_open_entries,
            syn_cookies,
            syn_cookie_rate,
            backend_table_entries,
            max_backends,
            vip_pools,
            clusters,
            poll_ms,
            sweep_ms,
            udp_timeout,
            node_name,
            admin,
            l7,
            l7_mode,
        } => {
            let admin = match admin.as_str() {
                "off" => None,
                a => Some(a.parse().with_context(|| format!("--admin {a}: not ADDRESS:PORT or off"))?),
            };
            let source = match manifests {
                Some(dir) if !kubernetes => {
                    if write_status
                        || leader_election
                        || default_class
                        || load_balancer_class != kube::DEFAULT_CLASS
                        || kube_flags.is_set()
                    {
                        bail!(
                            "--write-status, --leader-election, --default-class, --load-balancer-class, --publish-service, --publish-status-address and --secret-* need --kubernetes"
                        );
                    }
                    SourceOptions::Dir(dir)
                }
                _ => SourceOptions::Kube(kube::KubeOptions {
                    class: load_balancer_class,
                    default_class,
                    write_status: write_status || leader_election,
                    leader_election: match (leader_election, &node_name) {
                        (false, _) => None,
                        (true, Some(node)) => Some(kube::leader::LeaseOptions::new(lease_namespace, node.clone())),
                        (true, None) => bail!("--leader-election needs --node-name (or NODE_NAME)"),
                    },
                    node_name: node_name.clone(),
                    ..Default::default()
                }),
            };
            let source = match source {
                SourceOptions::Kube(mut k) => {
                    kube_flags.apply(&mut k)?;
                    SourceOptions::Kube(k)
                }
                dir => dir,
            };
            clusters::check_unique(&clusters).map_err(anyhow::Error::msg)?;
            let opts = agent::RunOptions {
                source,
                clusters,
                ifaces: iface,
                dataplane: dataplane::Options {
                    conntrack_entries,
                    half_open_entries,
                    snat_ports,
                    backend_table_entries,
                    max_backends,
                    pin: (!no_pin).then_some(pin_dir),
                    syn_cookies,
                    syn_cookie_rate,
                },
                state_dir,
                poll: Duration::from_millis(poll_ms),
                sweep: Duration::from_millis(sweep_ms),
                sweep_options: dataplane::conntrack::SweepOptions {
                    udp_timeout: Duration::from_secs(udp_timeout),
                    ..Default::default()
                },
                build: model::BuildOptions {
                    node_name,
                    addresses: model::addresses::AddressPolicy {
                        vip_pools: vip_pools.into_iter().flatten().collect(),
                        ..Default::default()
                    },
                },
                admin,
                l7: l7::supervise::FrontOptions {
                    mode: l7_mode.l7_mode,
                    bind_all: l7.l7_bind.clone(),
                    limits: l7.limits(),
                    trusted: l7.l7_trusted_proxies.clone(),
                    // The very binary running now (by its path while it is the same file).
                    exe: PathBuf::from("/proc/self/exe"),
                    args: [l7.to_args(), vec![format!("--log-format={}", log_format.name())]].concat(),
                    socket: l7_mode.l7_control_socket,
                },
            };
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(agent::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Proxy { control, control_fd, l7 } => {
            l7::process::set_name();
            l7::process::set_process_limits(&l7.process_limits()).context("setting the L7 proxy's limits")?;
            let control = match (control_fd, control) {
                (Some(fd), _) => l7::process::Control::Fd(fd),
                (None, Some(path)) => l7::process::Control::Socket(path),
                (None, None) => bail!("--control SOCKET is required"),
            };
            let opts = l7::process::ProcessOptions {
                control,
                bind_all: l7.l7_bind.clone(),
                limits: l7.limits(),
                trusted: l7.l7_trusted_proxies.clone(),
                workers: l7.workers(),
            };
            // This thread only talks to the agent and applies configurations; the listeners
            // are served by the worker threads (l7::workers).
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(l7::process::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::NodePrep { iface, snat_ports, pin_dir, no_pin } => {
            let prep = lb_userspace::nodeprep::NodePrep {
                ifaces: &iface,
                snat_ports,
                pin_dir: (!no_pin).then_some(pin_dir.as_path()),
            };
            let done = lb_userspace::nodeprep::prepare(&prep)?;
            if done.is_empty() {
                println!("lb: node ready (every setting was in place)");
            }
            for line in done {
                println!("lb: {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall { pin_dir, state_dir, snat_ports: (first, last) } => {
            let links = dataplane::pin::PinDir::remove_all(&pin_dir)?;
            println!("lb: removed {} ({links} link(s): their programs left the interfaces)", pin_dir.display());
            let state = state_dir.join(agent::LAST_GOOD_FILE);
            match std::fs::remove_file(&state) {
                Ok(()) => println!("lb: removed {}", state.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => bail!("removing {}: {e}", state.display()),
            }
            lb_userspace::netif::unreserve_ports(first, last)?;
            println!("lb: ports {first}-{last} no longer reserved");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let routes = rt.block_on(lb_userspace::netif::remove_vip_routes())?;
            println!("lb: removed {routes} VIP route(s) of the L7 listeners");
            Ok(ExitCode::SUCCESS)
        }
        Command::Stats { admin, json } => stats(admin, json),
        Command::Check {
            manifests,
            json,
            node_name,
            backend_table_entries,
            max_backends,
            vip_pools,
            node_addresses,
            clusters,
            snat_ports,
        } => {
            let sizes = dataplane::Options { backend_table_entries, max_backends, ..Default::default() };
            let addresses = model::addresses::AddressPolicy {
                vip_pools: vip_pools.into_iter().flatten().collect(),
                node_addresses: node_addresses.into_iter().collect(),
                allow_loopback: false,
            };
            let opts = model::BuildOptions { node_name, addresses };
            let capacity = dataplane::Capacity::of(&sizes);
            let ports =
                dataplane::check_snat_ports(snat_ports, dataplane::local_port_range()).map_err(anyhow::Error::msg);
            match ports.and_then(|()| check(&manifests, &clusters, json, &opts, &capacity)) {
                Err(e) if json => {
                    // Scripts reading the JSON get the reason there too (and on stderr).
                    let out = serde_json::json!({ "schema": CHECK_SCHEMA, "error": format!("{e:#}") });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    Err(e)
                }
                result => result,
            }
        }
    }
}

/// The version of `lb check --json`'s format (docs/check-json.md); raised when a field
/// changes meaning or goes away.
const CHECK_SCHEMA: u32 = 1;

fn check(
    dir: &std::path::Path,
    clusters: &[clusters::ClusterSpec],
    json: bool,
    opts: &model::BuildOptions,
    capacity: &dataplane::Capacity,
) -> Result<ExitCode> {
    if !dir.is_dir() {
        bail!("{}: not a directory", dir.display());
    }
    let mut objects = manifests::load_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    clusters::check_unique(clusters).map_err(anyhow::Error::msg)?;
    for c in clusters {
        let clusters::ClusterFrom::Dir(cdir) = &c.from else {
            bail!("--cluster {}: lb check reads cluster directories only", c.id);
        };
        let mut set =
            manifests::load_dir(cdir).with_context(|| format!("--cluster {}: reading {}", c.id, cdir.display()))?;
        objects.errors.append(&mut set.errors);
        objects.clusters.insert(c.id.clone(), set.endpoint_slices);
    }
    let mut build = model::build(&objects, opts);
    let too_big = dataplane::capacity::enforce(&mut build.model, capacity);
    build.errors.extend(too_big);
    let manifest_errors: Vec<String> = objects.errors.iter().map(ToString::to_string).collect();
    let ok = manifest_errors.is_empty() && build.errors.is_empty();
    if json {
        let out = if ok {
            serde_json::json!({ "schema": CHECK_SCHEMA, "model": build.model, "notices": build.notices })
        } else {
            serde_json::json!({
                "schema": CHECK_SCHEMA,
                "manifest_errors": manifest_errors,
                "errors": build.errors,
                "notices": build.notices,
                "model": build.model,
            })
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for e in &manifest_errors {
            println!("error: {e}");
        }
        for e in &build.errors {
            println!("error: {e}");
        }
        for n in &build.notices {
            println!("note: {n}");
        }
        for (name, l) in &build.model.listeners {
            println!("{name} ({}) -> {} backend(s)", l.source, l.backends.len());
        }
        for (name, l) in &build.model.l7 {
            let sources: Vec<String> = l.sources.iter().map(ToString::to_string).collect();
            let routes = l.routes.len() + l.canaries.len();
            let endpoints: std::collections::BTreeSet<_> = l
                .routes
                .iter()
                .chain(&l.canaries)
                .flat_map(|r| &r.upstreams)
                .flat_map(|u| &u.endpoints)
                .map(|e| e.addr)
                .collect();
            println!("{name} ({}) -> {routes} route(s), {} endpoint(s)", sources.join(", "), endpoints.len());
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn stats(addr: std::net::SocketAddr, json: bool) -> Result<ExitCode> {
    let body = admin::get(addr, "/stats")?;
    if json {
        println!("{}", body.trim());
        return Ok(ExitCode::SUCCESS);
    }
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    println!("datapath");
    for (name, c) in v["datapath"].as_object().into_iter().flatten() {
        if n(&c["packets"]) > 0 {
            println!("  {name:<22} {:>12} pkts {:>14} bytes", n(&c["packets"]), n(&c["bytes"]));
        }
    }
    println!("listeners");
    for (name, c) in v["listeners"].as_object().into_iter().flatten() {
        println!(
            "  {name:<32} flows {:>8}  in {:>10} pkts  out {:>10} pkts  acl drops {:>6}  no backend {:>6}",
            n(&c["new_flows"]),
            n(&c["packets"]),
            n(&c["reply_packets"]),
            n(&c["acl_drops"]),
            n(&c["no_backend_drops"])
        );
    }
    println!("backends");
    for (name, c) in v["backends"].as_object().into_iter().flatten() {
        println!(
            "  {name:<32} flows {:>8}  {:>10} pkts {:>14} bytes",
            n(&c["new_flows"]),
            n(&c["packets"]),
            n(&c["bytes"])
        );
    }
    if let Some(l7) = v["l7"].as_object().filter(|m| !m.is_empty()) {
        println!("l7 listeners");
        for (name, c) in l7 {
            let r = &c["responses"];
            println!(
                "  {name:<32} conns {:>8}  requests {:>10}  2xx {:>8}  3xx {:>6}  4xx {:>6}  5xx {:>6}  acl refused {:>6}",
                n(&c["connections"]),
                n(&c["requests"]),
                n(&r["2xx"]),
                n(&r["3xx"]),
                n(&r["4xx"]),
                n(&r["5xx"]),
                n(&c["refused_by_acl"])
            );
        }
    }
    let a = &v["agent"];
    if a.is_object() {
        println!(
            "agent\n  reloads {}  objects rejected now {} (total {})  manifests rejected {}  L7 listener errors {}  \
             not loaded into the datapath {}",
            n(&a["reloads"]),
            n(&a["objects_rejected"]),
            n(&a["rejections_total"]),
            n(&a["manifests_rejected"]),
            n(&a["l7_listener_errors"]),
            n(&a["datapath_errors"])
        );
    }
    Ok(ExitCode::SUCCESS)
}
