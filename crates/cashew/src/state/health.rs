//! What every worker knows about a pool's servers: failures in a row and ejections
//! (automatic, or by hand through the admin API). Shared by all workers, written on
//! failures and state changes only, and carried by name from one configuration
//! generation to the next, so a reload neither forgets nor resets an ejection.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The ejection settings of a pool, as its config gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EjectPolicy {
    pub(crate) auto_eject: bool,
    pub(crate) failure_limit: u32,
    pub(crate) retry_timeout_ms: u64,
    /// Health checks run: an ejected server comes back only when a probe
    /// succeeds, never by sending it a client request after the retry timeout.
    pub(crate) health_checked: bool,
}

impl EjectPolicy {
    pub(crate) fn of(pool: &cashew_config::Pool) -> EjectPolicy {
        EjectPolicy {
            auto_eject: pool.auto_eject_hosts,
            failure_limit: pool.server_failure_limit,
            retry_timeout_ms: pool.server_retry_timeout_ms,
            health_checked: pool.health_check_interval_ms > 0,
        }
    }
}

/// Failures of different connections closer together than this are one event: a
/// crash seen by every worker's connection at once counts once. A connection that
/// fails again (its reconnection is refused) is a new event, as in nutcracker.
const FAILURE_EVENT_MS: u64 = 100;
/// [`ServerHealth::event`] holds the event number above these bits, its start below.
const EVENT_START_BITS: u32 = 40;
/// `ejected_until` of a server ejected until a health probe brings it back.
const UNTIL_PROBED: u64 = u64::MAX;

/// State of a pool shared by every worker.
#[derive(Default)]
pub(crate) struct PoolShared {
    /// Clients of this pool across all workers, for `client_connections`.
    pub(crate) clients: AtomicU32,
    /// Redis clients' pinned server connections across all workers, for
    /// `max_pinned_connections`.
    pub(crate) pinned: AtomicU32,
    /// Ejections made by health probes (which run on no worker).
    pub(crate) probe_ejections: AtomicU64,
    /// Bumped at every change of a server's state: a worker that sees a new value
    /// rebuilds its placement.
    epoch: AtomicU64,
}

impl PoolShared {
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Relaxed)
    }
}

/// Where a server stands in placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerState {
    Up,
    /// Ejected after failures, until the given time.
    Ejected(Instant),
    /// Ejected until a health probe succeeds.
    Down,
    /// Taken out by hand; back only when restored by hand.
    Manual,
}

impl ServerState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ServerState::Up => "up",
            ServerState::Ejected(_) => "ejected",
            ServerState::Down => "down",
            ServerState::Manual => "manual",
        }
    }
}

/// What the last health probes of a server said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProbeState {
    /// No health checks for this server.
    Off,
    Ok,
    Failing,
}

/// One server's health, shared by every worker.
pub(crate) struct ServerHealth {
    pool: Arc<PoolShared>,
    failures: AtomicU32,
    /// Until when the server is ejected, in ms since [`origin`]; 0 when it is not.
    ejected_until: AtomicU64,
    manual: AtomicBool,
    /// When it was last ejected, in µs since the epoch (nutcracker's `server_ejected_at`).
    ejected_at_usec: AtomicU64,
    /// The version the server gave when cashew last connected to it.
    version: Mutex<Option<Arc<str>>>,
    /// The last failure event counted: its number (from 1, above
    /// [`EVENT_START_BITS`]) and when it began (ms since [`origin`], below).
    event: AtomicU64,
    /// Health probes: failures in a row, the last result (0 off, 1 ok, 2 failing),
    /// and when the server's state last changed (µs since the epoch).
    probe_failures: AtomicU32,
    probe_state: std::sync::atomic::AtomicU8,
    changed_at_usec: AtomicU64,
    /// Times the server was ejected, however.
    ejections: AtomicU64,
}

/// What [`ServerHealth::failed`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Part of a failure event already counted.
    SameEvent,
    Counted,
    /// This call ejected the server (exactly one caller sees this per ejection).
    Ejected,
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Milliseconds since [`origin`], never 0 (which means "not ejected").
fn now_ms() -> u64 {
    origin().elapsed().as_millis() as u64 + 1
}

impl ServerHealth {
    pub(crate) fn new(pool: Arc<PoolShared>) -> ServerHealth {
        ServerHealth {
            pool,
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            manual: AtomicBool::new(false),
            ejected_at_usec: AtomicU64::new(0),
            version: Mutex::default(),
            event: AtomicU64::new(0),
            probe_failures: AtomicU32::new(0),
            probe_state: std::sync::atomic::AtomicU8::new(0),
            changed_at_usec: AtomicU64::new(crate::clock::now_usec()),
            ejections: AtomicU64::new(0),
        }
    }

    /// Times the server was ejected.
    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Relaxed)
    }

    /// When the server's state last changed, in µs since the epoch.
    pub(crate) fn changed_at_usec(&self) -> u64 {
        self.changed_at_usec.load(Relaxed)
    }

    fn changed(&self) {
        self.changed_at_usec
            .store(crate::clock::now_usec(), Relaxed);
        self.pool.epoch.fetch_add(1, Relaxed);
    }

    pub(crate) fn probe_state(&self) -> ProbeState {
        match self.probe_state.load(Relaxed) {
            1 => ProbeState::Ok,
            2 => ProbeState::Failing,
            _ => ProbeState::Off,
        }
    }

    /// A health probe answered: the server is back if an ejection held it out.
    /// True when this brought it back.
    pub(crate) fn probe_ok(&self) -> bool {
        self.probe_state.store(1, Relaxed);
        self.probe_failures.store(0, Relaxed);
        let was_out = self.ejected_until.swap(0, Relaxed) != 0;
        if was_out {
            self.failures.store(0, Relaxed);
            self.changed();
        }
        was_out
    }

    /// A health probe failed: after `failure_limit` in a row (and with
    /// `auto_eject_hosts`), the server is ejected until a probe succeeds. True when
    /// this ejected it.
    pub(crate) fn probe_failed(&self, policy: EjectPolicy) -> bool {
        self.probe_state.store(2, Relaxed);
        let failures = self.probe_failures.fetch_add(1, Relaxed) + 1;
        if !policy.auto_eject || failures < policy.failure_limit {
            return false;
        }
        if self.ejected_until.swap(UNTIL_PROBED, Relaxed) == UNTIL_PROBED {
            return false;
        }
        self.ejected_at_usec
            .store(crate::clock::now_usec(), Relaxed);
        self.pool.probe_ejections.fetch_add(1, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        self.changed();
        true
    }

    pub(crate) fn version(&self) -> Option<Arc<str>> {
        self.version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_version(&self, version: &str) {
        let mut slot = self.version.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_deref() != Some(version) {
            *slot = Some(version.into());
        }
    }

    pub(crate) fn state(&self) -> ServerState {
        if self.manual.load(Relaxed) {
            return ServerState::Manual;
        }
        match self.ejected_until.load(Relaxed) {
            0 => ServerState::Up,
            UNTIL_PROBED => ServerState::Down,
            until if until <= now_ms() => ServerState::Up,
            until => ServerState::Ejected(origin() + Duration::from_millis(until - 1)),
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.state() == ServerState::Up
    }

    pub(crate) fn ejected_at_usec(&self) -> u64 {
        self.ejected_at_usec.load(Relaxed)
    }

    /// A reply came: the failures in a row end, and so does an ejection whose time
    /// has run out. True for the one caller that ended it (so it is told once).
    #[inline]
    pub(crate) fn ok(&self) -> bool {
        // Read first: most replies find them at 0 already, and a store would bounce
        // the cache line between workers.
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
        let until = self.ejected_until.load(Relaxed);
        if until == 0 || until == UNTIL_PROBED || until > now_ms() {
            return false;
        }
        let ended = self
            .ejected_until
            .compare_exchange(until, 0, Relaxed, Relaxed)
            .is_ok();
        if ended {
            self.changed();
        }
        ended
    }

    /// Failures counted since the server last answered.
    pub(crate) fn failures_in_a_row(&self) -> u32 {
        self.failures.load(Relaxed)
    }

    /// Counts a failure of a connection and ejects the server when the policy says
    /// so. `seen` is the connection's own record of the last event it took part in
    /// (0 at first): a failure of another connection within [`FAILURE_EVENT_MS`] of
    /// an event's start is part of that event.
    pub(crate) fn failed(&self, policy: EjectPolicy, seen: &mut u64) -> Failure {
        let now = now_ms();
        loop {
            let current = self.event.load(Relaxed);
            let (number, began) = (
                current >> EVENT_START_BITS,
                current & ((1 << EVENT_START_BITS) - 1),
            );
            if began != 0 && now.saturating_sub(began) < FAILURE_EVENT_MS && *seen != number {
                *seen = number;
                return Failure::SameEvent;
            }
            let next_number = number % ((1 << (64 - EVENT_START_BITS)) - 1) + 1;
            let next = (next_number << EVENT_START_BITS) | now;
            if self
                .event
                .compare_exchange(current, next, Relaxed, Relaxed)
                .is_ok()
            {
                *seen = next_number;
                break;
            }
        }
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        if !policy.auto_eject || failures < policy.failure_limit {
            return Failure::Counted;
        }
        let current = self.ejected_until.load(Relaxed);
        if current > now_ms() {
            return Failure::Counted;
        }
        let until = match policy.health_checked {
            true => UNTIL_PROBED,
            false => now_ms() + policy.retry_timeout_ms,
        };
        // One caller wins the ejection; it counts it and tells the other workers.
        if self
            .ejected_until
            .compare_exchange(current, until, Relaxed, Relaxed)
            .is_err()
        {
            return Failure::Counted;
        }
        self.failures.store(0, Relaxed);
        self.ejected_at_usec
            .store(crate::clock::now_usec(), Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        self.changed();
        Failure::Ejected
    }

    /// Takes the server out of placement until [`restore`](Self::restore).
    pub(crate) fn eject_by_hand(&self) {
        if !self.manual.swap(true, Relaxed) {
            self.ejected_at_usec
                .store(crate::clock::now_usec(), Relaxed);
            self.ejections.fetch_add(1, Relaxed);
        }
        self.changed();
    }

    /// Puts the server back in placement now, however it was ejected.
    pub(crate) fn restore(&self) {
        self.manual.store(false, Relaxed);
        self.ejected_until.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.changed();
    }

    /// Ends an automatic ejection (used when a reload turns `auto_eject_hosts` off).
    pub(crate) fn clear_automatic_ejection(&self) {
        if self.ejected_until.swap(0, Relaxed) != 0 {
            self.changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EJECT_AFTER_2: EjectPolicy = EjectPolicy {
        auto_eject: true,
        failure_limit: 2,
        retry_timeout_ms: 60_000,
        health_checked: false,
    };

    /// Waits out the window in which failures are one event.
    fn next_event() {
        std::thread::sleep(Duration::from_millis(FAILURE_EVENT_MS + 5));
    }

    #[test]
    fn failures_in_a_row_eject_once_and_bump_the_epoch() {
        let pool = Arc::new(PoolShared::default());
        let server = ServerHealth::new(pool.clone());
        let mut conn = 0;
        assert_eq!(server.failed(EJECT_AFTER_2, &mut conn), Failure::Counted);
        // The same connection failing again (its reconnection refused) at once.
        assert_eq!(server.failed(EJECT_AFTER_2, &mut conn), Failure::Ejected);
        assert!(matches!(server.state(), ServerState::Ejected(_)));
        assert_eq!(pool.epoch(), 1);
        assert_eq!(server.failed(EJECT_AFTER_2, &mut conn), Failure::Counted);
        assert_eq!(
            server.failed(EJECT_AFTER_2, &mut conn),
            Failure::Counted,
            "already ejected"
        );
        assert!(server.ejected_at_usec() > 0);
    }

    #[test]
    fn connections_failing_at_the_same_moment_are_one_event() {
        let server = ServerHealth::new(Arc::default());
        let mut conns = [0u64; 5];
        assert_eq!(
            server.failed(EJECT_AFTER_2, &mut conns[0]),
            Failure::Counted
        );
        for conn in &mut conns[1..] {
            assert_eq!(server.failed(EJECT_AFTER_2, conn), Failure::SameEvent);
        }
        assert!(server.is_live(), "five workers seeing one crash count once");
        // One of them fails again: a second event.
        assert_eq!(
            server.failed(EJECT_AFTER_2, &mut conns[3]),
            Failure::Ejected
        );
    }

    #[test]
    fn failures_of_other_connections_later_are_new_events() {
        let server = ServerHealth::new(Arc::default());
        let (mut a, mut b) = (0, 0);
        assert_eq!(server.failed(EJECT_AFTER_2, &mut a), Failure::Counted);
        next_event();
        assert_eq!(server.failed(EJECT_AFTER_2, &mut b), Failure::Ejected);
    }

    #[test]
    fn with_health_checks_only_a_probe_brings_a_server_back() {
        let pool = Arc::new(PoolShared::default());
        let server = ServerHealth::new(pool.clone());
        let checked = EjectPolicy {
            health_checked: true,
            retry_timeout_ms: 0,
            ..EJECT_AFTER_2
        };
        assert!(!server.probe_failed(checked));
        assert_eq!(server.probe_state(), ProbeState::Failing);
        assert!(server.probe_failed(checked));
        assert_eq!(server.state(), ServerState::Down);
        assert_eq!(pool.probe_ejections.load(Relaxed), 1);
        assert!(!server.probe_failed(checked), "already down");
        assert!(server.probe_ok());
        assert_eq!(server.state(), ServerState::Up);
        // Ejected by client failures: still only a probe re-admits it.
        let mut conn = 0;
        server.failed(checked, &mut conn);
        assert_eq!(server.failed(checked, &mut conn), Failure::Ejected);
        assert_eq!(server.state(), ServerState::Down, "no retry timeout");
        assert!(server.probe_ok());
        assert!(server.is_live());
    }

    #[test]
    fn the_first_reply_after_an_ejection_ends_it_once() {
        let server = ServerHealth::new(Arc::default());
        let policy = EjectPolicy {
            retry_timeout_ms: 100,
            ..EJECT_AFTER_2
        };
        let mut conn = 0;
        server.failed(policy, &mut conn);
        std::thread::sleep(Duration::from_millis(FAILURE_EVENT_MS + 10));
        assert_eq!(server.failed(policy, &mut conn), Failure::Ejected);
        assert_eq!(server.ejections(), 1);
        assert!(!server.ok(), "still ejected: not back yet");
        std::thread::sleep(Duration::from_millis(110));
        assert!(server.ok(), "back in service");
        assert!(!server.ok(), "told once");
        assert_eq!(server.state(), ServerState::Up);
    }

    #[test]
    fn a_reply_between_failures_resets_the_count() {
        let server = ServerHealth::new(Arc::default());
        let mut conn = 0;
        server.failed(EJECT_AFTER_2, &mut conn);
        server.ok();
        assert_eq!(server.failed(EJECT_AFTER_2, &mut conn), Failure::Counted);
        assert!(server.is_live());
    }

    #[test]
    fn without_auto_eject_a_server_stays_up() {
        let server = ServerHealth::new(Arc::default());
        let policy = EjectPolicy {
            auto_eject: false,
            ..EJECT_AFTER_2
        };
        let mut conn = 0;
        for _ in 0..10 {
            server.failed(policy, &mut conn);
        }
        assert!(server.is_live());
    }

    #[test]
    fn by_hand_ejection_lasts_until_restored() {
        let pool = Arc::new(PoolShared::default());
        let server = ServerHealth::new(pool.clone());
        server.eject_by_hand();
        assert_eq!(server.state(), ServerState::Manual);
        server.restore();
        assert_eq!(server.state(), ServerState::Up);
        assert_eq!(pool.epoch(), 2);
    }
}
