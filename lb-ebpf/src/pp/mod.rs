//! PROXY protocol (v1 text, v2 binary) in the datapath: the header that tells a backend the
//! real client, inserted into the client → backend byte stream (TCP) or in front of every
//! datagram (UDP, v2), by tail-called programs (`lb_xdp_pp_*`, `lb_tc_pp_*`) so the entry
//! programs stay within the verifier's limits. The same code runs in both hooks; only the
//! way room is made for the header differs ([`insert`]).
//!
//! Modules by concern: [`header`] builds the header bytes; [`client`] handles a new flow's
//! settings and each client → backend packet, [`insert`] puts the header in such a packet;
//! [`backend`] handles each backend → client packet, with the TCP option walk in [`options`].
//!
//! TCP, per flow (state in `CtEntry` / `RevEntry`: the client's ISN, the header length, the
//! version, whether the backend acknowledged the header):
//! - client → backend: a segment whose seq is ISN+1 (the first data segment, every
//!   retransmission of it, the handshake's final ACK and its repeats — so server-first
//!   protocols get the header too), while the backend has not acknowledged the header,
//!   gets the header inserted in front of its payload. The header is built from the flow's
//!   key, so every copy carries the same bytes and the backend's TCP merges duplicates.
//!   Every other segment's seq moves up by the header length.
//! - backend → client: ack and SACK edges move down by the header length (clamped to ISN+1
//!   while they point into the header); the SYN-ACK's MSS shrinks by the header length so a
//!   full-sized client segment plus the header still fits the backend's MTU.
//!
//! Checksums: seq, ack, SACK and MSS changes are summed (RFC 1624) and applied through the
//! hook ([`Ctx::l4_csum`](crate::ctx::Ctx::l4_csum)), so a partial checksum (tc, local senders) takes only what it
//! should. For an inserted header the transport checksum is rebuilt from the pseudo-header,
//! the transport header and the header bytes, with the payload's sum taken from the old
//! checksum (byte-swapped when the header's length is odd, since the payload then changes
//! byte lanes); in tc that full checksum is turned into the change it makes, which a partial
//! checksum ignores but for the length in its pseudo-header.
mod backend;
mod client;
mod header;
mod insert;
mod options;

pub use backend::backend;
pub use client::{client, for_new_flow};
pub use header::v2_len;
pub use insert::at_payload as tc_move;
