//! The XDP datapath seen from user space: loads the embedded object, attaches it to
//! interfaces, and keeps its maps equal to the model ([`apply`](Dataplane::apply)).
mod backends;
mod stats;

use std::{collections::BTreeMap, net::IpAddr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap as BpfHashMap, MapData},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lb_common::{
    DatapathConfig, FAMILY_V4, Listener, ListenerKey, MAX_BACKENDS_PER_LISTENER, MAX_LISTENERS,
    SnatAddr, map_names as names,
};
use thiserror::Error;

pub use backends::BackendIds;
pub use stats::Stats;

use crate::model::{L4Listener, ListenerId, Model};

/// The datapath object built by `cargo xtask build-ebpf`, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error("this `lb` was built without the XDP object: run `cargo xtask build` (or `cargo xtask build-ebpf` before building lb)")]
    NoObject,
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("map {map} is missing from the object")]
    MissingMap { map: &'static str },
    #[error("listener {listener}: {reason}")]
    Listener { listener: String, reason: String },
    #[error("snat port range {0}-{1} is empty")]
    PortRange(u16, u16),
}

type Result<T> = std::result::Result<T, DataplaneError>;

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map { map, source }
}

/// Load-time settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Flows the conntrack (and reverse-NAT) tables hold.
    pub conntrack_entries: u32,
    /// Source ports used for full NAT, inclusive.
    pub snat_ports: (u16, u16),
}

impl Default for Options {
    fn default() -> Self {
        Options { conntrack_entries: lb_common::DEFAULT_CONNTRACK_ENTRIES, snat_ports: (61000, 65535) }
    }
}

/// What is loaded for one listener.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    id: u32,
    listener: L4Listener,
}

pub struct Dataplane {
    ebpf: Ebpf,
    links: Vec<(String, XdpLinkId)>,
    loaded: BTreeMap<ListenerId, Loaded>,
    free_ids: Vec<u32>,
    backend_ids: BackendIds,
}

impl Dataplane {
    /// Load the object and verify the program; nothing is attached yet.
    pub fn load(opts: &Options) -> Result<Dataplane> {
        if EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let (lo, hi) = opts.snat_ports;
        if lo == 0 || hi < lo {
            return Err(DataplaneError::PortRange(lo, hi));
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(names::CONNTRACK, opts.conntrack_entries)
            .map_max_entries(names::REVERSE_NAT, opts.conntrack_entries)
            .load(EBPF_OBJECT)?;
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load()?;
        let mut dp = Dataplane {
            ebpf,
            links: Vec::new(),
            loaded: BTreeMap::new(),
            free_ids: (0..MAX_LISTENERS).rev().collect(),
            backend_ids: BackendIds::default(),
        };
        let mut config: Array<&mut MapData, DatapathConfig> = dp.map_mut(names::CONFIG)?;
        let cfg = DatapathConfig { snat_port_min: lo, snat_port_max: hi, _pad: 0 };
        config.set(0, cfg, 0).map_err(map_err(names::CONFIG))?;
        Ok(dp)
    }

    /// The loaded XDP program (for BPF_PROG_TEST_RUN).
    pub fn program(&mut self) -> Result<&mut Xdp> {
        program(&mut self.ebpf)
    }

    /// Attach to `iface` in driver mode, or in generic mode (with a warning) where the driver
    /// has no XDP support. Returns the mode used.
    pub fn attach(&mut self, iface: &str) -> Result<XdpMode> {
        let prog = self.program()?;
        let (id, mode) = match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => (id, XdpMode::Driver),
            Err(e) => {
                tracing::warn!(iface, error = %e, "native XDP unavailable, falling back to generic mode (slower)");
                (prog.attach(iface, XdpMode::Skb)?, XdpMode::Skb)
            }
        };
        self.links.push((iface.to_string(), id));
        Ok(mode)
    }

    /// Detach from every interface.
    pub fn detach_all(&mut self) {
        let links: Vec<_> = self.links.drain(..).collect();
        for (iface, id) in links {
            if let Ok(prog) = self.program() {
                if let Err(e) = prog.detach(id) {
                    tracing::warn!(iface, error = %e, "detach failed");
                }
            }
        }
    }

    /// Make `ifindex` a forwarding target whose NATed traffic leaves from `addr`.
    pub fn add_port(&mut self, ifindex: u32, addr: Option<std::net::Ipv4Addr>) -> Result<()> {
        let mut tx: DevMapHash<&mut MapData> = self.map_mut(names::TX_PORTS)?;
        tx.insert(ifindex, ifindex, None, 0)
            .map_err(|e| DataplaneError::Map { map: names::TX_PORTS, source: xdp_map_err(e) })?;
        if let Some(addr) = addr {
            let mut snat: BpfHashMap<&mut MapData, u32, SnatAddr> = self.map_mut(names::SNAT_ADDRS)?;
            let value = SnatAddr { v4: u32::from(addr).to_be(), ..Default::default() };
            snat.insert(ifindex, value, 0).map_err(map_err(names::SNAT_ADDRS))?;
        }
        Ok(())
    }

    /// Bring the listener and backend maps to `model`: new listeners are added, changed ones
    /// rewritten in place (backends and slots first, the listener's count last), removed ones
    /// deleted. Flows already in conntrack keep their backend.
    pub fn apply(&mut self, model: &Model) -> Result<()> {
        let desired: BTreeMap<ListenerId, &L4Listener> =
            model.listeners.values().map(|l| (l.id(), l)).collect();
        let gone: Vec<ListenerId> = self.loaded.keys().filter(|k| !desired.contains_key(k)).copied().collect();
        for id in gone {
            self.remove_listener(id)?;
        }
        for (id, listener) in desired {
            if self.loaded.get(&id).map(|l| &l.listener) != Some(listener) {
                self.write_listener(listener)?;
            }
        }
        Ok(())
    }

    fn write_listener(&mut self, l: &L4Listener) -> Result<()> {
        let name = crate::model::listener_name(l);
        let id = match self.loaded.get(&l.id()) {
            Some(loaded) => loaded.id,
            None => self.free_ids.pop().ok_or_else(|| DataplaneError::Listener {
                listener: name.clone(),
                reason: format!("more than {MAX_LISTENERS} listeners"),
            })?,
        };
        let old = self.loaded.get(&l.id()).map(|x| x.listener.backends.clone()).unwrap_or_default();
        let ids = self.backend_ids.acquire(&l.backends);
        {
            let mut table: Array<&mut MapData, lb_common::Backend> = self.map_mut(names::BACKENDS)?;
            for (backend, bid) in l.backends.iter().zip(&ids) {
                table.set(*bid, backends::to_map_value(backend), 0).map_err(map_err(names::BACKENDS))?;
            }
        }
        {
            let mut slots: Array<&mut MapData, u32> = self.map_mut(names::BACKEND_SLOTS)?;
            for (i, bid) in ids.iter().enumerate() {
                slots.set(id * MAX_BACKENDS_PER_LISTENER + i as u32, bid, 0)
                    .map_err(map_err(names::BACKEND_SLOTS))?;
            }
        }
        let (key, value) = listener_entry(l, id, ids.len() as u32);
        let mut listeners: BpfHashMap<&mut MapData, ListenerKey, Listener> = self.map_mut(names::LISTENERS)?;
        listeners.insert(key, value, 0).map_err(map_err(names::LISTENERS))?;
        self.backend_ids.release(&old);
        tracing::info!(listener = %name, backends = ids.len(), "listener loaded");
        self.loaded.insert(l.id(), Loaded { id, listener: l.clone() });
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> Result<()> {
        let Some(loaded) = self.loaded.remove(&id) else { return Ok(()) };
        let (key, _) = listener_entry(&loaded.listener, loaded.id, 0);
        let mut listeners: BpfHashMap<&mut MapData, ListenerKey, Listener> = self.map_mut(names::LISTENERS)?;
        match listeners.remove(&key) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(names::LISTENERS)(e)),
        }
        self.backend_ids.release(&loaded.listener.backends);
        self.free_ids.push(loaded.id);
        tracing::info!(listener = %crate::model::listener_name(&loaded.listener), "listener removed");
        Ok(())
    }

    /// The datapath's counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        stats::read(&self.ebpf)
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or(DataplaneError::MissingMap { map: name })?;
        T::try_from(map).map_err(map_err(name))
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let prog = ebpf
        .program_mut(lb_common::XDP_PROGRAM)
        .ok_or(DataplaneError::MissingMap { map: "program lb_xdp" })?;
    Ok(prog.try_into()?)
}

fn xdp_map_err(e: aya::maps::xdp::XdpMapError) -> aya::maps::MapError {
    match e {
        aya::maps::xdp::XdpMapError::MapError(m) => m,
        other => aya::maps::MapError::InvalidName { name: other.to_string() },
    }
}

/// The `LISTENERS` key and value of a model listener.
fn listener_entry(l: &L4Listener, id: u32, backend_count: u32) -> (ListenerKey, Listener) {
    let key = ListenerKey {
        vip: addr_words(l.vip),
        port: l.port.to_be(),
        proto: l.protocol.number(),
        family: FAMILY_V4,
    };
    let value = Listener {
        id,
        backend_count,
        scheduler: lb_common::scheduler::RR,
        flags: 0,
        _pad: [0; 2],
        idle_timeout_s: 900,
    };
    (key, value)
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
