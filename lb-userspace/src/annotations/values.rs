//! Value parsers both annotation families use: quoting for messages, one-of choices,
//! bounded whole numbers, comma lists, DNS names. Each returns the reason on failure.
use serde::Serialize;

/// `v` quoted for a message, cut at 64 characters.
pub fn quote(v: &str) -> String {
    let short: String = v.chars().take(64).collect();
    if short.len() < v.len() { format!("{short:?}...") } else { format!("{short:?}") }
}

/// One of `options`, compared case-sensitively (a case-insensitive match is suggested).
pub fn choice<T: Copy>(v: &str, options: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, t)) = options.iter().find(|(s, _)| *s == v) {
        return Ok(*t);
    }
    let names: Vec<&str> = options.iter().map(|(s, _)| *s).collect();
    let hint = options
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(v))
        .map(|(s, _)| format!(" (values are case-sensitive: {s})"))
        .unwrap_or_default();
    Err(format!("{} is not one of {}{hint}", quote(v), names.join(", ")))
}

/// A whole number in `min..=max`, written in decimal digits only.
pub fn number(v: &str, min: u32, max: u32) -> Result<u32, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{} is not a whole number in {min}..={max}", quote(v)));
    }
    match v.parse::<u64>() {
        Ok(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(n as u32),
        Ok(n) => Err(format!("{n} is outside {min}..={max}")),
        // More digits than u64 holds (all ASCII digits, so slicing is safe).
        Err(_) if v.len() > 24 => Err(format!("{}... is outside {min}..={max}", &v[..24])),
        Err(_) => Err(format!("{v} is outside {min}..={max}")),
    }
}

/// The comma-separated items of `v`, trimmed; no item may be empty.
pub fn list(v: &str) -> Result<Vec<&str>, String> {
    if v.is_empty() {
        return Err("is empty".into());
    }
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(format!("{} has an empty item", quote(v)));
    }
    Ok(items)
}

/// A DNS name: labels of 1..=63 letters, digits and hyphens (not at either end), 253
/// characters at most; with `wildcard`, the first label may be `*`.
pub fn dns_name(v: &str, wildcard: bool) -> Result<String, String> {
    if v.is_empty() || v.len() > 253 {
        return Err(format!("{} is not a DNS name (1..=253 characters)", quote(v)));
    }
    for (i, label) in v.split('.').enumerate() {
        if wildcard && i == 0 && label == "*" {
            continue;
        }
        let ok = (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{} is not a DNS name (label {} is not 1..=63 letters, digits or inner hyphens)",
                quote(v),
                quote(label)
            ));
        }
    }
    Ok(v.to_owned())
}

/// The system TLS security policies: ALB `securityPolicyId`, CLB `tls-cipher-policy`
/// (default `tls_cipher_policy_1_0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum TlsPolicy {
    /// `tls_cipher_policy_1_0` (ALB's default): TLS 1.0 and later; served from TLS 1.2 here
    /// ([`TlsPolicy::NO_OLD_TLS`]).
    #[default]
    #[serde(rename = "tls_cipher_policy_1_0")]
    Tls10,
    /// `tls_cipher_policy_1_1`: TLS 1.1 and later; served from TLS 1.2 here.
    #[serde(rename = "tls_cipher_policy_1_1")]
    Tls11,
    /// `tls_cipher_policy_1_2`: TLS 1.2 and later.
    #[serde(rename = "tls_cipher_policy_1_2")]
    Tls12,
    /// `tls_cipher_policy_1_2_strict`: TLS 1.2, forward-secret (ECDHE) ciphers only.
    #[serde(rename = "tls_cipher_policy_1_2_strict")]
    Tls12Strict,
    /// `tls_cipher_policy_1_2_strict_with_1_3`: as above, plus TLS 1.3.
    #[serde(rename = "tls_cipher_policy_1_2_strict_with_1_3")]
    Tls12StrictWith13,
}

impl TlsPolicy {
    pub const ALL: [(&'static str, TlsPolicy); 5] = [
        ("tls_cipher_policy_1_0", TlsPolicy::Tls10),
        ("tls_cipher_policy_1_1", TlsPolicy::Tls11),
        ("tls_cipher_policy_1_2", TlsPolicy::Tls12),
        ("tls_cipher_policy_1_2_strict", TlsPolicy::Tls12Strict),
        ("tls_cipher_policy_1_2_strict_with_1_3", TlsPolicy::Tls12StrictWith13),
    ];

    /// What a policy that allows TLS 1.0 or 1.1 gets, when written: the notice.
    pub const NO_OLD_TLS: &'static str = "TLS 1.0 and 1.1 are not offered here (rustls implements neither): clients get TLS 1.2 and 1.3 with this policy's ciphers";

    /// Whether the policy allows a version this balancer does not offer (TLS 1.0, 1.1).
    pub fn allows_old_tls(self) -> bool {
        self.min_version() < (1, 2)
    }

    /// The lowest TLS version allowed, as (major, minor) of the protocol name: (1, 2).
    pub fn min_version(self) -> (u8, u8) {
        match self {
            TlsPolicy::Tls10 => (1, 0),
            TlsPolicy::Tls11 => (1, 1),
            _ => (1, 2),
        }
    }

    /// Only forward-secret ciphers.
    pub fn strict(self) -> bool {
        matches!(self, TlsPolicy::Tls12Strict | TlsPolicy::Tls12StrictWith13)
    }
}

/// A cookie name: 1..=200 printable ASCII characters without `,`, `;` or spaces, not
/// starting with `$` (both references' rule).
pub fn cookie_name(v: &str) -> Result<String, String> {
    let len = v.chars().count();
    if !(1..=200).contains(&len) {
        return Err(format!("a cookie name has 1..=200 characters, not {len}"));
    }
    if v.starts_with('$') {
        return Err(format!("{} starts with $", quote(v)));
    }
    if let Some(c) = v.chars().find(|c| !c.is_ascii_graphic() || *c == ',' || *c == ';') {
        return Err(format!(
            "{} contains {c:?}; a cookie name is printable ASCII without ',', ';' or spaces",
            quote(v)
        ));
    }
    Ok(v.to_owned())
}
