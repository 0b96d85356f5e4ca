//! Shadow traffic's mismatches: a key whose shadow pool answered otherwise than
//! the pool itself, the latest [`CAPACITY`] of each worker and pool. Only a
//! mismatch costs a lock.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Mismatches kept per worker and pool; older ones make way.
pub(crate) const CAPACITY: usize = 32;

#[derive(Clone, Debug)]
pub(crate) struct Mismatch {
    /// When it was found, in µs since the epoch.
    pub(crate) at_usec: u64,
    pub(crate) command: String,
    pub(crate) key: String,
    /// What the pool and its shadow answered for the key, in words.
    pub(crate) primary: String,
    pub(crate) shadow: String,
}

#[derive(Default)]
pub(crate) struct ShadowLog {
    entries: Mutex<VecDeque<Mismatch>>,
}

impl ShadowLog {
    #[cold]
    pub(crate) fn record(&self, mismatch: Mismatch) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(mismatch);
    }

    pub(crate) fn entries(&self) -> Vec<Mismatch> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().cloned().collect()
    }
}
