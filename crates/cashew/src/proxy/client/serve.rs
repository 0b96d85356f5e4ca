//! The client connection loop shared by every protocol: read requests, let the
//! protocol dispatch them, and write replies back strictly in request order while
//! later requests are already on their way to the servers. Each turn waits for
//! whichever comes first (a read, room to write, the oldest reply, the pool closing,
//! a deadline) by polling only what can happen, and reads the clock at most once.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use super::budget::ReplyBudget;
use super::io::{discard_until_eof, poll_write_some, read_available};
use super::latency::{Latency, TurnClock};
use super::{PendingReply, Protocol};
use crate::net::{poll_read_buf, StreamReader, StreamWriter};
use crate::proxy::ids::ClientId;
use crate::proxy::pool::PoolSlot;
use crate::state::clients::ClientCard;
use crate::state::counters::PoolCounter;

/// A client that lets its replies pile up past the hard limit and reads none of
/// them for this long is closed.
const STALLED: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 16 * 1024;
/// What an idle client's read buffer starts with: most clients wait far more than
/// they send, and a connection should cost little while it waits.
const FIRST_READ: usize = 1024;
const SHRINK_ABOVE: usize = 1 << 20;
/// When a drain starts, an idle client is given this long for a request already on
/// its way (a connection accepted a moment before usually has one).
const DRAIN_LINGER: Duration = Duration::from_millis(100);
/// A client that left while a blocking call of its waits is closed this long
/// after (replies that come meanwhile, an error to a malformed call among them,
/// still go out): the call may never end, and Redis drops such a client too.
const LEFT_WHILE_BLOCKED: Duration = Duration::from_secs(1);

/// What ended a wait.
enum Event {
    Read(std::io::Result<usize>),
    /// Bytes written are taken care of in the wait: only a failure ends it.
    WriteFailed,
    /// A server's push for the client (`None`: its connection was lost).
    Push(Option<Bytes>),
    /// The oldest reply came, or the pool is closing, or a deadline passed: the
    /// loop looks again.
    Wake,
}

/// Serves one client until it closes, asks to, or breaks the protocol, or until its
/// pool's slot closes (pool removed, or cashew draining): then the requests already
/// received are answered and the connection is closed at a request boundary.
/// `id` is the client's number in its slot; `card` what the control plane sees of it.
pub(crate) async fn serve<P: Protocol>(
    reader: StreamReader,
    writer: StreamWriter,
    slot: &PoolSlot,
    (id, card): (ClientId, &ClientCard),
    protocol: P,
) {
    let task = poll_fn(|cx| Poll::Ready(cx.waker().clone())).await;
    card.served_by(task.clone());
    slot.register(id, task);
    serve_registered(reader, writer, slot, card, protocol).await;
    slot.unregister(id);
}

async fn serve_registered<P: Protocol>(
    mut reader: StreamReader,
    mut writer: StreamWriter,
    slot: &PoolSlot,
    card: &ClientCard,
    mut protocol: P,
) {
    let mut input = BytesMut::new();
    // Whether `input` lies in an allocation larger than `SHRINK_ABOVE`: requests
    // split off it leave it a tail of that allocation, which keeps all of it alive.
    let mut input_large = false;
    let mut queue: VecDeque<P::Pending> = VecDeque::new();
    let mut out: VecDeque<Bytes> = VecDeque::new();
    let mut budget = ReplyBudget::new(slot.pool().config().client_output_limit as usize);
    // Since when the client, with replies piled up past the hard limit, has read
    // none of them.
    let mut stalled_since: Option<Instant> = None;
    let mut reading = true;
    let mut closing = false;
    // Draining: since when, and whether a request came since (else it lingers).
    let mut draining: Option<Instant> = None;
    let mut read_while_draining = false;
    // Since when the client has ended its side while a blocking call waits.
    let mut left_at: Option<Instant> = None;
    let count_error = |counter| slot.pool().pool_stats().add(counter, 1);
    let mut latency = Latency::default();
    let mut clock = TurnClock::default();
    // Armed only for a stall or a drain's linger, which are rare.
    let mut timer: Option<(Instant, Pin<Box<Sleep>>)> = None;

    loop {
        if draining.is_none() && slot.is_closing() {
            draining = Some(clock.now());
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
        let read = queue.len() - before;
        latency.requests_read(read, &mut clock, slot);
        if read > 0 {
            card.read(read);
        }
        let lingered = draining.is_some_and(|since| clock.now() >= since + DRAIN_LINGER);
        if draining.is_some() && input.is_empty() && (read_while_draining || lingered) {
            // A request boundary: nothing more is read.
            reading = false;
        }
        if input.is_empty() && (input_large || input.capacity() > SHRINK_ABOVE) {
            input = BytesMut::new();
            input_large = false;
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
        latency.record_written(&mut clock, slot);

        if out.is_empty() && (closing || (!reading && queue.is_empty())) {
            break;
        }
        if out.is_empty() && moved > 0 && queue.is_empty() && reading && !input.is_empty() {
            // Replies without bytes were all that was owed: requests held back
            // until they came may be taken now.
            continue;
        }

        if out.is_empty() || !budget.overflowing() {
            stalled_since = None;
        } else if stalled_since.is_none() {
            stalled_since = Some(clock.now());
        }
        if stalled_since.is_some_and(|since| clock.now() >= since + STALLED) {
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
            input_large |= input.capacity() > SHRINK_ABOVE;
        }
        let lingering = reading && !read_while_draining;
        let deadline = match (stalled_since, draining) {
            (Some(since), _) => Some(since + STALLED),
            (None, Some(since)) if lingering => Some(since + DRAIN_LINGER),
            _ => None,
        };
        let deadline = match left_at {
            None => deadline,
            Some(at) => {
                let leave = at + LEFT_WHILE_BLOCKED;
                Some(deadline.map_or(leave, |d| d.min(leave)))
            }
        };
        match (deadline, &mut timer) {
            (None, _) => timer = None,
            (Some(at), Some((armed, _))) if *armed == at => {}
            (Some(at), _) => {
                let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(at));
                timer = Some((at, Box::pin(sleep)));
            }
        }

        let mut first_poll = true;
        let event = poll_fn(|cx| {
            if !std::mem::take(&mut first_poll) {
                // Woken: a new turn, whose time is read anew if needed.
                clock.tick();
            }
            // Replies are written as soon as the socket takes them, and the wait
            // goes on for what else can happen, in the same turn.
            let mut wrote = false;
            while !out.is_empty() {
                match poll_write_some(&mut writer, &mut out, cx) {
                    Poll::Ready(Ok(n)) => {
                        budget.written(n);
                        latency.written(n, &mut clock, slot);
                        stalled_since = None;
                        wrote = true;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
                    Poll::Pending => break,
                }
            }
            if out.is_empty() && writer.owes_flush() {
                // TLS: what the session holds goes out now.
                if let Poll::Ready(Err(_)) = Pin::new(&mut writer).poll_flush(cx) {
                    return Poll::Ready(Event::WriteFailed);
                }
            }
            if wrote {
                // Requests already read waited for room, which the write made; or
                // the last reply is out and the connection ends.
                let room = reading && !input.is_empty() && queue.len() < budget.max_queue();
                let ends = out.is_empty() && (closing || (!reading && queue.is_empty()));
                if room || ends {
                    return Poll::Ready(Event::Wake);
                }
            }
            if let Some(front) = queue.front_mut() {
                if front.poll_settle(cx).is_ready() {
                    return Poll::Ready(Event::Wake);
                }
            } else if protocol.may_push() && !closing {
                if let Poll::Ready(push) = protocol.poll_push(cx) {
                    return Poll::Ready(Event::Push(push));
                }
            }
            if reading && queue.len() < budget.max_queue() && !protocol.holds_input() {
                if let Poll::Ready(r) = poll_read_buf(&mut reader, &mut input, cx) {
                    return Poll::Ready(Event::Read(r));
                }
            }
            // The slot wakes this task when it closes (see `PoolSlot::register`),
            // and the card when the client is killed.
            if (draining.is_none() && slot.is_closing()) || card.killed() {
                return Poll::Ready(Event::Wake);
            }
            if let Some((_, sleep)) = &mut timer {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Wake);
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Read(Ok(0)) => {
                count_error(PoolCounter::ClientEof);
                reading = false;
                if queue.iter().any(PendingReply::blocks) {
                    left_at = Some(clock.now());
                }
            }
            Event::Read(Ok(_)) => {
                read_while_draining = draining.is_some();
                latency.read_done();
            }
            Event::Read(Err(_)) | Event::WriteFailed => {
                count_error(PoolCounter::ClientErr);
                break;
            }
            Event::Push(Some(bytes)) => {
                budget.replied(bytes.len());
                out.push_back(bytes);
            }
            Event::Push(None) => {
                closing = true;
                reading = false;
            }
            Event::Wake => {
                if card.killed() {
                    break;
                }
                if left_at.is_some_and(|at| clock.now() >= at + LEFT_WHILE_BLOCKED)
                    && queue.iter().any(PendingReply::blocks)
                {
                    break;
                }
            }
        }
    }
    latency.dropped(slot);
    let _ = writer.shutdown().await;
    if draining.is_some() {
        discard_until_eof(&mut reader, DRAIN_LINGER).await;
    }
}
