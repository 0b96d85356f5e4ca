//! Requests from the workers to read a Redis Cluster's slot map again now (after
//! a MOVED, or when a connection to a master fails), served by the control
//! plane's cluster watcher; many requests before it wakes count as one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

static WANTED: Mutex<bool> = Mutex::new(false);
static WAKE: Condvar = Condvar::new();

/// Asks for the slot maps to be read again as soon as possible.
pub(crate) fn request_refresh() {
    let mut wanted = WANTED.lock().unwrap_or_else(|e| e.into_inner());
    if !*wanted {
        *wanted = true;
        WAKE.notify_all();
    }
}

/// Waits up to `limit` for a request; true when one came (and clears it).
pub(crate) fn wait_for_request(limit: Duration) -> bool {
    let wanted = WANTED.lock().unwrap_or_else(|e| e.into_inner());
    let (mut wanted, _) = WAKE
        .wait_timeout_while(wanted, limit, |w| !*w)
        .unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *wanted)
}

/// Reads of the slot maps: every interval, when asked, and those that found a
/// changed map.
pub(crate) static REFRESHES_PERIODIC: AtomicU64 = AtomicU64::new(0);
pub(crate) static REFRESHES_ASKED: AtomicU64 = AtomicU64::new(0);
pub(crate) static MAPS_CHANGED: AtomicU64 = AtomicU64::new(0);

/// The three counts above.
pub(crate) fn refreshes() -> (u64, u64, u64) {
    (
        REFRESHES_PERIODIC.load(Ordering::Relaxed),
        REFRESHES_ASKED.load(Ordering::Relaxed),
        MAPS_CHANGED.load(Ordering::Relaxed),
    )
}
