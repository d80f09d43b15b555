//! Limits: `traffic-limit-qps` on an Ingress, and the AlbConfig listener timeouts
//! (`requestTimeout`, `idleTimeout`) the proxy enforces per connection.
use super::values::number;
use super::{Cx, Key};

/// `traffic-limit-qps`: requests per second per rule, 1..=100000 (the ALB controller's range).
pub const QPS: (u32, u32) = (1, 100_000);
/// AlbConfig `listeners[].requestTimeout`, seconds: range and default.
pub const REQUEST_TIMEOUT: (u32, u32, u32) = (1, 180, 60);
/// AlbConfig `listeners[].idleTimeout`, seconds: range and default.
pub const IDLE_TIMEOUT: (u32, u32, u32) = (1, 60, 15);

pub fn qps(v: &str) -> Result<u32, String> {
    number(v, QPS.0, QPS.1)
}

pub(super) fn parse(cx: &mut Cx) -> Option<u32> {
    cx.value(Key::TrafficLimitQps, qps)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::parse;
    use super::super::testutil::*;

    #[test]
    fn traffic_limit_qps_range() {
        for (v, want) in [("1", Some(1)), ("100000", Some(100_000)), ("50", Some(50))] {
            let p = parse(&[(&k("traffic-limit-qps"), v)], SIMPLE);
            assert!(p.is_ok());
            assert_eq!(p.rules[0].qps_limit, want);
        }
        assert_eq!(parse(&[], SIMPLE).rules[0].qps_limit, None);
        for (v, want) in [
            ("0", "0 is outside 1..=100000"),
            ("100001", "100001 is outside 1..=100000"),
            ("1000000", "1000000 is outside 1..=100000"),
            ("fast", "\"fast\" is not a whole number in 1..=100000"),
        ] {
            assert_eq!(reasons_with("traffic-limit-qps", v, &[], SIMPLE), vec![format!("traffic-limit-qps: {want}")]);
        }
    }
}
