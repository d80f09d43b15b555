//! HTTP/2 frames written by hand, for clients no library would be: header values with CR/LF,
//! connection-specific headers, more streams than the server allows.
use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 1;
pub const DATA: u8 = 0;
pub const RST_STREAM: u8 = 3;
pub const GOAWAY: u8 = 7;
pub const END_STREAM: u8 = 1;
pub const END_HEADERS: u8 = 4;
/// RST_STREAM / GOAWAY error code of a stream past the concurrency limit.
pub const REFUSED_STREAM: u32 = 7;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    assert!(s.len() < 127, "short strings only");
    out.push(s.len() as u8);
    out.extend_from_slice(s);
}

/// Header fields of a request, as name and value bytes.
pub type Fields<'a> = &'a [(&'a [u8], &'a [u8])];

/// An HPACK block without Huffman coding or table updates: `:method` (GET or POST from the
/// static table), `:scheme http`, `:path`, `:authority`, then `extra` as literal names.
pub fn request_block(post: bool, path: &str, authority: &str, extra: Fields<'_>) -> Vec<u8> {
    let mut b = vec![if post { 0x83 } else { 0x82 }, 0x86];
    b.push(0x04); // :path, literal value without indexing
    string(&mut b, path.as_bytes());
    b.push(0x01); // :authority
    string(&mut b, authority.as_bytes());
    for (name, value) in extra {
        b.push(0x00);
        string(&mut b, name);
        string(&mut b, value);
    }
    b
}

/// A connection that has sent the preface and empty SETTINGS.
pub async fn connect(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    s
}

/// A frame as received.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        Some(u32::from_be_bytes(self.payload.get(at..at + 4)?.try_into().ok()?))
    }

    /// A response HEADERS frame whose `:status` is 200 (static table index 8, which servers
    /// use for it).
    pub fn is_200(&self) -> bool {
        self.kind == HEADERS && self.payload.first() == Some(&0x88)
    }
}

/// Every frame received until the connection closes or `quiet` passes without one.
pub async fn read_frames(s: &mut TcpStream, quiet: Duration) -> Vec<Frame> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, s.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 9 {
        let len = (usize::from(buf[at]) << 16) | (usize::from(buf[at + 1]) << 8) | usize::from(buf[at + 2]);
        if buf.len() < at + 9 + len {
            break;
        }
        frames.push(Frame {
            kind: buf[at + 3],
            stream: u32::from_be_bytes(buf[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff,
            payload: buf[at + 9..at + 9 + len].to_vec(),
        });
        at += 9 + len;
    }
    frames
}
