//! The L7 proxy's command-line flags: [`L7Flags`] are taken by `lb run` and `lb proxy` alike
//! (`lb run` hands them to the proxy process it starts), [`ModeFlags`] by `lb run` only.
use std::{path::PathBuf, time::Duration};

use super::{Limits, limits, process::ProcessLimits, supervise::Mode};

#[derive(Debug, Clone, clap::Args)]
pub struct L7Flags {
    /// Addresses the ALB (Ingress) L7 listeners bind, comma separated; the default is every
    /// address of the node, like a host-network ingress controller. CLB http/https
    /// listeners always bind their Service's VIP.
    #[arg(long, value_delimiter = ',', default_value = "0.0.0.0,::")]
    pub l7_bind: Vec<std::net::IpAddr>,
    /// Open connections per L7 listener; more are closed at accept.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS)]
    pub l7_max_connections: usize,
    /// Open connections per L7 listener from one client address.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS_PER_CLIENT)]
    pub l7_max_connections_per_client: usize,
    /// Largest request body the L7 proxy forwards, in bytes (413 past it).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_BODY_BYTES)]
    pub l7_max_body_bytes: u64,
    /// Largest request body TrafficMirror copies, in bytes; a longer one goes to the primary
    /// backend only (counted as `mirror_skipped`).
    #[arg(long, default_value_t = limits::DEFAULT_MIRROR_MAX_BODY_BYTES)]
    pub l7_mirror_max_body_bytes: u64,
    /// Seconds an upgraded L7 connection (WebSocket) may stay silent before it is closed.
    #[arg(long, default_value_t = limits::DEFAULT_TUNNEL_IDLE_S)]
    pub l7_tunnel_idle: u64,
    /// Seconds a backend's response body may send nothing before the L7 proxy cuts it off.
    #[arg(long, default_value_t = limits::DEFAULT_BODY_IDLE_S)]
    pub l7_body_idle: u64,
    /// Seconds a client may take to send a request's line and headers (slowloris).
    #[arg(long, default_value_t = limits::DEFAULT_HEADER_TIMEOUT_S)]
    pub l7_header_timeout: u64,
    /// Seconds requests in flight get to finish on shutdown, and on a removed endpoint
    /// whose Ingress/Service sets no connection-drain timeout.
    #[arg(long, default_value_t = limits::DEFAULT_DRAIN_TIMEOUT_S)]
    pub l7_drain_timeout: u64,
    /// Clients whose forwarding headers (X-Forwarded-*, Forwarded, X-Real-IP) the L7 proxy
    /// keeps and appends to: proxies in front of it, comma separated CIDRs. Every other
    /// client's are removed (default: none trusted).
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub l7_trusted_proxies: Vec<ipnet::IpNet>,
    /// Files (sockets included) the L7 proxy process may hold open (RLIMIT_NOFILE); 0: its
    /// soft limit raised to the hard one. Not in --l7-mode inline.
    #[arg(long, default_value_t = 0)]
    pub l7_max_open_files: u64,
    /// Memory the L7 proxy process may take, in MiB (RLIMIT_DATA: heap, anonymous mappings,
    /// thread stacks); past it allocations fail and the proxy exits and is restarted. 0: no
    /// limit of its own (a container's memory limit still applies). Not in --l7-mode inline.
    #[arg(long, default_value_t = 0)]
    pub l7_max_memory_mib: u64,
    /// The L7 proxy process's oom_score_adj (raised to it, never lowered): when the node
    /// runs out of memory the kernel kills the proxy, which is restarted, before the agent.
    #[arg(long, default_value_t = 500, allow_negative_numbers = true)]
    pub l7_oom_score_adj: i32,
    /// Worker threads of the L7 proxy, each with its own listening sockets and backend
    /// connections (like nginx's worker processes); 0: one per CPU the proxy may run on.
    /// Not in --l7-mode inline.
    #[arg(long, default_value_t = 0)]
    pub l7_workers: usize,
}

impl L7Flags {
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.l7_max_connections,
            max_connections_per_client: self.l7_max_connections_per_client,
            max_body_bytes: self.l7_max_body_bytes,
            mirror_max_body_bytes: self.l7_mirror_max_body_bytes,
            tunnel_idle: Duration::from_secs(self.l7_tunnel_idle),
            body_idle: Duration::from_secs(self.l7_body_idle),
            header_timeout: Duration::from_secs(self.l7_header_timeout),
            drain_timeout: Duration::from_secs(self.l7_drain_timeout),
        }
    }

    /// How many worker threads `lb proxy` runs.
    pub fn workers(&self) -> usize {
        if self.l7_workers == 0 { super::workers::default_count() } else { self.l7_workers }
    }

    pub fn process_limits(&self) -> ProcessLimits {
        ProcessLimits {
            open_files: (self.l7_max_open_files > 0).then_some(self.l7_max_open_files),
            memory: (self.l7_max_memory_mib > 0).then_some(self.l7_max_memory_mib << 20),
            oom_score_adj: self.l7_oom_score_adj,
        }
    }

    /// The same flags as arguments of `lb proxy`.
    pub fn to_args(&self) -> Vec<String> {
        let join = |v: Vec<String>| v.join(",");
        let mut args = vec![
            format!("--l7-bind={}", join(self.l7_bind.iter().map(ToString::to_string).collect())),
            format!("--l7-max-connections={}", self.l7_max_connections),
            format!("--l7-max-connections-per-client={}", self.l7_max_connections_per_client),
            format!("--l7-max-body-bytes={}", self.l7_max_body_bytes),
            format!("--l7-mirror-max-body-bytes={}", self.l7_mirror_max_body_bytes),
            format!("--l7-tunnel-idle={}", self.l7_tunnel_idle),
            format!("--l7-body-idle={}", self.l7_body_idle),
            format!("--l7-header-timeout={}", self.l7_header_timeout),
            format!("--l7-drain-timeout={}", self.l7_drain_timeout),
            format!("--l7-max-open-files={}", self.l7_max_open_files),
            format!("--l7-max-memory-mib={}", self.l7_max_memory_mib),
            format!("--l7-oom-score-adj={}", self.l7_oom_score_adj),
            format!("--l7-workers={}", self.l7_workers),
        ];
        if !self.l7_trusted_proxies.is_empty() {
            args.push(format!(
                "--l7-trusted-proxies={}",
                join(self.l7_trusted_proxies.iter().map(ToString::to_string).collect())
            ));
        }
        args
    }
}

/// Where `lb run` runs its L7 proxy.
#[derive(Debug, Clone, clap::Args)]
pub struct ModeFlags {
    /// process: the L7 proxy is a process of its own (`lb proxy`) that lb run starts and
    /// restarts; external: `lb proxy --control SOCKET` is started by someone else (a second
    /// container of the pod) and connects to --l7-control-socket; inline: in lb run's own
    /// process (an L7 overload then shares the agent's memory and file limits).
    #[arg(long, default_value = "process")]
    pub l7_mode: Mode,
    /// With --l7-mode external: the Unix socket the proxy connects to (created mode 0600).
    #[arg(long, default_value = DEFAULT_CONTROL_SOCKET)]
    pub l7_control_socket: PathBuf,
}

/// Where `lb run --l7-mode external` listens for the proxy by default.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/lb/l7.sock";
