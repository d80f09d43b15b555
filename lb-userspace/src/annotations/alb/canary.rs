//! Canary releases: `canary` with `canary-by-header` (+ `canary-by-header-value`, or
//! ingress-nginx's `canary-by-header-pattern`), `canary-by-cookie` and `canary-weight` (out of
//! ingress-nginx's `canary-weight-total`, default 100); precedence Header > Cookie > Weight.
//! Each key may be spelled `nginx.ingress.kubernetes.io/`, which wins over the ALB spelling.
use serde::Serialize;

use super::values::{Pattern, boolean, cookie_name, number};
use super::{Cx, Key};

/// How a canary Ingress takes requests from the main one. At least one strategy is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Canary {
    /// Header name and the value that selects the canary.
    pub header: Option<(String, String)>,
    /// Header name and a regular expression its value must match (searched, case-sensitive),
    /// when no exact value is given.
    pub header_pattern: Option<(String, Pattern)>,
    /// Cookie name: `always` selects the canary, `never` does not.
    pub cookie: Option<String>,
    /// Share of the remaining requests, 0..=`weight_total`.
    pub weight: Option<u32>,
    /// What `weight` is out of (100 unless `canary-weight-total` says otherwise).
    pub weight_total: u32,
}

/// An HTTP token (header name).
fn token(v: &str) -> Result<String, String> {
    const SEP: &str = "()<>@,;:\\\"/[]?={} \t";
    if v.is_empty() || v.len() > 100 {
        return Err(format!("{v:?} must be a header name of 1..=100 characters"));
    }
    match v.chars().find(|c| !c.is_ascii_graphic() || SEP.contains(*c)) {
        Some(c) => Err(format!("{v:?} contains {c:?}, which cannot be in a header name")),
        None => Ok(v.to_owned()),
    }
}

fn header_value(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    match v.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("contains the control character {c:?}")),
        None => Ok(v.to_owned()),
    }
}

fn pattern(v: &str) -> Result<Pattern, String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    Pattern::new(v, false)
}

/// Largest `canary-weight-total` (ingress-nginx's is a positive 32-bit integer).
const MAX_TOTAL: u32 = i32::MAX as u32;

pub(super) fn parse(cx: &mut Cx) -> Option<Canary> {
    const STRATEGIES: [Key; 5] = [
        Key::CanaryByHeader,
        Key::CanaryByHeaderValue,
        Key::CanaryByHeaderPattern,
        Key::CanaryByCookie,
        Key::CanaryWeight,
    ];
    let on = cx.value(Key::Canary, boolean);
    if on != Some(true) {
        let ok = cx.has(Key::Canary) && on.is_none(); // invalid value: already reported
        let canary = cx.name(Key::Canary);
        for k in STRATEGIES.into_iter().chain([Key::CanaryWeightTotal]) {
            if cx.has(k) && !ok {
                cx.error(k, format!("needs {canary}: \"true\" (this Ingress is not a canary)"));
            }
        }
        return None;
    }
    let name = cx.value(Key::CanaryByHeader, token);
    let value = cx.value(Key::CanaryByHeaderValue, header_value);
    let regex = cx.value(Key::CanaryByHeaderPattern, pattern);
    let (has_name, has_value, has_pattern) =
        (cx.has(Key::CanaryByHeader), cx.has(Key::CanaryByHeaderValue), cx.has(Key::CanaryByHeaderPattern));
    let (mut header, mut header_pattern) = (None, None);
    if has_name && !has_value && !has_pattern {
        let mut want = cx.name(Key::CanaryByHeaderValue);
        if cx.name(Key::CanaryByHeader).starts_with(super::keys::NGINX_PREFIX) {
            want = format!("{want} or {}{}", super::keys::NGINX_PREFIX, Key::CanaryByHeaderPattern.suffix());
        }
        cx.error(Key::CanaryByHeader, format!("must be configured together with {want}"));
    }
    for (k, written) in [(Key::CanaryByHeaderValue, has_value), (Key::CanaryByHeaderPattern, has_pattern)] {
        if written && !has_name {
            let header_key = cx.name(Key::CanaryByHeader);
            cx.error(k, format!("needs {header_key} (the header name)"));
        }
    }
    if has_value && has_pattern {
        let value_key = cx.name(Key::CanaryByHeaderValue);
        cx.not_applicable(Key::CanaryByHeaderPattern, format!("ignored: {value_key} is set (as in ingress-nginx)"));
    }
    if let Some(name) = name {
        if has_value {
            header = value.map(|v| (name, v));
        } else if has_pattern {
            header_pattern = regex.map(|p| (name, p));
        }
    }
    let cookie = cx.value(Key::CanaryByCookie, cookie_name);
    let weight_total = cx.value(Key::CanaryWeightTotal, |v| number(v, 1, MAX_TOTAL));
    if cx.has(Key::CanaryWeightTotal) && !cx.has(Key::CanaryWeight) {
        let weight_key = cx.name(Key::CanaryWeight);
        cx.error(Key::CanaryWeightTotal, format!("has no effect without {weight_key}"));
    }
    let total = weight_total.unwrap_or(100);
    let weight = if cx.has(Key::CanaryWeightTotal) && weight_total.is_none() {
        None // the total is invalid: already reported
    } else {
        cx.value(Key::CanaryWeight, |v| number(v, 0, total))
    };
    if !STRATEGIES.iter().any(|k| cx.has(*k)) {
        cx.error(Key::Canary, "\"true\" needs a strategy: canary-by-header (with canary-by-header-value), canary-by-cookie or canary-weight");
        return None;
    }
    if header.is_none() && header_pattern.is_none() && cookie.is_none() && weight.is_none() {
        return None;
    }
    Some(Canary { header, header_pattern, cookie, weight, weight_total: total })
}

#[cfg(test)]
mod tests {
    use super::super::PREFIX;
    use super::super::testutil::parse;
    use super::super::testutil::*;
    use super::*;

    fn canary(ann: &[(&str, &str)]) -> (Option<Canary>, Vec<String>) {
        let owned: Vec<(String, &str)> = ann.iter().map(|(s, v)| (k(s), *v)).collect();
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(s, v)| (s.as_str(), *v)).collect();
        let p = parse(&pairs, SIMPLE);
        (p.rules[0].canary.clone(), errs(&p).into_iter().map(|e| e.trim_start_matches(PREFIX).to_owned()).collect())
    }

    #[test]
    fn strategies() {
        let (c, e) = canary(&[("canary", "true"), ("canary-by-header", "location"), ("canary-by-header-value", "hz")]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            c,
            Some(Canary {
                header: Some(("location".into(), "hz".into())),
                header_pattern: None,
                cookie: None,
                weight: None,
                weight_total: 100
            })
        );
        let (c, _) = canary(&[("canary", "true"), ("canary-by-cookie", "demo")]);
        assert_eq!(
            c,
            Some(Canary {
                header: None,
                header_pattern: None,
                cookie: Some("demo".into()),
                weight: None,
                weight_total: 100
            })
        );
        for (w, ok) in [("0", true), ("100", true), ("101", false), ("-1", false), ("50%", false)] {
            let (c, e) = canary(&[("canary", "true"), ("canary-weight", w)]);
            assert_eq!(e.is_empty(), ok, "{w}: {e:?}");
            if ok {
                assert_eq!(c.unwrap().weight, Some(w.parse().unwrap()));
            }
        }
        let (_, e) = canary(&[("canary", "true"), ("canary-weight", "101")]);
        assert_eq!(e, vec!["canary-weight: 101 is outside 0..=100"]);
        assert_eq!(canary(&[]), (None, vec![]));
    }

    #[test]
    fn cross_rules() {
        let table: &[(&[(&str, &str)], &str)] = &[
            (
                &[("canary", "true")],
                "canary: \"true\" needs a strategy: canary-by-header (with canary-by-header-value), canary-by-cookie or canary-weight",
            ),
            (
                &[("canary", "true"), ("canary-by-header", "location")],
                "canary-by-header: must be configured together with alb.ingress.kubernetes.io/canary-by-header-value",
            ),
            (
                &[("canary", "true"), ("canary-by-header-value", "hz")],
                "canary-by-header-value: needs alb.ingress.kubernetes.io/canary-by-header (the header name)",
            ),
            (
                &[("canary-weight", "10")],
                "canary-weight: needs alb.ingress.kubernetes.io/canary: \"true\" (this Ingress is not a canary)",
            ),
            (
                &[("canary", "false"), ("canary-by-cookie", "demo")],
                "canary-by-cookie: needs alb.ingress.kubernetes.io/canary: \"true\" (this Ingress is not a canary)",
            ),
            (&[("canary", "yes")], "canary: \"yes\" is not one of true, false"),
            (
                &[("canary", "true"), ("canary-by-header", "a b"), ("canary-by-header-value", "x")],
                "canary-by-header: \"a b\" contains ' ', which cannot be in a header name",
            ),
        ];
        for (ann, want) in table {
            let (c, e) = canary(ann);
            assert_eq!(e, vec![(*want).to_owned()], "{ann:?}");
            assert_eq!(c, None, "{ann:?}");
        }
    }
}
