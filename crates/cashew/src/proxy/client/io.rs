//! Reading and writing a client's socket from inside a poll: one read into the
//! input buffer's free room, one (vectored) write of the replies waiting.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::net::poll_read_buf;

const READ_CHUNK: usize = 16 * 1024;
const WRITE_SLICES: usize = 16;
/// When a drain starts, requests already received are still read, up to this much.
const DRAIN_READ_LIMIT: usize = 1 << 20;

/// Writes as much of `out` as the socket takes in one call: the bytes written.
pub(super) fn poll_write_some<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let written = if out.len() == 1 {
        Pin::new(&mut *writer).poll_write(cx, &out[0])
    } else {
        let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
        let count = out.len().min(WRITE_SLICES);
        for (slice, bytes) in slices.iter_mut().zip(out.iter()) {
            *slice = IoSlice::new(bytes);
        }
        Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count])
    };
    let n = match written {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        Poll::Ready(Ok(n)) => n,
    };
    let mut left = n;
    while left > 0 {
        let front = out.front_mut().expect("written bytes came from out");
        if front.len() <= left {
            left -= front.len();
            out.pop_front();
        } else {
            front.advance(left);
            left = 0;
        }
    }
    Poll::Ready(Ok(n))
}

/// Reads what the client has already sent, without waiting for more. True at the
/// end of the stream.
pub(super) fn read_available<R: AsyncRead + Unpin>(reader: &mut R, input: &mut BytesMut) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    while input.len() < DRAIN_READ_LIMIT {
        input.reserve(READ_CHUNK);
        match poll_read_buf(reader, input, &mut cx) {
            Poll::Ready(Ok(0)) => return true,
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(_)) | Poll::Pending => break,
        }
    }
    false
}

/// After a drain's last reply, the client may already have sent more: reading it
/// away (briefly) lets the connection end with a FIN after every reply, rather than
/// a reset that could discard replies the client has not read yet.
pub(super) async fn discard_until_eof<R: AsyncRead + Unpin>(reader: &mut R, linger: Duration) {
    let mut sink = vec![0u8; 4096];
    let discard = async {
        while let Ok(n) = reader.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(linger, pin!(discard)).await;
}
