//! PROXY protocol headers (<https://www.haproxy.org/download/1.8/doc/proxy-protocol.txt>):
//! the wire constants the datapath and user space share, and — for user space and the
//! tests (feature `user`) — the one reference encoder of v1 and v2 headers.
//!
//! The encoder writes into a caller's buffer and returns the length written
//! ([`MAX_LEN`] bytes always suffice), so it needs no allocator:
//!
//! ```
//! # #[cfg(feature = "user")] {
//! use lb_common::proxy_header::{self, Transport};
//! let (client, vip) = ("192.0.2.1:40000".parse().unwrap(), "198.51.100.10:80".parse().unwrap());
//! let mut buf = [0u8; proxy_header::MAX_LEN];
//! let n = proxy_header::v2(&mut buf, client, vip, Transport::Stream).unwrap();
//! assert_eq!(&buf[12..16], b"\x21\x11\x00\x0c");
//! assert_eq!(n, 28);
//! # }
//! ```
pub use super::PROXY_V2_SIGNATURE as V2_SIGNATURE;

/// v2 byte 12: protocol version 2, PROXY command (a relayed connection).
pub const V2_PROXY: u8 = 0x21;
/// v2 byte 12: protocol version 2, LOCAL command (the proxy's own connection, e.g. a health
/// check): the receiver uses the connection's real addresses.
pub const V2_LOCAL: u8 = 0x20;
/// v2 byte 13, high nibble: the address family.
pub const V2_AF_UNSPEC: u8 = 0x00;
pub const V2_AF_INET: u8 = 0x10;
pub const V2_AF_INET6: u8 = 0x20;
/// v2 byte 13, low nibble: the transport.
pub const V2_STREAM: u8 = 0x01;
pub const V2_DGRAM: u8 = 0x02;
/// Bytes of a v2 header before its addresses: signature, version and command, family and
/// transport, length of what follows (big endian).
pub const V2_FIXED_LEN: usize = 16;
/// v2 address block of IPv4: source and destination address, source and destination port.
pub const V2_ADDR_LEN_V4: u16 = 4 + 4 + 2 + 2;
/// v2 address block of IPv6.
pub const V2_ADDR_LEN_V6: u16 = 16 + 16 + 2 + 2;
/// The longest v1 line the spec allows, `\r\n` included.
pub const V1_MAX_LEN: usize = 107;
/// The v1 line of a connection whose addresses are not told (the LOCAL of v1).
pub const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";
/// A buffer this long holds any header the encoder writes.
pub const MAX_LEN: usize = V1_MAX_LEN;

#[cfg(any(test, feature = "user"))]
pub use encode::*;

#[cfg(any(test, feature = "user"))]
mod encode {
    use core::net::{IpAddr, SocketAddr};

    use super::*;

    /// The transport a v2 header names.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Transport {
        /// TCP.
        Stream,
        /// UDP: the header goes in front of every datagram.
        Datagram,
    }

    /// Why a header was not written.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum EncodeError {
        /// The buffer is shorter than the header (`need` bytes).
        BufferTooSmall { need: usize },
        /// Source and destination of different address families: no header can say that.
        MixedFamilies,
    }

    impl core::fmt::Display for EncodeError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                EncodeError::BufferTooSmall { need } => write!(f, "PROXY header needs {need} bytes of buffer"),
                EncodeError::MixedFamilies => f.write_str("PROXY header between addresses of two families"),
            }
        }
    }

    /// Length of the v2 header [`v2`] writes for `src` → `dst`.
    pub fn v2_len(src: SocketAddr) -> usize {
        V2_FIXED_LEN + if src.is_ipv4() { V2_ADDR_LEN_V4 } else { V2_ADDR_LEN_V6 } as usize
    }

    /// The v2 header of a relayed connection (PROXY command) from `src` to `dst`, without
    /// TLVs. Returns the length written.
    pub fn v2(buf: &mut [u8], src: SocketAddr, dst: SocketAddr, transport: Transport) -> Result<usize, EncodeError> {
        let (family, addr_len) = match (src.ip(), dst.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (V2_AF_INET, V2_ADDR_LEN_V4),
            (IpAddr::V6(_), IpAddr::V6(_)) => (V2_AF_INET6, V2_ADDR_LEN_V6),
            _ => return Err(EncodeError::MixedFamilies),
        };
        let need = v2_len(src);
        let out = buf.get_mut(..need).ok_or(EncodeError::BufferTooSmall { need })?;
        let proto = match transport {
            Transport::Stream => V2_STREAM,
            Transport::Datagram => V2_DGRAM,
        };
        fixed(out, V2_PROXY, family | proto, addr_len);
        let mut at = V2_FIXED_LEN;
        for ip in [src.ip(), dst.ip()] {
            match ip {
                IpAddr::V4(a) => put(out, &mut at, &a.octets()),
                IpAddr::V6(a) => put(out, &mut at, &a.octets()),
            }
        }
        put(out, &mut at, &src.port().to_be_bytes());
        put(out, &mut at, &dst.port().to_be_bytes());
        Ok(need)
    }

    /// The v2 header of the proxy's own connection (LOCAL command, no addresses), as the
    /// spec provides for health checks. Returns the length written (16).
    pub fn v2_local(buf: &mut [u8]) -> Result<usize, EncodeError> {
        let out = buf.get_mut(..V2_FIXED_LEN).ok_or(EncodeError::BufferTooSmall { need: V2_FIXED_LEN })?;
        fixed(out, V2_LOCAL, V2_AF_UNSPEC, 0);
        Ok(V2_FIXED_LEN)
    }

    /// The v1 line of a TCP connection from `src` to `dst`: `PROXY TCP4|TCP6 <src> <dst>
    /// <sport> <dport>\r\n`. IPv6 addresses are written as eight hex groups without leading
    /// zeros and without `::` (RFC 4291 2.2, first form), as the datapath writes them.
    /// Returns the length written.
    pub fn v1(buf: &mut [u8], src: SocketAddr, dst: SocketAddr) -> Result<usize, EncodeError> {
        use core::fmt::Write;
        let mut line = Line { b: [0; V1_MAX_LEN], len: 0 };
        // The longest line (TCP6, eight 4-digit groups, 5-digit ports) is 104 bytes: it fits.
        let _ = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => write!(line, "PROXY TCP4 {s} {d}"),
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let _ = line.write_str("PROXY TCP6");
                for a in [s, d] {
                    let g = a.segments();
                    let _ = write!(
                        line,
                        " {:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
                        g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
                    );
                }
                Ok(())
            }
            _ => return Err(EncodeError::MixedFamilies),
        };
        let _ = write!(line, " {} {}\r\n", src.port(), dst.port());
        copy(buf, &line.b[..line.len])
    }

    /// `PROXY UNKNOWN\r\n`: the v1 line of the proxy's own connection (health checks).
    /// Returns the length written (15).
    pub fn v1_unknown(buf: &mut [u8]) -> Result<usize, EncodeError> {
        copy(buf, V1_UNKNOWN)
    }

    /// Signature, version and command, family and transport, address block length.
    fn fixed(out: &mut [u8], version_command: u8, family_transport: u8, addr_len: u16) {
        out[..12].copy_from_slice(&V2_SIGNATURE);
        out[12] = version_command;
        out[13] = family_transport;
        out[14..16].copy_from_slice(&addr_len.to_be_bytes());
    }

    fn put(out: &mut [u8], at: &mut usize, bytes: &[u8]) {
        out[*at..*at + bytes.len()].copy_from_slice(bytes);
        *at += bytes.len();
    }

    fn copy(buf: &mut [u8], bytes: &[u8]) -> Result<usize, EncodeError> {
        let need = bytes.len();
        buf.get_mut(..need).ok_or(EncodeError::BufferTooSmall { need })?.copy_from_slice(bytes);
        Ok(need)
    }

    /// A v1 line being formatted (never longer than the spec's 107 bytes).
    struct Line {
        b: [u8; V1_MAX_LEN],
        len: usize,
    }

    impl core::fmt::Write for Line {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len + s.len();
            self.b.get_mut(self.len..end).ok_or(core::fmt::Error)?.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn enc(f: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>) -> Vec<u8> {
        let mut b = [0u8; MAX_LEN];
        let n = f(&mut b).unwrap();
        b[..n].to_vec()
    }

    /// The spec's signature: \x0D \x0A \x0D \x0A \x00 \x0D \x0A \x51 \x55 \x49 \x54 \x0A.
    const SIG: &[u8] = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A";

    #[test]
    fn v2_tcp4_and_udp4_as_the_spec_lays_them_out() {
        let (src, dst) = (sa("192.168.0.1:56324"), sa("192.168.0.11:443"));
        // \x21: v2, PROXY; \x11: TCP over IPv4; length 12; addresses; ports.
        let want = [SIG, b"\x21\x11\x00\x0C", &[192, 168, 0, 1], &[192, 168, 0, 11], b"\xDC\x04", b"\x01\xBB"].concat();
        assert_eq!(enc(|b| v2(b, src, dst, Transport::Stream)), want);
        assert_eq!(want.len(), 28);
        assert_eq!(v2_len(src), 28);
        // \x12: UDP over IPv4.
        let mut udp = want.clone();
        udp[13] = 0x12;
        assert_eq!(enc(|b| v2(b, src, dst, Transport::Datagram)), udp);
    }

    #[test]
    fn v2_tcp6_and_udp6_as_the_spec_lays_them_out() {
        let (src, dst) = (sa("[2001:db8::2]:50000"), sa("[2001:db8:100::10]:80"));
        let s = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let d = [0x20, 0x01, 0x0d, 0xb8, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        // \x21: TCP over IPv6 (byte 13); length 36.
        let want = [SIG, b"\x21\x21\x00\x24", &s, &d, b"\xC3\x50", b"\x00\x50"].concat();
        assert_eq!(enc(|b| v2(b, src, dst, Transport::Stream)), want);
        assert_eq!((want.len(), v2_len(src)), (52, 52));
        // \x22: UDP over IPv6.
        let mut udp = want.clone();
        udp[13] = 0x22;
        assert_eq!(enc(|b| v2(b, src, dst, Transport::Datagram)), udp);
    }

    #[test]
    fn v2_local_has_no_addresses() {
        // \x20: v2, LOCAL; \x00: UNSPEC, UNSPEC; length 0.
        assert_eq!(enc(v2_local), [SIG, b"\x20\x00\x00\x00"].concat());
    }

    #[test]
    fn v1_lines_from_the_spec() {
        assert_eq!(
            enc(|b| v1(b, sa("192.168.0.1:56324"), sa("192.168.0.11:443"))),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
        );
        // The spec's worst cases: 56 bytes for TCP4, 104 for TCP6.
        let v4 = enc(|b| v1(b, sa("255.255.255.255:65535"), sa("255.255.255.255:65535")));
        assert_eq!(v4, b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n");
        assert_eq!(v4.len(), 56);
        let ones = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let v6 = enc(|b| v1(b, sa(ones), sa(ones)));
        assert_eq!(
            v6,
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
        );
        assert_eq!(v6.len(), 104);
        assert!(v6.len() <= crate::pp::MAX_LEN as usize, "the datapath's buffer holds the longest line");
        // IPv6 uncompressed, without leading zeros (what the datapath writes).
        assert_eq!(
            enc(|b| v1(b, sa("[2001:db8::2]:50000"), sa("[2001:db8:100::10]:80"))),
            b"PROXY TCP6 2001:db8:0:0:0:0:0:2 2001:db8:100:0:0:0:0:10 50000 80\r\n"
        );
        assert_eq!(enc(v1_unknown), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn short_buffers_and_mixed_families_are_refused() {
        let (s4, s6) = (sa("192.168.0.1:1"), sa("[::1]:2"));
        let mut small = [0u8; 27];
        assert_eq!(v2(&mut small, s4, s4, Transport::Stream), Err(EncodeError::BufferTooSmall { need: 28 }));
        assert_eq!(v2_local(&mut small[..15]), Err(EncodeError::BufferTooSmall { need: 16 }));
        assert_eq!(v1(&mut small[..10], s4, s4), Err(EncodeError::BufferTooSmall { need: 40 }));
        assert_eq!(v1_unknown(&mut small[..14]), Err(EncodeError::BufferTooSmall { need: 15 }));
        assert_eq!(v2(&mut [0u8; 64], s4, s6, Transport::Stream), Err(EncodeError::MixedFamilies));
        assert_eq!(v1(&mut [0u8; 64], s6, s4), Err(EncodeError::MixedFamilies));
        assert_eq!(small, [0u8; 27], "nothing written on failure");
    }
}
