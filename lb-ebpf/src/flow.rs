//! The per-packet decision: known client flow, backend reply, new flow, or not ours.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_ns};
use lb_common::*;

const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;

use crate::{
    acl, cookie_flow,
    ctx::{Ctx, drop, pass},
    filter,
    forward::{state_bits, to_backend, to_client, write_reverse},
    fwd::{self},
    half_open::{self, Step, claim_snat_port},
    icmp,
    maps::{
        BACKENDS, CONFIG, CONNTRACK, FRAG_IDS, FRAGMENTS, HALF_OPEN, HALF_OPEN_REV, LISTENER_CFG, LISTENERS,
        REVERSE_NAT, SNAT_ADDRS, TAIL_CALL, scratch,
    },
    nat,
    parse::{
        self, ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, EthHdr, Ip, Ipv4Hdr, Ipv6Hdr, Packet, Skip,
        TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, ptr_at,
    },
    persist, pp, sched,
    stats::{self, count},
    syncookie::{self, CookieIp},
};

/// The entry programs' datapath: a packet of a known flow is forwarded here; one that may
/// open a flow (to a listener, no established flow) goes on to [`open`] by tail call.
#[inline(always)]
pub fn handle<C: Ctx>(ctx: &C) -> Result<u32, ()> {
    dispatch::<C, MAIN>(ctx)
}

/// `lb_xdp_open` / `lb_tc_open`: a packet to a listener with no established flow (half-open
/// flows, new flows). Its own program, so the verifier walks the new-flow path apart from
/// the packet paths of known flows.
#[inline(always)]
pub fn open<C: Ctx>(ctx: &C) -> Result<u32, ()> {
    dispatch::<C, OPEN>(ctx)
}

/// `lb_xdp_cookie` / `lb_tc_cookie`: SYN cookies ([`crate::syncookie`]).
#[inline(always)]
pub fn cookie<C: Ctx>(ctx: &C) -> Result<u32, ()> {
    dispatch::<C, COOKIE>(ctx)
}

/// Which program a packet is in: the entry program, `lb_*_open`, `lb_*_cookie`.
const MAIN: u8 = 0;
const OPEN: u8 = 1;
const COOKIE: u8 = 2;

#[inline(always)]
fn dispatch<C: Ctx, const MODE: u8>(ctx: &C) -> Result<u32, ()> {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    if MODE == MAIN {
        count(stat::RX, bytes);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds checked by ptr_at.
    match u16::from_be(unsafe { (*eth).proto }) {
        ETH_P_IP => {
            let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN)?;
            // SAFETY: bounds checked by ptr_at.
            let hint = if MODE == MAIN { hint_v4(ctx, ip) } else { filter::ALL };
            if hint == 0 {
                return Ok(pass::<C>(stat::PASS_NOT_OURS, bytes));
            }
            // SAFETY: bounds checked by ptr_at.
            if MODE == MAIN && unsafe { (*ip).protocol } == PROTO_ICMP {
                return Ok(icmp::handle_v4(ctx, bytes));
            }
            let mut pkt = Packet::<Ipv4Hdr>::new();
            match parse::v4(ctx, &mut pkt) {
                Ok(()) => process::<C, _, MODE>(ctx, &mut pkt, bytes, hint),
                Err(skip) => Ok(skipped::<C>(skip, bytes)),
            }
        }
        ETH_P_IPV6 => {
            let ip: *mut Ipv6Hdr = ptr_at(ctx, ETH_HLEN)?;
            // SAFETY: bounds checked by ptr_at.
            let hint = if MODE == MAIN { filter::hint(unsafe { &(*ip).daddr }) } else { filter::ALL };
            if hint == 0 {
                return Ok(pass::<C>(stat::PASS_NOT_OURS, bytes));
            }
            // SAFETY: bounds checked by ptr_at.
            if MODE == MAIN && unsafe { (*ip).nexthdr } == PROTO_ICMPV6 {
                return Ok(icmp::handle_v6(ctx, bytes));
            }
            let mut pkt = Packet::<Ipv6Hdr>::new();
            match parse::v6(ctx, &mut pkt) {
                Ok(()) => process::<C, _, MODE>(ctx, &mut pkt, bytes, hint),
                Err(skip) => Ok(skipped::<C>(skip, bytes)),
            }
        }
        ETH_P_8021Q | ETH_P_8021AD => Ok(pass::<C>(stat::PASS_VLAN, bytes)),
        _ => Ok(pass::<C>(stat::PASS_NOT_OURS, bytes)),
    }
}

/// The filter's answer for an IPv4 packet (0: not ours). Only a node address (a SNAT source):
/// a backend's reply comes to a port of the SNAT range; the node's own traffic (most of what
/// comes to it) leaves here.
#[inline(always)]
fn hint_v4<C: Ctx>(ctx: &C, ip: *const Ipv4Hdr) -> u8 {
    // SAFETY: the caller checked the header's bounds.
    let hint = filter::hint(&[unsafe { (*ip).daddr }, 0, 0, 0]);
    if hint == filter::SNAT && parse::v4_dport(ctx).is_some_and(|p| !snat_port(p)) { 0 } else { hint }
}

/// For tc, before an skb's headers are pulled into its linear part: the verdict when the
/// packet is certainly not ours (counted as [`handle`] counts it), so that the node's own
/// traffic (TCP data is headers in the linear part, payload in pages) is not copied for
/// nothing. `None`: it may be ours, or the headers the filter reads are not all there.
#[inline(always)]
pub fn not_ours<C: Ctx>(ctx: &C) -> Option<u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok()?;
    // SAFETY: bounds checked by ptr_at (here and below).
    let hint = match u16::from_be(unsafe { (*eth).proto }) {
        ETH_P_IP => hint_v4(ctx, ptr_at::<C, Ipv4Hdr>(ctx, ETH_HLEN).ok()?),
        ETH_P_IPV6 => filter::hint(unsafe { &(*ptr_at::<C, Ipv6Hdr>(ctx, ETH_HLEN).ok()?).daddr }),
        _ => return None,
    };
    (hint == 0).then(|| {
        let bytes = (ctx.data_end() - ctx.data()) as u64;
        count(stat::RX, bytes);
        pass::<C>(stat::PASS_NOT_OURS, bytes)
    })
}

#[inline(always)]
fn skipped<C: Ctx>(skip: Skip, bytes: u64) -> u32 {
    match skip {
        Skip::NotOurs => pass::<C>(stat::PASS_NOT_OURS, bytes),
        Skip::Malformed => pass::<C>(stat::PASS_MALFORMED, bytes),
    }
}

#[inline(always)]
fn process<C: Ctx, H: CookieIp, const MODE: u8>(ctx: &C, pkt: &mut Packet<H>, bytes: u64, hint: u8) -> Result<u32, ()> {
    if pkt.is_fragment && !fragment_ports::<H, MODE>(pkt) {
        return Ok(pass::<C>(stat::PASS_FRAGMENT, bytes));
    }
    if MODE == COOKIE {
        return Ok(cookie_flow::step(ctx, pkt, bytes));
    }
    if MODE == OPEN {
        return Ok(match opening(ctx, pkt, bytes) {
            Ok((ct, half)) => to_backend(ctx, pkt, ct, bytes, half),
            Err(verdict) => verdict,
        });
    }
    let key = &pkt.key;
    // Client flows are to VIPs, backend replies to SNAT addresses (never the same address:
    // a node address is refused as a VIP); the filter tells which lookups can hit.
    let mut reopened = false;
    if hint & filter::VIP != 0
        && let Some(ct) = CONNTRACK.get_ptr_mut(key)
    {
        // SAFETY: map value pointer from a successful lookup.
        if !reopens(pkt, unsafe { &*ct }) {
            return Ok(to_backend(ctx, pkt, ct, bytes, false));
        }
        // A new connection on the 4-tuple of a closed one: forget the old flow.
        // SAFETY: as above.
        forget(key, unsafe { &*ct });
        count(stat::FLOW_REOPENED, bytes);
        reopened = true;
    }
    if !reopened
        && hint & filter::SNAT != 0
        && let Some(rev) = backend_reply(ctx, pkt)?
    {
        // SAFETY: map value pointer from a successful lookup.
        if unsafe { (*rev).flags } & rev_flags::COOKIE != 0 && pkt.tcp_flags & TCP_SYN != 0 {
            // A cookie flow's backend SYN-ACK: the handshake's last ACK is the datapath's.
            return Ok(TAIL_CALL | prog_index::COOKIE);
        }
        return Ok(to_client(ctx, pkt, rev, bytes));
    }
    if hint & filter::VIP == 0 {
        return Ok(pass::<C>(stat::PASS_NOT_OURS, bytes));
    }
    let lkey = ListenerKey { vip: key.dst, port: key.dport, proto: key.proto, family: key.family };
    // SAFETY: read-only lookup.
    if unsafe { LISTENERS.get(&lkey) }.is_none() {
        return Ok(pass::<C>(stat::PASS_NOT_OURS, bytes));
    }
    if pkt.is_fragment {
        // `lb_*_open` parses the packet again: a first fragment goes on with its new
        // identification already in place (the rewrite there writes it again).
        nat::set_id(ctx, pkt);
    }
    Ok(TAIL_CALL | prog_index::OPEN)
}

/// Whether `port` is in the SNAT range (where backends' replies come to).
#[inline(always)]
fn snat_port(port: u16) -> bool {
    CONFIG.get(0).is_none_or(|cfg| port >= cfg.snat_port_min && port <= cfg.snat_port_max)
}

/// A packet to a source port of ours from a backend: its flow's reverse entry, established
/// or (a SYN-ACK) half-open.
#[inline(always)]
fn backend_reply<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>) -> Result<Option<*mut RevEntry>, ()> {
    if !snat_port(u16::from_be(pkt.key.dport)) {
        return Ok(None);
    }
    if let Some(rev) = REVERSE_NAT.get_ptr_mut(&pkt.key) {
        return Ok(Some(rev));
    }
    if pkt.proto == PROTO_TCP
        && let Some(rev) = HALF_OPEN_REV.get_ptr_mut(&pkt.key)
    {
        // SAFETY: map value pointer from a successful lookup.
        half_open::on_backend(ctx, pkt, unsafe { &mut *rev }, unsafe { bpf_ktime_get_ns() });
        return Ok(Some(rev));
    }
    Ok(None)
}

/// A client packet of no established flow: the half-open flow it belongs to or opens (TCP),
/// or the flow it opens (UDP), with whether that flow is half-open; or the verdict.
#[inline(always)]
fn opening<C: Ctx, H: CookieIp>(ctx: &C, pkt: &Packet<H>, bytes: u64) -> Result<(*mut CtEntry, bool), u32> {
    let key = &pkt.key;
    // The listener key in scratch memory rather than on the stack: this program's frame and
    // the new-flow call's together stay within the 512 bytes the verifier allows.
    let Some(scratch) = scratch() else { return Err(pass::<C>(stat::PASS_NOT_OURS, bytes)) };
    scratch.lkey = ListenerKey { vip: key.dst, port: key.dport, proto: key.proto, family: key.family };
    // SAFETY: read-only copy of the value.
    let Some(id) = (unsafe { LISTENERS.get(&scratch.lkey) }).copied() else {
        return Err(pass::<C>(stat::PASS_NOT_OURS, bytes));
    };
    if !pkt.has_l4() {
        // A later fragment cannot open a flow.
        return Err(pass::<C>(stat::PASS_FRAGMENT, bytes));
    }
    let tcp = pkt.proto == PROTO_TCP;
    if tcp {
        if let Some(h) = HALF_OPEN.get_ptr_mut(key) {
            // SAFETY: map value pointer from a successful lookup.
            match half_open::on_client(ctx, pkt, unsafe { &*h }, unsafe { bpf_ktime_get_ns() }) {
                Step::Forward => return Ok((h, true)),
                Step::Established => {
                    count(stat::HANDSHAKES, 0);
                    stats::listener(id, |c| c.handshakes += 1);
                    return match CONNTRACK.get_ptr_mut(key) {
                        Some(ct) => Ok((ct, false)),
                        None => Err(drop::<C>(stat::DROP_HALF_OPEN, bytes)),
                    };
                }
                Step::Drop => return Err(drop::<C>(stat::DROP_HALF_OPEN, bytes)),
                Step::Cookie => return Err(TAIL_CALL | prog_index::COOKIE),
                Step::Lost => {
                    let _ = HALF_OPEN.remove(key);
                }
            }
        }
        // SYN cookies: only for frames from a NIC (a local sender's skb is tc's, and cannot
        // be turned around in place). A SYN under pressure is answered by the cookie program;
        // an ACK returning a valid cookie opens its flow here, and the cookie program sends
        // it on as the flow's SYN.
        if C::XDP
            && pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
            && syncookie::fits(pkt)
            && syncookie::wanted(unsafe { bpf_ktime_get_ns() })
        {
            return Err(TAIL_CALL | prog_index::COOKIE);
        }
        if !(half_open::opens(pkt) || C::XDP && syncookie::valid(ctx, pkt)) {
            // Only a SYN opens a TCP flow: anything else would open one per spoofed packet
            // (and, on a PROXY listener, pass the client's own `PROXY` line on).
            stats::listener(id, |c| c.no_flow_drops += 1);
            return Err(drop::<C>(stat::DROP_NO_FLOW, bytes));
        }
    }
    let dropped = new_flow(ctx, pkt, id);
    if dropped != 0 {
        return Err(drop::<C>(dropped, bytes));
    }
    // Whichever CPU won the race to create the flow, its entry is the one to follow.
    let created = if tcp { HALF_OPEN.get_ptr_mut(key) } else { CONNTRACK.get_ptr_mut(key) };
    match created {
        Some(_) if tcp && pkt.tcp_flags & TCP_SYN == 0 => {
            // Opened by a SYN cookie's ACK: the cookie program makes it the backend's SYN.
            count(stat::SYNCOOKIES_VALID, 0);
            count(stat::NEW_FLOWS, bytes);
            Err(TAIL_CALL | prog_index::COOKIE)
        }
        Some(ct) => {
            count(stat::NEW_FLOWS, bytes);
            Ok((ct, tcp))
        }
        None => Err(drop::<C>(stat::DROP_NO_SNAT_PORT, bytes)),
    }
}

/// Fragments, in the entry program: the first one records its ports; the ones after it
/// borrow them. An IPv4 fragment leaves with its datagram's new identification
/// (`FragEntry::id`; the first fragment takes it, the ones after it find it), put in
/// `pkt.frag_id` for the rewrite: a fragment that is not forwarded stays as it came.
/// In `lb_*_open` (which the entry program sends only what may open a flow to), a first
/// fragment is recorded already, and a later one opens no flow (nor does any fragment answer
/// a SYN cookie). Returns false for a fragment left to the kernel: a later one whose first
/// fragment was not seen, one in `lb_*_open` or `lb_*_cookie` that is not a first fragment.
#[inline(always)]
fn fragment_ports<H: Ip, const MODE: u8>(pkt: &mut Packet<H>) -> bool {
    if MODE != MAIN {
        return MODE == OPEN && pkt.has_l4();
    }
    let fkey = FlowKey {
        src: pkt.key.src,
        dst: pkt.key.dst,
        sport: pkt.frag_id as u16,
        dport: (pkt.frag_id >> 16) as u16,
        proto: pkt.proto,
        family: pkt.key.family,
        _pad: [0; 2],
    };
    let id = if pkt.has_l4() {
        // A first fragment seen again (duplicated on the way) keeps the identification it
        // took: its datagram's later fragments may have left with it already.
        // SAFETY: read-only copy of the value.
        let seen = unsafe { FRAGMENTS.get(&fkey) }.filter(|f| f.sport == pkt.key.sport && f.dport == pkt.key.dport);
        if let Some(f) = seen {
            f.id
        } else {
            let id = if H::FAMILY == FAMILY_V4 { next_frag_id() } else { 0 };
            let entry = FragEntry { sport: pkt.key.sport, dport: pkt.key.dport, id, _pad: 0 };
            let _ = FRAGMENTS.insert(&fkey, &entry, 0);
            id
        }
    } else {
        // SAFETY: read-only copy of the value.
        let Some(f) = (unsafe { FRAGMENTS.get(&fkey) }) else { return false };
        pkt.key.sport = f.sport;
        pkt.key.dport = f.dport;
        count(stat::FRAGMENTS_FWD, 0);
        f.id
    };
    if H::FAMILY == FAMILY_V4 {
        pkt.frag_id = id as u32;
    }
    true
}

/// The next IPv4 identification for a fragmented datagram (network byte order): one counter
/// for the node, as a host's per-destination counter comes round after 65,536 datagrams
/// (the datagrams of every client and backend here share the SNAT address). A plain
/// increment: two CPUs at one instant may take one identification (a window of
/// nanoseconds); an atomic fetch-and-add needs BPF v3 atomics this build does not emit.
#[inline(always)]
fn next_frag_id() -> u16 {
    let Some(c) = FRAG_IDS.get_ptr_mut(0) else { return 0 };
    // SAFETY: the map's value.
    unsafe {
        let id = *c;
        *c = id.wrapping_add(1);
        (id as u16).to_be()
    }
}

/// A TCP SYN (without ACK) on a flow whose connection was closed (FIN or RST seen).
#[inline(always)]
fn reopens<H: Ip>(pkt: &Packet<H>, ct: &CtEntry) -> bool {
    pkt.proto == PROTO_TCP
        && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        && ct.state & (tcp_state::FIN | tcp_state::RST) != 0
}

/// Removes a closed flow: its reverse entry only while it is this flow's (one lost to the LRU
/// may since belong to another flow that took the source port).
#[inline(always)]
fn forget(key: &FlowKey, ct: &CtEntry) {
    let rkey = ct.reverse_key(key.proto, key.family);
    // SAFETY: read-only look at the entry.
    if unsafe { REVERSE_NAT.get(&rkey) }.is_some_and(|r| r.owned_by(key)) {
        let _ = REVERSE_NAT.remove(&rkey);
    }
    let _ = CONNTRACK.remove(key);
}

/// The first packet of a flow to a listener: ACL, persistence or scheduler, a source port,
/// both directions recorded. Returns 0, or the drop counter when the flow cannot be created
/// (a plain integer: a BPF call passes at most five registers, a `Result` would need a sixth).
#[inline(never)]
fn new_flow<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, id: u32) -> u32 {
    match try_new_flow(ctx, pkt, &pkt.key, id) {
        Ok(()) => 0,
        Err(counter) => counter,
    }
}

#[inline(always)]
fn try_new_flow<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, key: &FlowKey, id: u32) -> Result<(), u32> {
    let cfg = LISTENER_CFG.get(id).ok_or(stat::DROP_NO_BACKEND)?;
    if !acl::allows(cfg, key) {
        stats::listener(id, |c| c.acl_drops += 1);
        return Err(stat::DROP_ACL);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let pkey = persist::key(id, key);
    let persisted = if cfg.persist_timeout_s != 0 { persist::lookup(&pkey, cfg.persist_timeout_s, now) } else { None };
    let backend_id = match persisted {
        Some(b) => {
            count(stat::PERSIST_HITS, 0);
            b
        }
        None => match sched::pick(id, cfg, key) {
            Some(b) => b,
            None => {
                stats::listener(id, |c| c.no_backend_drops += 1);
                return Err(stat::DROP_NO_BACKEND);
            }
        },
    };
    let backend = BACKENDS.get(backend_id).ok_or(stat::DROP_NO_BACKEND)?;
    // The backend's next hop as its known flows find it (the per-CPU cache by backend id):
    // no FIB lookup per new flow while the cached one is current.
    let egress = fwd::lookup_cached(ctx, pkt, backend_id, &backend.addr, now).map_err(|e| e.counter())?.ifindex;
    // SAFETY: read-only use of the value.
    let snat = unsafe { SNAT_ADDRS.get(&egress) }.ok_or(stat::DROP_NO_SNAT_ADDR)?;
    let snat_addr = if key.family == FAMILY_V4 {
        if snat.flags & snat_flags::V4 == 0 {
            return Err(stat::DROP_NO_SNAT_ADDR);
        }
        [snat.v4, 0, 0, 0]
    } else {
        if snat.flags & snat_flags::V6 == 0 {
            return Err(stat::DROP_NO_SNAT_ADDR);
        }
        snat.v6
    };
    // A TCP flow is opened by a SYN, or by an ACK that returned a SYN cookie (the caller
    // checked it): (its ISN, the cookie).
    let cookie = match pkt.tcp(ctx) {
        // SAFETY: bounds checked by tcp().
        Some(tcp) if pkt.tcp_flags & TCP_SYN == 0 => unsafe {
            Some((u32::from_be((*tcp).seq).wrapping_sub(1), u32::from_be((*tcp).ack).wrapping_sub(1)))
        },
        _ => None,
    };
    let state = match cookie {
        Some(_) => tcp_state::COOKIE,
        None if pkt.proto == PROTO_TCP => state_bits(pkt.tcp_flags),
        None => 0,
    };
    let (pp_version, pp_len, client_isn) = pp::for_new_flow(ctx, pkt, cfg.flags);
    let client_isn = match cookie {
        Some((isn, _)) => isn,
        None => client_isn,
    };
    let scratch = scratch().ok_or(stat::DROP_NO_SNAT_PORT)?;
    scratch.ct = CtEntry {
        backend: backend.addr,
        snat: snat_addr,
        backend_port: backend.port,
        snat_port: 0,
        backend_id,
        listener_id: id,
        state,
        last_seen_ns: now,
        client_isn,
        pp_len,
        pp_version,
        pp_acked: 0,
    };
    write_reverse(ctx, pkt, key, &scratch.ct, 0, now, &mut scratch.rev);
    if let Some((_, ours)) = cookie {
        scratch.rev.flags |= rev_flags::COOKIE;
        scratch.rev.seq_delta = ours;
    }
    let rkey = claim_snat_port(&mut scratch.ct, &scratch.rev, key).ok_or(stat::DROP_NO_SNAT_PORT)?;
    // A TCP flow starts half-open; it becomes established with the client's handshake ACK.
    let inserted = if pkt.proto == PROTO_TCP {
        HALF_OPEN.insert(key, &scratch.ct, BPF_NOEXIST as u64)
    } else {
        CONNTRACK.insert(key, &scratch.ct, BPF_NOEXIST as u64)
    };
    if inserted.is_err() {
        // Another CPU created this flow first: release our port, the caller follows theirs.
        if pkt.proto == PROTO_TCP {
            let _ = HALF_OPEN_REV.remove(&rkey);
        } else {
            let _ = REVERSE_NAT.remove(&rkey);
        }
        return Ok(());
    }
    if cfg.persist_timeout_s != 0 {
        persist::remember(&pkey, backend_id, now);
    }
    stats::listener(id, |c| c.new_flows += 1);
    stats::backend(backend_id, |c| c.new_flows += 1);
    Ok(())
}
