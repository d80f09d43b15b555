//! ALB multi-cluster gateways (ACK One): the associated clusters an Ingress's Services take
//! their endpoints from, and how requests split between them — by ready replicas, or by the
//! Ingress's `cluster-weight.<id>` percentages.
use std::collections::BTreeMap;

use super::Endpoint;
use crate::annotations::alb::ClusterWeight;

/// The clusters serving one Ingress of a multi-cluster gateway.
#[derive(Debug, Clone)]
pub struct Fleet<'a> {
    /// The AlbConfig's `remote-clusters` that `lb` has a `--cluster` source for, in order.
    pub clusters: Vec<&'a str>,
    /// The Ingress's `cluster-weight.<id>` annotations (validated: they sum to 100).
    pub weights: &'a [ClusterWeight],
}

/// A cluster's percentage becomes this many weight units, spread over its endpoints in
/// proportion to their own weights (so an endpoint's weight stays ≥ 1 however many share).
const UNITS_PER_PERCENT: u64 = 10_000;

impl Fleet<'_> {
    /// The cluster weights in force: those of clusters this gateway has a source for
    /// (`None`: split by ready replicas). A weighted cluster that is not associated, or has no
    /// source, is skipped, as ALB skips a cluster that does not exist; if none of the weighted
    /// clusters is left, the split falls back to replicas.
    pub fn shares(&self) -> Option<BTreeMap<&str, u32>> {
        let shares: BTreeMap<&str, u32> = self
            .weights
            .iter()
            .filter(|w| self.clusters.contains(&w.cluster_id.as_str()))
            .map(|w| (w.cluster_id.as_str(), w.weight))
            .collect();
        (shares.values().sum::<u32>() > 0).then_some(shares)
    }

    /// The weighted cluster IDs that are skipped (not associated, or no `--cluster` source).
    pub fn skipped(&self) -> impl Iterator<Item = &str> {
        self.weights.iter().filter(|w| !self.clusters.contains(&w.cluster_id.as_str())).map(|w| w.cluster_id.as_str())
    }

    /// One endpoint list for a Service from each cluster's ready endpoints.
    ///
    /// Without shares every endpoint keeps its weight, so each cluster gets traffic in
    /// proportion to its ready replicas. With shares, a cluster's endpoints together weigh its
    /// percentage (clusters without a share get none), divided by their own weights. The same
    /// address in two clusters is one endpoint with both weights.
    pub fn split(&self, per_cluster: &[(&str, Vec<Endpoint>)]) -> Vec<Endpoint> {
        let shares = self.shares();
        let mut merged: BTreeMap<std::net::SocketAddr, u64> = BTreeMap::new();
        for (cluster, endpoints) in per_cluster {
            let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
            for e in endpoints {
                let weight = match &shares {
                    None => u64::from(e.weight),
                    Some(shares) => {
                        let share = u64::from(shares.get(cluster).copied().unwrap_or(0));
                        if share == 0 || e.weight == 0 {
                            continue;
                        }
                        (share * UNITS_PER_PERCENT * u64::from(e.weight) / total).max(1)
                    }
                };
                *merged.entry(e.addr).or_default() += weight;
            }
        }
        merged
            .into_iter()
            .map(|(addr, weight)| Endpoint { addr, weight: u32::try_from(weight).unwrap_or(u32::MAX) })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(base: u8, n: u8) -> Vec<Endpoint> {
        (0..n).map(|i| Endpoint { addr: ([10, base, 0, i + 1], 80).into(), weight: 100 }).collect()
    }

    fn cluster_sums(out: &[Endpoint]) -> BTreeMap<u8, u64> {
        let mut sums = BTreeMap::new();
        for e in out {
            let std::net::IpAddr::V4(a) = e.addr.ip() else { unreachable!() };
            *sums.entry(a.octets()[1]).or_default() += u64::from(e.weight);
        }
        sums
    }

    fn w(id: &str, weight: u32) -> ClusterWeight {
        ClusterWeight { cluster_id: id.into(), weight }
    }

    #[test]
    fn replicas_by_default_percentages_with_weights() {
        let clusters = vec!["c1", "c2"];
        let per = [("c1", eps(1, 3)), ("c2", eps(2, 1))];
        let by_replicas = Fleet { clusters: clusters.clone(), weights: &[] }.split(&per);
        assert_eq!(by_replicas.len(), 4);
        assert_eq!(cluster_sums(&by_replicas), BTreeMap::from([(1, 300), (2, 100)]));

        let weights = [w("c1", 80), w("c2", 20)];
        let split = Fleet { clusters: clusters.clone(), weights: &weights }.split(&per);
        let sums = cluster_sums(&split);
        let (a, b) = (sums[&1] as f64, sums[&2] as f64);
        assert!((a / (a + b) - 0.8).abs() < 1e-4, "{sums:?}");

        let all = [w("c2", 100)];
        let split = Fleet { clusters: clusters.clone(), weights: &all }.split(&per);
        assert_eq!(cluster_sums(&split).keys().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_weighted_cluster_without_a_source_is_skipped() {
        let clusters = vec!["c1", "c2"];
        let per = [("c1", eps(1, 1)), ("c2", eps(2, 1))];
        // c3 is not associated: only c1's 50 counts, c2 gets nothing.
        let weights = [w("c1", 50), w("c3", 50)];
        let fleet = Fleet { clusters: clusters.clone(), weights: &weights };
        assert_eq!(fleet.skipped().collect::<Vec<_>>(), ["c3"]);
        assert_eq!(cluster_sums(&fleet.split(&per)).keys().copied().collect::<Vec<_>>(), [1]);
        // Only unknown clusters weighted: by replicas.
        let weights = [w("c9", 100)];
        let fleet = Fleet { clusters: clusters.clone(), weights: &weights };
        assert!(fleet.shares().is_none());
        assert_eq!(fleet.split(&per).len(), 2);
    }

    #[test]
    fn endpoint_weights_stay_proportional_within_a_cluster() {
        let clusters = vec!["c1"];
        let mut one = eps(1, 2);
        one[1].weight = 300;
        let split = Fleet { clusters: clusters.clone(), weights: &[w("c1", 100)] }.split(&[("c1", one)]);
        assert_eq!(split[1].weight, 3 * split[0].weight);
    }
}
