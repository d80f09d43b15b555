//! One scrape of `/metrics`: a [`Snapshot`] of what the agent knows (read from the
//! datapath's counters, the L7 proxy's atomics and the agent's own state, nothing walked
//! per scrape), encoded by `prometheus-client` in the Prometheus text format 0.0.4. Every
//! name and label is listed in docs/metrics.md.
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, prometheus_text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::latency::HistogramSnapshot;
use crate::dataplane::{Count, Stats};

/// The `Content-Type` of [`Snapshot::encode`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// An L4 listener's labels.
#[derive(Debug, Clone, Default)]
pub struct ListenerLabels {
    /// `VIP:port/proto`, as in `/stats`.
    pub listener: String,
    pub vip: String,
    pub port: u16,
    pub protocol: &'static str,
    /// The object that asked for it (`namespace/name`).
    pub service: String,
}

/// An L7 listener's counters.
#[derive(Debug, Clone, Default)]
pub struct L7Snapshot {
    pub connections: u64,
    pub refused_by_acl: u64,
    pub refused_over_limit: u64,
    pub abusive_closed: u64,
    pub tls_failures: u64,
    /// Responses by class: index 0 = 1xx ... 4 = 5xx.
    pub responses: [u64; 5],
    pub latency: HistogramSnapshot,
}

/// What the agent counts.
#[derive(Debug, Clone, Default)]
pub struct AgentSnapshot {
    pub reloads: u64,
    pub rejections_total: u64,
    pub objects_rejected: u64,
    pub manifests_rejected: u64,
    pub l7_listener_errors: u64,
    pub datapath_errors: u64,
    /// Unix time of the last set of objects the source delivered.
    pub last_sync: Option<f64>,
}

/// Everything one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub datapath: Stats,
    /// Labels of the listeners in `datapath.listeners`, by listener name.
    pub listener_labels: std::collections::BTreeMap<String, ListenerLabels>,
    /// Flows in conntrack at the last sweep, and the table's size.
    pub conntrack_flows: Option<u64>,
    pub conntrack_entries: u64,
    pub half_open_entries: u64,
    /// Full-NAT source ports per SNAT address.
    pub snat_ports: u64,
    /// Health-checked backends (`addr:port`) and whether they are healthy.
    pub health: Vec<(String, bool)>,
    /// L7 listeners by key.
    pub l7: Vec<(String, L7Snapshot)>,
    /// The L7 proxy process (not inline): up, and times it was restarted.
    pub l7_proxy: Option<(bool, u64)>,
    pub agent: AgentSnapshot,
    pub ready: bool,
    pub leader: Option<bool>,
}

impl Snapshot {
    /// The Prometheus text.
    pub fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing to a String cannot fail, and every value here encodes.
        prometheus_text::encode(&mut out, &registry).expect("encoding metrics into a String");
        out
    }
}

type Labels<'a> = Vec<(&'static str, String)>;

/// Writes one family: `name` (a counter's without `_total`, which the encoder appends).
fn family<'a, M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels<'a>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, u64)>,
) -> Result<(), std::fmt::Error> {
    family(e, name, help, MetricType::Counter, rows.into_iter().map(|(l, v)| (l, ConstCounter::new(v))))
}

fn gauge<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels<'a>, i64)>,
) -> Result<(), std::fmt::Error> {
    family(e, name, help, MetricType::Gauge, rows.into_iter().map(|(l, v)| (l, ConstGauge::new(v))))
}

/// `f`, its argument's type taken from the map's values.
fn field<T>(_: &std::collections::BTreeMap<String, T>, f: fn(&T) -> u64) -> fn(&T) -> u64 {
    f
}

fn one(v: u64) -> [(Labels<'static>, i64); 1] {
    [(Vec::new(), i64::try_from(v).unwrap_or(i64::MAX))]
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut e;
        self.encode_datapath(e)?;
        self.encode_l7(e)?;
        self.encode_agent(e)
    }
}

impl Snapshot {
    fn encode_datapath(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let dp = &self.datapath.datapath;
        let by_counter =
            |f: fn(&Count) -> u64| dp.iter().map(move |(name, c)| (vec![("counter", (*name).to_string())], f(c)));
        counter(
            e,
            "lb_datapath_packets",
            "Packets the XDP and tc programs counted, by counter (docs/metrics.md)",
            by_counter(|c| c.packets),
        )?;
        counter(
            e,
            "lb_datapath_bytes",
            "Bytes of the packets the XDP and tc programs counted, by counter",
            by_counter(|c| c.bytes),
        )?;

        let listener = |name: &String| {
            let l = self
                .listener_labels
                .get(name)
                .cloned()
                .unwrap_or_else(|| ListenerLabels { listener: name.clone(), ..Default::default() });
            vec![
                ("listener", l.listener),
                ("vip", l.vip),
                ("port", l.port.to_string()),
                ("protocol", l.protocol.to_string()),
                ("service", l.service),
            ]
        };
        let ls = &self.datapath.listeners;
        let per_listener = |f: fn(&_) -> u64| ls.iter().map(move |(n, s)| (listener(n), f(s)));
        let rows = [
            ("lb_listener_packets", "Packets from clients to an L4 listener", field(ls, |s| s.packets)),
            ("lb_listener_bytes", "Bytes from clients to an L4 listener", field(ls, |s| s.bytes)),
            (
                "lb_listener_reply_packets",
                "Packets from backends back to clients of an L4 listener",
                field(ls, |s| s.reply_packets),
            ),
            (
                "lb_listener_reply_bytes",
                "Bytes from backends back to clients of an L4 listener",
                field(ls, |s| s.reply_bytes),
            ),
            ("lb_listener_new_flows", "Flows an L4 listener opened", field(ls, |s| s.new_flows)),
            ("lb_listener_acl_drops", "Packets an L4 listener's ACL dropped", field(ls, |s| s.acl_drops)),
            (
                "lb_listener_no_backend_drops",
                "Packets an L4 listener dropped for want of a backend",
                field(ls, |s| s.no_backend_drops),
            ),
            ("lb_listener_handshakes", "TCP handshakes an L4 listener completed", field(ls, |s| s.handshakes)),
            (
                "lb_listener_no_flow_drops",
                "TCP packets other than a SYN for no known flow, dropped",
                field(ls, |s| s.no_flow_drops),
            ),
        ];
        for (name, help, f) in rows {
            counter(e, name, help, per_listener(f))?;
        }

        let bs = &self.datapath.backends;
        let rows = [
            ("lb_backend_packets", "Packets the L4 datapath sent to a backend", field(bs, |s| s.packets)),
            ("lb_backend_bytes", "Bytes the L4 datapath sent to a backend", field(bs, |s| s.bytes)),
            ("lb_backend_new_flows", "Flows the L4 datapath opened to a backend", field(bs, |s| s.new_flows)),
        ];
        for (name, help, f) in rows {
            counter(e, name, help, bs.iter().map(|(b, s)| (vec![("backend", b.clone())], f(s))))?;
        }
        gauge(
            e,
            "lb_backend_healthy",
            "1 if a health-checked backend passes its checks, 0 if it gets no new flows",
            self.health.iter().map(|(b, ok)| (vec![("backend", b.clone())], i64::from(*ok))),
        )?;
        if let Some(flows) = self.conntrack_flows {
            gauge(e, "lb_conntrack_flows", "Established flows in conntrack at the last sweep", one(flows))?;
        }
        gauge(
            e,
            "lb_conntrack_entries",
            "Flows the conntrack table holds (--conntrack-entries)",
            one(self.conntrack_entries),
        )?;
        gauge(
            e,
            "lb_half_open_entries",
            "TCP handshakes the half-open table holds (--half-open-entries)",
            one(self.half_open_entries),
        )?;
        gauge(
            e,
            "lb_snat_ports",
            "Full-NAT source ports per SNAT address and backend (--snat-ports)",
            one(self.snat_ports),
        )
    }

    fn encode_l7(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((up, restarts)) = self.l7_proxy {
            gauge(e, "lb_l7_proxy_up", "1 while the L7 proxy process is running and connected", one(u64::from(up)))?;
            counter(
                e,
                "lb_l7_proxy_restarts",
                "Times the L7 proxy process exited or lost its channel and was started again",
                [(Vec::new(), restarts)],
            )?;
        }
        let l7 = &self.l7;
        let by = |f: fn(&L7Snapshot) -> u64| l7.iter().map(move |(k, s)| (vec![("listener", k.clone())], f(s)));
        counter(e, "lb_l7_connections", "Connections an L7 listener accepted", by(|s| s.connections))?;
        counter(
            e,
            "lb_l7_connections_refused",
            "Connections an L7 listener closed at accept, by reason (acl, limit)",
            l7.iter().flat_map(|(k, s)| {
                [
                    (vec![("listener", k.clone()), ("reason", "acl".to_string())], s.refused_by_acl),
                    (vec![("listener", k.clone()), ("reason", "limit".to_string())], s.refused_over_limit),
                ]
            }),
        )?;
        counter(
            e,
            "lb_l7_abusive_closed",
            "L7 connections cut off for abandoning too many requests",
            by(|s| s.abusive_closed),
        )?;
        counter(e, "lb_l7_tls_failures", "TLS handshakes an L7 listener failed or timed out", by(|s| s.tls_failures))?;
        counter(
            e,
            "lb_l7_responses",
            "Responses an L7 listener sent, by status class (1xx ... 5xx)",
            l7.iter().flat_map(|(k, s)| {
                s.responses
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (vec![("listener", k.clone()), ("code", format!("{}xx", i + 1))], *n))
            }),
        )?;
        let mut m = e.encode_descriptor(
            "lb_l7_request_duration_seconds",
            "Time from an L7 request's head to its response's head",
            None,
            MetricType::Histogram,
        )?;
        for (k, s) in l7 {
            let labels: Labels = vec![("listener", k.clone())];
            let h = &s.latency;
            m.encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }

    fn encode_agent(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let a = &self.agent;
        counter(e, "lb_agent_reloads", "Times the source delivered a new set of objects", [(Vec::new(), a.reloads)])?;
        counter(
            e,
            "lb_agent_rejections",
            "Objects rejected, each build counting its own",
            [(Vec::new(), a.rejections_total)],
        )?;
        gauge(e, "lb_agent_objects_rejected", "Objects the last build rejected", one(a.objects_rejected))?;
        gauge(
            e,
            "lb_agent_manifests_rejected",
            "Manifests that did not parse at the last reload",
            one(a.manifests_rejected),
        )?;
        gauge(
            e,
            "lb_agent_l7_listener_errors",
            "L7 listeners not (re)configured at the last apply",
            one(a.l7_listener_errors),
        )?;
        gauge(
            e,
            "lb_agent_datapath_errors",
            "L4 listeners and ACLs the datapath could not take at the last apply",
            one(a.datapath_errors),
        )?;
        if let Some(t) = a.last_sync {
            family(
                e,
                "lb_agent_last_sync_timestamp_seconds",
                "Unix time the source last delivered a set of objects",
                MetricType::Gauge,
                [(Vec::new(), ConstGauge::new(t))],
            )?;
        }
        gauge(
            e,
            "lb_ready",
            "1 once the first model is applied and the datapath attached (/readyz)",
            [(Vec::new(), i64::from(self.ready))],
        )?;
        if let Some(leader) = self.leader {
            gauge(
                e,
                "lb_leader",
                "1 while this pod holds the leader-election Lease (writes status and Events)",
                [(Vec::new(), i64::from(leader))],
            )?;
        }
        Ok(())
    }
}

impl From<&crate::l7::server::Counters> for L7Snapshot {
    fn from(c: &crate::l7::server::Counters) -> L7Snapshot {
        use std::sync::atomic::Ordering::Relaxed;
        L7Snapshot {
            connections: c.connections.load(Relaxed),
            refused_by_acl: c.refused_by_acl.load(Relaxed),
            refused_over_limit: c.refused_over_limit.load(Relaxed),
            abusive_closed: c.abusive_closed.load(Relaxed),
            tls_failures: c.tls_failures.load(Relaxed),
            responses: std::array::from_fn(|i| c.responses[i].load(Relaxed)),
            latency: c.latency.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dataplane::Count, metrics::latency::Histogram};

    #[test]
    fn counters_labels_and_histograms_as_prometheus_text() {
        let mut snap = Snapshot { conntrack_flows: Some(7), conntrack_entries: 100, ready: true, ..Default::default() };
        snap.datapath.datapath.insert("rx", Count { packets: 5, bytes: 300 });
        let name = "198.18.100.10:80/tcp".to_string();
        snap.datapath.listeners.insert(name.clone(), Default::default());
        snap.listener_labels.insert(
            name.clone(),
            ListenerLabels {
                listener: name,
                vip: "198.18.100.10".into(),
                port: 80,
                protocol: "tcp",
                service: "e2e/shop".into(),
            },
        );
        snap.health.push(("198.18.1.2:8080".into(), false));
        let h = Histogram::default();
        h.observe(std::time::Duration::from_millis(2));
        h.observe(std::time::Duration::from_millis(20));
        snap.l7.push((
            "198.18.100.10:80".into(),
            L7Snapshot { responses: [0, 2, 0, 0, 1], latency: h.snapshot(), ..Default::default() },
        ));
        let text = snap.encode();
        for line in [
            "# TYPE lb_datapath_packets_total counter",
            r#"lb_datapath_packets_total{counter="rx"} 5"#,
            r#"lb_datapath_bytes_total{counter="rx"} 300"#,
            r#"lb_listener_new_flows_total{listener="198.18.100.10:80/tcp",vip="198.18.100.10",port="80",protocol="tcp",service="e2e/shop"} 0"#,
            r#"lb_backend_healthy{backend="198.18.1.2:8080"} 0"#,
            "lb_conntrack_flows 7",
            "lb_conntrack_entries 100",
            r#"lb_l7_responses_total{listener="198.18.100.10:80",code="2xx"} 2"#,
            r#"lb_l7_responses_total{listener="198.18.100.10:80",code="5xx"} 1"#,
            "# TYPE lb_l7_request_duration_seconds histogram",
            r#"lb_l7_request_duration_seconds_bucket{listener="198.18.100.10:80",le="0.001"} 0"#,
            r#"lb_l7_request_duration_seconds_bucket{listener="198.18.100.10:80",le="0.0025"} 1"#,
            r#"lb_l7_request_duration_seconds_bucket{listener="198.18.100.10:80",le="+Inf"} 2"#,
            r#"lb_l7_request_duration_seconds_count{listener="198.18.100.10:80"} 2"#,
            "lb_ready 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("lb_leader"), "no election, no gauge");
        assert!(!text.contains("lb_agent_last_sync"), "never synced, no timestamp");
    }
}
