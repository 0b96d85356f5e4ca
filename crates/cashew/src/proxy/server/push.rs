//! The RESP3 pushes of a client's own server connections (a tracking client's
//! invalidations) on their way to it, a bounded number at a time.

use std::cell::Cell;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Pushes on their way to one client, a bounded number at a time: when the
/// client does not take them (it waits for a blocking call), the rest are
/// dropped and the client is told so once, so that it forgets everything.
#[derive(Clone)]
pub(crate) struct PushSink {
    tx: mpsc::Sender<Bytes>,
    overflowed: Rc<Cell<bool>>,
}

/// The other end of a [`PushSink`].
pub(crate) struct PushSource {
    rx: mpsc::Receiver<Bytes>,
    overflowed: Rc<Cell<bool>>,
}

/// Pushes a client's connections may hold for it.
const PUSH_BACKLOG: usize = 4096;

pub(crate) fn push_channel() -> (PushSink, PushSource) {
    let (tx, rx) = mpsc::channel(PUSH_BACKLOG);
    let overflowed = Rc::new(Cell::new(false));
    let source = PushSource {
        rx,
        overflowed: overflowed.clone(),
    };
    (PushSink { tx, overflowed }, source)
}

impl PushSink {
    pub(crate) fn send(&self, push: Bytes) {
        if self.tx.try_send(push).is_err() {
            self.overflowed.set(true);
        }
    }
}

impl PushSource {
    /// The next push; after pushes were dropped, those held are replaced by
    /// `instead`.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        instead: &'static [u8],
    ) -> Poll<Option<Bytes>> {
        if self.overflowed.replace(false) {
            while self.rx.try_recv().is_ok() {}
            return Poll::Ready(Some(Bytes::from_static(instead)));
        }
        self.rx.poll_recv(cx)
    }
}
