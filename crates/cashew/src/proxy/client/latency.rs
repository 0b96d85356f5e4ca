//! A client's latency, from each request read in full to its reply written in
//! full, with the clock read at most once per turn of the client's loop.

use std::collections::VecDeque;
use std::time::Instant;

use crate::proxy::pool::PoolSlot;
use crate::state::counters::PoolCounter;

/// The time of one turn of a client's loop: the clock is read the first time a
/// turn needs it, and not again in that turn.
#[derive(Default)]
pub(super) struct TurnClock(Option<Instant>);

impl TurnClock {
    pub(super) fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }

    /// A new turn: the next time asked for is read anew.
    pub(super) fn tick(&mut self) {
        self.0 = None;
    }
}

/// A client's requests in flight and replies not yet written, for the pool's
/// latency histogram (request read in full to reply written in full) and its
/// in-flight gauge. Times come from the loop turn's clock, and the requests of one
/// read are tracked as one group, not one by one.
#[derive(Default)]
pub(super) struct Latency {
    /// When the requests of the last read were taken: the time of every request it
    /// brought.
    last_read: Option<Instant>,
    /// Requests of the client's queue, in order, as (read at, how many).
    queued: VecDeque<(Instant, u32)>,
    /// Replies moved to the output and not yet written in full, as (where the
    /// group's last reply ends in the client's stream of reply bytes, read at,
    /// how many): a group is recorded once all of it is written.
    unwritten: VecDeque<(u64, Instant, u32)>,
    replied_bytes: u64,
    written_bytes: u64,
}

impl Latency {
    /// A read completed: the requests it brought are timed from the next turn,
    /// which takes them (the clock is read then, if they are complete).
    pub(super) fn read_done(&mut self) {
        self.last_read = None;
    }

    pub(super) fn requests_read(&mut self, n: usize, clock: &mut TurnClock, slot: &PoolSlot) {
        if n == 0 {
            return;
        }
        let at = *self.last_read.get_or_insert_with(|| clock.now());
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
    pub(super) fn replied(&mut self, mut n: u32, bytes: usize) {
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

    pub(super) fn written(&mut self, bytes: usize, clock: &mut TurnClock, slot: &PoolSlot) {
        self.written_bytes += bytes as u64;
        self.record_written(clock, slot);
    }

    /// Records every group now written in full (replies of no bytes, to quiet
    /// requests, as soon as those before them are).
    pub(super) fn record_written(&mut self, clock: &mut TurnClock, slot: &PoolSlot) {
        if self
            .unwritten
            .front()
            .is_none_or(|(end, _, _)| *end > self.written_bytes)
        {
            return;
        }
        let now = clock.now();
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
    pub(super) fn dropped(&mut self, slot: &PoolSlot) {
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
