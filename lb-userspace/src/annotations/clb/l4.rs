//! Families of tcp/udp listeners: `persistence-timeout`, `established-timeout`,
//! `connection-drain` with `connection-drain-timeout`, `proxy-protocol`.
use serde::Serialize;

use super::{
    Cx, Listener,
    keys::Key,
    listeners::{
        ListenerProtocol::{Tcp, Udp},
        applies_to,
    },
    values::{number, on_off},
};

/// `connection-drain` (off unless set) with `connection-drain-timeout`, required when on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionDrain {
    #[default]
    Off,
    /// A removed backend keeps its established connections this long, 10..=900 s.
    On { timeout_s: u16 },
}

/// Options of tcp/udp listeners.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct L4Options {
    /// `persistence-timeout`, tcp listeners: 0..=3600 s, 0 (the default) = no persistence.
    pub persistence_timeout_s: u16,
    /// `established-timeout`, tcp listeners: 10..=900 s; the reference gives no default,
    /// `None` leaves the datapath's own.
    pub established_timeout_s: Option<u16>,
    pub connection_drain: ConnectionDrain,
    /// `proxy-protocol` (default off): a PROXY protocol header carries the client address.
    pub proxy_protocol: bool,
}

pub(super) fn options(cx: &mut Cx, listeners: &[Listener]) -> L4Options {
    for key in [Key::PersistenceTimeout, Key::EstablishedTimeout] {
        applies_to(cx, key, listeners, &[Tcp]);
    }
    for key in [Key::ConnectionDrain, Key::ConnectionDrainTimeout, Key::ProxyProtocol] {
        applies_to(cx, key, listeners, &[Tcp, Udp]);
    }
    L4Options {
        persistence_timeout_s: cx.value(Key::PersistenceTimeout, |v| number(v, 0, 3600)).unwrap_or(0) as u16,
        established_timeout_s: cx.value(Key::EstablishedTimeout, |v| number(v, 10, 900)).map(|n| n as u16),
        connection_drain: connection_drain(cx, listeners.iter().any(|l| matches!(l.protocol, Tcp | Udp))),
        proxy_protocol: cx.value(Key::ProxyProtocol, on_off).unwrap_or(false),
    }
}

/// `connection-drain` and its timeout; only noted (by `applies_to`) where no tcp/udp listener
/// has them (`applies`).
fn connection_drain(cx: &mut Cx, applies: bool) -> ConnectionDrain {
    let on = cx.value(Key::ConnectionDrain, on_off);
    let timeout = cx.value(Key::ConnectionDrainTimeout, |v| number(v, 10, 900));
    if !applies {
        return ConnectionDrain::Off;
    }
    match (on, timeout) {
        (Some(true), Some(t)) => return ConnectionDrain::On { timeout_s: t as u16 },
        (Some(true), None) if !cx.has(Key::ConnectionDrainTimeout) => {
            cx.error(Key::ConnectionDrain, "on requires connection-drain-timeout (10..=900 seconds)");
        }
        (Some(false), _) if !cx.failed(Key::ConnectionDrainTimeout) => {
            // Switched off, the timeout kept for later: said, not an error.
            cx.not_applicable(Key::ConnectionDrainTimeout, "has no effect while connection-drain is off");
        }
        (None, _) if cx.has(Key::ConnectionDrainTimeout) => cx.cross_note(
            Key::ConnectionDrainTimeout,
            &[Key::ConnectionDrain],
            "has no effect while connection-drain is not on (default off)",
        ),
        _ => {}
    }
    ConnectionDrain::Off
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_one_error, assert_one_note, check_range, run, tcp, udp};
    use super::*;

    #[test]
    fn defaults_when_absent() {
        let p = run(&[], &[tcp(80)]);
        assert_eq!(p.config.l4, L4Options::default());
        assert_eq!(p.config.l4.persistence_timeout_s, 0);
        assert_eq!(p.config.l4.established_timeout_s, None);
        assert_eq!(p.config.l4.connection_drain, ConnectionDrain::Off);
        assert!(!p.config.l4.proxy_protocol);
    }

    #[test]
    fn persistence_timeout_range() {
        check_range("persistence-timeout", 0, 3600, &[], &[tcp(80)], |c| c.l4.persistence_timeout_s.into());
        assert_one_error(
            &[("persistence-timeout", "4000")],
            &[tcp(80)],
            "persistence-timeout",
            "4000 is outside 0..=3600",
        );
    }

    #[test]
    fn persistence_timeout_applies_to_tcp_listeners_only() {
        assert_one_note(
            &[("persistence-timeout", "60")],
            &[udp(53)],
            "persistence-timeout",
            "has no effect: it applies only to tcp listeners, and this Service's listeners are udp:53",
        );
        assert_one_note(
            &[("persistence-timeout", "60"), ("protocol-port", "http:80")],
            &[tcp(80)],
            "persistence-timeout",
            "has no effect: it applies only to tcp listeners, and this Service's listeners are http:80",
        );
        // One tcp listener among others is enough.
        let p = run(&[("persistence-timeout", "60")], &[udp(53), tcp(22)]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
    }

    #[test]
    fn established_timeout_range() {
        check_range("established-timeout", 10, 900, &[], &[tcp(80)], |c| {
            c.l4.established_timeout_s.map_or(0, u64::from)
        });
        assert_one_note(
            &[("established-timeout", "60")],
            &[udp(53)],
            "established-timeout",
            "has no effect: it applies only to tcp listeners, and this Service's listeners are udp:53",
        );
    }

    #[test]
    fn connection_drain_on_with_timeout() {
        check_range("connection-drain-timeout", 10, 900, &[("connection-drain", "on")], &[tcp(80)], |c| {
            match c.l4.connection_drain {
                ConnectionDrain::On { timeout_s } => timeout_s.into(),
                ConnectionDrain::Off => u64::MAX,
            }
        });
        let p = run(&[("connection-drain", "on"), ("connection-drain-timeout", "30")], &[udp(53)]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.config.l4.connection_drain, ConnectionDrain::On { timeout_s: 30 });
        assert_eq!(run(&[("connection-drain", "off")], &[tcp(80)]).config.l4.connection_drain, ConnectionDrain::Off);
    }

    #[test]
    fn connection_drain_cross_rules() {
        let ports = [tcp(80)];
        assert_one_error(
            &[("connection-drain", "on")],
            &ports,
            "connection-drain",
            "on requires connection-drain-timeout (10..=900 seconds)",
        );
        assert_one_note(
            &[("connection-drain-timeout", "30")],
            &ports,
            "connection-drain-timeout",
            "has no effect while connection-drain is not on (default off)",
        );
        assert_one_note(
            &[("connection-drain", "off"), ("connection-drain-timeout", "30")],
            &ports,
            "connection-drain-timeout",
            "has no effect while connection-drain is off",
        );
        // A bad timeout is reported once, not again as a missing one.
        assert_one_error(
            &[("connection-drain", "on"), ("connection-drain-timeout", "5")],
            &ports,
            "connection-drain-timeout",
            "5 is outside 10..=900",
        );
        assert_one_note(
            &[("connection-drain", "off"), ("protocol-port", "http:80")],
            &ports,
            "connection-drain",
            "has no effect: it applies only to tcp/udp listeners, and this Service's listeners are http:80",
        );
        // Without a tcp/udp listener nothing of it is required either: notices only.
        for pairs in [[("connection-drain", "on")], [("connection-drain-timeout", "30")]] {
            let p = run(&[pairs[0], ("protocol-port", "http:80")], &ports);
            assert!(p.errors.is_empty() && p.not_applicable.len() == 1, "{:?} {:?}", p.errors, p.not_applicable);
        }
    }

    #[test]
    fn proxy_protocol_on_off() {
        assert!(run(&[("proxy-protocol", "on")], &[tcp(80)]).config.l4.proxy_protocol);
        assert!(run(&[("proxy-protocol", "on")], &[udp(53)]).config.l4.proxy_protocol);
        assert!(!run(&[("proxy-protocol", "off")], &[tcp(80)]).config.l4.proxy_protocol);
        assert_one_error(&[("proxy-protocol", "v2")], &[tcp(80)], "proxy-protocol", "\"v2\" is not one of on, off");
        assert_one_note(
            &[("proxy-protocol", "on"), ("protocol-port", "https:443"), ("cert-id", "c")],
            &[tcp(443)],
            "proxy-protocol",
            "has no effect: it applies only to tcp/udp listeners, and this Service's listeners are https:443",
        );
    }
}
