//! Sockets: the one stream and listener type every connection uses, and address
//! resolution.

mod stream;
pub(crate) mod tls;

pub(crate) use stream::{ConnectError, Listener, Stream, StreamReader, StreamWriter};

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use tokio::io::{AsyncRead, ReadBuf};

use cashew_config::Listen;
use socket2::Socket;

/// The first address `host` resolves to, with `port`.
pub(crate) fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("'{host}' has no address")))
}

/// As [`resolve`], off the event loop: a name is looked up on tokio's blocking
/// threads, so a slow DNS answer stalls no client. The error says which name
/// failed and why, in words.
pub(crate) async fn resolve_async(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let failed = |why: String| format!("address resolution of '{host}' failed: {why}");
    let mut addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
        let text = e.to_string();
        failed(
            text.strip_prefix("failed to lookup address information: ")
                .unwrap_or(&text)
                .to_string(),
        )
    })?;
    addrs.next().ok_or_else(|| failed("no address".into()))
}

/// Where a socket is bound, for matching a config's `listen` to a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BoundAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl BoundAddr {
    pub(crate) fn of_listen(listen: &Listen) -> io::Result<BoundAddr> {
        match listen {
            Listen::Tcp { host, port } => resolve(host, *port).map(BoundAddr::Tcp),
            Listen::Unix { path, .. } => Ok(BoundAddr::Unix(std::path::absolute(path)?)),
        }
    }

    pub(crate) fn of_socket(socket: &Socket) -> Option<BoundAddr> {
        let addr = socket.local_addr().ok()?;
        if let Some(tcp) = addr.as_socket() {
            return Some(BoundAddr::Tcp(tcp));
        }
        addr.as_pathname()
            .and_then(|p| std::path::absolute(p).ok())
            .map(BoundAddr::Unix)
    }
}

/// Reads what the socket has into the free room of `buf`: the bytes read, 0 at
/// the end of the stream.
pub(crate) fn poll_read_buf<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let room = buf.chunk_mut();
    // SAFETY: the reader only writes initialised bytes into the slice, and only
    // those it reports filled are added to the buffer below.
    let room = unsafe { room.as_uninit_slice_mut() };
    let mut read = ReadBuf::uninit(room);
    let start = read.filled().as_ptr();
    match Pin::new(reader).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {
            debug_assert_eq!(start, read.filled().as_ptr());
            let n = read.filled().len();
            // SAFETY: the first `n` bytes of the room were just filled.
            unsafe { buf.advance_mut(n) };
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}
