//! The one stream type every connection of cashew uses (clients, servers, health
//! probes, the admin API and stats port), and the one listener type. A new kind of
//! stream is a variant here, and nothing else in the proxy matches on the kind.

use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use cashew_config::{Listen, ServerAddress};
use socket2::Socket;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::{tcp, unix, TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_rustls::TlsStream;

use super::tls::ServerTlsConnector;

/// A connected stream.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over TCP, as a client's or as a server's connection.
    Tls(Box<TlsStream<TcpStream>>),
}

/// The reading half of a [`Stream`], owned apart from the writing half so that one
/// task can read and write at once.
pub(crate) enum StreamReader {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
    Tls(ReadHalf<Box<TlsStream<TcpStream>>>),
}

/// The writing half of a [`Stream`].
pub(crate) enum StreamWriter {
    Tcp(tcp::OwnedWriteHalf),
    Unix(unix::OwnedWriteHalf),
    Tls(TlsWriter),
}

/// The writing half of a TLS stream. A write may leave encrypted bytes in the TLS
/// session when the socket is full; they go out at the next write or flush, so
/// the writer remembers whether a flush is owed.
pub(crate) struct TlsWriter {
    half: WriteHalf<Box<TlsStream<TcpStream>>>,
    unflushed: bool,
}

/// Applies the same expression to whichever stream an enum holds.
macro_rules! each {
    ($value:expr, $enum:ident, $s:ident => $body:expr) => {
        match $value {
            $enum::Tcp($s) => $body,
            $enum::Unix($s) => $body,
            $enum::Tls($s) => $body,
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
        tls: Option<&ServerTlsConnector>,
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
                match tls {
                    None => Ok(Stream::Tcp(stream)),
                    Some(tls) => match tls.connect(host, stream).await {
                        Ok(s) => Ok(Stream::Tls(Box::new(TlsStream::Client(s)))),
                        Err(e) => Err(ConnectError::Tls(super::tls::reason(&e))),
                    },
                }
            }
            ServerAddress::Unix { path } => Ok(Stream::Unix(UnixStream::connect(path).await?)),
            // Replaced by its master's address when the configuration is loaded.
            ServerAddress::Sentinel { master } => Err(ConnectError::Resolve(format!(
                "master '{master}' has no address from the Sentinels"
            ))),
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
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(s);
                let writer = TlsWriter {
                    half: w,
                    unflushed: false,
                };
                (StreamReader::Tls(r), StreamWriter::Tls(writer))
            }
        }
    }

    /// The TLS handshake of a client on a TLS listener.
    pub(crate) async fn accept_tls(
        self,
        acceptor: &tokio_rustls::TlsAcceptor,
    ) -> io::Result<Stream> {
        match self {
            Stream::Tcp(tcp) => {
                let tls = acceptor.accept(tcp).await?;
                Ok(Stream::Tls(Box::new(TlsStream::Server(tls))))
            }
            other => Ok(other),
        }
    }

    /// The peer's `ip:port` as Redis reports a client's `addr` (a unix socket
    /// client's is `unix:0`).
    pub(crate) fn address(&self) -> String {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Unix(_) => return "unix:0".into(),
        };
        tcp.peer_addr()
            .map_or_else(|_| "?:0".into(), |a| a.to_string())
    }

    /// Where the client reached cashew (`ip:port`), when over TCP.
    pub(crate) fn local_address(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::Tls(s) => s.get_ref().0.local_addr().ok(),
            Stream::Unix(_) => None,
        }
    }

    /// The peer's address, for log lines.
    pub(crate) fn peer(&self) -> String {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Unix(_) => return "a unix socket client".into(),
        };
        tcp.peer_addr()
            .map_or_else(|_| "an unknown peer".into(), |a| a.to_string())
    }
}

impl StreamWriter {
    /// Whether bytes written may wait in the TLS session: the caller flushes once
    /// it has nothing more to write. Never for a plain socket.
    pub(crate) fn owes_flush(&self) -> bool {
        matches!(self, StreamWriter::Tls(w) if w.unflushed)
    }
}

impl AsyncWrite for TlsWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.half).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(_))) {
            self.unflushed = true;
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.half).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(_))) {
            self.unflushed = true;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.half.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.half).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            self.unflushed = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.half).poll_shutdown(cx)
    }
}

/// Why a connection could not be made.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The host name did not resolve: why, in words.
    Resolve(String),
    /// The TLS handshake failed: why, in words.
    Tls(String),
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
        match self.get_mut() {
            StreamReader::Tls(s) => match Pin::new(s).poll_read(cx, buf) {
                // A peer that closes without TLS's close_notify has ended the
                // stream like any other: the protocols on top delimit their
                // messages, so nothing is cut short unnoticed.
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(()))
                }
                other => other,
            },
            other => each!(other, StreamReader, s => Pin::new(s).poll_read(cx, buf)),
        }
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
