//! The datapath-wide settings (`CONFIG[0]`): SNAT ports and SYN cookies, the MSS of cookie
//! flows kept within the smallest MTU of the interfaces the datapath runs on.
use std::{fmt, str::FromStr};

use aya::maps::{Array, MapData};
use lb_common::{DatapathConfig, map_names as names, syn_cookies};

use super::{
    Dataplane,
    error::{Result, map_err},
};

/// When SYNs are answered with SYN cookies (`lb run --syn-cookies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SynCookies {
    /// Under pressure: a SYN rate over `--syn-cookie-rate` on a CPU, or no free SNAT port.
    #[default]
    Auto,
    Always,
    Off,
}

impl SynCookies {
    fn mode(self) -> u8 {
        match self {
            SynCookies::Auto => syn_cookies::AUTO,
            SynCookies::Always => syn_cookies::ALWAYS,
            SynCookies::Off => syn_cookies::OFF,
        }
    }
}

impl FromStr for SynCookies {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(SynCookies::Auto),
            "always" => Ok(SynCookies::Always),
            "off" => Ok(SynCookies::Off),
            _ => Err(format!("{s:?}: expected auto, always or off")),
        }
    }
}

impl fmt::Display for SynCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SynCookies::Auto => "auto",
            SynCookies::Always => "always",
            SynCookies::Off => "off",
        })
    }
}

/// Default of `--syn-cookie-rate`: SYNs per second on one CPU above which cookies turn on.
pub const DEFAULT_SYN_COOKIE_RATE: u32 = 20_000;

/// IPv4 + TCP and IPv6 + TCP header bytes, off an MTU for the MSS.
const V4_OVERHEAD: u32 = 40;
const V6_OVERHEAD: u32 = 60;

/// The initial settings.
pub(super) fn initial(snat: (u16, u16), cookies: SynCookies, rate: u32) -> DatapathConfig {
    DatapathConfig {
        snat_port_min: snat.0,
        snat_port_max: snat.1,
        syn_cookie_mode: cookies.mode(),
        syn_cookie_rate: rate,
        ..DatapathConfig::default()
    }
}

/// `cfg`'s cookie MSS lowered to fit `mtu`, if it has to be (0: not set yet).
pub(super) fn fit_mtu(cfg: &mut DatapathConfig, mtu: u32) -> bool {
    let fit = |cur: u16, overhead: u32| {
        let m = mtu.saturating_sub(overhead).clamp(536, u16::MAX as u32) as u16;
        if cur == 0 || m < cur { m } else { cur }
    };
    let (m4, m6) = (fit(cfg.syn_cookie_mss4, V4_OVERHEAD), fit(cfg.syn_cookie_mss6, V6_OVERHEAD));
    let changed = (m4, m6) != (cfg.syn_cookie_mss4, cfg.syn_cookie_mss6);
    cfg.syn_cookie_mss4 = m4;
    cfg.syn_cookie_mss6 = m6;
    changed
}

impl Dataplane {
    pub(super) fn write_config(&mut self) -> Result<()> {
        let cfg = self.config;
        let mut config: Array<&mut MapData, DatapathConfig> = self.map_mut(names::CONFIG)?;
        config.set(0, cfg, 0).map_err(map_err(names::CONFIG))
    }

    /// Change when SYNs are answered with cookies (flows already open are not touched).
    pub fn set_syn_cookies(&mut self, cookies: SynCookies) -> Result<()> {
        self.config.syn_cookie_mode = cookies.mode();
        self.write_config()
    }

    /// The datapath runs on `iface` now: cookie flows' MSS stays within its MTU.
    pub(super) fn fit_mtu_of(&mut self, iface: &str) -> Result<()> {
        let Some(mtu) = std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            return Ok(());
        };
        if fit_mtu(&mut self.config, mtu) {
            tracing::debug!(iface, mtu, mss4 = self.config.syn_cookie_mss4, "SYN-cookie MSS lowered");
            self.write_config()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_mss_follows_the_smallest_mtu() {
        let mut cfg = initial((61000, 65535), SynCookies::Auto, 1);
        assert!(fit_mtu(&mut cfg, 1500));
        assert_eq!((cfg.syn_cookie_mss4, cfg.syn_cookie_mss6), (1460, 1440));
        assert!(fit_mtu(&mut cfg, 1450), "a VXLAN device's MTU lowers it");
        assert_eq!((cfg.syn_cookie_mss4, cfg.syn_cookie_mss6), (1410, 1390));
        assert!(!fit_mtu(&mut cfg, 9000), "a larger MTU does not raise it");
        assert!(fit_mtu(&mut cfg, 300), "never below the TCP minimum");
        assert_eq!(cfg.syn_cookie_mss4, 536);
    }

    #[test]
    fn modes_parse_and_print() {
        for m in ["auto", "always", "off"] {
            assert_eq!(m.parse::<SynCookies>().unwrap().to_string(), m);
        }
        assert!("sometimes".parse::<SynCookies>().is_err());
    }
}
