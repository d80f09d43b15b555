//! Test helpers: annotation maps from `(suffix, value)` pairs, Service ports, and checks
//! shared by the family tests (one error with an exact reason, both ends of a range).
use std::collections::BTreeMap;

use super::Protocol;
use super::{ClbConfig, ClbParse, ServicePortInfo, keys::PREFIX, parse};
use crate::annotations::AnnotationError;

/// The full current-spelling key for `suffix`; keys that already start with
/// [`PREFIX`] (or hold a `/`) are taken as they are.
pub fn full(suffix: &str) -> String {
    if suffix.contains('/') {
        suffix.to_owned()
    } else if suffix == "backend-type" {
        format!("{PREFIX}backend-type")
    } else {
        format!("{PREFIX}alibaba-cloud-loadbalancer-{suffix}")
    }
}

pub fn tcp(port: u16) -> ServicePortInfo {
    ServicePortInfo { name: None, port, protocol: Protocol::Tcp }
}

pub fn udp(port: u16) -> ServicePortInfo {
    ServicePortInfo { name: None, port, protocol: Protocol::Udp }
}

pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (full(k), (*v).to_owned())).collect()
}

pub fn run(pairs: &[(&str, &str)], ports: &[ServicePortInfo]) -> ClbParse {
    parse(&map(pairs), ports)
}

pub fn errors_of(pairs: &[(&str, &str)], ports: &[ServicePortInfo]) -> Vec<AnnotationError> {
    run(pairs, ports).errors
}

/// Parsing `pairs` gives exactly one error, on `key`, with `reason`.
#[track_caller]
pub fn assert_one_error(pairs: &[(&str, &str)], ports: &[ServicePortInfo], key: &str, reason: &str) {
    let errors = errors_of(pairs, ports);
    assert_eq!(errors, vec![AnnotationError::new(full(key), reason)], "for {pairs:?}");
}

/// Parsing `pairs` gives no error and one notice, on `key`, with `reason`.
#[track_caller]
pub fn assert_one_note(pairs: &[(&str, &str)], ports: &[ServicePortInfo], key: &str, reason: &str) {
    let p = run(pairs, ports);
    assert!(p.errors.is_empty(), "for {pairs:?}: {:?}", p.errors);
    let notes: Vec<(String, String)> = p.not_applicable.into_iter().map(|n| (n.annotation, n.reason)).collect();
    assert_eq!(notes, vec![(full(key), reason.to_string())], "for {pairs:?}");
}

/// `key` accepts `min` and `max` (read back through `get`), and rejects `min - 1`,
/// `max + 1` and a non-number with the reference's range in the reason. `extra` holds the
/// other annotations the key needs.
#[track_caller]
pub fn check_range(
    key: &str,
    min: u32,
    max: u32,
    extra: &[(&str, &str)],
    ports: &[ServicePortInfo],
    get: impl Fn(&ClbConfig) -> u64,
) {
    let with = |value: &str| {
        let mut pairs = extra.to_vec();
        pairs.push((key, value));
        run(&pairs, ports)
    };
    for ok in [min, max] {
        let p = with(&ok.to_string());
        assert!(p.errors.is_empty(), "{key}={ok}: {:?}", p.errors);
        assert_eq!(get(&p.config), u64::from(ok), "{key}={ok}");
    }
    let below = if min == 0 { "-1".to_owned() } else { (min - 1).to_string() };
    let below_reason = if min == 0 {
        format!("\"-1\" is not a whole number in {min}..={max}")
    } else {
        format!("{below} is outside {min}..={max}")
    };
    let cases = [
        (below, below_reason),
        ((max + 1).to_string(), format!("{} is outside {min}..={max}", max + 1)),
        ("ten".to_owned(), format!("\"ten\" is not a whole number in {min}..={max}")),
    ];
    for (value, reason) in cases {
        let p = with(&value);
        assert_eq!(p.errors, vec![AnnotationError::new(full(key), reason)], "{key}={value}");
    }
}
