//! Value parsers shared by the ALB families: booleans, bounded numbers, one-of choices,
//! comma lists, DNS names, header names, JSON field lookup (case-insensitive, as the Go
//! controller's `encoding/json` is) and regex patterns with the `~` / `~*` flags.

pub use crate::annotations::values::{choice, cookie_name, list, number, quote};
use regex::{Regex, RegexBuilder};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// `"true"` or `"false"`, case-sensitive (a case-insensitive match gets a hint).
pub fn boolean(v: &str) -> Result<bool, String> {
    choice(v, &[("true", true), ("false", false)])
}

/// A DNS name (see [`crate::annotations::values::dns_name`]), lowercased: host matching is
/// case-insensitive.
pub fn dns_name(v: &str, wildcard: bool) -> Result<String, String> {
    crate::annotations::values::dns_name(v, wildcard).map(|s| s.to_ascii_lowercase())
}

/// An HTTP header name as ALB takes it: 1..=`max` letters, digits, `-` or `_`, neither
/// `-` nor `_` at either end.
pub fn header_name(v: &str, max: usize) -> Result<String, String> {
    let len = v.chars().count();
    if len == 0 || len > max {
        return Err(format!("header name {} must have 1..={max} characters", quote(v)));
    }
    if let Some(c) = v.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!("header name {} contains {c:?}; use letters, digits, '-' and '_'", quote(v)));
    }
    if v.starts_with(['-', '_']) || v.ends_with(['-', '_']) {
        return Err(format!("header name {} starts or ends with '-' or '_'", quote(v)));
    }
    Ok(v.to_owned())
}

/// The member `name` of a JSON object, matched case-insensitively (the Go controller
/// decodes these annotations with `encoding/json`, which does the same). An exact match
/// wins over a case-insensitive one.
pub fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// The members of `obj` whose names are not among `known` (case-insensitively).
pub fn unknown_fields<'a>(obj: &'a serde_json::Map<String, Value>, known: &[&str]) -> Vec<&'a str> {
    obj.keys().filter(|k| !known.iter().any(|n| n.eq_ignore_ascii_case(k))).map(String::as_str).collect()
}

/// A JSON string member, required.
pub fn json_str<'a>(obj: &'a serde_json::Map<String, Value>, name: &str, at: &str) -> Result<&'a str, String> {
    match field(obj, name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!("{at}.{name} must be a string, not {}", kind(other))),
        None => Err(format!("{at}.{name} is missing")),
    }
}

/// A JSON whole-number member (a number or a string of digits, as the Go controller's
/// `intstr` accepts), in `min..=max`.
pub fn json_number(v: &Value, min: u32, max: u32, at: &str) -> Result<u32, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(n as u32),
            _ => Err(format!("{at}: {n} is outside {min}..={max}")),
        },
        Value::String(s) => number(s.trim(), min, max).map_err(|e| format!("{at}: {e}")),
        other => Err(format!("{at} must be a whole number, not {}", kind(other))),
    }
}

/// A JSON whole-number member typed as a number (the Go controller decodes it into an `int`:
/// a string is refused), in `min..=max`.
pub fn json_int(v: &Value, min: u32, max: u32, at: &str) -> Result<u32, String> {
    match v {
        Value::Number(_) => json_number(v, min, max, at),
        other => Err(format!("{at} must be a number, not {}", kind(other))),
    }
}

/// A JSON boolean member (`true`/`false`, or the strings `"true"`/`"false"`).
pub fn json_bool(v: &Value, at: &str) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => boolean(s).map_err(|e| format!("{at}: {e}")),
        other => Err(format!("{at} must be true or false, not {}", kind(other))),
    }
}

/// The JSON type of `v`, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A JSON array of non-empty strings.
pub fn json_strings(v: Option<&Value>, at: &str) -> Result<Vec<String>, String> {
    let Some(v) = v else { return Err(format!("{at} is missing")) };
    let Value::Array(items) = v else { return Err(format!("{at} must be an array, not {}", kind(v))) };
    if items.is_empty() {
        return Err(format!("{at} is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, it)| match it {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            Value::String(_) => Err(format!("{at}[{i}] is empty")),
            other => Err(format!("{at}[{i}] must be a string, not {}", kind(other))),
        })
        .collect()
}

/// A compiled regular expression with the source it was written as. Compares and
/// serializes by source and case flag.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub case_insensitive: bool,
    pub regex: Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source && self.case_insensitive == other.case_insensitive
    }
}
impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let flag = if self.case_insensitive { "~" } else { "~*" };
        s.serialize_str(&format!("{flag}{}", self.source))
    }
}

impl Pattern {
    /// Compiles `source` (without flag); the error is the regex crate's message.
    pub fn new(source: &str, case_insensitive: bool) -> Result<Pattern, String> {
        let regex = RegexBuilder::new(source)
            .case_insensitive(case_insensitive)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("{} is not a valid regular expression: {e}", quote(source)))?;
        Ok(Pattern { source: source.to_owned(), case_insensitive, regex })
    }

    /// A value that may carry the reference's regex flags: `~` (case-insensitive),
    /// `~*` (case-sensitive). `None` when there is no flag.
    pub fn flagged(v: &str) -> Option<Result<Pattern, String>> {
        if let Some(rest) = v.strip_prefix("~*") {
            Some(Pattern::new(rest, false))
        } else {
            v.strip_prefix('~').map(|rest| Pattern::new(rest, true))
        }
    }

    /// Number of capturing groups (not counting the whole match).
    pub fn groups(&self) -> usize {
        self.regex.captures_len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_case_sensitive() {
        assert_eq!(boolean("true"), Ok(true));
        assert_eq!(boolean("false"), Ok(false));
        assert_eq!(boolean("True"), Err("\"True\" is not one of true, false (values are case-sensitive: true)".into()));
        assert_eq!(boolean("yes"), Err("\"yes\" is not one of true, false".into()));
        assert_eq!(boolean(""), Err("\"\" is not one of true, false".into()));
    }

    #[test]
    fn numbers_are_decimal_digits_in_range() {
        assert_eq!(number("1", 1, 1000), Ok(1));
        assert_eq!(number("1000", 1, 1000), Ok(1000));
        assert_eq!(number("0", 1, 1000), Err("0 is outside 1..=1000".into()));
        assert_eq!(number("1001", 1, 1000), Err("1001 is outside 1..=1000".into()));
        assert_eq!(number("99999999999999999999999", 0, 10), Err("99999999999999999999999 is outside 0..=10".into()));
        for bad in ["-1", "+1", "1.5", "1e3", " 1", "", "ten", "1s"] {
            assert_eq!(number(bad, 0, 10), Err(format!("{bad:?} is not a whole number in 0..=10")));
        }
    }

    #[test]
    fn json_fields_match_case_insensitively_exact_first() {
        let v: Value = serde_json::json!({"forwardConfig": 1, "ForwardConfig": 2, "Other": 3});
        let o = v.as_object().unwrap();
        assert_eq!(field(o, "ForwardConfig"), Some(&Value::from(2)));
        assert_eq!(field(o, "other"), Some(&Value::from(3)));
        assert_eq!(field(o, "missing"), None);
        assert_eq!(unknown_fields(o, &["forwardconfig"]), vec!["Other"]);
    }

    #[test]
    fn json_numbers_accept_numbers_and_digit_strings() {
        assert_eq!(json_number(&serde_json::json!(80), 1, 65535, "p"), Ok(80));
        assert_eq!(json_number(&serde_json::json!("80"), 1, 65535, "p"), Ok(80));
        assert_eq!(json_number(&serde_json::json!(0), 1, 65535, "p"), Err("p: 0 is outside 1..=65535".into()));
        assert_eq!(json_number(&serde_json::json!(-1), 1, 65535, "p"), Err("p: -1 is outside 1..=65535".into()));
        assert_eq!(json_number(&serde_json::json!(1.5), 1, 65535, "p"), Err("p: 1.5 is outside 1..=65535".into()));
        assert_eq!(
            json_number(&serde_json::json!(true), 1, 65535, "p"),
            Err("p must be a whole number, not a boolean".into())
        );
    }

    #[test]
    fn flagged_patterns() {
        let p = Pattern::flagged("~/api").unwrap().unwrap();
        assert!(p.case_insensitive && p.regex.is_match("/API"));
        let p = Pattern::flagged("~*/api").unwrap().unwrap();
        assert!(!p.case_insensitive && !p.regex.is_match("/Api"));
        assert!(Pattern::flagged("/api").is_none());
        let e = Pattern::flagged("~*/a(").unwrap().unwrap_err();
        assert!(e.starts_with("\"/a(\" is not a valid regular expression: regex parse error"), "{e}");
    }

    #[test]
    fn header_names() {
        for ok in ["DNT", "X-CustomHeader", "a_b", &"a".repeat(32)] {
            assert!(header_name(ok, 32).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "_a", "a_", "a b", "a:b", &"a".repeat(33)] {
            assert!(header_name(bad, 32).is_err(), "{bad}");
        }
    }
}
