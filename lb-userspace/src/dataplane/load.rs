//! Loading the embedded object: sizes from [`Options`], pinned state adopted ([`pin`](super::pin)),
//! the programs verified and their tail calls filled in.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, ProgramArray},
    programs::{SchedClassifier, Xdp},
};
use lb_common::{MAX_LISTENERS, map_names as names, prog_index};

use super::{
    BackendIds, Dataplane, EBPF_OBJECT, acls, conntrack,
    error::{DataplaneError, Result, map_err},
    ids,
    maps::{map_mut, program, tc_program},
    pairs, pin,
    settings::{self, SynCookies},
    table::TableAlloc,
};

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
    /// When SYNs are answered with SYN cookies, and the SYN rate (per second, per CPU) that
    /// turns them on in [`SynCookies::Auto`].
    pub syn_cookies: SynCookies,
    pub syn_cookie_rate: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            conntrack_entries: lb_common::DEFAULT_CONNTRACK_ENTRIES,
            half_open_entries: lb_common::DEFAULT_HALF_OPEN_ENTRIES,
            snat_ports: settings::DEFAULT_SNAT_PORTS,
            backend_table_entries: lb_common::DEFAULT_BACKEND_TABLE_ENTRIES,
            max_backends: lb_common::MAX_BACKENDS,
            pin: None,
            syn_cookies: SynCookies::Auto,
            syn_cookie_rate: settings::DEFAULT_SYN_COOKIE_RATE,
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

    /// (map type, key size, value size, max entries) of `object`'s map `name` as loaded with
    /// these options.
    fn shape(&self, object: &aya_obj::Object, name: &str) -> Option<(u32, u32, u32, u32)> {
        let map = object.maps.get(name)?;
        let entries = self.sizes().iter().find(|(n, _)| *n == name).map_or(map.max_entries(), |(_, e)| *e);
        Some((map.map_type(), map.key_size(), map.value_size(), entries))
    }
}

/// How long the ids of a previous generation that the model no longer names stay out of
/// use: flows may still name them, for at most the longest connection drain.
pub(super) const ADOPTED_HOLD: Duration = Duration::from_secs(900);

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
        settings::check_snat_ports((lo, hi), settings::local_port_range()).map_err(DataplaneError::SnatPorts)?;
        if opts.pin.is_some()
            && aya::util::KernelVersion::current().is_ok_and(|v| v < aya::util::KernelVersion::new(6, 6, 0))
        {
            // Checked before anything is attached: half a pinned datapath would outlive lb.
            return Err(DataplaneError::Pin(
                "pinning needs tc BPF links (TCX, kernel 6.6 or later): run with --no-pin".into(),
            ));
        }
        let pins = opts.pin.as_deref().map(pin::PinDir::open).transpose()?;
        let (mut resized, mut seeds, mut adopting) = (Vec::new(), pin::Seeds::default(), false);
        if let Some(p) = &pins {
            p.clear_other_layouts();
            // Its flows, or only its links (a map unpinned by a resize that never finished).
            adopting = p.has_state() || !p.links().is_empty();
            // The object's map definitions, parsed once for every pinned map checked.
            let object = aya_obj::Object::parse(EBPF_OBJECT).ok();
            resized = p.check_state(|name| object.as_ref().and_then(|o| opts.shape(o, name)))?;
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
        Dataplane::seed_frag_ids(&mut ebpf)?;
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
        // Ids pinned flows name that the previous generation no longer had (a listener or a
        // backend removed with a connection drain just before the restart): held too.
        let mut named = if adopting { pin::named_ids(&mut ebpf) } else { pin::Named::default() };
        // Ids past a lowered --max-backends name backends no new flow can take anyway.
        named.backends.retain(|id| *id < opts.max_backends);
        seeds.backends.retain(|(_, id)| *id < opts.max_backends);
        listener_ids.hold(&named.listeners, now, now + ADOPTED_HOLD);
        let mut backend_ids = BackendIds::default();
        backend_ids.adopt(&seeds.backends, &named.backends, now, now + ADOPTED_HOLD);
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
            cuts: Default::default(),
            cut_walks: 0,
            suspects: pairs::Suspects::default(),
            config: settings::initial((lo, hi), opts.syn_cookies, opts.syn_cookie_rate),
            filter: Default::default(),
            asked: None,
            short_applies: 0,
        };
        dp.write_config()?;
        Ok(dp)
    }
}

/// Name of the benchmark's floor program (count, drop) in the object.
pub const FLOOR_PROGRAM: &str = "lb_xdp_floor";
/// The same for tc.
pub const TC_FLOOR_PROGRAM: &str = "lb_tc_floor";
/// The benchmark's minimal XDP forwarder (MAC rewrite + devmap redirect through the
/// `MIN_FWD_MACS` and `MIN_FWD_TX` maps), in the same object: load it from [`load_floor`]'s.
pub const MIN_FORWARDER_PROGRAM: &str = "lb_xdp_min_fwd";
/// The veth benchmark's backend sink, a tc program (counts IPv4 UDP in `STATS` and drops
/// it, passes the rest), in the same object: load it from [`load_floor`]'s.
pub const UDP_SINK_PROGRAM: &str = "lb_tc_udp_sink";

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
