//! The project's own annotations (`lb.dev/*`): the PROXY protocol version of a Service's
//! listeners, the ALB server group a Service stands for, and per-endpoint weights on
//! EndpointSlices.
use std::{collections::BTreeMap, net::IpAddr};

use serde::Serialize;

/// On a Service: the PROXY protocol version its listeners send when CLB `proxy-protocol`
/// is `on`: `"2"` (binary, the default) or `"1"` (text; TCP listeners only, UDP listeners
/// always send v2).
pub const PROXY_PROTOCOL_VERSION: &str = "lb.dev/proxy-protocol-version";
/// On an EndpointSlice: per-endpoint weights for wrr (and weighted Maglev),
/// `ADDRESS=WEIGHT,...`, weights 0..=100 (0 = no new flows). Endpoints not listed weigh 100.
pub const ENDPOINT_WEIGHTS: &str = "lb.dev/endpoint-weights";

/// On a Service: the ALB server group it stands for, `sgp-ID` or `sgp-ID:PORT` (a port number
/// or name of the Service; without one the Service must have exactly one port). A ForwardGroup
/// `ServerGroupID` of an Ingress of the same namespace forwards its share to that port.
pub const SERVER_GROUP_ID: &str = "lb.dev/server-group-id";

/// The (server group ID, port) a [`SERVER_GROUP_ID`] value names.
pub fn server_group_id(value: &str) -> (&str, Option<&str>) {
    match value.trim().split_once(':') {
        Some((id, port)) => (id.trim(), Some(port.trim())),
        None => (value.trim(), None),
    }
}

/// A PROXY protocol version as written in [`PROXY_PROTOCOL_VERSION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyVersion {
    V1,
    V2,
}

/// The version [`PROXY_PROTOCOL_VERSION`] asks for; `None` when it is absent.
pub fn proxy_protocol_version(annotations: &BTreeMap<String, String>) -> Result<Option<ProxyVersion>, String> {
    match annotations.get(PROXY_PROTOCOL_VERSION).map(|v| v.trim()) {
        None => Ok(None),
        Some("2") => Ok(Some(ProxyVersion::V2)),
        Some("1") => Ok(Some(ProxyVersion::V1)),
        Some(other) => Err(format!("{other:?} is not a PROXY protocol version (\"1\" or \"2\")")),
    }
}

/// The weights of [`ENDPOINT_WEIGHTS`] (empty when absent).
pub fn endpoint_weights(annotations: Option<&BTreeMap<String, String>>) -> Result<BTreeMap<IpAddr, u32>, String> {
    let Some(text) = annotations.and_then(|a| a.get(ENDPOINT_WEIGHTS)) else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, w) = item.split_once('=').ok_or_else(|| format!("{item:?}: expected ADDRESS=WEIGHT"))?;
        let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
        let w: u32 = w.trim().parse().map_err(|_| format!("{w:?} is not a weight"))?;
        if w > 100 {
            return Err(format!("weight {w} of {addr} is outside 0..=100"));
        }
        out.insert(addr, w);
    }
    Ok(out)
}
