//! Property tests: no annotation key or value makes the parser panic, errors always name
//! a key that was written, and parsing is deterministic.
use crate::annotations::parser::AnnotationKey;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::Protocol;
use super::{
    ServicePortInfo,
    keys::{CLB_PREFIX, Key, LEGACY_PREFIX, PREFIX},
    parse,
};

fn ports() -> impl Strategy<Value = Vec<ServicePortInfo>> {
    prop::collection::vec(
        (prop::option::of("[a-z]{1,5}"), any::<u16>(), any::<bool>()).prop_map(|(name, port, udp)| ServicePortInfo {
            name,
            port,
            protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
        }),
        0..4,
    )
}

/// A value: arbitrary unicode, or built from the characters values are made of (so that
/// the deeper checks are reached, not only the first rejection).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9_:=,./$ -]{0,40}",
        "(on|off|[0-9]{1,6}|https?:[0-9]{1,5}|tcp:80|[0-9]{1,5}:[0-9]{1,5})(,(http|https|tcp|udp):[0-9]{1,5})?",
    ]
}

/// A known key in either spelling.
fn known_key() -> impl Strategy<Value = String> {
    (0..Key::ALL.len(), any::<bool>()).prop_map(|(i, legacy)| {
        let k = Key::ALL[i];
        match (k, legacy) {
            (Key::BackendType, _) => k.full(),
            (_, true) => format!("{PREFIX}{LEGACY_PREFIX}{}", k.suffix()),
            (_, false) => k.full(),
        }
    })
}

/// A random key in the CLB namespace (mostly unknown).
fn random_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,30}".prop_map(|s| format!("{PREFIX}{CLB_PREFIX}{s}")),
        "[a-z-]{0,30}".prop_map(|s| format!("{PREFIX}{LEGACY_PREFIX}{s}")),
        "\\PC{0,40}".prop_map(|s| format!("{PREFIX}{s}")),
    ]
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(prop_oneof![3 => known_key(), 1 => random_key()], value(), 0..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_annotation_panics_the_parser(annotations in annotations(), ports in ports()) {
        let p = parse(&annotations, &ports);
        for e in &p.errors {
            prop_assert!(annotations.contains_key(&e.annotation), "error on unwritten key {}", e.annotation);
            prop_assert!(!e.reason.is_empty());
        }
        for n in &p.not_applicable {
            prop_assert!(annotations.contains_key(&n.annotation));
        }
        prop_assert_eq!(&parse(&annotations, &ports), &p);
    }

    #[test]
    fn every_known_key_takes_any_value_without_panicking(i in 0..Key::ALL.len(), v in any::<String>(), ports in ports()) {
        let annotations = BTreeMap::from([(Key::ALL[i].full(), v)]);
        let _ = parse(&annotations, &ports);
    }
}
