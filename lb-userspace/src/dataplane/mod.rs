//! The XDP datapath seen from user space: loads the embedded object, attaches it to
//! interfaces, and keeps its maps equal to the model ([`apply`](Dataplane::apply)).
mod acls;
mod apply;
mod attach;
mod backends;
pub mod capacity;
pub mod conntrack;
mod ids;
pub mod maglev;
pub mod pairs;
pub mod pin;
pub mod ring;
mod stats;
pub mod table;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMapHash, HashMap as BpfHashMap, MapData, ProgramArray},
    programs::{SchedClassifier, Xdp},
};
use lb_common::{
    DatapathConfig, FAMILY_V4, FAMILY_V6, Listener, ListenerKey, MAX_LISTENERS, SnatAddr, acl_mode, listener_flags,
    map_names as names, prog_index, scheduler, snat_flags,
};
use thiserror::Error;

pub use apply::{Rejected, RejectedPart, keep_served};
pub use backends::BackendIds;
pub use capacity::Capacity;
pub use stats::{Count, Stats};
use table::{Region, TableAlloc};

use crate::model::{AclMode, L4Listener, ListenerId, ProxyProtocol, Scheduler};

/// The datapath object built by `cargo xtask build-ebpf`, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(
        "this `lb` was built without the XDP object: run `cargo xtask build` (or `cargo xtask build-ebpf` before building lb)"
    )]
    NoObject,
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("the XDP program {name}: {source}")]
    NamedProgram { name: &'static str, source: aya::programs::ProgramError },
    #[error("map {map}: {source}")]
    Map { map: &'static str, source: aya::maps::MapError },
    #[error("{what} is missing from the object")]
    Missing { what: &'static str },
    #[error("listener {listener}: {reason}")]
    Listener { listener: String, reason: String },
    #[error("snat port range {0}-{1} is empty")]
    PortRange(u16, u16),
    #[error("pinning the datapath: {0}")]
    Pin(String),
    /// Objects the datapath could not take; the rest of the model was applied.
    #[error("{}", apply::list(.0))]
    Rejected(Vec<Rejected>),
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
    /// TCP flows whose handshake has not completed that the half-open tables hold.
    pub half_open_entries: u32,
    /// Source ports used for full NAT, inclusive.
    pub snat_ports: (u16, u16),
    /// Entries of the table holding every listener's ring or Maglev table.
    pub backend_table_entries: u32,
    /// Distinct backends (address, port) over all listeners; per-backend counters are per
    /// CPU, so this costs 40 bytes × CPUs each.
    pub max_backends: u32,
    /// Where the datapath is pinned in bpffs (`lb run --pin-dir`), so that it outlives this
    /// process and a later one adopts it; `None`: it goes with the process.
    pub pin: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            conntrack_entries: lb_common::DEFAULT_CONNTRACK_ENTRIES,
            half_open_entries: lb_common::DEFAULT_HALF_OPEN_ENTRIES,
            snat_ports: (61000, 65535),
            backend_table_entries: lb_common::DEFAULT_BACKEND_TABLE_ENTRIES,
            max_backends: lb_common::MAX_BACKENDS,
            pin: None,
        }
    }
}

impl Options {
    /// The maps whose size these options set, with that size.
    fn sizes(&self) -> [(&'static str, u32); 7] {
        [
            (names::CONNTRACK, self.conntrack_entries),
            (names::REVERSE_NAT, self.conntrack_entries),
            (names::HALF_OPEN, self.half_open_entries),
            (names::HALF_OPEN_REV, self.half_open_entries),
            (names::BACKEND_TABLE, self.backend_table_entries),
            (names::BACKENDS, self.max_backends),
            (names::BACKEND_STATS, self.max_backends),
        ]
    }

    /// (map type, key size, value size, max entries) of map `name` as loaded with these
    /// options.
    fn shape(&self, name: &str) -> Option<(u32, u32, u32, u32)> {
        let object = aya_obj::Object::parse(EBPF_OBJECT).ok()?;
        let map = object.maps.get(name)?;
        let entries = self.sizes().iter().find(|(n, _)| *n == name).map_or(map.max_entries(), |(_, e)| *e);
        Some((map.map_type(), map.key_size(), map.value_size(), entries))
    }
}

/// How long the ids of a previous generation that the model no longer names stay out of
/// use: flows may still name them, for at most the longest connection drain.
const ADOPTED_HOLD: Duration = Duration::from_secs(900);

/// What is loaded for one listener.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    id: u32,
    region: Region,
    /// Backend ids held (one reference each), in `listener.backends` order.
    backend_ids: Vec<u32>,
    listener: L4Listener,
}

pub struct Dataplane {
    ebpf: Ebpf,
    /// XDP and tc attachments.
    attached: Vec<attach::Attached>,
    /// Where the datapath is pinned, if it is.
    pins: Option<pin::PinDir>,
    /// A previous generation's pinned datapath is being taken over (until
    /// [`finish_adoption`](Self::finish_adoption)).
    adopting: bool,
    loaded: BTreeMap<ListenerId, Loaded>,
    /// Listener and backend ids, freed ones in quarantine while flows may name them.
    listener_ids: ids::ListenerIds,
    backend_ids: BackendIds,
    bounds: ids::FlowBounds,
    table: TableAlloc,
    acls: acls::AclState,
    max_backends: u32,
    /// Removed backends whose flows are cut at a deadline (connection drain).
    pub drains: conntrack::Drains,
    /// Flow halves the last sweep found without their other half.
    suspects: pairs::Suspects,
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
        let pins = opts.pin.as_deref().map(pin::PinDir::open).transpose()?;
        let (mut resized, mut seeds, mut adopting) = (Vec::new(), pin::Seeds::default(), false);
        if let Some(p) = &pins {
            p.clear_other_layouts();
            adopting = p.has_state();
            resized = p.check_state(|name| opts.shape(name))?;
            seeds = p.seeds();
        }
        let mut loader = EbpfLoader::new();
        for (name, entries) in opts.sizes() {
            loader.map_max_entries(name, entries);
        }
        if let Some(p) = &pins {
            for name in lb_common::map_names::PINNED_STATE {
                loader.map_pin_path(name, p.map(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        for r in resized {
            let name = r.name;
            let copied = r.copy_into(&mut ebpf)?;
            tracing::info!(map = name, entries = copied, "pinned entries carried over into the resized map");
        }
        let prog: &mut Xdp = program(&mut ebpf)?;
        prog.load()?;
        // The programs lb_xdp and lb_tc tail-call (PROXY protocol), by index.
        fill_tail_calls(&mut ebpf, names::PROGS, &prog_index::NAMES, |p| <&mut Xdp>::try_from(p)?.load())?;
        for name in [lb_common::TC_PROGRAM, lb_common::TC_NIC_PROGRAM, lb_common::TC_EGRESS_PROGRAM] {
            tc_program(&mut ebpf, name)?.load().map_err(|source| DataplaneError::NamedProgram { name, source })?;
        }
        fill_tail_calls(&mut ebpf, names::TC_PROGS, &prog_index::TC_NAMES, |p| {
            <&mut SchedClassifier>::try_from(p)?.load()
        })?;
        let now = Instant::now();
        let mut listener_ids = ids::ListenerIds::new(MAX_LISTENERS);
        listener_ids.adopt(&seeds.listeners);
        let mut backend_ids = BackendIds::default();
        backend_ids.adopt(&seeds.backends, now, now + ADOPTED_HOLD);
        if adopting {
            tracing::info!(
                listeners = seeds.listeners.len(),
                backends = seeds.backends.len(),
                "pinned datapath found: its flows are kept, its programs run until this one's model is loaded"
            );
        }
        let mut dp = Dataplane {
            ebpf,
            attached: Vec::new(),
            pins,
            adopting,
            loaded: BTreeMap::new(),
            listener_ids,
            backend_ids,
            bounds: ids::FlowBounds::default(),
            table: TableAlloc::new(opts.backend_table_entries),
            acls: acls::AclState::default(),
            max_backends: opts.max_backends,
            drains: conntrack::Drains::default(),
            suspects: pairs::Suspects::default(),
        };
        let mut config: Array<&mut MapData, DatapathConfig> = dp.map_mut(names::CONFIG)?;
        let cfg = DatapathConfig { snat_port_min: lo, snat_port_max: hi, _pad: 0 };
        config.set(0, cfg, 0).map_err(map_err(names::CONFIG))?;
        Ok(dp)
    }

    /// The loaded object, maps included (for tests and inspection tools).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The loaded XDP program (for BPF_PROG_TEST_RUN).
    pub fn program(&mut self) -> Result<&mut Xdp> {
        program(&mut self.ebpf)
    }

    /// The loaded tc program `name` (`lb_common::TC_PROGRAM`, `TC_NIC_PROGRAM`), for
    /// BPF_PROG_TEST_RUN.
    pub fn tc_program(&mut self, name: &'static str) -> Result<&mut SchedClassifier> {
        tc_program(&mut self.ebpf, name)
    }

    /// Make `ifindex` an XDP forwarding target whose NATed traffic leaves from `v4` / `v6`.
    pub fn add_port(&mut self, ifindex: u32, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Result<()> {
        let mut tx: DevMapHash<&mut MapData> = self.map_mut(names::TX_PORTS)?;
        tx.insert(ifindex, ifindex, None, 0)
            .map_err(|e| DataplaneError::Map { map: names::TX_PORTS, source: xdp_map_err(e) })?;
        self.set_snat(ifindex, v4, v6)
    }

    /// NATed traffic leaving by `ifindex` (an XDP port, or a tc device: bridge, overlay, pod
    /// veth) takes `v4` / `v6` as its source, so replies come back the same way.
    pub fn set_snat(&mut self, ifindex: u32, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Result<()> {
        let mut value = SnatAddr::default();
        if let Some(a) = v4 {
            value.v4 = u32::from(a).to_be();
            value.flags |= snat_flags::V4;
        }
        if let Some(a) = v6 {
            value.v6 = addr_words(IpAddr::V6(a));
            value.flags |= snat_flags::V6;
        }
        if value.flags != 0 {
            let mut snat: BpfHashMap<&mut MapData, u32, SnatAddr> = self.map_mut(names::SNAT_ADDRS)?;
            snat.insert(ifindex, value, 0).map_err(map_err(names::SNAT_ADDRS))?;
        }
        Ok(())
    }

    /// One sweep of the conntrack tables: expired and drained flows are removed.
    pub fn sweep(&mut self, opts: &conntrack::SweepOptions) -> Result<conntrack::SweepReport> {
        let start = Instant::now();
        let timeouts: BTreeMap<u32, u32> =
            self.loaded.values().map(|l| (l.id, l.listener.established_timeout)).collect();
        let mut report = conntrack::sweep(&mut self.ebpf, &timeouts, &mut self.drains, opts)?;
        report.orphans = pairs::sweep(&mut self.ebpf, &mut self.suspects)?;
        // Drains due by `start` are cut: their ids may leave quarantine.
        self.bounds.swept(start);
        Ok(report)
    }

    /// The datapath's counters, summed over CPUs.
    pub fn stats(&self) -> Result<Stats> {
        let listeners: Vec<(String, u32)> =
            self.loaded.values().map(|l| (crate::model::listener_name(&l.listener), l.id)).collect();
        let backends: Vec<(String, u32)> = self
            .loaded
            .values()
            .flat_map(|l| {
                l.listener.backends.iter().zip(&l.backend_ids).map(|(b, id)| (backend_name(b.addr, b.port), *id))
            })
            .collect();
        stats::read(&self.ebpf, &listeners, &backends)
    }

    fn map_mut<'a, T>(&'a mut self, name: &'static str) -> Result<T>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        map_mut(&mut self.ebpf, name)
    }
}

/// Name of the benchmark's floor program (count, drop) in the object.
pub const FLOOR_PROGRAM: &str = "lb_xdp_floor";
/// The same for tc.
pub const TC_FLOOR_PROGRAM: &str = "lb_tc_floor";

/// The object with only the floor programs (XDP and tc) loaded (`cargo xtask bench` measures against it);
/// the big maps are made tiny.
pub fn load_floor() -> Result<Ebpf> {
    if EBPF_OBJECT.is_empty() {
        return Err(DataplaneError::NoObject);
    }
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::CONNTRACK, 16)
        .map_max_entries(names::REVERSE_NAT, 16)
        .map_max_entries(names::HALF_OPEN, 16)
        .map_max_entries(names::HALF_OPEN_REV, 16)
        .map_max_entries(names::BACKEND_TABLE, 16)
        .load(EBPF_OBJECT)?;
    let prog: &mut Xdp =
        ebpf.program_mut(FLOOR_PROGRAM).ok_or(DataplaneError::Missing { what: "program lb_xdp_floor" })?.try_into()?;
    prog.load()?;
    tc_program(&mut ebpf, TC_FLOOR_PROGRAM)?.load()?;
    Ok(ebpf)
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
}

pub(crate) fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or(DataplaneError::Missing { what: name })?;
    T::try_from(map).map_err(map_err(name))
}

/// Load the programs `progs` (index, name) with `load` and put them in the program array
/// `map`.
fn fill_tail_calls(
    ebpf: &mut Ebpf,
    map: &'static str,
    progs: &[(u32, &'static str)],
    load: impl Fn(&mut aya::programs::Program) -> std::result::Result<(), aya::programs::ProgramError>,
) -> Result<()> {
    let mut fds = Vec::new();
    for &(index, name) in progs {
        let p = ebpf.program_mut(name).ok_or(DataplaneError::Missing { what: name })?;
        load(p).map_err(|source| DataplaneError::NamedProgram { name, source })?;
        let fd = p.fd()?.try_clone().map_err(|e| DataplaneError::Map {
            map,
            source: aya::maps::MapError::InvalidName { name: format!("{name}: {e}") },
        })?;
        fds.push((index, fd));
    }
    let mut array: ProgramArray<&mut MapData> = map_mut(ebpf, map)?;
    for (index, fd) in &fds {
        array.set(*index, fd, 0).map_err(map_err(map))?;
    }
    Ok(())
}

fn tc_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier> {
    let prog = ebpf.program_mut(name).ok_or(DataplaneError::Missing { what: name })?;
    Ok(prog.try_into()?)
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let prog = ebpf.program_mut(lb_common::XDP_PROGRAM).ok_or(DataplaneError::Missing { what: "program lb_xdp" })?;
    Ok(prog.try_into()?)
}

fn xdp_map_err(e: aya::maps::xdp::XdpMapError) -> aya::maps::MapError {
    match e {
        aya::maps::xdp::XdpMapError::MapError(m) => m,
        other => aya::maps::MapError::InvalidName { name: other.to_string() },
    }
}

/// `addr:port` / `[addr]:port`.
pub fn backend_name(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// The `LISTENERS` key of a model listener.
fn listener_key(l: &L4Listener) -> ListenerKey {
    ListenerKey { vip: addr_words(l.vip), port: l.port.to_be(), proto: l.protocol.number(), family: family(l.vip) }
}

/// The `LISTENERS` key and the `LISTENER_CFG` value of a model listener (ACL id not set).
fn listener_entry(l: &L4Listener, region: Region) -> (ListenerKey, Listener) {
    let key = listener_key(l);
    let value = Listener {
        table_offset: region.offset,
        table_len: region.len,
        acl_id: 0,
        persist_timeout_s: if l.protocol == crate::model::Protocol::Tcp { l.persistence_timeout } else { 0 },
        scheduler: match l.scheduler {
            Scheduler::Rr | Scheduler::Wrr => scheduler::RING,
            Scheduler::Sch => scheduler::MAGLEV_SRC,
            Scheduler::Tch => scheduler::MAGLEV_TUPLE,
        },
        acl_mode: match l.acl.as_ref().map(|a| a.mode) {
            None => acl_mode::OFF,
            Some(AclMode::White) => acl_mode::WHITE,
            Some(AclMode::Black) => acl_mode::BLACK,
        },
        _pad: [0; 2],
        flags: match l.proxy_protocol {
            ProxyProtocol::Off => 0,
            ProxyProtocol::V1 => listener_flags::PROXY_V1,
            ProxyProtocol::V2 => listener_flags::PROXY_V2,
        },
    };
    (key, value)
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
