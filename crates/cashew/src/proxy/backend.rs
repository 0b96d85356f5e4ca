//! Connections to one server: requests are queued from any client of the worker,
//! written in batches, and replies are matched to requests in order. A connection
//! task knows its server through a [`ServerLink`], never through the pool, so a
//! reload can replace the pool while the connection finishes what it carries.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use cashew_config::{Pool, Server, ServerAddress};
use cashew_protocol::memcache::coalesce::{self, Retrieval};
use cashew_protocol::{memcache, resp, ReplyParse, Resume};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::handoff::{BackendError, Job, JobQueue, ReplyTx};
use super::tasks::TaskCount;
use crate::log_at;
use crate::net::{ConnectError, Stream};
use crate::state::counters::{PoolCounter, PoolCounters, ServerCounter, ServerCounters};
use crate::state::health::{EjectPolicy, Failure, ServerHealth};

/// Everything a server connection task needs, fixed for its life.
pub struct ServerLink {
    pub pool_name: String,
    pub server_name: String,
    pub settings: LinkSettings,
    /// This worker's counters for the server and its pool.
    pub counters: Arc<ServerCounters>,
    pub pool_counters: Arc<PoolCounters>,
    pub health: Arc<ServerHealth>,
}

/// How to reach and talk to a server. Connections whose settings are unchanged by a
/// reload are kept, so a client's requests to a server stay on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSettings {
    pub address: ServerAddress,
    pub timeout: Option<Duration>,
    pub keepalive: bool,
    pub redis: bool,
    /// A redis connection opened in RESP3 (`HELLO 3`), for RESP3 clients.
    pub resp3: bool,
    /// What a new connection sends first (redis `AUTH`, `SELECT`; then a request
    /// for the server's version), and how many replies that gets.
    pub setup: Vec<u8>,
    pub setup_replies: usize,
    pub policy: EjectPolicy,
    pub connections: u32,
    pub preconnect: bool,
    /// Requests slower than this are kept in the pool's slow log.
    pub slowlog: Option<Duration>,
    /// Consecutive single-key memcached retrievals go out as one (see `Session::join`).
    pub coalesce_gets: bool,
}

impl LinkSettings {
    pub fn new(pool: &Pool, server: &Server, resp3: bool) -> LinkSettings {
        let (setup, setup_replies) = setup_requests(pool, resp3);
        LinkSettings {
            address: server.address.clone(),
            timeout: pool
                .timeout_ms
                .filter(|&t| t > 0)
                .map(Duration::from_millis),
            keepalive: pool.tcpkeepalive,
            redis: pool.redis,
            resp3,
            setup,
            setup_replies,
            policy: EjectPolicy::of(pool),
            connections: pool.server_connections.max(1),
            preconnect: pool.preconnect,
            slowlog: (pool.slowlog_ms > 0).then(|| Duration::from_millis(pool.slowlog_ms)),
            coalesce_gets: pool.coalesce_gets && !pool.redis,
        }
    }
}

impl ServerLink {
    fn ok(&self) {
        if self.health.ok() {
            log_at!(
                crate::log::NOTICE,
                "pool '{}': server '{}' back in service",
                self.pool_name,
                self.server_name
            );
        }
    }

    /// A connection failed; `seen` is its record of failure events (see
    /// [`ServerHealth::failed`]).
    fn failed(&self, error: BackendError, seen: &mut u64) {
        let counter = match error {
            BackendError::TimedOut => ServerCounter::ServerTimedout,
            BackendError::Closed => ServerCounter::ServerEof,
            _ => ServerCounter::ServerErr,
        };
        self.counters.add(counter, 1);
        let (pool, name) = (&self.pool_name, &self.server_name);
        let policy = self.settings.policy;
        match self.health.failed(policy, seen) {
            Failure::SameEvent => {}
            Failure::Counted => log_at!(
                crate::log::NOTICE,
                "pool '{pool}': server '{name}' failed: {}",
                error.reason()
            ),
            Failure::Ejected => {
                self.pool_counters.add(PoolCounter::ServerEjects, 1);
                let until = match policy.health_checked {
                    true => "until a health check succeeds".to_string(),
                    false => {
                        let back = std::time::SystemTime::now()
                            + Duration::from_millis(policy.retry_timeout_ms);
                        format!(
                            "for {} ms, until {}",
                            policy.retry_timeout_ms,
                            crate::log::format_time(back)
                        )
                    }
                };
                log_at!(
                    crate::log::NOTICE,
                    "pool '{pool}': server '{name}' failed: {}; ejected {until}",
                    error.reason()
                );
            }
        }
    }
}

/// A worker's connections to one server. Dropped, it closes their queues: each
/// connection finishes the requests it holds, then ends.
pub struct ServerConns {
    pub link: Rc<ServerLink>,
    queues: Vec<Rc<JobQueue>>,
}

impl ServerConns {
    /// Starts the connection tasks on the current `LocalSet`, counted in `tasks`.
    pub fn start(link: Rc<ServerLink>, tasks: &Rc<TaskCount>) -> ServerConns {
        let queues = (0..link.settings.connections)
            .map(|_| {
                let queue = Rc::new(JobQueue::default());
                let preconnect = link.settings.preconnect;
                tasks.spawn(run(link.clone(), queue.clone(), preconnect));
                queue
            })
            .collect();
        ServerConns { link, queues }
    }

    /// The connection a client uses: always the same one for the same client.
    #[inline]
    pub fn queue(&self, client: usize) -> &JobQueue {
        &self.queues[client % self.queues.len()]
    }

    /// Every connection's queue (the client-path harness answers them itself).
    pub fn queues(&self) -> &[Rc<JobQueue>] {
        &self.queues
    }
}

impl Drop for ServerConns {
    fn drop(&mut self) {
        for queue in &self.queues {
            queue.close();
        }
    }
}

/// Requests allowed on the wire at once per connection; more wait in the queue.
const MAX_IN_FLIGHT: usize = 4096;
/// Bytes copied into the write buffer ahead of the socket; more wait in the queue
/// (where they are shared with the client's buffer, not copied).
const WRITE_AHEAD: usize = 256 * 1024;
/// A read buffer this large is given back once empty.
const SHRINK_ABOVE: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
/// The most room made at once for a reply announced as large.
const PRESIZE_LIMIT: usize = 16 << 20;

/// Runs one server connection until its queue is closed and empty: connects when
/// there is work (at once with `preconnect`), serves until an error, fails what was
/// in flight, and reconnects on the next request.
pub async fn run(link: Rc<ServerLink>, jobs: Rc<JobQueue>, preconnect: bool) {
    let mut connect_now = preconnect;
    let mut failure_event = 0;
    let settings = &link.settings;
    loop {
        let first = if std::mem::take(&mut connect_now) {
            None
        } else {
            match jobs.pop().await {
                Some(job) => Some(job),
                None => return,
            }
        };
        let opening = open(&link);
        let connected = match settings.timeout {
            Some(t) => tokio::time::timeout(t, opening)
                .await
                .unwrap_or(Err(BackendError::TimedOut)),
            None => opening.await,
        };
        let mut session = Session::new(link.clone(), jobs.clone());
        match connected {
            Err(error) => {
                if let Some(first) = first {
                    session.fail(first, error.clone());
                }
                // Everything already queued for this server fails the same way.
                while let Some(job) = jobs.try_pop() {
                    session.fail(job, error.clone());
                }
                link.failed(error, &mut failure_event);
            }
            Ok(stream) => {
                link.counters.add(ServerCounter::ServerConnections, 1);
                let (r, w) = stream.into_split();
                let error = session.serve(r, w, first, &jobs).await;
                link.counters.sub(ServerCounter::ServerConnections, 1);
                match error {
                    Some(error) => {
                        session.fail_in_flight(error.clone());
                        link.failed(error, &mut failure_event);
                    }
                    // Closed and everything answered.
                    None => return,
                }
            }
        }
    }
}

/// Connects and runs the setup requests; `Setup` when the server refuses them.
async fn open(link: &ServerLink) -> Result<Stream, BackendError> {
    open_with(&link.settings, &link.health).await
}

async fn open_with(settings: &LinkSettings, health: &ServerHealth) -> Result<Stream, BackendError> {
    let mut stream = Stream::connect(&settings.address, settings.keepalive)
        .await
        .map_err(|e| match e {
            ConnectError::Resolve(why) => BackendError::Resolve(why.into()),
            ConnectError::Io(e) => BackendError::from_io(&e),
        })?;
    let version = handshake(&mut stream, settings).await?;
    if let Some(version) = version {
        health.set_version(&version);
    }
    Ok(stream)
}

/// A health probe's own connection to a server: opened with the usual setup (whose
/// version request is the first probe), then `version` (memcached) or `PING`
/// (redis) at each probe; a failed probe drops the connection.
pub struct Probe {
    settings: LinkSettings,
    health: Arc<ServerHealth>,
    stream: Option<Stream>,
}

impl Probe {
    pub fn new(pool: &Pool, server: &Server, health: Arc<ServerHealth>) -> Probe {
        Probe {
            settings: LinkSettings::new(pool, server, false),
            health,
            stream: None,
        }
    }

    /// One probe, within `timeout`.
    pub async fn once(&mut self, timeout: Duration) -> Result<(), BackendError> {
        let result = tokio::time::timeout(timeout, self.ask())
            .await
            .unwrap_or(Err(BackendError::TimedOut));
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn ask(&mut self) -> Result<(), BackendError> {
        let Some(stream) = &mut self.stream else {
            self.stream = Some(open_with(&self.settings, &self.health).await?);
            return Ok(());
        };
        probe_request(stream, self.settings.redis).await
    }
}

async fn probe_request<S>(stream: &mut S, redis: bool) -> Result<(), BackendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_error = |e: io::Error| BackendError::from_io(&e);
    let request: &[u8] = if redis {
        b"*1\r\n$4\r\nPING\r\n"
    } else {
        b"version\r\n"
    };
    stream.write_all(request).await.map_err(io_error)?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        let parsed = if redis {
            resp::parse_reply(&buf)
        } else {
            memcache::parse_reply(&buf)
        };
        match parsed {
            ReplyParse::Complete(_) if redis && buf.starts_with(b"-") => {
                // -LOADING, -MASTERDOWN...: the server cannot serve.
                return Err(BackendError::Setup(buf.freeze()));
            }
            ReplyParse::Complete(_) if !redis && !buf.starts_with(b"VERSION ") => {
                return Err(BackendError::Protocol);
            }
            ReplyParse::Complete(_) => return Ok(()),
            ReplyParse::Invalid => return Err(BackendError::Protocol),
            ReplyParse::Incomplete => {
                if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                    return Err(BackendError::Closed);
                }
            }
        }
    }
}

/// The first requests of a new connection and how many replies they get: for
/// redis `HELLO 3` (RESP3 connections, with the password when there is one), `AUTH`
/// and `SELECT` when configured, then the server's version (`INFO server` for
/// redis, `version` for memcached), which clients asking for it are given.
fn setup_requests(pool: &Pool, resp3: bool) -> (Vec<u8>, usize) {
    use cashew_protocol::resp::{array_header, bulk};
    let mut setup = Vec::new();
    if !pool.redis {
        setup.extend_from_slice(b"version\r\n");
        return (setup, 1);
    }
    let mut replies = 0;
    if resp3 {
        let auth = pool.redis_auth.as_ref().map(|s| s.expose());
        array_header(&mut setup, if auth.is_some() { 5 } else { 2 });
        bulk(&mut setup, b"HELLO");
        bulk(&mut setup, b"3");
        if let Some(password) = auth {
            bulk(&mut setup, b"AUTH");
            bulk(&mut setup, b"default");
            bulk(&mut setup, password.as_bytes());
        }
        replies += 1;
    } else if let Some(password) = &pool.redis_auth {
        array_header(&mut setup, 2);
        bulk(&mut setup, b"AUTH");
        bulk(&mut setup, password.expose().as_bytes());
        replies += 1;
    }
    if pool.redis_db != 0 {
        array_header(&mut setup, 2);
        bulk(&mut setup, b"SELECT");
        bulk(&mut setup, pool.redis_db.to_string().as_bytes());
        replies += 1;
    }
    array_header(&mut setup, 2);
    bulk(&mut setup, b"INFO");
    bulk(&mut setup, b"server");
    (setup, replies + 1)
}

/// The version in a server's answer to the version request, if it gave one.
fn version_of(reply: &[u8], redis: bool) -> Option<&str> {
    let text = std::str::from_utf8(reply).ok()?;
    if redis {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))?;
        Some(line.trim())
    } else {
        text.strip_prefix("VERSION ").map(str::trim_end)
    }
}

/// Sends the setup requests and reads their replies; the last one carries the
/// server's version. A refused `AUTH` or `SELECT` fails the connection; a refused
/// version request only leaves the version unknown.
async fn handshake<S>(
    stream: &mut S,
    settings: &LinkSettings,
) -> Result<Option<String>, BackendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_error = |e: io::Error| BackendError::from_io(&e);
    stream.write_all(&settings.setup).await.map_err(io_error)?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut seen = 0;
    loop {
        let parsed = if settings.redis {
            resp::parse_reply(&buf)
        } else {
            memcache::parse_reply(&buf)
        };
        match parsed {
            ReplyParse::Incomplete => {
                if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                    return Err(BackendError::Closed);
                }
            }
            ReplyParse::Invalid => return Err(BackendError::Protocol),
            ReplyParse::Complete(n) => {
                let reply = buf.split_to(n).freeze();
                seen += 1;
                if seen == settings.setup_replies {
                    return Ok(version_of(&reply, settings.redis).map(str::to_string));
                }
                if reply.starts_with(b"-") {
                    return Err(BackendError::Setup(reply));
                }
            }
        }
    }
}

/// Most single-key retrievals joined into one request.
const MAX_JOINED: usize = 64;
/// Splitting a joined reply copies its values once; a value this large costs more to
/// copy than joining saves (one server write and TCP segment, a few microseconds)...
const JOIN_VALUE_LIMIT: usize = 8 * 1024;
/// ...so after one, this many retrievals go out unjoined before joining is tried again.
const JOIN_PAUSE: u32 = 64;

struct InFlight {
    reply: Option<ReplyTx>,
    /// Its reply runs up to and including a memcached `MN` (see `Job::until_noop`).
    until_noop: bool,
    /// A single-key `get` or `gets`: later ones of the same command may join it
    /// while it is still wholly in the write buffer.
    joinable: Option<Retrieval>,
    /// When others joined it, every joined request (`reply` is then `None`).
    joined: Joined,
    /// Bytes of the read buffer already known to belong to this reply.
    scanned: usize,
    len: u64,
    /// Offset in the connection's byte stream where this request ends.
    end: u64,
    /// When its last byte was written; `None` while still in the write buffer.
    written_at: Option<Instant>,
}

/// The requests joined into one retrieval, in order. Their keys are copied here, so
/// that no client's read buffer is held until the reply.
#[derive(Default)]
struct Joined {
    /// The keys, one after another.
    keys: Vec<u8>,
    /// Where each request's key ends in `keys`, and its reply channel.
    requests: Vec<(usize, Cell<Option<ReplyTx>>)>,
}

impl Joined {
    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.requests.iter().map(move |&(end, _)| {
            let key = &self.keys[start..end];
            start = end;
            key
        })
    }
}

struct Session {
    link: Rc<ServerLink>,
    /// How far the reply at the front of the read buffer is known complete.
    resume: Resume,
    /// Where its requests come from; told as their bytes leave.
    jobs: Rc<JobQueue>,
    in_flight: VecDeque<InFlight>,
    /// With a slow log, the requests of `in_flight` (kept apart so that a pool
    /// without one does not carry them).
    requests: VecDeque<Bytes>,
    /// How many requests at the back of `in_flight` are not fully written yet.
    unwritten: usize,
    queued_bytes: u64,
    written_bytes: u64,
    /// Retrievals still to send unjoined (see `JOIN_PAUSE`).
    join_pause: u32,
}

impl Session {
    fn new(link: Rc<ServerLink>, jobs: Rc<JobQueue>) -> Self {
        Session {
            link,
            resume: Resume::default(),
            jobs,
            in_flight: VecDeque::new(),
            requests: VecDeque::new(),
            unwritten: 0,
            queued_bytes: 0,
            written_bytes: 0,
            join_pause: 0,
        }
    }

    /// Fails a job that never reached the wire.
    fn fail(&self, job: Job, error: BackendError) {
        let stats = &self.link.counters;
        stats.sub(ServerCounter::InQueue, 1);
        stats.sub(ServerCounter::InQueueBytes, job.bytes.len() as u64);
        self.jobs.sent(job.bytes.len());
        if let Some(tx) = job.reply {
            tx.send(Err(error));
        }
    }

    fn fail_in_flight(&mut self, error: BackendError) {
        let stats = &self.link.counters;
        for entry in self.in_flight.drain(..) {
            stats.sub(ServerCounter::OutQueue, 1);
            stats.sub(ServerCounter::OutQueueBytes, entry.len);
            let joined = entry
                .joined
                .requests
                .into_iter()
                .map(|(_, tx)| tx.into_inner());
            for tx in std::iter::once(entry.reply).chain(joined).flatten() {
                tx.send(Err(error.clone()));
            }
        }
        self.requests.clear();
        self.unwritten = 0;
        self.jobs
            .sent((self.queued_bytes - self.written_bytes) as usize);
        self.written_bytes = self.queued_bytes;
    }

    /// Moves a job from the queue onto this connection.
    fn enqueue(&mut self, job: Job, wbuf: &mut BytesMut) {
        let mut joinable =
            match self.link.settings.coalesce_gets && !job.until_noop && job.reply.is_some() {
                true => coalesce::single_retrieval(&job.bytes).map(|(command, _)| command),
                false => None,
            };
        if joinable.is_some() && self.join_pause > 0 {
            self.join_pause -= 1;
            joinable = None;
        }
        let job = match joinable {
            Some(command) => match self.join(command, job, wbuf) {
                Ok(()) => return,
                Err(job) => job,
            },
            None => job,
        };
        let len = job.bytes.len() as u64;
        wbuf.extend_from_slice(&job.bytes);
        self.queued_bytes += len;
        let stats = &self.link.counters;
        stats.sub(ServerCounter::InQueue, 1);
        stats.sub(ServerCounter::InQueueBytes, len);
        stats.add(ServerCounter::OutQueue, 1);
        stats.add(ServerCounter::OutQueueBytes, len);
        if self.link.settings.slowlog.is_some() {
            self.requests.push_back(job.bytes);
        }
        self.in_flight.push_back(InFlight {
            reply: job.reply,
            until_noop: job.until_noop,
            joinable,
            joined: Joined::default(),
            scanned: 0,
            len,
            end: self.queued_bytes,
            written_at: None,
        });
        self.unwritten += 1;
    }

    /// Joins a single-key retrieval to the one before it when that one has the same
    /// command and none of it is written yet: `get a\r\n` then `get b\r\n` go out
    /// as `get a b\r\n`, which memcached answers in one write rather than two.
    /// Gives the job back when it cannot join.
    fn join(&mut self, command: Retrieval, job: Job, wbuf: &mut BytesMut) -> Result<(), Job> {
        let unwritten = self.unwritten > 0;
        let written_bytes = self.written_bytes;
        let Some(last) = self.in_flight.back_mut() else {
            return Err(job);
        };
        let fits = last.joinable == Some(command) && last.joined.requests.len() < MAX_JOINED;
        if !(fits && unwritten && last.end - last.len >= written_bytes) {
            return Err(job);
        }
        let prefix = command.prefix().len();
        let joined = &mut last.joined;
        if joined.requests.is_empty() {
            // The first request is the end of the write buffer.
            let first = &wbuf[wbuf.len() - last.len as usize..];
            let key = &first[prefix..first.len() - 2];
            joined.keys.reserve(16 * (key.len() + 8));
            joined.keys.extend_from_slice(key);
            joined.requests.reserve(16);
            joined
                .requests
                .push((key.len(), Cell::new(last.reply.take())));
        }
        let key = &job.bytes[prefix..job.bytes.len() - 2];
        joined.keys.extend_from_slice(key);
        joined
            .requests
            .push((joined.keys.len(), Cell::new(job.reply)));
        // The last request is the end of the write buffer: its line grows by the key.
        wbuf.truncate(wbuf.len() - 2);
        wbuf.extend_from_slice(b" ");
        wbuf.extend_from_slice(key);
        wbuf.extend_from_slice(b"\r\n");
        let grown = key.len() as u64 + 1;
        last.len += grown;
        self.queued_bytes += grown;
        last.end = self.queued_bytes;
        let stats = &self.link.counters;
        stats.sub(ServerCounter::InQueue, 1);
        stats.sub(ServerCounter::InQueueBytes, job.bytes.len() as u64);
        stats.add(ServerCounter::OutQueueBytes, grown);
        // The queue counts the job's bytes until they are written; these never will be.
        self.jobs.sent(job.bytes.len() - grown as usize);
        Ok(())
    }

    fn wrote(&mut self, n: usize) {
        self.written_bytes += n as u64;
        self.jobs.sent(n);
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
        let timeout = self.link.settings.timeout?;
        let written_at = self.in_flight.front()?.written_at?;
        Some(written_at + timeout)
    }

    /// Serves the connection until it fails (`Some(error)`), or until its queue is
    /// closed and every request taken from it is answered (`None`).
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
        let mut closed = false;

        loop {
            if closed && self.in_flight.is_empty() {
                return None;
            }
            let deadline = self.deadline();
            if deadline != armed {
                sleep.as_mut().reset(deadline.unwrap_or(far));
                armed = deadline;
            }
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                // A large value is read into room for all of it at once: growing the
                // buffer a chunk at a time would copy what had arrived at each step.
                // (Up to a bound: the length is the server's word.) A reply whose size
                // the first line does not tell (several large values) at least
                // doubles the room, so it is copied a bounded number of times.
                let whole = expected_reply_len(&rbuf, self.link.settings.redis).min(PRESIZE_LIMIT);
                rbuf.reserve(
                    whole
                        .saturating_sub(rbuf.len())
                        .max(READ_CHUNK)
                        .max(rbuf.len()),
                );
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
                job = jobs.pop(), if !closed && self.in_flight.len() < MAX_IN_FLIGHT && wbuf.len() < WRITE_AHEAD => {
                    let Some(job) = job else {
                        closed = true;
                        continue;
                    };
                    self.enqueue(job, &mut wbuf);
                    // Let the other clients of this event-loop round queue their
                    // requests too, then send them all in one write. (tokio wakes a
                    // yielded task only after it has polled for I/O again.)
                    tokio::task::yield_now().await;
                    while self.in_flight.len() < MAX_IN_FLIGHT && wbuf.len() < WRITE_AHEAD {
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
        let stats = &self.link.counters;
        let redis = self.link.settings.redis;
        // The reply at the front is parsed on from where the last read left it.
        let resume = &mut self.resume;
        let mut parse = |buf: &[u8]| {
            if redis {
                resp::parse_reply_resumable(buf, resume)
            } else {
                memcache::parse_reply_resumable(buf, resume)
            }
        };
        let mut any = false;
        let mut parsed_at = None;
        let mut timed: Option<(Instant, u64)> = None;
        loop {
            let Some(front) = self.in_flight.front_mut() else {
                // Bytes with no request waiting for them: out of step.
                if parse(rbuf) != ReplyParse::Incomplete {
                    return Err(BackendError::Protocol);
                }
                break;
            };
            if redis && rbuf.first() == Some(&b'>') {
                // A RESP3 push answers no request (cashew refuses the commands
                // that ask for them): read past it.
                match parse(rbuf) {
                    ReplyParse::Complete(n) => {
                        rbuf.advance(n);
                        continue;
                    }
                    ReplyParse::Incomplete => break,
                    ReplyParse::Invalid => return Err(BackendError::Protocol),
                }
            }
            let complete = if front.until_noop {
                loop {
                    match parse(&rbuf[front.scanned..]) {
                        ReplyParse::Incomplete => break None,
                        ReplyParse::Invalid => return Err(BackendError::Protocol),
                        ReplyParse::Complete(n) => {
                            let start = front.scanned;
                            front.scanned += n;
                            if &rbuf[start..front.scanned] == b"MN\r\n" {
                                break Some(front.scanned);
                            }
                        }
                    }
                }
            } else {
                match parse(rbuf) {
                    ReplyParse::Incomplete => None,
                    ReplyParse::Invalid => return Err(BackendError::Protocol),
                    ReplyParse::Complete(n) => Some(n),
                }
            };
            let Some(n) = complete else { break };
            let entry = self.in_flight.pop_front().expect("a request is waiting");
            let Some(written_at) = entry.written_at else {
                // A reply to a request not yet fully written: out of step.
                return Err(BackendError::Protocol);
            };
            let requests = entry.joined.requests.len().max(1) as u64;
            // One clock reading for all the replies of this read.
            let now = *parsed_at.get_or_insert_with(Instant::now);
            // Requests written together are timed together.
            match &mut timed {
                Some((at, n)) if *at == written_at => *n += requests,
                _ => {
                    if let Some((at, n)) = timed.replace((written_at, requests)) {
                        stats.latency.record_n(now.saturating_duration_since(at), n);
                    }
                }
            }
            if let Some(limit) = self.link.settings.slowlog {
                let request = self.requests.pop_front().unwrap_or_default();
                let latency = now.saturating_duration_since(written_at);
                if latency > limit {
                    let link = &self.link;
                    link.pool_counters
                        .slowlog
                        .record(&link.server_name, &request, latency);
                }
            }
            let reply = rbuf.split_to(n);
            stats.add(ServerCounter::Responses, requests);
            stats.add(ServerCounter::ResponseBytes, n as u64);
            stats.sub(ServerCounter::OutQueue, 1);
            stats.sub(ServerCounter::OutQueueBytes, entry.len);
            if entry.joined.requests.is_empty() {
                if let Some(tx) = entry.reply {
                    tx.send(Ok(reply.freeze()));
                }
            } else if split_joined_reply(reply, &entry.joined) > JOIN_VALUE_LIMIT {
                self.join_pause = JOIN_PAUSE;
            }
            any = true;
        }
        if let (Some((at, n)), Some(now)) = (timed, parsed_at) {
            stats.latency.record_n(now.saturating_duration_since(at), n);
        }
        if any {
            self.link.ok();
        }
        Ok(())
    }
}

/// Gives each request joined into one retrieval its own reply: its key's `VALUE`
/// block, if any, and `END` (all in one buffer); or the whole reply if it is an error.
/// Returns the length of the largest block.
fn split_joined_reply(reply: BytesMut, joined: &Joined) -> usize {
    let requests = &joined.requests;
    let mut out = BytesMut::with_capacity(reply.len() + requests.len() * b"END\r\n".len());
    let (mut next, mut largest) = (0, 0);
    let split = coalesce::split_reply(&reply, joined.keys(), |block| {
        let block = block.unwrap_or_default();
        largest = largest.max(block.len());
        out.extend_from_slice(block);
        out.extend_from_slice(b"END\r\n");
        let one = out.split().freeze();
        if let Some(tx) = requests[next].1.take() {
            tx.send(Ok(one));
        }
        next += 1;
    });
    if !split {
        let reply = reply.freeze();
        for tx in requests.iter().filter_map(|(_, tx)| tx.take()) {
            tx.send(Ok(reply.clone()));
        }
    }
    largest
}

/// How long the reply at the front of `buf` will be, when its first line tells (a
/// memcached `VALUE` or `VA` line, a RESP bulk string); 0 when it does not.
fn expected_reply_len(buf: &[u8], redis: bool) -> usize {
    let Some(nl) = memchr::memchr(b'\n', &buf[..buf.len().min(512)]) else {
        return 0;
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let number = |t: Option<&[u8]>| {
        t.and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| t.parse::<usize>().ok())
    };
    let data = if redis {
        line.strip_prefix(b"$").and_then(|n| number(Some(n)))
    } else if line.starts_with(b"VALUE ") {
        number(line.split(|&b| b == b' ').nth(3))
    } else if line.starts_with(b"VA ") {
        number(line.split(|&b| b == b' ').nth(1))
    } else {
        None
    };
    // The line, the data and its line ending, and `END` after a `VALUE` block.
    data.map_or(0, |len| (nl + 1).saturating_add(len).saturating_add(7))
}

#[cfg(test)]
mod tests {
    use super::{expected_reply_len, version_of};

    #[test]
    fn a_large_reply_is_sized_from_its_first_line() {
        let value = b"VALUE k 0 100000\r\nxx";
        assert_eq!(expected_reply_len(value, false), 18 + 100_000 + 7);
        assert_eq!(expected_reply_len(b"VA 5000 f1\r\n", false), 12 + 5000 + 7);
        assert_eq!(expected_reply_len(b"$70000\r\nab", true), 8 + 70_000 + 7);
        assert_eq!(expected_reply_len(b"END\r\n", false), 0);
        assert_eq!(
            expected_reply_len(b"VALUE k 0 1", false),
            0,
            "line not complete"
        );
        assert_eq!(expected_reply_len(b"$-1\r\n", true), 0);
    }

    #[test]
    fn versions_are_read_from_both_protocols() {
        assert_eq!(version_of(b"VERSION 1.6.18\r\n", false), Some("1.6.18"));
        assert_eq!(version_of(b"ERROR\r\n", false), None);
        let info = b"$52\r\n# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n";
        assert_eq!(version_of(info, true), Some("7.0.15"));
        let resp3 = b"=56\r\ntxt:# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\r\n";
        assert_eq!(version_of(resp3, true), Some("7.0.15"));
        assert_eq!(version_of(b"-NOPERM no\r\n", true), None);
    }
}
