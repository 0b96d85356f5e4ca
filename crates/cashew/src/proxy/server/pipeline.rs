//! One server connection's requests in flight, without any I/O: jobs are taken
//! into a write buffer (consecutive single-key memcached gets joined into one
//! multi-key get), told when their bytes leave, and matched in order to the replies
//! parsed from the read buffer (a joined get's reply split back into one reply per
//! request). The connection task drives it with sockets; the client-path harness
//! and its fuzz target drive it with bytes of their own.

use std::cell::Cell;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use cashew_protocol::memcache::coalesce::{self, Retrieval};
use cashew_protocol::server::ServerCodec;
use cashew_protocol::{ReplyParse, Resume};

use super::link::ServerLink;
use crate::proxy::handoff::{BackendError, Job, JobQueue, ReplyTx};
use crate::state::counters::ServerCounter;

/// Requests allowed on the wire at once per connection; more wait in the queue.
pub(crate) const MAX_IN_FLIGHT: usize = 4096;
/// Most single-key retrievals joined into one request.
const MAX_JOINED: usize = 64;
/// Splitting a joined reply copies its values once; a value this large costs more to
/// copy than joining saves (one server write and TCP segment, a few microseconds)...
const JOIN_VALUE_LIMIT: usize = 8 * 1024;
/// ...so after one, this many retrievals go out unjoined before joining is tried again.
const JOIN_PAUSE: u32 = 64;
/// Room made at once for the replies of joined requests.
const SPLIT_ROOM: usize = 32 * 1024;
/// A `Joined` whose keys took more room than this is not kept for reuse.
const SPARE_KEYS_LIMIT: usize = 16 * 1024;
/// The reply that ends a request sent with a memcached `mn` after it.
const NOOP_REPLY: &[u8] = b"MN\r\n";

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

pub(crate) struct Pipeline<C> {
    link: Rc<ServerLink>,
    /// Where its requests come from; told as their bytes leave.
    jobs: Rc<JobQueue>,
    /// How far the reply at the front of the read buffer is known complete.
    resume: Resume,
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
    /// Emptied `Joined`s, kept for the next joined retrievals: no allocation per join.
    spare: Vec<Joined>,
    /// Where the replies of joined requests are built; a retrieval's replies are
    /// split off together, so the room is reused until it runs out.
    split_out: BytesMut,
    /// Where each of those replies ends in `split_out`.
    split_ends: Vec<usize>,
    codec: PhantomData<C>,
}

impl<C: ServerCodec> Pipeline<C> {
    pub(crate) fn new(link: Rc<ServerLink>, jobs: Rc<JobQueue>) -> Self {
        Pipeline {
            link,
            jobs,
            resume: Resume::default(),
            in_flight: VecDeque::new(),
            requests: VecDeque::new(),
            unwritten: 0,
            queued_bytes: 0,
            written_bytes: 0,
            join_pause: 0,
            spare: Vec::new(),
            split_out: BytesMut::new(),
            split_ends: Vec::new(),
            codec: PhantomData,
        }
    }

    /// No request is waiting for its reply.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// More requests may be taken.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight.len() < MAX_IN_FLIGHT
    }

    /// Fails a job that never reached the wire.
    pub(crate) fn fail(&self, job: Job, error: BackendError) {
        let stats = &self.link.counters;
        stats.sub(ServerCounter::InQueue, 1);
        stats.sub(ServerCounter::InQueueBytes, job.bytes.len() as u64);
        self.jobs.sent(job.bytes.len());
        if let Some(tx) = job.reply {
            tx.send(Err(error));
        }
    }

    /// Fails every request taken and not answered (the connection is gone).
    pub(crate) fn fail_in_flight(&mut self, error: BackendError) {
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
        self.resume.reset();
    }

    /// Moves a job from the queue onto this connection: its bytes to the end of
    /// `wbuf` (or joined to the retrieval there).
    pub(crate) fn enqueue(&mut self, job: Job, wbuf: &mut BytesMut) {
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
        if last.joined.requests.is_empty() {
            if let Some(spare) = self.spare.pop() {
                last.joined = spare;
            }
            // The first request is the end of the write buffer.
            let first = &wbuf[wbuf.len() - last.len as usize..];
            let key = &first[prefix..first.len() - 2];
            let joined = &mut last.joined;
            joined.keys.reserve(16 * (key.len() + 8));
            joined.keys.extend_from_slice(key);
            joined.requests.reserve(16);
            joined
                .requests
                .push((key.len(), Cell::new(last.reply.take())));
        }
        let joined = &mut last.joined;
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

    /// `n` bytes of the write buffer were written, at `now`.
    pub(crate) fn wrote(&mut self, n: usize, now: Instant) {
        self.written_bytes += n as u64;
        self.jobs.sent(n);
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
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let timeout = self.link.settings.timeout?;
        let written_at = self.in_flight.front()?.written_at?;
        Some(written_at + timeout)
    }

    /// How much room the read buffer should have for the reply at its front: all
    /// of a large value at once (growing the buffer a chunk at a time would copy
    /// what had arrived at each step).
    pub(crate) fn expected_reply_len(&self, rbuf: &[u8]) -> usize {
        C::expected_reply_len(rbuf)
    }

    /// Takes every whole reply from the front of `rbuf` (read at `now`) to its
    /// request. An error means the connection is out of step.
    pub(crate) fn take_replies(
        &mut self,
        rbuf: &mut BytesMut,
        now: Instant,
    ) -> Result<(), BackendError> {
        let stats = &self.link.counters;
        // The reply at the front is parsed on from where the last read left it.
        let resume = &mut self.resume;
        let mut any = false;
        let mut timed: Option<(Instant, u64)> = None;
        loop {
            let Some(front) = self.in_flight.front_mut() else {
                // Bytes with no request waiting for them: a push, or out of step.
                match C::is_push(rbuf) {
                    true => match take_push::<C>(&self.link, rbuf, resume) {
                        ReplyParse::Complete(_) => continue,
                        ReplyParse::Incomplete => break,
                        ReplyParse::Invalid => return Err(BackendError::Protocol),
                    },
                    false if C::parse_reply(rbuf, resume) != ReplyParse::Incomplete => {
                        return Err(BackendError::Protocol)
                    }
                    false => break,
                }
            };
            if C::is_push(rbuf) {
                match take_push::<C>(&self.link, rbuf, resume) {
                    ReplyParse::Complete(_) => continue,
                    ReplyParse::Incomplete => break,
                    ReplyParse::Invalid => return Err(BackendError::Protocol),
                }
            }
            let complete = if front.until_noop {
                loop {
                    match C::parse_reply(&rbuf[front.scanned..], resume) {
                        ReplyParse::Incomplete => break None,
                        ReplyParse::Invalid => return Err(BackendError::Protocol),
                        ReplyParse::Complete(n) => {
                            let start = front.scanned;
                            front.scanned += n;
                            if &rbuf[start..front.scanned] == NOOP_REPLY {
                                break Some(front.scanned);
                            }
                        }
                    }
                }
            } else {
                match C::parse_reply(rbuf, resume) {
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
            } else {
                let largest = split_joined_reply(
                    reply,
                    &entry.joined,
                    &mut self.split_out,
                    &mut self.split_ends,
                );
                if largest > JOIN_VALUE_LIMIT {
                    self.join_pause = JOIN_PAUSE;
                }
                let mut joined = entry.joined;
                if joined.keys.capacity() <= SPARE_KEYS_LIMIT {
                    joined.keys.clear();
                    joined.requests.clear();
                    self.spare.push(joined);
                }
            }
            any = true;
        }
        if let Some((at, n)) = timed {
            stats.latency.record_n(now.saturating_duration_since(at), n);
        }
        if any {
            self.link.ok();
        }
        Ok(())
    }
}

/// Gives each request joined into one retrieval its own reply: its key's `VALUE`
/// block, if any, and `END`, built in `out` (where each ends noted in `ends`) and
/// split off it at once, each reply a slice of that; or the whole reply if it is an
/// error. Returns the length of the largest block.
fn split_joined_reply(
    reply: BytesMut,
    joined: &Joined,
    out: &mut BytesMut,
    ends: &mut Vec<usize>,
) -> usize {
    let requests = &joined.requests;
    let room = reply.len() + requests.len() * b"END\r\n".len();
    // Large replies get room of their own, freed with them: kept for reuse, it
    // would hold their memory for the connection's life.
    let mut own = BytesMut::new();
    let out = match room > SPLIT_ROOM {
        true => {
            own.reserve(room);
            &mut own
        }
        false => {
            if out.capacity() < room {
                out.reserve(SPLIT_ROOM);
            }
            out
        }
    };
    let mut largest = 0;
    ends.clear();
    let split = coalesce::split_reply(&reply, joined.keys(), |block| {
        let block = block.unwrap_or_default();
        largest = largest.max(block.len());
        out.extend_from_slice(block);
        out.extend_from_slice(b"END\r\n");
        ends.push(out.len());
    });
    if split {
        // One split for all the replies (a slice costs less than a split).
        let all = out.split().freeze();
        let mut start = 0;
        for ((_, tx), &end) in requests.iter().zip(ends.iter()) {
            if let Some(tx) = tx.take() {
                tx.send(Ok(all.slice(start..end)));
            }
            start = end;
        }
    } else {
        let reply = reply.freeze();
        for tx in requests.iter().filter_map(|(_, tx)| tx.take()) {
            tx.send(Ok(reply.clone()));
        }
    }
    largest
}

/// Takes the RESP3 push at the front of `rbuf`, which answers no request: it goes to
/// the client whose connection this is (a tracking client's invalidation), else it
/// is read past (cashew refuses the commands that ask for pushes).
#[cold]
#[inline(never)]
fn take_push<C: ServerCodec>(
    link: &ServerLink,
    rbuf: &mut BytesMut,
    resume: &mut Resume,
) -> ReplyParse {
    let parsed = C::parse_reply(rbuf, resume);
    if let ReplyParse::Complete(n) = parsed {
        match &link.pushes {
            Some(pushes) => pushes.send(rbuf.split_to(n).freeze()),
            None => rbuf.advance(n),
        }
    }
    parsed
}
