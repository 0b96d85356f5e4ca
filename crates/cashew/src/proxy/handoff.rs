//! How requests and replies pass between a worker's client tasks and its server
//! connection tasks. Both run on the worker's one thread, so a queue and a reply
//! slot need neither atomics nor locks, and reply slots are reused rather than
//! allocated for every request.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

/// What a client gets back for one request sent to a server.
pub(crate) type Reply = Result<Bytes, BackendError>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BackendError {
    Io(io::ErrorKind),
    TimedOut,
    /// The server sent something that is not a reply; the connection was dropped.
    Protocol,
    /// No server of the pool is live.
    NoServer,
    /// The requests waiting for the server passed `server_queue_limit`.
    QueueFull,
    /// The server's host name did not resolve: why, in words.
    Resolve(std::sync::Arc<str>),
    /// The TLS handshake with the server failed: why, in words.
    Tls(std::sync::Arc<str>),
    /// The connection ended before the reply came.
    Closed,
    /// The server refused the connection's setup (redis `AUTH` or `SELECT`); its
    /// error reply, passed on to clients.
    Setup(Bytes),
}

impl BackendError {
    /// The memcached error line a client sees.
    pub(crate) fn memcache_reply(&self) -> Bytes {
        Bytes::from(format!("SERVER_ERROR {}\r\n", self.reason()))
    }

    /// The redis error reply a client sees.
    pub(crate) fn redis_reply(&self) -> Bytes {
        match self {
            BackendError::Setup(reply) => reply.clone(),
            other => Bytes::from(format!("-ERR {}\r\n", other.reason())),
        }
    }

    /// The failure in words.
    pub(crate) fn reason(&self) -> &str {
        match self {
            BackendError::TimedOut => "Connection timed out",
            BackendError::Protocol => "Invalid reply from server",
            BackendError::NoServer => "No live server in the pool",
            BackendError::QueueFull => "Too many requests queued for the server",
            BackendError::Resolve(why) | BackendError::Tls(why) => why,
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

    pub(crate) fn from_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => BackendError::TimedOut,
            io::ErrorKind::UnexpectedEof => BackendError::Closed,
            kind => BackendError::Io(kind),
        }
    }
}

/// One request for a server. Without a reply slot the reply is read and dropped.
pub(crate) struct Job {
    pub(crate) bytes: Bytes,
    pub(crate) reply: Option<ReplyTx>,
    /// The request ends with a memcached `mn`: its reply is every reply up to and
    /// including `MN` (how a quiet meta request keeps the connection in step).
    pub(crate) until_noop: bool,
}

/// The requests waiting for one server connection.
#[derive(Default)]
pub(crate) struct JobQueue {
    jobs: RefCell<VecDeque<Job>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    /// Closed with nothing more to be answered: the connection ends at once.
    aborted: Cell<bool>,
    /// Bytes of requests pushed and not yet written to the server (or failed).
    unsent: Cell<usize>,
}

impl JobQueue {
    pub(crate) fn push(&self, job: Job) {
        self.unsent.set(self.unsent.get() + job.bytes.len());
        self.jobs.borrow_mut().push_back(job);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Bytes of requests not yet written to the server.
    pub(crate) fn unsent(&self) -> usize {
        self.unsent.get()
    }

    /// `n` bytes of its requests were written to the server, or failed unwritten.
    pub(crate) fn sent(&self, n: usize) {
        self.unsent.set(self.unsent.get().saturating_sub(n));
    }

    pub(crate) fn try_pop(&self) -> Option<Job> {
        self.jobs.borrow_mut().pop_front()
    }

    /// The next job; `None` once the queue is closed and empty.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Job>> {
        match self.try_pop() {
            Some(job) => Poll::Ready(Some(job)),
            None if self.closed.get() => Poll::Ready(None),
            None => {
                let mut waker = self.waker.borrow_mut();
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// The next job; `None` once the queue is closed and empty.
    pub(crate) async fn pop(&self) -> Option<Job> {
        poll_fn(|cx| self.poll_pop(cx)).await
    }

    /// No reply is wanted any more (a pinned session's client left, maybe while
    /// blocked): the connection is closed at once, whatever it has in flight.
    pub(crate) fn abort(&self) {
        self.aborted.set(true);
        self.close();
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.get()
    }

    /// No more jobs will come: the connection task finishes the jobs queued and in
    /// flight, then ends.
    pub(crate) fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

enum Slot {
    Free,
    Waiting(Option<Waker>),
    Ready(Reply),
    /// The client went away; the slot is freed when the reply comes.
    Abandoned,
}

/// A worker's reply slots, reused from request to request.
#[derive(Default)]
pub(crate) struct Replies {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
}

impl Replies {
    /// A fresh slot: the server side sends into `ReplyTx`, the client reads `ReplyRx`.
    pub(crate) fn channel(self: &Rc<Self>) -> (ReplyTx, ReplyRx) {
        let id = match self.free.borrow_mut().pop() {
            Some(id) => {
                self.slots.borrow_mut()[id as usize] = Slot::Waiting(None);
                id
            }
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot::Waiting(None));
                (slots.len() - 1) as u32
            }
        };
        let tx = ReplyTx {
            replies: self.clone(),
            id,
            sent: false,
        };
        let rx = ReplyRx {
            replies: self.clone(),
            id,
            done: false,
        };
        (tx, rx)
    }

    fn release(&self, id: u32) {
        self.slots.borrow_mut()[id as usize] = Slot::Free;
        self.reuse(id);
    }

    /// Puts a slot that already holds `Free` back for the next channel.
    fn reuse(&self, id: u32) {
        self.free.borrow_mut().push(id);
    }
}

/// Where a server connection puts one reply. Dropped unused, it delivers `Closed`.
pub(crate) struct ReplyTx {
    replies: Rc<Replies>,
    id: u32,
    sent: bool,
}

impl ReplyTx {
    pub(crate) fn send(mut self, reply: Reply) {
        self.deliver(reply);
        self.sent = true;
    }

    fn deliver(&self, reply: Reply) {
        let mut slots = self.replies.slots.borrow_mut();
        let slot = &mut slots[self.id as usize];
        match std::mem::replace(slot, Slot::Ready(reply)) {
            Slot::Waiting(waker) => {
                drop(slots);
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Slot::Abandoned => {
                drop(slots);
                self.replies.release(self.id);
            }
            Slot::Free | Slot::Ready(_) => unreachable!("a reply slot is answered once"),
        }
    }
}

impl Drop for ReplyTx {
    fn drop(&mut self) {
        if !self.sent {
            self.deliver(Err(BackendError::Closed));
        }
    }
}

/// Where a client waits for one reply.
pub(crate) struct ReplyRx {
    replies: Rc<Replies>,
    id: u32,
    done: bool,
}

impl ReplyRx {
    /// The reply, if it has come.
    pub(crate) fn try_recv(&mut self) -> Option<Reply> {
        if self.done {
            return None;
        }
        let mut slots = self.replies.slots.borrow_mut();
        let slot = &mut slots[self.id as usize];
        if !matches!(slot, Slot::Ready(_)) {
            return None;
        }
        let Slot::Ready(reply) = std::mem::replace(slot, Slot::Free) else {
            unreachable!()
        };
        drop(slots);
        self.done = true;
        self.replies.reuse(self.id);
        Some(reply)
    }

    /// Whether the reply has come and is a failure or a redis error reply (which
    /// `try_recv` then gives); false while it has not come.
    pub(crate) fn is_error(&self) -> bool {
        !self.done
            && match &self.replies.slots.borrow()[self.id as usize] {
                Slot::Ready(Ok(bytes)) => bytes.first() == Some(&b'-'),
                Slot::Ready(Err(_)) => true,
                _ => false,
            }
    }

    /// Whether the reply has come (or never will: `try_recv` then says so).
    pub(crate) fn is_ready(&self) -> bool {
        self.done
            || !matches!(
                self.replies.slots.borrow()[self.id as usize],
                Slot::Waiting(_)
            )
    }

    /// Ready once the reply has come; else the task is woken when it does.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        match &mut self.replies.slots.borrow_mut()[self.id as usize] {
            Slot::Waiting(waiting) => {
                // The same task polls again and again: its waker is kept, not cloned.
                if !waiting.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waiting = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }
}

impl Drop for ReplyRx {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut slots = self.replies.slots.borrow_mut();
        let slot = &mut slots[self.id as usize];
        if matches!(slot, Slot::Ready(_)) {
            drop(slots);
            self.replies.release(self.id);
        } else {
            *slot = Slot::Abandoned;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &'static str) -> Reply {
        Ok(Bytes::from_static(text.as_bytes()))
    }

    #[test]
    fn a_reply_reaches_its_receiver_and_the_slot_is_reused() {
        let replies = Rc::new(Replies::default());
        let (tx, mut rx) = replies.channel();
        assert!(rx.try_recv().is_none());
        tx.send(ok("STORED\r\n"));
        assert_eq!(rx.try_recv(), Some(ok("STORED\r\n")));
        assert!(rx.try_recv().is_none());
        drop(rx);
        let (_tx, _rx) = replies.channel();
        assert_eq!(replies.slots.borrow().len(), 1, "the freed slot is reused");
    }

    #[test]
    fn handles_do_not_leak_the_arena() {
        let replies = Rc::new(Replies::default());
        for _ in 0..3 {
            let (tx, mut rx) = replies.channel();
            tx.send(ok("OK\r\n"));
            assert!(rx.try_recv().is_some());
        }
        assert_eq!(Rc::strong_count(&replies), 1);
    }

    #[test]
    fn a_dropped_sender_delivers_closed() {
        let replies = Rc::new(Replies::default());
        let (tx, mut rx) = replies.channel();
        drop(tx);
        assert_eq!(rx.try_recv(), Some(Err(BackendError::Closed)));
    }

    #[test]
    fn an_abandoned_slot_is_freed_when_its_reply_comes() {
        let replies = Rc::new(Replies::default());
        let (tx, rx) = replies.channel();
        drop(rx);
        assert!(replies.free.borrow().is_empty());
        tx.send(ok("END\r\n"));
        assert_eq!(*replies.free.borrow(), [0]);
    }

    #[test]
    fn queue_pops_in_order_and_ends_when_closed() {
        let queue = JobQueue::default();
        for bytes in [&b"a"[..], b"b"] {
            queue.push(Job {
                bytes: Bytes::from_static(bytes),
                reply: None,
                until_noop: false,
            });
        }
        assert_eq!(queue.try_pop().unwrap().bytes, "a");
        queue.close();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(queue.pop().await.unwrap().bytes, "b");
            assert!(queue.pop().await.is_none());
        });
    }
}
