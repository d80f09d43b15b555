//! The XDP datapath seen from user space: loads the embedded object, attaches it to
//! interfaces, and keeps its maps equal to the model ([`apply`](Dataplane::apply)).
mod acls;
mod addr_filter;
mod apply;
mod attach;
mod backends;
pub mod capacity;
mod changes;
pub mod conntrack;
mod error;
mod ids;
mod load;
pub mod maglev;
mod maps;
pub mod pairs;
pub mod pin;
pub mod ring;
mod settings;
mod stats;
pub mod table;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{DevMapHash, HashMap as BpfHashMap, MapData},
    programs::{SchedClassifier, Xdp},
};
use lb_common::{Listener, ListenerKey, SnatAddr, acl_mode, listener_flags, map_names as names, scheduler, snat_flags};

pub use apply::keep_served;
pub use backends::BackendIds;
pub use capacity::Capacity;
use error::xdp_map_err;
pub use error::{DataplaneError, Rejected, RejectedPart};
use error::{Result, map_err};
pub use load::{FLOOR_PROGRAM, MIN_FORWARDER_PROGRAM, Options, TC_FLOOR_PROGRAM, UDP_SINK_PROGRAM, load_floor};
pub(crate) use maps::map_mut;
pub use maps::{addr_words, backend_name, family, words_addr};
use maps::{program, tc_program};
pub use settings::{
    DEFAULT_SNAT_PORTS, DEFAULT_SNAT_PORTS_ARG, DEFAULT_SYN_COOKIE_RATE, NODE_PORT_RANGE, SynCookies, check_snat_ports,
    local_port_range,
};
pub use stats::{Count, Stats};
use table::{Region, TableAlloc};

use crate::model::{AclMode, L4Listener, ListenerId, ProxyProtocol, Scheduler};

/// The datapath object built by `cargo xtask build-ebpf`, embedded at build time.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

/// What is loaded for one listener.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    id: u32,
    region: Region,
    /// Backend ids held (one reference each), in `listener.backends` order.
    backend_ids: Vec<u32>,
    /// The model's (shared): the next model's is compared by address first.
    listener: std::sync::Arc<L4Listener>,
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
    /// Removed backends (listener id, address, port) whose flows the apply under way cuts
    /// at its end: one walk of the flow tables however many listeners lost backends.
    cuts: std::collections::HashSet<(u32, std::net::IpAddr, u16)>,
    /// Walks of the flow tables to cut removed backends' flows (the tests check one per apply).
    cut_walks: u64,
    /// Flow halves the last sweep found without their other half.
    suspects: pairs::Suspects,
    /// The datapath-wide settings (`CONFIG`).
    config: lb_common::DatapathConfig,
    /// The VIP and SNAT-address bitmaps (`ADDR_FILTER`).
    filter: addr_filter::AddrFilter,
    /// The listeners of the last apply, while every one of them is loaded as asked.
    asked: changes::Asked,
    short_applies: u64,
}

impl Dataplane {
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
            // Its bit first: replies to it must not be taken for someone else's.
            let v4 = (value.flags & snat_flags::V4 != 0).then_some([value.v4, 0, 0, 0]);
            let v6 = (value.flags & snat_flags::V6 != 0).then_some(value.v6);
            let added = [v4, v6].into_iter().flatten().fold(false, |any, a| self.filter.add_snat(a) | any);
            if added {
                self.write_filter()?;
            }
            let mut snat: BpfHashMap<&mut MapData, u32, SnatAddr> = self.map_mut(names::SNAT_ADDRS)?;
            snat.insert(ifindex, value, 0).map_err(map_err(names::SNAT_ADDRS))?;
        }
        // Routes or addresses changed: the next hops cached in the datapath are looked up again.
        self.invalidate_next_hops()
    }

    /// The address filter written for the listeners loaded now (and `extra` VIPs about to be).
    fn write_filter_with(&mut self, extra: &[lb_common::Addr]) -> Result<()> {
        let vips: Vec<lb_common::Addr> =
            self.loaded.values().map(|l| listener_key(&l.listener).vip).chain(extra.iter().copied()).collect();
        self.filter.write(&mut self.ebpf, &vips)
    }

    fn write_filter(&mut self) -> Result<()> {
        self.write_filter_with(&[])
    }

    /// Make the datapath look up every backend's next hop again (`bpf_fib_lookup`) instead
    /// of using the one it cached: call when routes, neighbours or interfaces changed. (The
    /// datapath also looks each one up again at least once a second.)
    pub fn invalidate_next_hops(&mut self) -> Result<()> {
        self.config.nexthop_gen = self.config.nexthop_gen.wrapping_add(1);
        self.write_config()
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

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.detach_all();
    }
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
