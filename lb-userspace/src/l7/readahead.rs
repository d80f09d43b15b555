//! A plain client connection whose first read takes a whole request's worth of bytes.
//! Telling HTTP/1.1 from HTTP/2 prior knowledge reads the first 24 bytes alone (the length of
//! the h2 preface); without this, the rest of the request then needed a second `recv`, on
//! every connection. What was read ahead is handed out first; later reads go straight through.
//! A connection [`super::serve_h1`] hands to hyper comes with what it read of it, the same way.
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes the first read asks the socket for (a request line and usual headers).
const READ_AHEAD: usize = 4096;

enum Ahead {
    /// Nothing read yet.
    First,
    /// Read ahead, not yet handed out: the bytes and how many were.
    Holding(Vec<u8>, usize),
    /// Reads go straight to the socket.
    Through,
}

pub struct ReadAhead<I> {
    io: I,
    ahead: Ahead,
}

impl<I> ReadAhead<I> {
    pub fn new(io: I) -> ReadAhead<I> {
        ReadAhead { io, ahead: Ahead::First }
    }

    /// A connection of which `read` was already read: those bytes are handed out first.
    pub fn holding(io: I, read: Vec<u8>) -> ReadAhead<I> {
        let ahead = if read.is_empty() { Ahead::Through } else { Ahead::Holding(read, 0) };
        ReadAhead { io, ahead }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ReadAhead<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        match &mut this.ahead {
            Ahead::Through => Pin::new(&mut this.io).poll_read(cx, buf),
            Ahead::First if buf.remaining() >= READ_AHEAD => {
                this.ahead = Ahead::Through;
                Pin::new(&mut this.io).poll_read(cx, buf)
            }
            Ahead::First => {
                let mut bytes = vec![0u8; READ_AHEAD];
                let mut read = ReadBuf::new(&mut bytes);
                match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        bytes.truncate(n);
                        let given = n.min(buf.remaining());
                        buf.put_slice(&bytes[..given]);
                        this.ahead = if given < n { Ahead::Holding(bytes, given) } else { Ahead::Through };
                        Poll::Ready(Ok(()))
                    }
                    other => other,
                }
            }
            Ahead::Holding(bytes, pos) => {
                let given = (bytes.len() - *pos).min(buf.remaining());
                buf.put_slice(&bytes[*pos..*pos + given]);
                *pos += given;
                if *pos == bytes.len() {
                    this.ahead = Ahead::Through;
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ReadAhead<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_first_reads_get_every_byte_in_order() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let request: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&request).await.unwrap();
        drop(client);
        let mut io = ReadAhead::new(server);
        let mut got = Vec::new();
        // 24 bytes first (as the HTTP/2 preface check asks), then odd sizes.
        let mut small = [0u8; 24];
        io.read_exact(&mut small).await.unwrap();
        got.extend_from_slice(&small);
        let mut chunk = [0u8; 1000];
        loop {
            let n = io.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, request);
    }
}
