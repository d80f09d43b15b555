//! The datapath-wide settings (`CONFIG[0]`): SNAT ports and SYN cookies, the MSS of cookie
//! flows kept within the smallest MTU of the interfaces the datapath runs on; where the IPv4
//! identifications of fragmented datagrams start (`FRAG_IDS`).
use std::{fmt, str::FromStr};

use aya::{
    Ebpf,
    maps::{Array, MapData},
};
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

/// Default of `--snat-ports`: 20,000 ports, so each backend holds 20,000 flows at once per
/// node address, below the NodePort range and Linux's default ephemeral ports.
pub const DEFAULT_SNAT_PORTS: (u16, u16) = (10000, 29999);
/// [`DEFAULT_SNAT_PORTS`] as the command line spells it.
pub const DEFAULT_SNAT_PORTS_ARG: &str = "10000-29999";
/// Kubernetes' default NodePort range (`--service-node-port-range`).
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

/// The node's ephemeral port range (`net.ipv4.ip_local_port_range`), if it can be read.
pub fn local_port_range() -> Option<(u16, u16)> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|w| w.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// The full-NAT source ports must not be ports the node's own connections take
/// (`ip_local_port_range`, `local`) nor NodePorts: a flow's replies would be taken for
/// theirs, or theirs for a flow's. The error names the range and what it collides with.
pub fn check_snat_ports(snat: (u16, u16), local: Option<(u16, u16)>) -> std::result::Result<(), String> {
    let overlap = |(a, b): (u16, u16)| snat.0 <= b && a <= snat.1;
    if snat.0 == 0 || snat.1 < snat.0 {
        return Err(format!("--snat-ports {}-{}: not a port range", snat.0, snat.1));
    }
    if overlap(NODE_PORT_RANGE) {
        return Err(format!(
            "--snat-ports {}-{} overlaps the NodePort range {}-{}",
            snat.0, snat.1, NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
        ));
    }
    if let Some(l) = local.filter(|l| overlap(*l)) {
        return Err(format!(
            "--snat-ports {}-{} overlaps net.ipv4.ip_local_port_range {}-{} (the node's own connections' ports): \
             choose a range outside it, or narrow ip_local_port_range",
            snat.0, snat.1, l.0, l.1
        ));
    }
    Ok(())
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
    /// Start the IPv4 identifications of fragmented datagrams (`FRAG_IDS`) at a point of the
    /// load's clock, so that a restarted datapath does not hand out those the last one sent
    /// moments before.
    pub(super) fn seed_frag_ids(ebpf: &mut Ebpf) -> Result<()> {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        let mut ids: Array<&mut MapData, u32> = super::maps::map_mut(ebpf, names::FRAG_IDS)?;
        ids.set(0, start, 0).map_err(map_err(names::FRAG_IDS))
    }

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
        let mut cfg = initial(DEFAULT_SNAT_PORTS, SynCookies::Auto, 1);
        assert!(fit_mtu(&mut cfg, 1500));
        assert_eq!((cfg.syn_cookie_mss4, cfg.syn_cookie_mss6), (1460, 1440));
        assert!(fit_mtu(&mut cfg, 1450), "a VXLAN device's MTU lowers it");
        assert_eq!((cfg.syn_cookie_mss4, cfg.syn_cookie_mss6), (1410, 1390));
        assert!(!fit_mtu(&mut cfg, 9000), "a larger MTU does not raise it");
        assert!(fit_mtu(&mut cfg, 300), "never below the TCP minimum");
        assert_eq!(cfg.syn_cookie_mss4, 536);
    }

    #[test]
    fn snat_ports_keep_clear_of_node_ports_and_ephemeral_ports() {
        let linux = Some((32768, 60999));
        assert_eq!(check_snat_ports(DEFAULT_SNAT_PORTS, linux), Ok(()));
        assert_eq!(check_snat_ports((61000, 65535), linux), Ok(()));
        assert!(DEFAULT_SNAT_PORTS.1 - DEFAULT_SNAT_PORTS.0 + 1 >= 16_000);
        assert_eq!(DEFAULT_SNAT_PORTS_ARG, format!("{}-{}", DEFAULT_SNAT_PORTS.0, DEFAULT_SNAT_PORTS.1));
        let e = check_snat_ports((29000, 30000), linux).unwrap_err();
        assert!(e.contains("NodePort range 30000-32767"), "{e}");
        let e = check_snat_ports((50000, 61000), linux).unwrap_err();
        assert!(e.contains("ip_local_port_range 32768-60999"), "{e}");
        let e = check_snat_ports(DEFAULT_SNAT_PORTS, Some((1024, 65535))).unwrap_err();
        assert!(e.contains("ip_local_port_range 1024-65535"), "{e}");
        assert!(check_snat_ports((100, 50), None).is_err());
    }

    #[test]
    fn modes_parse_and_print() {
        for m in ["auto", "always", "off"] {
            assert_eq!(m.parse::<SynCookies>().unwrap().to_string(), m);
        }
        assert!("sometimes".parse::<SynCookies>().is_err());
    }
}
