//! How many requests of a client may be in flight, given the bytes of replies
//! cashew holds for it.

use super::MAX_PENDING;

/// A client whose written-out replies pile up beyond this many times its
/// `client_output_limit`, and that reads none of them for a while, is closed.
const HARD_LIMIT_FACTOR: usize = 4;

/// What one client may make cashew hold: replies not yet written to it, and those
/// still to come for the requests it has in flight, each counted at the size of the
/// largest reply it got lately. Past `limit`, its requests are not read until it
/// reads its replies (backpressure): a client that never reads costs about `limit`.
pub(super) struct ReplyBudget {
    limit: usize,
    /// Bytes a reply is expected to take: jumps up to a larger reply at once and
    /// decays by 1/64 per smaller one.
    estimate: usize,
    /// Bytes in `out`, settled and not yet written.
    pub(super) held: usize,
    /// What `max_queue` says, worked out when `held` or `estimate` change.
    max_queue: usize,
}

impl ReplyBudget {
    pub(super) fn new(limit: usize) -> Self {
        let mut budget = ReplyBudget {
            limit,
            // Until replies show their size, a few dozen requests in flight.
            estimate: (limit / 32).max(1),
            held: 0,
            max_queue: 0,
        };
        budget.update();
        budget
    }

    pub(super) fn replied(&mut self, bytes: usize) {
        self.held += bytes;
        let floor = (self.limit / MAX_PENDING).max(1);
        self.estimate = bytes.max(self.estimate - self.estimate / 64).max(floor);
        self.update();
    }

    pub(super) fn written(&mut self, bytes: usize) {
        self.held -= bytes;
        self.update();
    }

    /// Most requests the client may have in flight now.
    #[inline]
    pub(super) fn max_queue(&self) -> usize {
        self.max_queue
    }

    fn update(&mut self) {
        let room = self.limit.saturating_sub(self.held) / self.estimate;
        // A client with nothing held can always send one request.
        let least = usize::from(self.held == 0);
        self.max_queue = room.max(least).min(MAX_PENDING);
    }

    /// Replies have piled up far past the limit (replies much larger than the
    /// ones before, to requests already read).
    pub(super) fn overflowing(&self) -> bool {
        self.held > self.limit.saturating_mul(HARD_LIMIT_FACTOR)
    }
}
