//! Reading and writing a client's socket from inside a poll: one read into the
//! input buffer's free room, one (vectored) write of the replies waiting, short ones
//! copied together.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::net::poll_read_buf;

const READ_CHUNK: usize = 16 * 1024;
/// Most slices of one vectored write.
const WRITE_SLICES: usize = 16;
/// Replies up to this long are copied together into one slice of the write: each
/// slice costs the kernel about 30 ns more, more than copying a short reply does.
const GATHER_REPLY_MAX: usize = 512;
/// Most bytes copied for one write.
const GATHER_LIMIT: usize = 16 * 1024;
/// When a drain starts, requests already received are still read, up to this much.
const DRAIN_READ_LIMIT: usize = 1 << 20;

thread_local! {
    /// Where a write's short replies are copied together (one per worker thread:
    /// a write uses it only while it is being made).
    static GATHER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(GATHER_LIMIT));
}

/// One slice of a write: bytes copied together, or a reply as it is.
#[derive(Clone, Copy)]
enum Slice {
    Gathered(usize, usize),
    Reply(usize),
}

/// Writes as much of `out` as the socket takes in one call: the bytes written.
pub(super) fn poll_write_some<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let written = if out.len() == 1 {
        Pin::new(&mut *writer).poll_write(cx, &out[0])
    } else {
        GATHER.with_borrow_mut(|gather| poll_write_gathered(writer, out, gather, cx))
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

/// Writes the replies at the front of `out` in one call, runs of short ones copied
/// into `gather` as one slice. The bytes written are those of `out`, in order.
fn poll_write_gathered<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &VecDeque<Bytes>,
    gather: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    gather.clear();
    let mut plan = [Slice::Reply(0); WRITE_SLICES];
    let mut count = 0;
    for (index, reply) in out.iter().enumerate() {
        let short = reply.len() <= GATHER_REPLY_MAX && gather.len() + reply.len() <= GATHER_LIMIT;
        if short && count > 0 {
            if let Slice::Gathered(_, end) = &mut plan[count - 1] {
                gather.extend_from_slice(reply);
                *end = gather.len();
                continue;
            }
        }
        if count == WRITE_SLICES {
            break;
        }
        plan[count] = match short {
            true => {
                let start = gather.len();
                gather.extend_from_slice(reply);
                Slice::Gathered(start, gather.len())
            }
            false => Slice::Reply(index),
        };
        count += 1;
    }
    let slice = |part: &Slice| match *part {
        Slice::Gathered(start, end) => &gather[start..end],
        Slice::Reply(index) => &out[index][..],
    };
    if count == 1 {
        return Pin::new(&mut *writer).poll_write(cx, slice(&plan[0]));
    }
    let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
    for (io_slice, part) in slices.iter_mut().zip(&plan[..count]) {
        *io_slice = IoSlice::new(slice(part));
    }
    Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..count])
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes per write, vectored or not.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
        writes: usize,
        slices: Vec<usize>,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let socket = self.get_mut();
            socket.writes += 1;
            socket.slices.push(bufs.len());
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(socket.room - n);
                socket.taken.extend_from_slice(&buf[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn replies(lengths: &[usize]) -> VecDeque<Bytes> {
        let mut next = 0u8;
        let mut reply = |len: usize| {
            next = next.wrapping_add(1);
            Bytes::from(vec![next; len])
        };
        lengths.iter().map(|&len| reply(len)).collect()
    }

    fn write_all(mut out: VecDeque<Bytes>, room: usize) -> Socket {
        let mut socket = Socket {
            taken: Vec::new(),
            room,
            writes: 0,
            slices: Vec::new(),
        };
        let mut cx = Context::from_waker(Waker::noop());
        while !out.is_empty() {
            match poll_write_some(&mut socket, &mut out, &mut cx) {
                Poll::Ready(Ok(n)) => assert!(n > 0 && n <= room),
                other => panic!("write failed: {other:?}"),
            }
        }
        socket
    }

    #[test]
    fn short_replies_go_out_as_one_slice() {
        let socket = write_all(replies(&[11; 16]), usize::MAX);
        assert_eq!(socket.writes, 1);
        assert_eq!(socket.slices, [1]);
        let expected: Vec<u8> = replies(&[11; 16]).iter().flatten().copied().collect();
        assert_eq!(socket.taken, expected);
    }

    #[test]
    fn long_replies_keep_their_own_slice_between_runs_of_short_ones() {
        let lengths = [5, 7, GATHER_REPLY_MAX + 1, 3, 4, 100_000, 9];
        let socket = write_all(replies(&lengths), usize::MAX);
        assert_eq!(socket.slices, [5]);
        let expected: Vec<u8> = replies(&lengths).iter().flatten().copied().collect();
        assert_eq!(socket.taken, expected);
    }

    #[test]
    fn every_byte_goes_out_once_in_order_whatever_the_socket_takes() {
        // Lengths around the limits, and more replies than slices of one write.
        let mut lengths = vec![1, GATHER_REPLY_MAX, GATHER_REPLY_MAX + 1, 2];
        lengths.extend((0..200).map(|i| (i * 37) % 700 + 1));
        lengths.extend([GATHER_LIMIT, GATHER_REPLY_MAX + 1, GATHER_REPLY_MAX + 1, 1]);
        let expected: Vec<u8> = replies(&lengths).iter().flatten().copied().collect();
        for room in [1, 7, 511, 512, 4096, GATHER_LIMIT + 1, usize::MAX] {
            let socket = write_all(replies(&lengths), room);
            assert_eq!(socket.taken, expected, "room {room}");
            assert!(socket.slices.iter().all(|&n| n <= WRITE_SLICES));
        }
        // Gathered, the whole stream takes far fewer writes than one per 16 replies.
        let socket = write_all(replies(&lengths), usize::MAX);
        assert!(
            socket.writes < lengths.len() / WRITE_SLICES,
            "{} writes",
            socket.writes
        );
    }
}
