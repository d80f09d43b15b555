//! Canary releases: `canary` with `canary-by-header` (+ `canary-by-header-value`),
//! `canary-by-cookie` and `canary-weight`; precedence Header > Cookie > Weight.
use serde::Serialize;

use super::values::{boolean, cookie_name, number};
use super::{Cx, Key, PREFIX};

/// How a canary Ingress takes requests from the main one. At least one strategy is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Canary {
    /// Header name and the value that selects the canary.
    pub header: Option<(String, String)>,
    /// Cookie name: `always` selects the canary, `never` does not.
    pub cookie: Option<String>,
    /// Percentage of the remaining requests, 0..=100.
    pub weight: Option<u32>,
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

pub(super) fn parse(cx: &mut Cx) -> Option<Canary> {
    const STRATEGIES: [Key; 4] =
        [Key::CanaryByHeader, Key::CanaryByHeaderValue, Key::CanaryByCookie, Key::CanaryWeight];
    let on = cx.value(Key::Canary, boolean);
    if on != Some(true) {
        let ok = cx.has(Key::Canary) && on.is_none(); // invalid value: already reported
        for k in STRATEGIES {
            if cx.has(k) && !ok {
                cx.error(k, format!("needs {PREFIX}canary: \"true\" (this Ingress is not a canary)"));
            }
        }
        return None;
    }
    let name = cx.value(Key::CanaryByHeader, token);
    let value = cx.value(Key::CanaryByHeaderValue, header_value);
    let header = match (cx.has(Key::CanaryByHeader), cx.has(Key::CanaryByHeaderValue)) {
        (true, false) => {
            cx.error(Key::CanaryByHeader, format!("must be configured together with {PREFIX}canary-by-header-value"));
            None
        }
        (false, true) => {
            cx.error(Key::CanaryByHeaderValue, format!("needs {PREFIX}canary-by-header (the header name)"));
            None
        }
        _ => name.zip(value),
    };
    let cookie = cx.value(Key::CanaryByCookie, cookie_name);
    let weight = cx.value(Key::CanaryWeight, |v| number(v, 0, 100));
    if !STRATEGIES.iter().any(|k| cx.has(*k)) {
        cx.error(Key::Canary, "\"true\" needs a strategy: canary-by-header (with canary-by-header-value), canary-by-cookie or canary-weight");
        return None;
    }
    if header.is_none() && cookie.is_none() && weight.is_none() {
        return None;
    }
    Some(Canary { header, cookie, weight })
}

#[cfg(test)]
mod tests {
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
        assert_eq!(c, Some(Canary { header: Some(("location".into(), "hz".into())), cookie: None, weight: None }));
        let (c, _) = canary(&[("canary", "true"), ("canary-by-cookie", "demo")]);
        assert_eq!(c, Some(Canary { header: None, cookie: Some("demo".into()), weight: None }));
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
