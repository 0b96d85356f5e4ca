//! What every client protocol shares: the `Protocol` a client speaks, the replies
//! it waits for (`PendingReply`, `Part`), and the connection loop (`serve`).

mod budget;
mod io;
mod latency;
mod serve;

pub(crate) use serve::serve;

use std::collections::VecDeque;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};

use super::handoff::{BackendError, Reply, ReplyRx};
use crate::state::counters::{Family, PoolCounters};

/// Replies a client may have outstanding before cashew stops reading its requests.
pub(crate) const MAX_PENDING: usize = 1024;

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

    /// Whether complete requests wait in the input until the replies owed come (a
    /// request for another connection): nothing more is read meanwhile, so a
    /// client cannot pile up requests in cashew's memory.
    #[inline]
    fn holds_input(&self) -> bool {
        false
    }

    /// Whether a server may push to this client now (it subscribed).
    #[inline]
    fn may_push(&self) -> bool {
        false
    }

    /// What a server pushed to the client without a request (a subscriber's
    /// messages), asked for only while no reply is owed, so pushes never come
    /// between a request and its reply; `None`: the connection must close.
    fn poll_push(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        Poll::Pending
    }
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
    /// Ready once settled; else the task is woken when a reply it waits for comes.
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// Whether it waits for something that may never come (a blocking call): a
    /// client that leaves meanwhile is closed at once, as Redis does, rather than
    /// waited for.
    fn blocks(&self) -> bool {
        false
    }
}

/// One server's part of a request: where its reply comes (`None`: it was never
/// sent, and the reply is `Closed`). The reply stays in its slot until taken.
pub(crate) enum Part {
    /// A reply to come from one server (none when not wanted).
    Reply(Option<ReplyRx>),
    /// A reply that may be sent on elsewhere before it is the client's (a Redis
    /// Cluster's redirections).
    Follow(Following),
}

/// A reply that settles in more than one step.
pub(crate) trait Follow {
    fn try_settle(&mut self) -> bool;
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    fn take(&mut self) -> Reply;
    /// Done with: its allocation may be kept for the next one (else it is freed).
    fn recycle(self: Box<Self>) {}
}

/// A [`Follow`] that is recycled when dropped.
pub(crate) struct Following(Option<Box<dyn Follow>>);

impl Following {
    pub(crate) fn new(follow: Box<dyn Follow>) -> Following {
        Following(Some(follow))
    }

    #[cold]
    fn try_settle(&mut self) -> bool {
        self.get().try_settle()
    }

    #[cold]
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.get().poll_settle(cx)
    }

    #[cold]
    fn take(&mut self) -> Reply {
        self.get().take()
    }

    fn get(&mut self) -> &mut dyn Follow {
        self.0.as_deref_mut().expect("present until dropped")
    }
}

impl Drop for Following {
    #[cold]
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f.recycle();
        }
    }
}

impl Part {
    pub(crate) fn new(rx: Option<ReplyRx>) -> Self {
        Part::Reply(rx)
    }

    /// True once the reply has arrived.
    pub(crate) fn try_settle(&mut self) -> bool {
        match self {
            Part::Reply(rx) => rx.as_ref().is_none_or(ReplyRx::is_ready),
            Part::Follow(f) => f.try_settle(),
        }
    }

    /// Ready once the reply has arrived.
    pub(crate) fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Part::Reply(Some(rx)) => rx.poll_ready(cx),
            Part::Reply(None) => Poll::Ready(()),
            Part::Follow(f) => f.poll_settle(cx),
        }
    }

    pub(crate) fn take(&mut self) -> Reply {
        match self {
            Part::Reply(rx) => rx
                .take()
                .and_then(|mut rx| rx.try_recv())
                .unwrap_or(Err(BackendError::Closed)),
            Part::Follow(f) => f.take(),
        }
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

/// Settles parts in order; ready when all are.
pub(crate) fn poll_settle_all(parts: &mut [Part], cx: &mut Context<'_>) -> Poll<()> {
    for p in parts {
        std::task::ready!(p.poll_settle(cx));
    }
    Poll::Ready(())
}
