//! ALB annotation settings → the route model: one function per type, in one direction.
use super::{TlsPolicy, route};
use crate::annotations::alb;
use crate::model::ObjectRef;

/// The rule as the proxy serves it (its Services are resolved by the caller).
pub fn rule(r: &alb::Rule, source: &ObjectRef) -> route::Rule {
    route::Rule {
        source: source.clone(),
        rule_index: r.rule_index,
        path_index: r.path_index,
        default_backend: r.default_backend,
        order: r.order,
        host: r.host.as_ref().map(host),
        path: route::RulePath {
            path_type: path_type(r.path.path_type),
            path: r.path.path.clone(),
            matcher: path(&r.path.matcher),
        },
        conditions: r.conditions.iter().map(condition).collect(),
        action: action(&r.action),
        filters: r.filters.iter().filter_map(filter).collect(),
        rewrite: r.rewrite.clone(),
        ssl_redirect: r.ssl_redirect,
        canary: r.canary.as_ref().map(|c| route::Canary {
            header: c.header.clone(),
            header_pattern: c.header_pattern.as_ref().map(|(n, p)| (n.clone(), pattern(p))),
            cookie: c.cookie.clone(),
            weight: c.weight,
            weight_total: c.weight_total,
        }),
        backend: backend(&r.backend),
        cors: r.cors.as_ref().map(|c| route::Cors {
            allow_origins: c.allow_origins.clone(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            allow_credentials: c.allow_credentials,
            max_age_s: c.max_age_s,
        }),
        qps_limit: r.qps_limit,
    }
}

pub fn tls_policy(p: alb::TlsPolicy) -> TlsPolicy {
    match p {
        alb::TlsPolicy::Tls10 => TlsPolicy::Tls10,
        alb::TlsPolicy::Tls11 => TlsPolicy::Tls11,
        alb::TlsPolicy::Tls12 => TlsPolicy::Tls12,
        alb::TlsPolicy::Tls12Strict => TlsPolicy::Tls12Strict,
        alb::TlsPolicy::Tls12StrictWith13 => TlsPolicy::Tls12StrictWith13,
    }
}

fn pattern(p: &alb::Pattern) -> route::Pattern {
    route::Pattern { source: p.source.clone(), case_insensitive: p.case_insensitive, regex: p.regex.clone() }
}

fn host(h: &alb::HostMatch) -> route::HostMatch {
    match h {
        alb::HostMatch::Exact(h) => route::HostMatch::Exact(h.clone()),
        alb::HostMatch::Wildcard(s) => route::HostMatch::Wildcard(s.clone()),
        alb::HostMatch::Regex(p) => route::HostMatch::Regex(pattern(p)),
    }
}

fn path_type(t: alb::PathType) -> route::PathType {
    match t {
        alb::PathType::Exact => route::PathType::Exact,
        alb::PathType::Prefix => route::PathType::Prefix,
        alb::PathType::ImplementationSpecific => route::PathType::ImplementationSpecific,
    }
}

fn path(m: &alb::PathMatch) -> route::PathMatch {
    match m {
        alb::PathMatch::Exact(p) => route::PathMatch::Exact(p.clone()),
        alb::PathMatch::Prefix(p) => route::PathMatch::Prefix(p.clone()),
        alb::PathMatch::Regex(p) => route::PathMatch::Regex(pattern(p)),
    }
}

fn condition(c: &alb::Condition) -> route::Condition {
    match c {
        alb::Condition::Host(hs) => route::Condition::Host(hs.iter().map(host).collect()),
        alb::Condition::Path(ps) => route::Condition::Path(
            ps.iter()
                .map(|p| match p {
                    alb::PathValue::Exact(p) => route::PathValue::Exact(p.clone()),
                    alb::PathValue::Regex(r) => route::PathValue::Regex(pattern(r)),
                })
                .collect(),
        ),
        alb::Condition::Header { name, values } => {
            route::Condition::Header { name: name.clone(), values: values.clone() }
        }
        alb::Condition::QueryString(q) => route::Condition::QueryString(q.clone()),
        alb::Condition::Method(m) => route::Condition::Method(m.clone()),
        alb::Condition::Cookie(c) => route::Condition::Cookie(c.clone()),
        alb::Condition::SourceIp(n) => route::Condition::SourceIp(n.clone()),
    }
}

fn action(a: &alb::Action) -> route::Action {
    match a {
        alb::Action::Forward { sticky, .. } => {
            route::Action::Forward { sticky: sticky.map(|s| route::GroupSticky { timeout_s: s.timeout_s }) }
        }
        alb::Action::Redirect(r) => route::Action::Redirect(route::Redirect {
            protocol: r.protocol.clone(),
            host: r.host.clone(),
            port: r.port,
            path: r.path.clone(),
            query: r.query.clone(),
            code: r.code,
        }),
        alb::Action::FixedResponse(f) => route::Action::FixedResponse(route::FixedResponse {
            code: f.code,
            content_type: f.content_type.clone(),
            content: f.content.clone(),
        }),
    }
}

/// Mirrors are not filters of the route model (they are its `mirrors` upstreams).
fn filter(f: &alb::Filter) -> Option<route::Filter> {
    Some(match f {
        alb::Filter::InsertHeader(ins) => route::Filter::InsertHeader {
            key: ins.key.clone(),
            value: match ins.value_type {
                alb::HeaderValueType::UserDefined => route::HeaderValue::Literal(ins.value.clone()),
                alb::HeaderValueType::ReferenceHeader => {
                    route::HeaderValue::RequestHeader(ins.value.to_ascii_lowercase())
                }
                alb::HeaderValueType::SystemDefined => route::HeaderValue::System(match ins.value.as_str() {
                    "ClientSrcPort" => route::SystemValue::ClientSrcPort,
                    "ClientSrcIp" => route::SystemValue::ClientSrcIp,
                    "Protocol" => route::SystemValue::Protocol,
                    "SLBPort" => route::SystemValue::SlbPort,
                    _ => route::SystemValue::LocalAddr,
                }),
            },
        },
        alb::Filter::RemoveHeader(name) => route::Filter::RemoveHeader(name.clone()),
        alb::Filter::TrafficMirror(_) => return None,
    })
}

fn backend(b: &alb::BackendSettings) -> route::BackendSettings {
    route::BackendSettings {
        protocol: match b.protocol {
            alb::BackendProtocol::Http => route::BackendProtocol::Http,
            alb::BackendProtocol::Https => route::BackendProtocol::Https,
            alb::BackendProtocol::Grpc => route::BackendProtocol::Grpc,
        },
        scheduler: match &b.scheduler {
            alb::Scheduler::Wrr => route::Scheduler::Wrr,
            alb::Scheduler::Wlc => route::Scheduler::Wlc,
            alb::Scheduler::Sch => route::Scheduler::Sch,
            alb::Scheduler::Uch { parameter } => route::Scheduler::Uch { parameter: parameter.clone() },
        },
        keepalive: b.keepalive,
        sticky: b.sticky.as_ref().map(|s| match s {
            alb::StickySession::Insert { timeout_s } => route::StickySession::Insert { timeout_s: *timeout_s },
            alb::StickySession::Server { cookie } => route::StickySession::Server { cookie: cookie.clone() },
        }),
        slow_start_s: b.slow_start_s,
        drain_timeout_s: b.drain_timeout_s,
    }
}
