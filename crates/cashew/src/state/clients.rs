//! The client connections of the whole process, for `CLIENT LIST` and `GET
//! /clients`: each has a card, made when it connects and dropped when it leaves
//! (a lock taken then, and when the list is read). While it is served, only its
//! worker writes to its card, once per read of requests, with no lock and no
//! clock read: the time it stamps is one the control plane advances.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Process-wide client numbers, as Redis's `CLIENT ID`: never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static CARDS: Mutex<BTreeMap<u64, Arc<ClientCard>>> = Mutex::new(BTreeMap::new());
/// The time cards count from.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// Milliseconds after `EPOCH`, as of the last [`advance_clock`].
static NOW_MS: AtomicU64 = AtomicU64::new(0);
/// How often the control plane calls [`advance_clock`]: what an idle time may
/// overstate.
pub(crate) const CLOCK_STEP: Duration = Duration::from_millis(100);

/// Moves the cards' clock to now.
pub(crate) fn advance_clock() {
    NOW_MS.store(since_epoch(Instant::now()), Relaxed);
}

/// What can be seen of one client connection.
#[derive(Debug)]
pub(crate) struct ClientCard {
    pub(crate) id: u64,
    pub(crate) pool: String,
    pub(crate) protocol: &'static str,
    /// `ip:port`, or `unix:0`.
    pub(crate) address: String,
    /// Where it reached cashew.
    pub(crate) local: String,
    connected: Instant,
    /// When its last requests were read, as milliseconds after `EPOCH`.
    last_request: AtomicU64,
    requests: AtomicU64,
    /// What the client set or asked for, which changes seldom.
    profile: Mutex<Profile>,
    /// Asked to close by the admin API; `task` is woken to do it.
    killed: AtomicBool,
    task: Mutex<Option<Waker>>,
}

/// A redis client's name and library (`CLIENT SETNAME`, `HELLO ... SETNAME`,
/// `CLIENT SETINFO`), protocol and whether it is subscribed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) name: String,
    pub(crate) lib_name: String,
    pub(crate) lib_ver: String,
    pub(crate) resp3: bool,
    pub(crate) subscriber: bool,
    /// It turned `CLIENT TRACKING` on.
    pub(crate) tracking: bool,
}

impl ClientCard {
    /// The card of a client that just connected, listed until the returned
    /// [`Listed`] is dropped.
    pub(crate) fn connect(
        pool: &str,
        protocol: &'static str,
        address: String,
        local: String,
    ) -> Listed {
        let now = Instant::now();
        let card = Arc::new(ClientCard {
            id: NEXT_ID.fetch_add(1, Relaxed),
            pool: pool.to_string(),
            protocol,
            address,
            local,
            connected: now,
            last_request: AtomicU64::new(since_epoch(now)),
            requests: AtomicU64::new(0),
            profile: Mutex::default(),
            killed: AtomicBool::new(false),
            task: Mutex::default(),
        });
        lock().insert(card.id, card.clone());
        Listed(card)
    }

    /// `n` requests were read. Only the client's worker writes these, so a load
    /// and a store suffice.
    #[inline]
    pub(crate) fn read(&self, n: usize) {
        self.last_request.store(NOW_MS.load(Relaxed), Relaxed);
        let total = self.requests.load(Relaxed) + n as u64;
        self.requests.store(total, Relaxed);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    pub(crate) fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.connected)
    }

    /// Since its last request was read (or it connected).
    pub(crate) fn idle(&self, now: Instant) -> Duration {
        let last = Duration::from_millis(self.last_request.load(Relaxed));
        now.saturating_duration_since(*EPOCH + last)
    }

    pub(crate) fn profile(&self) -> Profile {
        self.profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set(&self, change: impl FnOnce(&mut Profile)) {
        change(&mut self.profile.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The task serving the client, woken when it is killed.
    pub(crate) fn served_by(&self, task: Waker) {
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// Whether the client was killed: its connection closes at once, and replies
    /// not yet written are dropped (as Redis's `CLIENT KILL` does).
    #[inline]
    pub(crate) fn killed(&self) -> bool {
        self.killed.load(Relaxed)
    }
}

/// Closes the connection of client `id`; the card of the client killed, if there
/// is one.
pub(crate) fn kill(id: u64) -> Option<Arc<ClientCard>> {
    let card = lock().get(&id).cloned()?;
    card.killed.store(true, Relaxed);
    if let Some(task) = card.task.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        task.wake_by_ref();
    }
    Some(card)
}

/// A card in the list while this lives.
#[derive(Debug)]
pub(crate) struct Listed(Arc<ClientCard>);

impl Listed {
    pub(crate) fn shared(&self) -> Arc<ClientCard> {
        self.0.clone()
    }
}

impl std::ops::Deref for Listed {
    type Target = ClientCard;
    fn deref(&self) -> &ClientCard {
        &self.0
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        lock().remove(&self.0.id);
    }
}

/// The cards of the clients connected now, oldest first; of one pool, or all.
pub(crate) fn connected(pool: Option<&str>) -> Vec<Arc<ClientCard>> {
    lock()
        .values()
        .filter(|c| pool.is_none_or(|p| c.pool == p))
        .cloned()
        .collect()
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<u64, Arc<ClientCard>>> {
    CARDS.lock().unwrap_or_else(|e| e.into_inner())
}

fn since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_is_listed_while_its_client_is_connected() {
        let a = ClientCard::connect("test-cards", "redis", "127.0.0.1:1".into(), "l".into());
        let b = ClientCard::connect("test-cards", "memcache", "127.0.0.1:2".into(), "l".into());
        assert!(b.id > a.id);
        let ids = |pool| -> Vec<u64> { connected(Some(pool)).iter().map(|c| c.id).collect() };
        assert_eq!(ids("test-cards"), vec![a.id, b.id]);
        assert!(ids("no-such-pool").is_empty());
        drop(a);
        assert_eq!(ids("test-cards"), vec![b.id]);
    }

    #[test]
    fn idle_counts_from_the_last_read() {
        let c = ClientCard::connect("test-idle", "redis", String::new(), String::new());
        let later = Instant::now() + Duration::from_secs(5);
        assert!(c.idle(later) >= Duration::from_secs(5));
        advance_clock();
        c.read(3);
        c.read(2);
        assert_eq!(c.requests(), 5);
        let idle = c.idle(Instant::now() + Duration::from_secs(2));
        assert!(
            idle >= Duration::from_secs(2) && idle < Duration::from_secs(3),
            "{idle:?}"
        );
        assert!(c.age(later) >= Duration::from_secs(5));
        c.set(|p| p.name = "worker".into());
        assert_eq!(c.profile().name, "worker");
    }

    #[test]
    fn a_killed_client_is_told_and_its_task_woken() {
        use std::sync::atomic::AtomicUsize;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Relaxed);
            }
        }
        let c = ClientCard::connect("test-kill", "redis", String::new(), String::new());
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        c.served_by(Waker::from(woken.clone()));
        assert!(!c.killed());
        assert!(kill(c.id + 1_000_000).is_none(), "no such client");
        assert_eq!(kill(c.id).map(|k| k.id), Some(c.id));
        assert!(c.killed());
        assert_eq!(woken.0.load(Relaxed), 1);
    }
}
