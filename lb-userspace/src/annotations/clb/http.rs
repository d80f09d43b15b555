//! Families of http/https listeners: sticky sessions (`sticky-session`,
//! `sticky-session-type`, `cookie-timeout`, `cookie`), the `xforwardedfor-*` headers,
//! `idle-timeout` and `request-timeout`.
use serde::Serialize;

use super::{
    CookieName, Cx, Listener,
    keys::Key,
    listeners::{
        ListenerProtocol::{Http, Https},
        applies_to,
    },
    values::{choice, cookie_name, number, on_off},
};

/// `sticky-session` (default off) and how: `insert` a cookie with `cookie-timeout`, or
/// follow the backend's own cookie named by `cookie` (`server`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StickySession {
    #[default]
    Off,
    /// The balancer inserts a cookie that lives `cookie_timeout_s` (1..=86400).
    Insert { cookie_timeout_s: u32 },
    /// The balancer follows the cookie the backend sets.
    Server { cookie: CookieName },
}

/// Options of http/https listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpOptions {
    pub sticky_session: StickySession,
    /// `xforwardedfor-proto` (default off): add `X-Forwarded-Proto`.
    pub x_forwarded_proto: bool,
    /// `xforwardedfor-slbport` (default off): add the listener port, as `X-Forwarded-Port`
    /// (the reference's `XForwardedFor_SLBPORT` names the listener setting, not the header).
    pub x_forwarded_slb_port: bool,
    /// `xforwardedfor-clientsrcport` (default off): add the client's source port, as
    /// `X-Forwarded-Client-Srcport` (the reference's `XForwardedFor_ClientSrcPort` names the
    /// listener setting).
    pub x_forwarded_client_src_port: bool,
    /// `idle-timeout`: 1..=60 s, default 15.
    pub idle_timeout_s: u8,
    /// `request-timeout`: 1..=180 s, default 60; the client gets a 504 past it.
    pub request_timeout_s: u8,
}

impl Default for HttpOptions {
    fn default() -> HttpOptions {
        HttpOptions {
            sticky_session: StickySession::Off,
            x_forwarded_proto: false,
            x_forwarded_slb_port: false,
            x_forwarded_client_src_port: false,
            idle_timeout_s: 15,
            request_timeout_s: 60,
        }
    }
}

const HTTP_KEYS: [Key; 9] = [
    Key::StickySession,
    Key::StickySessionType,
    Key::CookieTimeout,
    Key::Cookie,
    Key::XForwardedForProto,
    Key::XForwardedForSlbPort,
    Key::XForwardedForClientSrcPort,
    Key::IdleTimeout,
    Key::RequestTimeout,
];

pub(super) fn options(cx: &mut Cx, listeners: &[Listener]) -> HttpOptions {
    for key in HTTP_KEYS {
        applies_to(cx, key, listeners, &[Http, Https]);
    }
    let d = HttpOptions::default();
    HttpOptions {
        sticky_session: sticky_session(cx),
        x_forwarded_proto: cx.value(Key::XForwardedForProto, on_off).unwrap_or(d.x_forwarded_proto),
        x_forwarded_slb_port: cx.value(Key::XForwardedForSlbPort, on_off).unwrap_or(d.x_forwarded_slb_port),
        x_forwarded_client_src_port: cx
            .value(Key::XForwardedForClientSrcPort, on_off)
            .unwrap_or(d.x_forwarded_client_src_port),
        idle_timeout_s: cx.value(Key::IdleTimeout, |v| number(v, 1, 60)).map_or(d.idle_timeout_s, |n| n as u8),
        request_timeout_s: cx
            .value(Key::RequestTimeout, |v| number(v, 1, 180))
            .map_or(d.request_timeout_s, |n| n as u8),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Insert,
    Server,
}

fn sticky_session(cx: &mut Cx) -> StickySession {
    let on = cx.value(Key::StickySession, on_off);
    let kind = cx.value(Key::StickySessionType, |v| choice(v, &[("insert", Kind::Insert), ("server", Kind::Server)]));
    let timeout = cx.value(Key::CookieTimeout, |v| number(v, 1, 86400));
    let cookie = cx.value(Key::Cookie, cookie_name);
    if on != Some(true) {
        for key in [Key::StickySessionType, Key::CookieTimeout, Key::Cookie] {
            if on == Some(false) && !cx.failed(key) {
                // Switched off, the settings kept for later: said, not an error.
                cx.not_applicable(key, "has no effect while sticky-session is off");
            } else if cx.has(key) {
                cx.cross_note(key, &[Key::StickySession], "has no effect while sticky-session is not on (default off)");
            }
        }
        return StickySession::Off;
    }
    if !cx.has(Key::StickySessionType) {
        cx.error(Key::StickySession, "on requires sticky-session-type (insert or server)");
    }
    match kind {
        Some(Kind::Insert) => {
            if !cx.has(Key::CookieTimeout) {
                cx.error(Key::StickySessionType, "insert requires cookie-timeout (1..=86400 seconds)");
            }
            if cx.has(Key::Cookie) {
                cx.not_applicable(
                    Key::Cookie,
                    "has no effect: it applies only to sticky-session-type server (insert makes its own cookie)",
                );
            }
            if let Some(t) = timeout {
                return StickySession::Insert { cookie_timeout_s: t };
            }
        }
        Some(Kind::Server) => {
            if !cx.has(Key::Cookie) {
                cx.error(Key::StickySessionType, "server requires cookie (the name of the backend's cookie)");
            }
            if cx.has(Key::CookieTimeout) {
                cx.not_applicable(Key::CookieTimeout, "has no effect: it applies only to sticky-session-type insert");
            }
            if let Some(cookie) = cookie {
                return StickySession::Server { cookie };
            }
        }
        None => {}
    }
    StickySession::Off
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_one_error, assert_one_note, check_range, run, tcp};
    use super::*;

    const HTTP: (&str, &str) = ("protocol-port", "http:80");

    #[test]
    fn defaults_when_absent() {
        let p = run(&[HTTP], &[tcp(80)]);
        assert_eq!(p.config.http, HttpOptions::default());
        assert_eq!((p.config.http.idle_timeout_s, p.config.http.request_timeout_s), (15, 60));
        assert_eq!(p.config.http.sticky_session, StickySession::Off);
    }

    #[test]
    fn idle_timeout_range() {
        check_range("idle-timeout", 1, 60, &[HTTP], &[tcp(80)], |c| c.http.idle_timeout_s.into());
    }

    #[test]
    fn request_timeout_range() {
        check_range("request-timeout", 1, 180, &[HTTP], &[tcp(80)], |c| c.http.request_timeout_s.into());
    }

    #[test]
    fn http_options_need_an_http_or_https_listener() {
        for (key, value) in [
            ("idle-timeout", "30"),
            ("request-timeout", "30"),
            ("xforwardedfor-proto", "on"),
            ("xforwardedfor-slbport", "on"),
            ("xforwardedfor-clientsrcport", "on"),
            ("sticky-session", "off"),
        ] {
            assert_one_note(
                &[(key, value)],
                &[tcp(80)],
                key,
                "has no effect: it applies only to http/https listeners, and this Service's listeners are tcp:80",
            );
        }
        let p = run(&[("protocol-port", "https:443"), ("cert-id", "c"), ("idle-timeout", "30")], &[tcp(443)]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }

    #[test]
    fn xforwardedfor_headers() {
        let p = run(
            &[
                HTTP,
                ("xforwardedfor-proto", "on"),
                ("xforwardedfor-slbport", "on"),
                ("xforwardedfor-clientsrcport", "off"),
            ],
            &[tcp(80)],
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let h = &p.config.http;
        assert_eq!((h.x_forwarded_proto, h.x_forwarded_slb_port, h.x_forwarded_client_src_port), (true, true, false));
        assert_one_error(
            &[HTTP, ("xforwardedfor-slbport", "ON")],
            &[tcp(80)],
            "xforwardedfor-slbport",
            "\"ON\" is not one of on, off (values are case-sensitive: on)",
        );
    }

    #[test]
    fn sticky_session_insert() {
        check_range(
            "cookie-timeout",
            1,
            86400,
            &[HTTP, ("sticky-session", "on"), ("sticky-session-type", "insert")],
            &[tcp(80)],
            |c| match c.http.sticky_session {
                StickySession::Insert { cookie_timeout_s } => cookie_timeout_s.into(),
                _ => u64::MAX,
            },
        );
    }

    #[test]
    fn sticky_session_server() {
        let p = run(
            &[HTTP, ("sticky-session", "on"), ("sticky-session-type", "server"), ("cookie", "my-cookie")],
            &[tcp(80)],
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let StickySession::Server { cookie } = &p.config.http.sticky_session else { panic!() };
        assert_eq!(cookie.as_str(), "my-cookie");
        for (bad, reason) in [
            ("$sid", "\"$sid\" starts with $"),
            ("a;b", "\"a;b\" contains ';'; a cookie name is printable ASCII without ',', ';' or spaces"),
            ("a b", "\"a b\" contains ' '; a cookie name is printable ASCII without ',', ';' or spaces"),
        ] {
            assert_one_error(
                &[HTTP, ("sticky-session", "on"), ("sticky-session-type", "server"), ("cookie", bad)],
                &[tcp(80)],
                "cookie",
                reason,
            );
        }
        let long = "c".repeat(201);
        assert_one_error(
            &[HTTP, ("sticky-session", "on"), ("sticky-session-type", "server"), ("cookie", &long)],
            &[tcp(80)],
            "cookie",
            "a cookie name has 1..=200 characters, not 201",
        );
    }

    #[test]
    fn sticky_session_cross_rules() {
        let ports = [tcp(80)];
        let on = ("sticky-session", "on");
        assert_one_error(&[HTTP, on], &ports, "sticky-session", "on requires sticky-session-type (insert or server)");
        assert_one_error(
            &[HTTP, on, ("sticky-session-type", "insert")],
            &ports,
            "sticky-session-type",
            "insert requires cookie-timeout (1..=86400 seconds)",
        );
        assert_one_error(
            &[HTTP, on, ("sticky-session-type", "server")],
            &ports,
            "sticky-session-type",
            "server requires cookie (the name of the backend's cookie)",
        );
        assert_one_note(
            &[HTTP, on, ("sticky-session-type", "insert"), ("cookie-timeout", "60"), ("cookie", "c")],
            &ports,
            "cookie",
            "has no effect: it applies only to sticky-session-type server (insert makes its own cookie)",
        );
        assert_one_note(
            &[HTTP, on, ("sticky-session-type", "server"), ("cookie", "c"), ("cookie-timeout", "60")],
            &ports,
            "cookie-timeout",
            "has no effect: it applies only to sticky-session-type insert",
        );
        assert_one_note(
            &[HTTP, ("sticky-session", "off"), ("sticky-session-type", "insert")],
            &ports,
            "sticky-session-type",
            "has no effect while sticky-session is off",
        );
        assert_one_note(
            &[HTTP, ("cookie-timeout", "60")],
            &ports,
            "cookie-timeout",
            "has no effect while sticky-session is not on (default off)",
        );
        assert_one_error(
            &[HTTP, on, ("sticky-session-type", "rewrite")],
            &ports,
            "sticky-session-type",
            "\"rewrite\" is not one of insert, server",
        );
    }
}
