//! A worker's connections to one server: requests are queued from any client of
//! the worker, written in batches, and replies are matched to them in order by a
//! [`Pipeline`]. This file is the sockets and the clock; the pipeline is the rest.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use cashew_protocol::resp::INVALIDATE_ALL;
use cashew_protocol::server::ServerCodec;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

use super::link::ServerLink;
use super::open::open_within;
use super::pipeline::Pipeline;
use crate::net::{poll_read_buf, StreamReader, StreamWriter};
use crate::proxy::handoff::{BackendError, Job, JobQueue};
use crate::proxy::ids::ClientId;
use crate::proxy::tasks::TaskCount;
use crate::state::counters::ServerCounter;

/// A worker's connections to one server. Dropped, it closes their queues: each
/// connection finishes the requests it holds, then ends.
pub(crate) struct ServerConns {
    pub(crate) link: Rc<ServerLink>,
    queues: Vec<Rc<JobQueue>>,
}

impl ServerConns {
    /// Starts the connection tasks, speaking `C`, on the current `LocalSet`,
    /// counted in `tasks`.
    pub(crate) fn start<C: ServerCodec>(
        link: Rc<ServerLink>,
        tasks: &Rc<TaskCount>,
    ) -> ServerConns {
        let queues = (0..link.settings.connections)
            .map(|_| {
                let queue = Rc::new(JobQueue::default());
                let preconnect = link.settings.preconnect;
                tasks.spawn(run::<C>(link.clone(), queue.clone(), preconnect));
                queue
            })
            .collect();
        ServerConns { link, queues }
    }

    /// The connection a client uses: always the same one for the same client.
    #[inline]
    pub(crate) fn queue(&self, client: ClientId) -> &JobQueue {
        &self.queues[client.0 % self.queues.len()]
    }

    /// Every connection's queue.
    #[cfg(any(test, feature = "harness"))]
    pub(crate) fn queues(&self) -> &[Rc<JobQueue>] {
        &self.queues
    }
}

impl ServerConns {
    /// Closes the connections at once, with what they have in flight.
    pub(crate) fn abort(&self) {
        for queue in &self.queues {
            queue.abort();
        }
    }
}

impl Drop for ServerConns {
    fn drop(&mut self) {
        for queue in &self.queues {
            queue.close();
        }
    }
}

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
async fn run<C: ServerCodec>(link: Rc<ServerLink>, jobs: Rc<JobQueue>, preconnect: bool) {
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
        let connected = open_within::<C>(settings, &link.health).await;
        let mut pipeline = Pipeline::<C>::new(link.clone(), jobs.clone());
        match connected {
            Err(error) => {
                if let Some(first) = first {
                    pipeline.fail(first, error.clone());
                }
                // Everything already queued for this server fails the same way.
                while let Some(job) = jobs.try_pop() {
                    pipeline.fail(job, error.clone());
                }
                link.failed(error, &mut failure_event);
            }
            Ok(stream) => {
                link.counters.add(ServerCounter::ServerConnections, 1);
                let (r, w) = stream.into_split();
                let error = serve(&mut pipeline, r, w, first, &jobs).await;
                link.counters.sub(ServerCounter::ServerConnections, 1);
                match error {
                    Some(error) => {
                        pipeline.fail_in_flight(error.clone());
                        if let Some(pushes) = &link.pushes {
                            // What the server tracked for the connection is gone
                            // with it: the client forgets everything it cached.
                            pushes.send(Bytes::from_static(INVALIDATE_ALL));
                        }
                        link.failed(error, &mut failure_event);
                    }
                    // Closed and everything answered.
                    None => return,
                }
            }
        }
    }
}

/// What ended a wait of the connection.
enum Event {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Job(Option<Job>),
    /// The oldest request's deadline may have passed.
    Timer,
}

/// Serves the connection until it fails (`Some(error)`), or until its queue is
/// closed and every request taken from it is answered (`None`). One timer per
/// connection: armed at the oldest written request's deadline, and looked at only
/// when it fires (deadlines only move later as requests are answered).
async fn serve<C: ServerCodec>(
    pipeline: &mut Pipeline<C>,
    mut reader: StreamReader,
    mut writer: StreamWriter,
    first: Option<Job>,
    jobs: &JobQueue,
) -> Option<BackendError> {
    let mut wbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    // Whether `rbuf` lies in an allocation larger than `SHRINK_ABOVE`: the replies
    // split off it leave it a short tail of that allocation, which keeps all of it
    // alive (its capacity does not tell).
    let mut rbuf_large = false;
    if let Some(first) = first {
        pipeline.enqueue(first, &mut wbuf);
    }
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let mut armed = false;
    let mut closed = false;

    loop {
        if closed && pipeline.is_idle() {
            return None;
        }
        if !armed {
            if let Some(deadline) = pipeline.deadline() {
                let deadline = Instant::from_std(deadline);
                match &mut timer {
                    Some(sleep) => sleep.as_mut().reset(deadline),
                    None => timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                armed = true;
            }
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            // A large value is read into room for all of it at once. (Up to a
            // bound: the length is the server's word.) A reply whose size the
            // first line does not tell (several large values) at least doubles
            // the room, so it is copied a bounded number of times.
            let whole = pipeline.expected_reply_len(&rbuf).min(PRESIZE_LIMIT);
            let room = whole
                .saturating_sub(rbuf.len())
                .max(READ_CHUNK)
                .max(rbuf.len());
            rbuf.reserve(room);
            rbuf_large |= rbuf.capacity() > SHRINK_ABOVE;
        }
        let take_jobs = !closed && pipeline.has_room() && wbuf.len() < WRITE_AHEAD;
        let event = poll_fn(|cx| {
            if let Poll::Ready(r) = poll_read_buf(&mut reader, &mut rbuf, cx) {
                return Poll::Ready(Event::Read(r));
            }
            if !wbuf.is_empty() {
                if let Poll::Ready(r) = Pin::new(&mut writer).poll_write(cx, &wbuf) {
                    return Poll::Ready(Event::Wrote(r));
                }
            } else if writer.owes_flush() {
                // TLS: what the session holds goes out now.
                if let Poll::Ready(Err(e)) = Pin::new(&mut writer).poll_flush(cx) {
                    return Poll::Ready(Event::Wrote(Err(e)));
                }
            }
            if take_jobs {
                if let Poll::Ready(job) = jobs.poll_pop(cx) {
                    return Poll::Ready(Event::Job(job));
                }
            }
            if let (true, Some(sleep)) = (armed, &mut timer) {
                if sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Read(Ok(0)) => return Some(BackendError::Closed),
            Event::Read(Err(e)) | Event::Wrote(Err(e)) => return Some(BackendError::from_io(&e)),
            Event::Read(Ok(_)) => {
                if let Err(e) = pipeline.take_replies(&mut rbuf, std::time::Instant::now()) {
                    return Some(e);
                }
                if rbuf.is_empty() && (rbuf_large || rbuf.capacity() > SHRINK_ABOVE) {
                    rbuf = BytesMut::with_capacity(READ_CHUNK);
                    rbuf_large = false;
                }
            }
            Event::Wrote(Ok(0)) => return Some(BackendError::Closed),
            Event::Wrote(Ok(n)) => {
                wbuf.advance(n);
                pipeline.wrote(n, std::time::Instant::now());
            }
            Event::Job(None) if jobs.is_aborted() => return None,
            Event::Job(None) => closed = true,
            Event::Job(Some(job)) => {
                pipeline.enqueue(job, &mut wbuf);
                // Let the other clients of this event-loop round queue their
                // requests too, then send them all in one write. (tokio wakes a
                // yielded task only after it has polled for I/O again.)
                tokio::task::yield_now().await;
                while pipeline.has_room() && wbuf.len() < WRITE_AHEAD {
                    match jobs.try_pop() {
                        Some(job) => pipeline.enqueue(job, &mut wbuf),
                        None => break,
                    }
                }
            }
            Event::Timer => {
                armed = false;
                let due = pipeline.deadline();
                if due.is_some_and(|d| d <= std::time::Instant::now()) {
                    return Some(BackendError::TimedOut);
                }
            }
        }
        if wbuf.is_empty() && wbuf.capacity() > SHRINK_ABOVE {
            wbuf = BytesMut::with_capacity(READ_CHUNK);
        }
    }
}
