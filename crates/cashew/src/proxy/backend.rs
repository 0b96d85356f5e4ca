//! Connections to one server: requests are queued from any client of the worker,
//! written in batches, and replies are matched to requests in order.

use std::collections::VecDeque;
use std::io;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use cashew_config::ServerAddress;
use cashew_protocol::{memcache, resp, ReplyParse};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::handoff::{Job, JobQueue, ReplyTx};
use super::pool::PoolRt;
use crate::stats::server as st;

/// What a client gets back for one request sent to a server.
pub type Reply = Result<Bytes, BackendError>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    Io(io::ErrorKind),
    TimedOut,
    /// The server sent something that is not a reply; the connection was dropped.
    Protocol,
    /// No server of the pool is live.
    NoServer,
    /// The connection ended before the reply came.
    Closed,
    /// The server refused the connection's setup (redis `AUTH` or `SELECT`); its
    /// error reply, passed on to clients.
    Setup(Bytes),
}

impl BackendError {
    /// The memcached error line a client sees.
    pub fn memcache_reply(&self) -> Bytes {
        Bytes::from(format!("SERVER_ERROR {}\r\n", self.reason()))
    }

    /// The redis error reply a client sees.
    pub fn redis_reply(&self) -> Bytes {
        match self {
            BackendError::Setup(reply) => reply.clone(),
            other => Bytes::from(format!("-ERR {}\r\n", other.reason())),
        }
    }

    fn reason(&self) -> &str {
        match self {
            BackendError::TimedOut => "Connection timed out",
            BackendError::Protocol => "Invalid reply from server",
            BackendError::NoServer => "No live server in the pool",
            BackendError::Closed => "Connection closed by server",
            BackendError::Io(kind) => match kind {
                io::ErrorKind::ConnectionRefused => "Connection refused",
                io::ErrorKind::ConnectionReset => "Connection reset by peer",
                io::ErrorKind::TimedOut => "Connection timed out",
                io::ErrorKind::BrokenPipe => "Broken pipe",
                io::ErrorKind::NotFound => "No such file or directory",
                io::ErrorKind::PermissionDenied => "Permission denied",
                io::ErrorKind::AddrNotAvailable => "Cannot assign requested address",
                _ => "Connection error",
            },
            BackendError::Setup(reply) => std::str::from_utf8(reply)
                .unwrap_or("server refused the connection setup")
                .trim_start_matches('-')
                .trim_end(),
        }
    }

    fn from_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => BackendError::TimedOut,
            io::ErrorKind::UnexpectedEof => BackendError::Closed,
            kind => BackendError::Io(kind),
        }
    }
}

/// Requests allowed on the wire at once per connection; more wait in the queue.
const MAX_IN_FLIGHT: usize = 4096;
/// A read buffer this large is given back once empty.
const SHRINK_ABOVE: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

/// Runs one server connection for the life of the worker: connects when there is
/// work (at once with `preconnect`), serves until an error, fails what was in
/// flight, and reconnects on the next request.
pub async fn run(pool: Weak<PoolRt>, server: usize, jobs: Rc<JobQueue>, preconnect: bool) {
    let mut connect_now = preconnect;
    loop {
        let first = if std::mem::take(&mut connect_now) {
            None
        } else {
            match jobs.pop().await {
                Some(job) => Some(job),
                None => return,
            }
        };
        let Some(p) = pool.upgrade() else { return };
        let address = p.config().servers[server].address.clone();
        let timeout = p
            .config()
            .timeout_ms
            .filter(|&t| t > 0)
            .map(Duration::from_millis);
        let keepalive = p.config().tcpkeepalive;
        let redis = p.config().redis;
        let (setup, setup_replies) = redis_setup(p.config());
        drop(p);

        let opening = open(&address, keepalive, &setup, setup_replies);
        let connected = match timeout {
            Some(t) => tokio::time::timeout(t, opening)
                .await
                .unwrap_or(Err(BackendError::TimedOut)),
            None => opening.await,
        };
        let mut session = Session::new(pool.clone(), server, timeout, redis);
        match connected {
            Err(error) => {
                if let Some(first) = first {
                    session.fail(first, error.clone());
                }
                // Everything already queued for this server fails the same way.
                while let Some(job) = jobs.try_pop() {
                    session.fail(job, error.clone());
                }
                if let Some(p) = pool.upgrade() {
                    p.server_failed(server, error);
                }
            }
            Ok(stream) => {
                if let Some(p) = pool.upgrade() {
                    p.stats(server).add(st::SERVER_CONNECTIONS, 1);
                }
                let error = match stream {
                    Stream::Tcp(s) => {
                        let (r, w) = s.into_split();
                        session.serve(r, w, first, &jobs).await
                    }
                    Stream::Unix(s) => {
                        let (r, w) = s.into_split();
                        session.serve(r, w, first, &jobs).await
                    }
                };
                session.fail_in_flight(error.clone().unwrap_or(BackendError::Closed));
                if let Some(p) = pool.upgrade() {
                    p.stats(server).sub(st::SERVER_CONNECTIONS, 1);
                    if let Some(error) = error {
                        p.server_failed(server, error);
                    }
                }
            }
        }
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

/// Connects and runs the setup commands; `Setup` when the server refuses them.
async fn open(
    address: &ServerAddress,
    keepalive: bool,
    setup: &[u8],
    replies: usize,
) -> Result<Stream, BackendError> {
    let mut stream = connect(address, keepalive)
        .await
        .map_err(|e| BackendError::from_io(&e))?;
    if replies > 0 {
        match &mut stream {
            Stream::Tcp(s) => handshake(s, setup, replies).await?,
            Stream::Unix(s) => handshake(s, setup, replies).await?,
        }
    }
    Ok(stream)
}

/// `AUTH` and `SELECT` for a new redis server connection, and how many replies they get.
fn redis_setup(pool: &cashew_config::Pool) -> (Vec<u8>, usize) {
    use cashew_protocol::resp::{array_header, bulk};
    let mut setup = Vec::new();
    let mut replies = 0;
    if !pool.redis {
        return (setup, 0);
    }
    if let Some(password) = &pool.redis_auth {
        array_header(&mut setup, 2);
        bulk(&mut setup, b"AUTH");
        bulk(&mut setup, password.as_bytes());
        replies += 1;
    }
    if pool.redis_db != 0 {
        array_header(&mut setup, 2);
        bulk(&mut setup, b"SELECT");
        bulk(&mut setup, pool.redis_db.to_string().as_bytes());
        replies += 1;
    }
    (setup, replies)
}

async fn handshake<S>(stream: &mut S, setup: &[u8], replies: usize) -> Result<(), BackendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use resp::parse_reply;
    let io_error = |e: io::Error| BackendError::from_io(&e);
    stream.write_all(setup).await.map_err(io_error)?;
    let mut buf = BytesMut::with_capacity(256);
    let mut seen = 0;
    while seen < replies {
        if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
            return Err(BackendError::Closed);
        }
        loop {
            match parse_reply(&buf) {
                ReplyParse::Incomplete => break,
                ReplyParse::Invalid => return Err(BackendError::Protocol),
                ReplyParse::Complete(n) => {
                    let reply = buf.split_to(n).freeze();
                    if reply.starts_with(b"-") {
                        return Err(BackendError::Setup(reply));
                    }
                    seen += 1;
                }
            }
        }
    }
    Ok(())
}

async fn connect(address: &ServerAddress, keepalive: bool) -> io::Result<Stream> {
    match address {
        ServerAddress::Tcp { host, port } => {
            let addr = super::listener::resolve(host, *port)?;
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            if keepalive {
                socket2::SockRef::from(&stream).set_keepalive(true)?;
            }
            Ok(Stream::Tcp(stream))
        }
        ServerAddress::Unix { path } => {
            Ok(Stream::Unix(tokio::net::UnixStream::connect(path).await?))
        }
    }
}

struct InFlight {
    reply: Option<ReplyTx>,
    len: u64,
    /// Offset in the connection's byte stream where this request ends.
    end: u64,
    /// When its last byte was written; `None` while still in the write buffer.
    written_at: Option<Instant>,
}

struct Session {
    pool: Weak<PoolRt>,
    server: usize,
    timeout: Option<Duration>,
    /// Replies are RESP rather than memcached text.
    redis: bool,
    in_flight: VecDeque<InFlight>,
    /// How many requests at the back of `in_flight` are not fully written yet.
    unwritten: usize,
    queued_bytes: u64,
    written_bytes: u64,
}

impl Session {
    fn new(pool: Weak<PoolRt>, server: usize, timeout: Option<Duration>, redis: bool) -> Self {
        Session {
            pool,
            server,
            timeout,
            redis,
            in_flight: VecDeque::new(),
            unwritten: 0,
            queued_bytes: 0,
            written_bytes: 0,
        }
    }

    /// Fails a job that never reached the wire.
    fn fail(&self, job: Job, error: BackendError) {
        if let Some(p) = self.pool.upgrade() {
            let stats = p.stats(self.server);
            stats.sub(st::IN_QUEUE, 1);
            stats.sub(st::IN_QUEUE_BYTES, job.bytes.len() as u64);
        }
        if let Some(tx) = job.reply {
            tx.send(Err(error));
        }
    }

    fn fail_in_flight(&mut self, error: BackendError) {
        let pool = self.pool.upgrade();
        for entry in self.in_flight.drain(..) {
            if let Some(p) = &pool {
                let stats = p.stats(self.server);
                stats.sub(st::OUT_QUEUE, 1);
                stats.sub(st::OUT_QUEUE_BYTES, entry.len);
            }
            if let Some(tx) = entry.reply {
                tx.send(Err(error.clone()));
            }
        }
        self.unwritten = 0;
    }

    /// Moves a job from the queue onto this connection.
    fn enqueue(&mut self, job: Job, wbuf: &mut BytesMut) {
        let len = job.bytes.len() as u64;
        wbuf.extend_from_slice(&job.bytes);
        self.queued_bytes += len;
        if let Some(p) = self.pool.upgrade() {
            let stats = p.stats(self.server);
            stats.sub(st::IN_QUEUE, 1);
            stats.sub(st::IN_QUEUE_BYTES, len);
            stats.add(st::OUT_QUEUE, 1);
            stats.add(st::OUT_QUEUE_BYTES, len);
        }
        self.in_flight.push_back(InFlight {
            reply: job.reply,
            len,
            end: self.queued_bytes,
            written_at: None,
        });
        self.unwritten += 1;
    }

    fn wrote(&mut self, n: usize) {
        self.written_bytes += n as u64;
        let now = Instant::now();
        while self.unwritten > 0 {
            let i = self.in_flight.len() - self.unwritten;
            let entry = &mut self.in_flight[i];
            if entry.end > self.written_bytes {
                break;
            }
            entry.written_at = Some(now);
            self.unwritten -= 1;
        }
    }

    /// When the oldest written request times out.
    fn deadline(&self) -> Option<Instant> {
        let timeout = self.timeout?;
        let written_at = self.in_flight.front()?.written_at?;
        Some(written_at + timeout)
    }

    /// Serves the connection until it fails (`Some(error)`) or the pool goes away.
    async fn serve<R, W>(
        &mut self,
        mut reader: R,
        mut writer: W,
        first: Option<Job>,
        jobs: &JobQueue,
    ) -> Option<BackendError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
        let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
        if let Some(first) = first {
            self.enqueue(first, &mut wbuf);
        }
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let sleep = tokio::time::sleep_until(far);
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;

        loop {
            let deadline = self.deadline();
            if deadline != armed {
                sleep.as_mut().reset(deadline.unwrap_or(far));
                armed = deadline;
            }
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                rbuf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                read = reader.read_buf(&mut rbuf) => {
                    match read {
                        Ok(0) => return Some(BackendError::Closed),
                        Err(e) => return Some(BackendError::from_io(&e)),
                        Ok(_) => {}
                    }
                    if let Err(e) = self.take_replies(&mut rbuf) {
                        return Some(e);
                    }
                    if rbuf.is_empty() && rbuf.capacity() > SHRINK_ABOVE {
                        rbuf = BytesMut::with_capacity(READ_CHUNK);
                    }
                }
                written = writer.write(&wbuf), if !wbuf.is_empty() => {
                    match written {
                        Ok(0) => return Some(BackendError::Closed),
                        Ok(n) => {
                            wbuf.advance(n);
                            self.wrote(n);
                        }
                        Err(e) => return Some(BackendError::from_io(&e)),
                    }
                }
                job = jobs.pop(), if self.in_flight.len() < MAX_IN_FLIGHT => {
                    let job = job?;
                    self.enqueue(job, &mut wbuf);
                    // Let the other clients of this event-loop round queue their
                    // requests too, then send them all in one write. (tokio wakes a
                    // yielded task only after it has polled for I/O again.)
                    tokio::task::yield_now().await;
                    while self.in_flight.len() < MAX_IN_FLIGHT {
                        match jobs.try_pop() {
                            Some(job) => self.enqueue(job, &mut wbuf),
                            None => break,
                        }
                    }
                }
                () = &mut sleep, if armed.is_some() => return Some(BackendError::TimedOut),
            }
            if wbuf.is_empty() && wbuf.capacity() > SHRINK_ABOVE {
                wbuf = BytesMut::with_capacity(READ_CHUNK);
            }
        }
    }

    fn take_replies(&mut self, rbuf: &mut BytesMut) -> Result<(), BackendError> {
        let pool = self.pool.upgrade();
        let mut any = false;
        loop {
            let parsed = if self.redis {
                resp::parse_reply(rbuf)
            } else {
                memcache::parse_reply(rbuf)
            };
            match parsed {
                ReplyParse::Incomplete => break,
                ReplyParse::Invalid => return Err(BackendError::Protocol),
                ReplyParse::Complete(n) => {
                    let Some(entry) = self.in_flight.pop_front() else {
                        return Err(BackendError::Protocol);
                    };
                    if entry.written_at.is_none() {
                        // A reply to a request not yet fully written: out of step.
                        return Err(BackendError::Protocol);
                    }
                    let reply = rbuf.split_to(n).freeze();
                    if let Some(p) = &pool {
                        let stats = p.stats(self.server);
                        stats.add(st::RESPONSES, 1);
                        stats.add(st::RESPONSE_BYTES, n as u64);
                        stats.sub(st::OUT_QUEUE, 1);
                        stats.sub(st::OUT_QUEUE_BYTES, entry.len);
                    }
                    if let Some(tx) = entry.reply {
                        tx.send(Ok(reply));
                    }
                    any = true;
                }
            }
        }
        if any {
            if let Some(p) = &pool {
                p.server_ok(self.server);
            }
        }
        Ok(())
    }
}
