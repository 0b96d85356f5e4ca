//! The one stream type every connection of cashew uses (clients, servers, health
//! probes, the admin API and stats port), and the one listener type. A new kind of
//! stream is a variant here, and nothing else in the proxy matches on the kind.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use cashew_config::{Listen, ServerAddress};
use socket2::Socket;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{tcp, unix, TcpListener, TcpStream, UnixListener, UnixStream};

/// A connected stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The reading half of a [`Stream`], owned apart from the writing half so that one
/// task can read and write at once.
pub(crate) enum StreamReader {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

/// The writing half of a [`Stream`].
pub(crate) enum StreamWriter {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
}

/// Applies the same expression to whichever stream an enum holds.
macro_rules! each {
    ($value:expr, $enum:ident, $s:ident => $body:expr) => {
        match $value {
            $enum::Tcp($s) => $body,
            $enum::Unix($s) => $body,
        }
    };
}

impl Stream {
    /// Connects to a server, resolving its name again each time (its address may
    /// have changed since the last connection). TCP connections send without delay,
    /// with keepalive probes when asked.
    pub(crate) async fn connect(
        address: &ServerAddress,
        keepalive: bool,
    ) -> Result<Stream, ConnectError> {
        match address {
            ServerAddress::Tcp { host, port } => {
                let addr = super::resolve_async(host, *port)
                    .await
                    .map_err(ConnectError::Resolve)?;
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                if keepalive {
                    socket2::SockRef::from(&stream).set_keepalive(true)?;
                }
                Ok(Stream::Tcp(stream))
            }
            ServerAddress::Unix { path } => Ok(Stream::Unix(UnixStream::connect(path).await?)),
        }
    }

    pub(crate) fn into_split(self) -> (StreamReader, StreamWriter) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (StreamReader::Tcp(r), StreamWriter::Tcp(w))
            }
            Stream::Unix(s) => {
                let (r, w) = s.into_split();
                (StreamReader::Unix(r), StreamWriter::Unix(w))
            }
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The host name did not resolve: why, in words.
    Resolve(String),
    Io(io::Error),
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError::Io(e)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), Stream, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), Stream, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), Stream, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, Stream, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), Stream, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), Stream, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self.get_mut(), StreamReader, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), StreamWriter, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self.get_mut(), StreamWriter, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, StreamWriter, s => s.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), StreamWriter, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self.get_mut(), StreamWriter, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A listening socket on the event loop.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Takes over a bound, listening, non-blocking socket for `listen`.
    pub(crate) fn from_socket(socket: Socket, listen: &Listen) -> io::Result<Listener> {
        let fd = OwnedFd::from(socket);
        match listen {
            Listen::Tcp { .. } => TcpListener::from_std(fd.into()).map(Listener::Tcp),
            Listen::Unix { .. } => UnixListener::from_std(fd.into()).map(Listener::Unix),
        }
    }

    /// A TCP listener on a duplicate of `socket`, listening with `backlog` (the
    /// original stays with the caller, e.g. to be handed to a new process).
    pub(crate) fn tcp_dup(socket: &Socket, backlog: i32) -> io::Result<Listener> {
        socket.listen(backlog)?;
        let socket = socket.try_clone()?;
        socket.set_nonblocking(true)?;
        TcpListener::from_std(socket.into()).map(Listener::Tcp)
    }

    /// The next client; TCP clients are sent to without delay.
    pub(crate) async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            Listener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
        }
    }
}
