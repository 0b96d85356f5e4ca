//! The client connection loop shared by every protocol: read requests, let the
//! protocol dispatch them, and write replies back strictly in request order while
//! later requests are already on their way to the servers.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::handoff::{BackendError, Reply, ReplyRx};
use super::ids::ClientId;
use super::pool::PoolSlot;
use crate::state::counters::{Family, PoolCounter, PoolCounters};

/// Replies a client may have outstanding before cashew stops reading its requests.
pub(crate) const MAX_PENDING: usize = 1024;
/// A client whose written-out replies pile up beyond this many times its
/// `client_output_limit`, and that reads none of them for [`STALLED`], is closed.
const HARD_LIMIT_FACTOR: usize = 4;
const STALLED: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 16 * 1024;
/// What an idle client's read buffer starts with: most clients wait far more than
/// they send, and a connection should cost little while it waits.
const FIRST_READ: usize = 1024;
const SHRINK_ABOVE: usize = 1 << 20;
const WRITE_SLICES: usize = 16;
/// When a drain starts, requests already received are still read, up to this much.
const DRAIN_READ_LIMIT: usize = 1 << 20;
/// When a drain starts, an idle client is given this long for a request already on
/// its way (a connection accepted a moment before usually has one).
const DRAIN_LINGER: Duration = Duration::from_millis(100);

/// A client protocol: turns bytes into requests sent to servers, and settled
/// requests into reply bytes.
pub(crate) trait Protocol {
    type Pending: PendingReply;

    /// Takes complete requests from the front of `input`, queueing one pending reply
    /// for each that gets one, while `queue` has fewer than `max_queue`. Returns
    /// `false` when no more requests must be read (the stream is broken).
    fn take_requests(
        &mut self,
        input: &mut BytesMut,
        queue: &mut VecDeque<Self::Pending>,
        max_queue: usize,
    ) -> bool;

    /// The bytes a settled reply puts on the wire, and whether to close after them.
    fn finish(&mut self, pending: Self::Pending) -> (Bytes, bool);
}

/// Counts the replies a client's requests are owed by the requests' command
/// family, as the requests are taken (a `noreply` request is owed none).
#[derive(Default)]
pub(crate) struct ReplyFamilies {
    /// Pending replies already counted.
    pending: usize,
}

impl ReplyFamilies {
    /// The requests of the queue not yet counted (it is now `pending` long) are of
    /// `family`.
    #[inline]
    pub(crate) fn note(&mut self, pending: usize, family: Option<Family>, stats: &PoolCounters) {
        let new = pending.saturating_sub(self.pending);
        self.pending = pending;
        if let (true, Some(family)) = (new > 0, family) {
            stats.replies_owed(family, new as u64);
        }
    }

    /// The oldest pending reply was finished.
    #[inline]
    pub(crate) fn finished(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }
}

/// A reply that may still wait for servers.
pub(crate) trait PendingReply {
    /// Collects whatever replies have arrived, without waiting; true when all have.
    fn try_settle(&mut self) -> bool;
    /// Waits until settled. Must be cancel-safe.
    fn settle(&mut self) -> impl Future<Output = ()>;
}

/// One server's part of a request.
pub(crate) struct Part {
    rx: Option<ReplyRx>,
    reply: Option<Reply>,
}

impl Part {
    pub(crate) fn new(rx: Option<ReplyRx>) -> Self {
        Part { rx, reply: None }
    }

    /// Takes the reply if it has arrived; true once it has.
    pub(crate) fn try_settle(&mut self) -> bool {
        if self.reply.is_none() {
            match self.rx.as_mut() {
                Some(rx) => match rx.try_recv() {
                    Some(reply) => self.reply = Some(reply),
                    None => return false,
                },
                None => self.reply = Some(Err(BackendError::Closed)),
            }
        }
        true
    }

    /// Waits for the reply. Cancel-safe: a reply is stored the moment it arrives.
    pub(crate) async fn settle(&mut self) {
        if self.reply.is_none() {
            let reply = match self.rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => Err(BackendError::Closed),
            };
            self.reply = Some(reply);
        }
    }

    pub(crate) fn take(&mut self) -> Reply {
        self.reply.take().unwrap_or(Err(BackendError::Closed))
    }
}

/// Collects the replies of every part that has one; true when all have.
pub(crate) fn try_settle_all(parts: &mut [Part]) -> bool {
    let mut all = true;
    for p in parts {
        all &= p.try_settle();
    }
    all
}

/// The reply of a request sent to several servers that each answer `ok` on success:
/// `ok` when all did, else the first other reply, or the first failure as `failed`
/// makes it.
pub(crate) fn all_ok(
    parts: &mut [Part],
    ok: &'static [u8],
    failed: impl Fn(BackendError) -> Bytes,
) -> Bytes {
    for p in parts {
        match p.take() {
            Ok(reply) if reply.as_ref() == ok => {}
            Ok(reply) => return reply,
            Err(e) => return failed(e),
        }
    }
    Bytes::from_static(ok)
}

/// Settles parts in order; done when all are.
pub(crate) async fn settle_all(parts: &mut [Part]) {
    for p in parts {
        p.settle().await;
    }
}

/// What one client may make cashew hold: replies not yet written to it, and those
/// still to come for the requests it has in flight, each counted at the size of the
/// largest reply it got lately. Past `limit`, its requests are not read until it
/// reads its replies (backpressure): a client that never reads costs about `limit`.
struct ReplyBudget {
    limit: usize,
    /// Bytes a reply is expected to take: jumps up to a larger reply at once and
    /// decays by 1/64 per smaller one.
    estimate: usize,
    /// Bytes in `out`, settled and not yet written.
    held: usize,
}

impl ReplyBudget {
    fn new(limit: usize) -> Self {
        ReplyBudget {
            limit,
            // Until replies show their size, a few dozen requests in flight.
            estimate: (limit / 32).max(1),
            held: 0,
        }
    }

    fn replied(&mut self, bytes: usize) {
        self.held += bytes;
        let floor = (self.limit / MAX_PENDING).max(1);
        self.estimate = bytes.max(self.estimate - self.estimate / 64).max(floor);
    }

    fn written(&mut self, bytes: usize) {
        self.held -= bytes;
    }

    /// Most requests the client may have in flight now.
    fn max_queue(&self) -> usize {
        let room = self.limit.saturating_sub(self.held) / self.estimate;
        // A client with nothing held can always send one request.
        let least = usize::from(self.held == 0);
        room.max(least).min(MAX_PENDING)
    }

    /// Replies have piled up far past the limit (replies much larger than the
    /// ones before, to requests already read).
    fn overflowing(&self) -> bool {
        self.held > self.limit.saturating_mul(HARD_LIMIT_FACTOR)
    }
}

/// A client's requests in flight and replies not yet written, for the pool's
/// latency histogram (request read in full to reply written in full) and its
/// in-flight gauge. The clock is read once per read and once per write, and the
/// requests of one read are tracked as one group, not one by one.
#[derive(Default)]
struct Latency {
    /// When the last read completed: the time of every request it brought.
    last_read: Option<std::time::Instant>,
    /// Requests of the client's queue, in order, as (read at, how many).
    queued: VecDeque<(std::time::Instant, u32)>,
    /// Replies moved to the output and not yet written in full, as (where the
    /// group's last reply ends in the client's stream of reply bytes, read at,
    /// how many): a group is recorded once all of it is written.
    unwritten: VecDeque<(u64, std::time::Instant, u32)>,
    replied_bytes: u64,
    written_bytes: u64,
}

impl Latency {
    fn read_now(&mut self) {
        self.last_read = Some(std::time::Instant::now());
    }

    fn requests_read(&mut self, n: usize, slot: &PoolSlot) {
        if n == 0 {
            return;
        }
        let at = *self.last_read.get_or_insert_with(std::time::Instant::now);
        match self.queued.back_mut() {
            Some((when, count)) if *when == at => *count += n as u32,
            _ => self.queued.push_back((at, n as u32)),
        }
        slot.pool()
            .pool_stats()
            .add(PoolCounter::InFlight, n as u64);
    }

    /// The replies to the `n` oldest requests were moved to the output, `bytes`
    /// in all: they count as written once all of them are.
    fn replied(&mut self, mut n: u32, bytes: usize) {
        if n == 0 {
            return;
        }
        self.replied_bytes += bytes as u64;
        while n > 0 {
            let Some((at, count)) = self.queued.front_mut() else {
                return;
            };
            let at = *at;
            let taken = n.min(*count);
            *count -= taken;
            if *count == 0 {
                self.queued.pop_front();
            }
            n -= taken;
            match self.unwritten.back_mut() {
                Some((end, when, k)) if *when == at => {
                    *end = self.replied_bytes;
                    *k += taken;
                }
                _ => self.unwritten.push_back((self.replied_bytes, at, taken)),
            }
        }
    }

    fn written(&mut self, bytes: usize, slot: &PoolSlot) {
        self.written_bytes += bytes as u64;
        self.record_written(slot);
    }

    /// Records every group now written in full (replies of no bytes, to quiet
    /// requests, as soon as those before them are).
    fn record_written(&mut self, slot: &PoolSlot) {
        if self
            .unwritten
            .front()
            .is_none_or(|(end, _, _)| *end > self.written_bytes)
        {
            return;
        }
        let now = std::time::Instant::now();
        let pool = slot.pool();
        let stats = pool.pool_stats();
        let mut done = 0;
        while let Some(&(end, at, n)) = self.unwritten.front() {
            if end > self.written_bytes {
                break;
            }
            self.unwritten.pop_front();
            stats.latency.record_n(now - at, u64::from(n));
            done += u64::from(n);
        }
        stats.add(PoolCounter::Replies, done);
        stats.sub(PoolCounter::InFlight, done);
    }

    /// The requests in the queue and the replies not written will never be
    /// answered (the client is gone or closed).
    fn dropped(&mut self, slot: &PoolSlot) {
        let left: u64 = self.queued.iter().map(|(_, n)| u64::from(*n)).sum::<u64>()
            + self
                .unwritten
                .iter()
                .map(|(_, _, n)| u64::from(*n))
                .sum::<u64>();
        self.queued.clear();
        self.unwritten.clear();
        if left > 0 {
            slot.pool().pool_stats().sub(PoolCounter::InFlight, left);
        }
    }
}

/// Serves one client until it closes, asks to, or breaks the protocol, or until its
/// pool's slot closes (pool removed, or cashew draining): then the requests already
/// received are answered and the connection is closed at a request boundary.
/// `id` is the client's number in its slot.
pub(crate) async fn serve<P, R, W>(reader: R, writer: W, slot: &PoolSlot, id: ClientId, protocol: P)
where
    P: Protocol,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    slot.register(id).await;
    serve_registered(reader, writer, slot, protocol).await;
    slot.unregister(id);
}

async fn serve_registered<P, R, W>(mut reader: R, mut writer: W, slot: &PoolSlot, mut protocol: P)
where
    P: Protocol,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = BytesMut::new();
    let mut queue: VecDeque<P::Pending> = VecDeque::new();
    let mut out: VecDeque<Bytes> = VecDeque::new();
    let mut budget = ReplyBudget::new(slot.pool().config().client_output_limit as usize);
    // When the client last took reply bytes (or had none waiting).
    let mut last_read_by_client = tokio::time::Instant::now();
    let mut reading = true;
    let mut closing = false;
    // Draining: since when, and whether a request came since (else it lingers).
    let mut draining: Option<tokio::time::Instant> = None;
    let mut read_while_draining = false;
    let count_error = |counter| slot.pool().pool_stats().add(counter, 1);
    let mut latency = Latency::default();

    loop {
        if draining.is_none() && slot.is_closing() {
            draining = Some(tokio::time::Instant::now());
            let before = input.len();
            if reading && read_available(&mut reader, &mut input) {
                count_error(PoolCounter::ClientEof);
                reading = false;
            }
            read_while_draining = input.len() > before || !queue.is_empty();
        }
        let before = queue.len();
        if reading && !protocol.take_requests(&mut input, &mut queue, budget.max_queue()) {
            count_error(PoolCounter::ClientErr);
            reading = false;
        }
        latency.requests_read(queue.len() - before, slot);
        let lingered = draining.is_some_and(|since| since.elapsed() >= DRAIN_LINGER);
        if draining.is_some() && input.is_empty() && (read_while_draining || lingered) {
            // A request boundary: nothing more is read.
            reading = false;
        }
        if input.is_empty() && input.capacity() > SHRINK_ABOVE {
            input = BytesMut::new();
        }

        // Move finished replies, in order, to the output: every reply already
        // delivered goes out in the same write.
        let (mut moved, mut moved_bytes) = (0, 0);
        while !closing && queue.front_mut().is_some_and(PendingReply::try_settle) {
            let Some(pending) = queue.pop_front() else {
                break;
            };
            let (bytes, close) = protocol.finish(pending);
            moved += 1;
            moved_bytes += bytes.len();
            if !bytes.is_empty() {
                budget.replied(bytes.len());
                out.push_back(bytes);
            }
            if close {
                closing = true;
                reading = false;
                queue.clear();
            }
        }
        latency.replied(moved, moved_bytes);
        if closing {
            latency.dropped(slot);
        }
        latency.record_written(slot);

        if out.is_empty() && (closing || (!reading && queue.is_empty())) {
            break;
        }
        if out.is_empty() {
            last_read_by_client = tokio::time::Instant::now();
        }
        let stalled_since = budget.overflowing().then_some(last_read_by_client);
        if stalled_since.is_some_and(|since| since.elapsed() >= STALLED) {
            count_error(PoolCounter::ClientErr);
            crate::log_at!(
                crate::log::INFO,
                "pool '{}': closing a client that read none of its last {} bytes of replies for {} s",
                slot.pool().config().name,
                budget.held,
                STALLED.as_secs()
            );
            break;
        }

        if input.capacity() == 0 {
            input.reserve(FIRST_READ);
        } else if input.capacity() - input.len() < FIRST_READ / 2 {
            // Requests come in bulk now: read them in large chunks.
            input.reserve(READ_CHUNK);
        }
        let can_read = reading && queue.len() < budget.max_queue();
        let waiting = !queue.is_empty();
        let linger_end = draining.map(|since| since + DRAIN_LINGER);
        tokio::select! {
            read = reader.read_buf(&mut input), if can_read => match read {
                Ok(0) => {
                    count_error(PoolCounter::ClientEof);
                    reading = false;
                }
                Ok(_) => {
                    read_while_draining = draining.is_some();
                    latency.read_now();
                }
                Err(_) => {
                    count_error(PoolCounter::ClientErr);
                    break;
                }
            },
            written = write_some(&mut writer, &mut out), if !out.is_empty() => match written {
                Ok(n) => {
                    budget.written(n);
                    latency.written(n, slot);
                    last_read_by_client = tokio::time::Instant::now();
                }
                Err(_) => {
                    count_error(PoolCounter::ClientErr);
                    break;
                }
            },
            () = tokio::time::sleep_until(stalled_since.unwrap_or_else(tokio::time::Instant::now) + STALLED),
                if stalled_since.is_some() => {}
            () = async { queue.front_mut().expect("a reply is awaited").settle().await }, if waiting => {}
            // The slot wakes this task when it closes (see `PoolSlot::register`).
            () = std::future::poll_fn(|_| if slot.is_closing() { Poll::Ready(()) } else { Poll::Pending }),
                if draining.is_none() => {}
            () = tokio::time::sleep_until(linger_end.unwrap_or_else(tokio::time::Instant::now)),
                if reading && linger_end.is_some() && !read_while_draining => {}
        }
    }
    latency.dropped(slot);
    let _ = writer.shutdown().await;
    if draining.is_some() {
        discard_until_eof(&mut reader).await;
    }
}

/// After a drain's last reply, the client may already have sent more: reading it
/// away (briefly) lets the connection end with a FIN after every reply, rather than
/// a reset that could discard replies the client has not read yet.
async fn discard_until_eof<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut sink = vec![0u8; 4096];
    let discard = async {
        while let Ok(n) = reader.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_LINGER, discard).await;
}

/// Reads what the client has already sent, without waiting for more. True at the
/// end of the stream.
fn read_available<R: AsyncRead + Unpin>(reader: &mut R, input: &mut BytesMut) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    while input.len() < DRAIN_READ_LIMIT {
        input.reserve(READ_CHUNK);
        match pin!(reader.read_buf(input)).poll(&mut cx) {
            Poll::Ready(Ok(0)) => return true,
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(_)) | Poll::Pending => break,
        }
    }
    false
}

/// Writes as much of `out` as the socket takes in one call; the bytes written.
async fn write_some<W: AsyncWrite + Unpin>(
    w: &mut W,
    out: &mut VecDeque<Bytes>,
) -> io::Result<usize> {
    let n = if out.len() == 1 {
        w.write(&out[0]).await?
    } else {
        let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
        let count = out.len().min(WRITE_SLICES);
        for (slice, bytes) in slices.iter_mut().zip(out.iter()) {
            *slice = IoSlice::new(bytes);
        }
        w.write_vectored(&slices[..count]).await?
    };
    if n == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
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
    Ok(n)
}
