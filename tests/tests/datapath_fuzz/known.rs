//! Datapath findings of the fuzzer not fixed yet: a failing case that matches one of them is
//! counted and skipped, so the rest of the fuzzer stays a gate. Each entry names the
//! finding and covers its frames as narrowly as it can; remove it with the fix.
use crate::run::Problem;

/// The known finding a failing case (its problem, its frame in) matches, if any.
pub fn finding(problem: &Problem, frame: &[u8]) -> Option<&'static str> {
    if matches!(problem, Problem::Checksum(_)) && headers_past_ip_end(frame) {
        return Some(HEADERS_PAST_IP_END);
    }
    None
}

/// TODO(issue #15, fuzzer finding 1): lb-ebpf reads and rewrites headers as far as the
/// *frame* goes, not as far as the IP packet goes (IPv4 total length, IPv6 payload length).
/// When a header it rewrites lies past the IP packet's end, in the Ethernet padding — TCP
/// options (the PROXY protocol's MSS clamp and SACK edges, `pp/backend.rs`), or the ports of
/// the packet an ICMP / ICMPv6 error quotes (`icmp.rs`) — it rewrites those bytes and folds
/// their change into a checksum that does not cover them: a packet that came in with every
/// checksum right leaves with a wrong one. Fix: bound what is parsed by the IP length (a
/// header that runs past it is malformed: leave the packet to the kernel).
const HEADERS_PAST_IP_END: &str = "a header rewritten past the IP packet's end (fuzzer finding 1)";

fn be16(f: &[u8], at: usize) -> usize {
    u16::from_be_bytes([f[at], f[at + 1]]) as usize
}

/// The frame's IP packet ends before the end of a header the datapath rewrites: the TCP
/// header with its options, or an ICMP error's quote up to the quoted ports (quoted UDP: its
/// checksum).
fn headers_past_ip_end(f: &[u8]) -> bool {
    if f.len() < 54 {
        return false;
    }
    let (ip_end, proto, l4) = match be16(f, 12) {
        0x0800 => (14 + be16(f, 16), f[23], 14 + (f[14] & 0x0f) as usize * 4),
        0x86dd => {
            let (mut next, mut off) = (f[20], 54);
            while [0, 43, 60].contains(&next) && off + 2 <= f.len() {
                next = f[off];
                off += (f[off + 1] as usize + 1) * 8;
            }
            (54 + be16(f, 18), next, off)
        }
        _ => return false,
    };
    let end = match proto {
        6 if f.len() >= l4 + 20 => l4 + (f[l4 + 12] >> 4) as usize * 4,
        // An ICMP error: its 8 bytes, the quoted IP header, the quoted ports.
        1 if f.len() >= l4 + 8 + 20 => {
            let inner = l4 + 8;
            let quoted_udp = f[inner + 9] == 17;
            inner + (f[inner] & 0x0f) as usize * 4 + if quoted_udp { 8 } else { 4 }
        }
        58 if f.len() >= l4 + 8 + 40 => l4 + 8 + 40 + if f[l4 + 8 + 6] == 17 { 8 } else { 4 },
        _ => return false,
    };
    ip_end < end
}
