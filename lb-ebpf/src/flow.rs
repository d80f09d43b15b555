//! The per-packet decision: reply, known flow, new flow or not ours.
use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    programs::XdpContext,
};
use lb_common::*;

use crate::{
    fwd::{self, FibError},
    maps::{CONFIG, CONNTRACK, LISTENERS, REVERSE_NAT, SNAT_ADDRS},
    nat,
    parse::{self, Packet, Skip},
    sched,
    stats::count,
};

/// How often (ns) a flow's `last_seen` is refreshed: not on every packet, to keep the
/// entry's cache line from bouncing between CPUs.
const REFRESH_NS: u64 = 1_000_000_000;

pub fn handle(ctx: &XdpContext) -> Result<u32, ()> {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    count(stat::RX, bytes);
    let pkt = match parse::parse(ctx) {
        Ok(p) => p,
        Err(Skip::NotOurs) => return Ok(pass(stat::PASS_NOT_OURS, bytes)),
        Err(Skip::Fragment) => return Ok(pass(stat::PASS_FRAGMENT, bytes)),
        Err(Skip::Malformed) => return Ok(pass(stat::DROP_MALFORMED, bytes)),
    };
    // SAFETY: bounds checked by parse.
    let key = unsafe {
        FlowKey {
            src: [(*pkt.ip).saddr, 0, 0, 0],
            dst: [(*pkt.ip).daddr, 0, 0, 0],
            sport: (*pkt.ports).src,
            dport: (*pkt.ports).dst,
            proto: pkt.proto,
            family: FAMILY_V4,
            _pad: [0; 2],
        }
    };

    if let Some(ct) = CONNTRACK.get_ptr_mut(&key) {
        return Ok(to_backend(ctx, &pkt, &key, ct, bytes));
    }
    // Not a known client flow: a backend's reply, a new flow, or not ours.
    let cfg = CONFIG.get(0).ok_or(())?;
    let dport = u16::from_be(key.dport);
    if dport >= cfg.snat_port_min && dport <= cfg.snat_port_max {
        if let Some(rev) = REVERSE_NAT.get_ptr_mut(&key) {
            return Ok(to_client(ctx, &pkt, rev, bytes));
        }
    }
    let lkey = ListenerKey { vip: key.dst, port: key.dport, proto: key.proto, family: FAMILY_V4 };
    // SAFETY: read-only copy of the value.
    let Some(listener) = (unsafe { LISTENERS.get(&lkey) }) else {
        return Ok(pass(stat::PASS_NOT_OURS, bytes));
    };
    let dropped = new_flow(ctx, &pkt, &key, listener);
    if dropped != 0 {
        return Ok(drop(dropped, bytes));
    }
    // Whichever CPU won the race to create the flow, its entry is the one to follow.
    match CONNTRACK.get_ptr_mut(&key) {
        Some(ct) => {
            count(stat::NEW_FLOWS, bytes);
            Ok(to_backend(ctx, &pkt, &key, ct, bytes))
        }
        None => Ok(drop(stat::DROP_NO_SNAT_PORT, bytes)),
    }
}

#[inline(always)]
fn pass(index: u32, bytes: u64) -> u32 {
    count(index, bytes);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn drop(index: u32, bytes: u64) -> u32 {
    count(index, bytes);
    xdp_action::XDP_DROP
}

/// The reverse-NAT key of a client flow's backend side.
#[inline(always)]
fn reverse_key(ct: &CtEntry, proto: u8) -> FlowKey {
    FlowKey {
        src: ct.backend,
        dst: ct.snat,
        sport: ct.backend_port,
        dport: ct.snat_port,
        proto,
        family: FAMILY_V4,
        _pad: [0; 2],
    }
}

/// The reverse-NAT value for a client flow, from the client's packet.
#[inline(always)]
fn reverse_entry(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, listener_id: u32, now: u64) -> RevEntry {
    // SAFETY: bounds checked by parse.
    unsafe {
        RevEntry {
            client: key.src,
            vip: key.dst,
            client_port: key.sport,
            vip_port: key.dport,
            ifindex: (*ctx.ctx).ingress_ifindex,
            client_mac: (*pkt.eth).src,
            local_mac: (*pkt.eth).dst,
            listener_id,
            last_seen_ns: now,
        }
    }
}

/// A client packet of a known flow: NAT it towards its backend.
#[inline(never)]
fn to_backend(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, ct: *mut CtEntry, bytes: u64) -> u32 {
    // SAFETY: map value pointer from a successful lookup.
    let entry = unsafe { &*ct };
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(entry.last_seen_ns) > REFRESH_NS {
        unsafe { (*ct).last_seen_ns = now };
        // Keep the reply path alive and pointed at where the client is now.
        let rev = reverse_entry(ctx, pkt, key, entry.listener_id, now);
        let _ = REVERSE_NAT.insert(&reverse_key(entry, key.proto), &rev, 0);
    }
    let hop = match fwd::lookup_v4(ctx, pkt, entry.backend[0]) {
        Ok(h) => h,
        Err(FibError::NoNeigh) => return drop(stat::DROP_NO_NEIGH, bytes),
        Err(FibError::NoRoute) => return drop(stat::DROP_NO_ROUTE, bytes),
    };
    nat::rewrite_v4(pkt, entry.snat[0], entry.backend[0], entry.snat_port, entry.backend_port);
    count(stat::FWD_TO_BACKEND, bytes);
    fwd::transmit(ctx, pkt, hop.ifindex, &hop.smac, &hop.dmac)
}

/// A backend's reply: NAT it back to the client's flow and send it where the client is.
#[inline(never)]
fn to_client(ctx: &XdpContext, pkt: &Packet, rev: *mut RevEntry, bytes: u64) -> u32 {
    // SAFETY: map value pointer from a successful lookup.
    let r = unsafe { &*rev };
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(r.last_seen_ns) > REFRESH_NS {
        unsafe { (*rev).last_seen_ns = now };
    }
    nat::rewrite_v4(pkt, r.vip[0], r.client[0], r.vip_port, r.client_port);
    count(stat::FWD_TO_CLIENT, bytes);
    fwd::transmit(ctx, pkt, r.ifindex, &r.local_mac, &r.client_mac)
}

/// The first packet of a flow to a listener: pick a backend and a source port and record
/// both directions. Returns 0, or the drop counter when the flow cannot be created (a plain
/// integer: a BPF call passes at most five registers, a `Result` would need a sixth).
#[inline(never)]
fn new_flow(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, listener: &Listener) -> u32 {
    match try_new_flow(ctx, pkt, key, listener) {
        Ok(()) => 0,
        Err(counter) => counter,
    }
}

#[inline(always)]
fn try_new_flow(ctx: &XdpContext, pkt: &Packet, key: &FlowKey, listener: &Listener) -> Result<(), u32> {
    let cfg = CONFIG.get(0).ok_or(stat::DROP_NO_SNAT_PORT)?;
    let (backend_id, backend) = sched::pick_rr(listener).ok_or(stat::DROP_NO_BACKEND)?;
    let egress = match fwd::lookup_v4(ctx, pkt, backend.addr[0]) {
        Ok(h) => h.ifindex,
        Err(FibError::NoNeigh) => return Err(stat::DROP_NO_NEIGH),
        Err(FibError::NoRoute) => return Err(stat::DROP_NO_ROUTE),
    };
    // SAFETY: read-only use of the value.
    let snat = unsafe { SNAT_ADDRS.get(&egress) }.ok_or(stat::DROP_NO_SNAT_ADDR)?;
    let now = unsafe { bpf_ktime_get_ns() };
    let mut entry = CtEntry {
        backend: backend.addr,
        snat: [snat.v4, 0, 0, 0],
        backend_port: backend.port,
        snat_port: 0,
        backend_id,
        listener_id: listener.id,
        flags: 0,
        last_seen_ns: now,
    };
    let rev = reverse_entry(ctx, pkt, key, listener.id, now);
    let rkey = claim_snat_port(&mut entry, &rev, key.proto, cfg).ok_or(stat::DROP_NO_SNAT_PORT)?;
    if CONNTRACK.insert(key, &entry, BPF_NOEXIST as u64).is_err() {
        // Another CPU created this flow first: release our port, the caller follows theirs.
        let _ = REVERSE_NAT.remove(&rkey);
    }
    Ok(())
}

/// Reserve a source port for the flow's backend side: a random start in the configured
/// range, then a bounded walk; the reverse entry is inserted only if no flow holds it, so two
/// flows never share a reverse entry.
#[inline(always)]
fn claim_snat_port(entry: &mut CtEntry, rev: &RevEntry, proto: u8, cfg: &DatapathConfig) -> Option<FlowKey> {
    let min = cfg.snat_port_min as u32;
    let span = (cfg.snat_port_max as u32).saturating_sub(min) + 1;
    if cfg.snat_port_max < cfg.snat_port_min {
        return None;
    }
    let start = unsafe { bpf_get_prandom_u32() } % span;
    let mut i = 0;
    while i < SNAT_PORT_TRIES {
        let port = (min + (start + i * 7919) % span) as u16;
        entry.snat_port = port.to_be();
        let rkey = reverse_key(entry, proto);
        if REVERSE_NAT.insert(&rkey, rev, BPF_NOEXIST as u64).is_ok() {
            return Some(rkey);
        }
        i += 1;
    }
    None
}
