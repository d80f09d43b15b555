//! Multi-cluster gateways (ACK One): `remote-clusters` on the AlbConfig and
//! `cluster-weight.<clusterID>` on Ingresses, validated. `lb run --cluster ID=DIR` gives the
//! associated clusters' endpoints; the model splits requests between them.
use serde::Serialize;

use super::values::{list, number, quote};
use super::{Cx, PREFIX};

/// One `cluster-weight.<id>`: the share of traffic for a cluster of the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterWeight {
    pub cluster_id: String,
    pub weight: u32,
}

/// A cluster ID: 1..=64 letters and digits (ACK IDs look like `c6...`).
pub fn cluster_id(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("{} is not a cluster ID (1..=64 letters and digits)", quote(v)));
    }
    Ok(v.to_owned())
}

/// `remote-clusters`: a comma-separated list of distinct cluster IDs.
pub fn remote_clusters(v: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for item in list(v)? {
        let id = cluster_id(item)?;
        if out.contains(&id) {
            return Err(format!("cluster {id} is listed twice"));
        }
        out.push(id);
    }
    Ok(out)
}

/// The `cluster-weight.<id>` annotations: each 0..=100, and together exactly 100.
pub(super) fn parse_weights(cx: &mut Cx) -> Vec<ClusterWeight> {
    let mut out = Vec::new();
    let mut all_valid = true;
    for (id, v) in cx.family("cluster-weight.") {
        if id.is_empty() {
            continue; // reported by the key check
        }
        let key = format!("cluster-weight.{id}");
        let weight = match cluster_id(&id).and_then(|_| number(&v, 0, 100)) {
            Ok(w) => w,
            Err(e) => {
                cx.field_error(format!("{PREFIX}{key}"), e);
                all_valid = false;
                continue;
            }
        };
        out.push(ClusterWeight { cluster_id: id, weight });
    }
    let sum: u32 = out.iter().map(|w| w.weight).sum();
    if all_valid && !out.is_empty() && sum != 100 {
        let ids: Vec<&str> = out.iter().map(|w| w.cluster_id.as_str()).collect();
        cx.field_error(
            format!("{PREFIX}cluster-weight.*"),
            format!("the weights of {} sum to {sum}; they must sum to 100", ids.join(", ")),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::parse;
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn weights_sum_to_100() {
        let p = parse(&[(&k("cluster-weight.c6a"), "60"), (&k("cluster-weight.cdb"), "40")], SIMPLE);
        assert!(p.is_ok(), "{:?}", p.errors);
        assert_eq!(
            p.cluster_weights,
            vec![
                ClusterWeight { cluster_id: "c6a".into(), weight: 60 },
                ClusterWeight { cluster_id: "cdb".into(), weight: 40 }
            ]
        );
        assert!(p.not_applicable.is_empty());
        let p = parse(&[(&k("cluster-weight.c6a"), "100")], SIMPLE);
        assert!(p.is_ok());
        let p = parse(&[(&k("cluster-weight.c6a"), "60"), (&k("cluster-weight.cdb"), "30")], SIMPLE);
        assert_eq!(
            errs(&p),
            vec![format!("{}: the weights of c6a, cdb sum to 90; they must sum to 100", k("cluster-weight.*"))]
        );
        let p = parse(&[(&k("cluster-weight.c6a"), "99")], SIMPLE);
        assert_eq!(p.errors.len(), 1);
    }

    #[test]
    fn weight_range_and_ids() {
        assert_eq!(
            reasons_with("cluster-weight.c1", "101", &[], SIMPLE),
            vec!["cluster-weight.c1: 101 is outside 0..=100"]
        );
        assert_eq!(
            reasons_with("cluster-weight.c1", "-1", &[], SIMPLE),
            vec!["cluster-weight.c1: \"-1\" is not a whole number in 0..=100"]
        );
        assert_eq!(
            reasons_with("cluster-weight.c_1", "100", &[], SIMPLE),
            vec!["cluster-weight.c_1: \"c_1\" is not a cluster ID (1..=64 letters and digits)"]
        );
        let p = parse(&[(&k("cluster-weight.c1"), "0"), (&k("cluster-weight.c2"), "100")], SIMPLE);
        assert!(p.is_ok());
    }

    #[test]
    fn remote_cluster_lists() {
        assert_eq!(remote_clusters("c1,c2"), Ok(vec!["c1".to_owned(), "c2".into()]));
        assert_eq!(remote_clusters("c1, c1"), Err("cluster c1 is listed twice".into()));
        assert_eq!(remote_clusters("c1,,c2"), Err("\"c1,,c2\" has an empty item".into()));
        assert_eq!(
            remote_clusters("${cluster1}"),
            Err("\"${cluster1}\" is not a cluster ID (1..=64 letters and digits)".into())
        );
    }
}
