//! Wall-clock time as the reports give it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the epoch (nutcracker's `server_ejected_at`, state changes).
pub(crate) fn now_usec() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// Seconds since the epoch.
pub(crate) fn unix_secs() -> u64 {
    now_usec() / 1_000_000
}
