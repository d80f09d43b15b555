//! An L7 routing rule as the proxy serves it: host and path match, conditions, the
//! action and filters, rewrite, canary, CORS, stickiness and scheduler. Data only; the
//! request-time functions over it are in `crate::l7::matching`.
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::ObjectRef;

/// A compiled regular expression with the text it came from.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub source: String,
    pub case_insensitive: bool,
    pub regex: regex::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source && self.case_insensitive == other.case_insensitive
    }
}
impl Eq for Pattern {}

impl Serialize for Pattern {
    /// As written with the reference's flags: `~` case-insensitive, `~*` case-sensitive.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let flag = if self.case_insensitive { "~" } else { "~*" };
        s.serialize_str(&format!("{flag}{}", self.source))
    }
}

impl<'de> Deserialize<'de> for Pattern {
    /// What [`Pattern::serialize`] wrote, compiled again (the L7 proxy process receives it).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let text = String::deserialize(d)?;
        let (source, case_insensitive) = match text.strip_prefix("~*") {
            Some(rest) => (rest, false),
            None => {
                (text.strip_prefix('~').ok_or_else(|| serde::de::Error::custom("a pattern starts with ~ or ~*"))?, true)
            }
        };
        let regex = regex::RegexBuilder::new(source)
            .case_insensitive(case_insensitive)
            .size_limit(1 << 20)
            .build()
            .map_err(serde::de::Error::custom)?;
        Ok(Pattern { source: source.to_owned(), case_insensitive, regex })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathType {
    Exact,
    Prefix,
    ImplementationSpecific,
}

/// How a request path is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// Equal (Exact, and ImplementationSpecific which ALB treats as exact).
    Exact(String),
    /// Equal, or followed by `/` (hierarchical; the rule's trailing `/` is ignored).
    Prefix(String),
    /// A regex found anywhere in the path ("contains"; `^` anchors it).
    Regex(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulePath {
    pub path_type: PathType,
    /// As written (`/` for an ImplementationSpecific path left empty).
    pub path: String,
    pub matcher: PathMatch,
}

impl RulePath {
    /// `/` and everything below it.
    pub fn any() -> RulePath {
        RulePath { path_type: PathType::Prefix, path: "/".into(), matcher: PathMatch::Prefix("/".into()) }
    }
}

/// How a request host is compared (case-insensitively, without the port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: exactly one label before `example.com` (stored without `*.`).
    Wildcard(String),
    /// `~` / `~*` regex (Host conditions only).
    Regex(Pattern),
}

/// A path value of a Path condition: exact (no flag) or a regex (`~`, `~*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathValue {
    Exact(String),
    Regex(Pattern),
}

/// A condition on the request; conditions are ANDed, the values of one are ORed. Host
/// and Path replace the rule's own host and path match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Host(Vec<HostMatch>),
    Path(Vec<PathValue>),
    /// Header name (case-insensitive) and the values it may have.
    Header {
        name: String,
        values: Vec<String>,
    },
    /// Query parameters `(key, value)`; any one present matches.
    QueryString(Vec<(String, String)>),
    /// Upper-case method names.
    Method(Vec<String>),
    /// Cookies `(name, value)`; any one present matches.
    Cookie(Vec<(String, String)>),
    SourceIp(Vec<IpNet>),
}

/// Stickiness across the Services of a forward group (`ServerGroupStickySession`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSticky {
    pub timeout_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// `None` keeps the request's value.
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub query: Option<String>,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedResponse {
    pub code: u16,
    pub content_type: String,
    pub content: String,
}

/// What a rule does with a request it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Spread over the route's upstreams by weight.
    Forward {
        sticky: Option<GroupSticky>,
    },
    Redirect(Redirect),
    FixedResponse(FixedResponse),
}

/// Where an inserted header's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderValue {
    /// The value as written.
    Literal(String),
    /// The value of another request header (lower case).
    RequestHeader(String),
    /// A value the balancer knows.
    System(SystemValue),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemValue {
    ClientSrcPort,
    ClientSrcIp,
    Protocol,
    /// The balancer's own address (ALB `SLBId`).
    LocalAddr,
    SlbPort,
}

/// Non-terminal actions, applied before the terminal one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    InsertHeader { key: String, value: HeaderValue },
    RemoveHeader(String),
}

/// How a canary rule takes requests from the main one (precedence Header > Cookie > Weight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Canary {
    /// Header name and the value that selects the canary.
    pub header: Option<(String, String)>,
    /// Header name and a pattern its value must match (ingress-nginx's
    /// `canary-by-header-pattern`), when no exact value is given.
    #[serde(default)]
    pub header_pattern: Option<(String, Pattern)>,
    /// Cookie name: `always` selects the canary, `never` does not.
    pub cookie: Option<String>,
    /// Share of the remaining requests, 0..=`weight_total`.
    pub weight: Option<u32>,
    /// What `weight` is out of: 100 (a percentage) unless ingress-nginx's
    /// `canary-weight-total` says otherwise.
    #[serde(default = "hundred")]
    pub weight_total: u32,
}

fn hundred() -> u32 {
    100
}

/// What the proxy answers to cross-origin requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cors {
    /// `["*"]`, or origins `scheme://host[:port]` (host may be `*.domain`).
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_s: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    Http,
    Https,
    /// HTTP/2 without TLS (h2c).
    Grpc,
}

/// How an upstream's endpoint is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Weighted round robin.
    Wrr,
    /// Weighted least connections.
    Wlc,
    /// Source IP consistent hash.
    Sch,
    /// Consistent hash of the connection's four-tuple (client and listener address and
    /// port): a connection's requests go to one endpoint, clients behind one address spread.
    Tch,
    /// Consistent hash of the named query parameter.
    Uch { parameter: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StickySession {
    /// The balancer inserts a cookie that lives `timeout_s` seconds.
    Insert { timeout_s: u32 },
    /// The balancer prefixes the backend's own cookie `cookie`.
    Server { cookie: String },
}

/// How the rule's requests reach the backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendSettings {
    pub protocol: BackendProtocol,
    pub scheduler: Scheduler,
    /// Connections to the backends are pooled.
    pub keepalive: bool,
    pub sticky: Option<StickySession>,
    /// Slow start ramp of new endpoints, seconds.
    pub slow_start_s: Option<u32>,
    /// Connection drain (`connection-drain-timeout`): requests and tunnels in flight to a
    /// removed endpoint go on this many seconds, then are closed; `None`: closed at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_timeout_s: Option<u32>,
}

impl Default for BackendSettings {
    fn default() -> BackendSettings {
        BackendSettings {
            protocol: BackendProtocol::Http,
            scheduler: Scheduler::Wrr,
            keepalive: false,
            sticky: None,
            slow_start_s: None,
            drain_timeout_s: None,
        }
    }
}

/// One routing rule: a host/path of an Ingress, or a CLB http/https port's catch-all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// The Ingress or Service the rule comes from.
    pub source: ObjectRef,
    /// Position in `spec.rules` and its `http.paths` (an Ingress default backend: `usize::MAX`).
    pub rule_index: usize,
    pub path_index: usize,
    /// `spec.defaultBackend`: tried after every other rule.
    pub default_backend: bool,
    /// ALB `order`: lower first.
    pub order: u32,
    /// `None`: any host.
    pub host: Option<HostMatch>,
    pub path: RulePath,
    pub conditions: Vec<Condition>,
    pub action: Action,
    pub filters: Vec<Filter>,
    /// `rewrite-target` template (`${1}`..`${3}`).
    pub rewrite: Option<String>,
    /// Requests on an HTTP listener of port 80 are redirected to HTTPS 443.
    pub ssl_redirect: bool,
    pub canary: Option<Canary>,
    pub backend: BackendSettings,
    pub cors: Option<Cors>,
    pub qps_limit: Option<u32>,
}

impl Rule {
    /// A rule that forwards every request of any host and path.
    pub fn catch_all(source: ObjectRef, backend: BackendSettings) -> Rule {
        Rule {
            source,
            rule_index: 0,
            path_index: 0,
            default_backend: false,
            order: 0,
            host: None,
            path: RulePath::any(),
            conditions: Vec::new(),
            action: Action::Forward { sticky: None },
            filters: Vec::new(),
            rewrite: None,
            ssl_redirect: false,
            canary: None,
            backend,
            cors: None,
            qps_limit: None,
        }
    }
}
