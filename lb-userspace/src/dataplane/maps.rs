//! The loaded object's maps and programs by name, and addresses as the maps hold them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf,
    programs::{SchedClassifier, Xdp},
};
use lb_common::{FAMILY_V4, FAMILY_V6};

use super::error::{DataplaneError, Result, map_err};

pub(crate) fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or(DataplaneError::Missing { what: name })?;
    T::try_from(map).map_err(map_err(name))
}

pub(super) fn tc_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    let prog = ebpf.program_mut(name).ok_or(DataplaneError::Missing { what: name })?;
    Ok(prog.try_into()?)
}

pub(super) fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let prog = ebpf.program_mut(lb_common::XDP_PROGRAM).ok_or(DataplaneError::Missing { what: "program lb_xdp" })?;
    Ok(prog.try_into()?)
}

/// `addr:port` / `[addr]:port`.
pub fn backend_name(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

pub fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// An address as the datapath stores it (see `lb_common::Addr`).
pub fn addr_words(ip: IpAddr) -> lb_common::Addr {
    match ip {
        IpAddr::V4(a) => [u32::from(a).to_be(), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// The address a datapath `Addr` of `family` holds.
pub fn words_addr(w: &lb_common::Addr, family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::V4(Ipv4Addr::from(u32::from_be(w[0])))
    } else {
        let mut o = [0u8; 16];
        for i in 0..4 {
            o[i * 4..i * 4 + 4].copy_from_slice(&w[i].to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    }
}
