//! The slow log: requests a server took longer than the pool's `slowlog_ms` to
//! answer, the latest [`CAPACITY`] of each worker and pool. Only a slow request
//! costs anything: the entry is made when its reply comes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// Entries kept per worker and pool; older ones make way.
pub(crate) const CAPACITY: usize = 128;
/// Longest key shown.
const KEY_SHOWN: usize = 64;

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// When the reply came, in µs since the epoch.
    pub(crate) at_usec: u64,
    pub(crate) server: String,
    pub(crate) command: String,
    pub(crate) key: String,
    pub(crate) latency: Duration,
}

#[derive(Default)]
pub(crate) struct SlowLog {
    entries: Mutex<VecDeque<Entry>>,
}

impl SlowLog {
    /// Keeps a request that took `latency`: its command and key are read from the
    /// request's first bytes (`request`).
    #[cold]
    pub(crate) fn record(&self, server: &str, request: &[u8], latency: Duration) {
        let (command, key) = command_and_key(request);
        let entry = Entry {
            at_usec: crate::clock::now_usec(),
            server: server.to_string(),
            command,
            key,
            latency,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == CAPACITY {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().cloned().collect()
    }
}

/// The command and first key of a memcached line or a RESP multibulk, as
/// printable text (the key cut at [`KEY_SHOWN`] bytes).
fn command_and_key(request: &[u8]) -> (String, String) {
    let words: Vec<&[u8]> = if request.first() == Some(&b'*') {
        // *N, $len, arg, $len, arg: the arguments are every other line from the third.
        request
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .skip(2)
            .step_by(2)
            .take(2)
            .collect()
    } else {
        let line = request.split(|&b| b == b'\n').next().unwrap_or(b"");
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.split(|&b| b == b' ')
            .filter(|w| !w.is_empty())
            .take(2)
            .collect()
    };
    let text = |w: Option<&&[u8]>, max: usize| {
        w.map(|w| super::hotkeys::printable(&w[..w.len().min(max)]))
            .unwrap_or_default()
    };
    (
        text(words.first(), 32).to_ascii_lowercase(),
        text(words.get(1), KEY_SHOWN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_keys_of_both_protocols() {
        assert_eq!(
            command_and_key(b"get user:1 user:2\r\n"),
            ("get".into(), "user:1".into())
        );
        assert_eq!(
            command_and_key(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
            ("set".into(), "k".into())
        );
        assert_eq!(
            command_and_key(b"*1\r\n$4\r\nPING\r\n"),
            ("ping".into(), String::new())
        );
    }

    #[test]
    fn the_latest_entries_are_kept() {
        let log = SlowLog::default();
        for i in 0..CAPACITY + 5 {
            log.record(
                "a",
                format!("get k{i}\r\n").as_bytes(),
                Duration::from_millis(1),
            );
        }
        let entries = log.entries();
        assert_eq!(entries.len(), CAPACITY);
        assert_eq!(entries[0].key, "k5");
    }
}
