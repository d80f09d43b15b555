//! Value parsers shared by the families: on/off, bounded whole numbers, one-of choices,
//! comma lists, IDs, cookie names and DNS names. Each returns the reason on failure.
use serde::Serialize;

pub use crate::annotations::values::{choice, dns_name, list, number, quote};

/// The transport of a Service port (`spec.ports[].protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// CLB `scheduler`: how a listener picks a backend for a new flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin (the default).
    #[default]
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Consistent hash of the source IP.
    Sch,
    /// Consistent hash of the 4-tuple.
    Tch,
}

/// A validated ID of an object the annotation refers to (`acl-id`, `cert-id`): one word,
/// no spaces or commas.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ResourceId(String);

impl ResourceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated cookie name (`cookie`): 1–200 printable ASCII characters, no `,`, `;` or
/// space, not starting with `$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CookieName(String);

impl CookieName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `on` or `off`.
pub fn on_off(v: &str) -> Result<bool, String> {
    choice(v, &[("on", true), ("off", false)])
}

/// One word: not empty, no whitespace, control characters or commas.
pub fn word(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = v.chars().find(|c| c.is_whitespace() || c.is_control() || *c == ',') {
        return Err(format!("{} contains {c:?}; an ID is one word without spaces or commas", quote(v)));
    }
    Ok(v.to_owned())
}

pub fn resource_id(v: &str) -> Result<ResourceId, String> {
    word(v).map(ResourceId)
}

/// A validated cookie name (`cookie`), see [`crate::annotations::values::cookie_name`].
pub fn cookie_name(v: &str) -> Result<CookieName, String> {
    crate::annotations::values::cookie_name(v).map(CookieName)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_off_is_case_sensitive() {
        assert_eq!(on_off("on"), Ok(true));
        assert_eq!(on_off("off"), Ok(false));
        assert_eq!(on_off("On"), Err("\"On\" is not one of on, off (values are case-sensitive: on)".into()));
        assert_eq!(on_off("true"), Err("\"true\" is not one of on, off".into()));
        assert_eq!(on_off(""), Err("\"\" is not one of on, off".into()));
    }

    #[test]
    fn numbers_are_decimal_digits_in_range() {
        assert_eq!(number("0", 0, 3600), Ok(0));
        assert_eq!(number("3600", 0, 3600), Ok(3600));
        assert_eq!(number("007", 0, 3600), Ok(7));
        assert_eq!(number("4000", 0, 3600), Err("4000 is outside 0..=3600".into()));
        assert_eq!(number("9", 10, 900), Err("9 is outside 10..=900".into()));
        assert_eq!(number("99999999999999999999999", 0, 10), Err("99999999999999999999999 is outside 0..=10".into()));
        for bad in ["-1", "+1", "1.5", "1e3", " 1", "", "ten", "1s"] {
            assert_eq!(number(bad, 0, 10), Err(format!("{bad:?} is not a whole number in 0..=10")));
        }
    }

    #[test]
    fn lists_reject_empty_items() {
        assert_eq!(list("a, b ,c"), Ok(vec!["a", "b", "c"]));
        assert!(list("a,,b").is_err());
        assert!(list("a,").is_err());
        assert!(list("").is_err());
    }

    #[test]
    fn ids_are_one_word() {
        assert_eq!(resource_id("acl-bp1").map(|i| i.as_str().to_owned()), Ok("acl-bp1".into()));
        assert!(resource_id("acl-1,acl-2").is_err());
        assert!(resource_id("acl 1").is_err());
        assert!(resource_id("").is_err());
    }

    #[test]
    fn cookie_names_follow_the_reference() {
        for ok in ["B490B5EBF6F3CD402E515D22BCDA1598", "my-cookie", "a", &"c".repeat(200)] {
            assert!(cookie_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "$session", "a;b", "a,b", "a b", "café", &"c".repeat(201)] {
            assert!(cookie_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns_names() {
        for ok in ["www.example.com", "a", "x-1.example", &format!("{}.com", "a".repeat(63))] {
            assert!(dns_name(ok, false).is_ok(), "{ok}");
        }
        for bad in ["", "-a.com", "a-.com", "a..com", "a_b.com", "*.example.com", &format!("{}.com", "a".repeat(64))] {
            assert!(dns_name(bad, false).is_err(), "{bad}");
        }
        assert!(dns_name("*.example.com", true).is_ok());
        assert!(dns_name("a.*.com", true).is_err());
    }
}
