//! Hot keys: the keys a pool is asked for most, found with a Space-Saving sketch
//! (Metwally et al.) over one request in `hotkeys_sample`. Each worker keeps its
//! own sketch of `hotkeys_capacity` slots, allocated once, in two windows of
//! [`WINDOW`] so that the rate covers the last 10 to 20 seconds. The worker takes
//! the sketch's lock only for a sampled request and never waits for it (a sample
//! that finds it taken by a reader is skipped); readers sum the workers' sketches.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one window of counts lasts.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Longest key kept; longer keys are counted by their first bytes.
pub(crate) const KEY_MAX: usize = 250;

#[derive(Clone)]
struct Slot {
    key: [u8; KEY_MAX],
    len: u8,
    count: u64,
    /// What `count` may overstate: the count of the key it replaced.
    error: u64,
}

impl Slot {
    fn key(&self) -> &[u8] {
        &self.key[..usize::from(self.len)]
    }
}

/// Space-Saving: `slots` keys with their counts; a key not among them takes the
/// place of the one with the smallest count, and starts from that count (an
/// overestimate bounded by it, which only the coldest keys suffer).
#[derive(Default)]
struct Sketch {
    slots: Vec<Slot>,
    used: usize,
}

impl Sketch {
    fn reserve(&mut self, capacity: usize) {
        if self.slots.len() != capacity {
            let empty = Slot {
                key: [0; KEY_MAX],
                len: 0,
                count: 0,
                error: 0,
            };
            self.slots = vec![empty; capacity];
            self.used = 0;
        }
    }

    fn add(&mut self, key: &[u8]) {
        let key = &key[..key.len().min(KEY_MAX)];
        if let Some(slot) = self.slots[..self.used].iter_mut().find(|s| s.key() == key) {
            slot.count += 1;
            return;
        }
        let (slot, floor) = if self.used < self.slots.len() {
            self.used += 1;
            (&mut self.slots[self.used - 1], 0)
        } else {
            let slot = self
                .slots
                .iter_mut()
                .min_by_key(|s| s.count)
                .expect("slots");
            let floor = slot.count;
            (slot, floor)
        };
        slot.key[..key.len()].copy_from_slice(key);
        slot.len = key.len() as u8;
        slot.count = floor + 1;
        slot.error = floor;
    }

    fn clear(&mut self) {
        self.used = 0;
    }

    fn entries(&self) -> impl Iterator<Item = (&[u8], u64, u64)> {
        self.slots[..self.used]
            .iter()
            .map(|s| (s.key(), s.count, s.error))
    }
}

struct Windows {
    current: Sketch,
    previous: Sketch,
    /// When `current` began; `previous` is the window before it when `has_previous`.
    started: Instant,
    has_previous: bool,
}

impl Windows {
    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.started);
        if age < WINDOW {
            return;
        }
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
        // A gap of more than a window leaves nothing recent in the old counts.
        self.has_previous = age < 2 * WINDOW;
        self.started = now;
    }
}

/// One worker's hot keys of one pool.
pub(crate) struct HotKeys {
    /// Requests seen, to pick one in `sample` (written by the worker alone).
    seen: AtomicU64,
    windows: Mutex<Windows>,
}

impl Default for HotKeys {
    fn default() -> Self {
        HotKeys {
            seen: AtomicU64::new(0),
            windows: Mutex::new(Windows {
                current: Sketch::default(),
                previous: Sketch::default(),
                started: Instant::now(),
                has_previous: false,
            }),
        }
    }
}

/// Sampled counts of one worker: each key's count and the time they cover.
pub(crate) struct Counts {
    /// Each key, its count, and how much of that count may be overstated.
    pub(crate) keys: Vec<(Vec<u8>, u64, u64)>,
    pub(crate) covered: Duration,
}

impl HotKeys {
    /// Counts a request for `key`, if it is one of the sampled ones.
    #[inline]
    pub(crate) fn observe(&self, key: &[u8], sample: u32, capacity: u32) {
        let seen = self.seen.load(Relaxed) + 1;
        self.seen.store(seen, Relaxed);
        if seen % u64::from(sample.max(1)) != 0 {
            return;
        }
        self.sample(key, capacity as usize);
    }

    #[cold]
    fn sample(&self, key: &[u8], capacity: usize) {
        let Ok(mut w) = self.windows.try_lock() else {
            return;
        };
        let now = Instant::now();
        w.rotate(now);
        if w.current.used == 0 && !w.has_previous {
            // The first sample after a quiet spell starts the window: a rate is
            // over the time keys were asked for, not the idle time before.
            w.started = now;
        }
        w.current.reserve(capacity);
        w.previous.reserve(capacity);
        w.current.add(key);
    }

    /// The sampled counts of the last one or two windows.
    pub(crate) fn counts(&self) -> Counts {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        w.rotate(now);
        let mut keys: Vec<(Vec<u8>, u64, u64)> = w
            .current
            .entries()
            .map(|(k, c, e)| (k.to_vec(), c, e))
            .collect();
        let mut covered = now.saturating_duration_since(w.started);
        if w.has_previous {
            covered += WINDOW;
            for (key, count, error) in w.previous.entries() {
                match keys.iter_mut().find(|(k, ..)| k == key) {
                    Some((_, c, e)) => {
                        *c += count;
                        *e += error;
                    }
                    None => keys.push((key.to_vec(), count, error)),
                }
            }
        }
        Counts { keys, covered }
    }
}

/// `key` as printable text: bytes outside printable ASCII (and `\`) as `\xNN`.
pub(crate) fn printable(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hottest_key_comes_first_with_its_count() {
        let hot = HotKeys::default();
        // One key at 30% of requests, the rest spread over 1,000 keys.
        for i in 0..100_000u32 {
            let key = if i % 10 < 3 {
                "hot".to_string()
            } else {
                format!("k{}", i % 1000)
            };
            hot.observe(key.as_bytes(), 1, 64);
        }
        let counts = hot.counts();
        let top = counts.keys.iter().max_by_key(|(_, c, _)| *c).unwrap();
        assert_eq!(top.0, b"hot");
        // Space-Saving overestimates by at most the smallest count, and says by how much.
        assert!((30_000..=31_000).contains(&top.1), "{}", top.1);
        assert!(top.1 - top.2 <= 30_000, "{} - {}", top.1, top.2);
        // A cold key's count is mostly its error.
        let cold = counts.keys.iter().min_by_key(|(_, c, _)| *c).unwrap();
        assert!(cold.1 - cold.2 <= 100, "{:?}", (cold.1, cold.2));
    }

    #[test]
    fn one_request_in_sample_is_counted() {
        let hot = HotKeys::default();
        for _ in 0..800 {
            hot.observe(b"k", 8, 16);
        }
        assert_eq!(hot.counts().keys, vec![(b"k".to_vec(), 100, 0)]);
    }

    #[test]
    fn keys_are_shown_printable() {
        assert_eq!(printable(b"user:1\x00\xff\\"), "user:1\\x00\\xff\\\\");
    }
}
