//! A small leveled logger with nutcracker's levels (0 emergency .. 11 periodic verbose),
//! writing to stderr or to a file that SIGHUP reopens.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) const ERROR: u8 = 3;
pub(crate) const WARN: u8 = 4;
pub(crate) const NOTICE: u8 = 5;
pub(crate) const INFO: u8 = 6;
pub(crate) const DEBUG: u8 = 7;
const MAX_LEVEL: u8 = 11;

static LEVEL: AtomicU8 = AtomicU8::new(NOTICE);
/// 0: text lines; 1: one JSON object per line.
static JSON: AtomicU8 = AtomicU8::new(0);
/// The raw descriptor log lines go to, for the crash handler, which may not lock.
static FD: AtomicI32 = AtomicI32::new(2);

struct Sink {
    path: Option<PathBuf>,
    file: Option<File>,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    path: None,
    file: None,
});

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    /// One object per line: `{"time": ..., "level": ..., "pid": ..., "message": ...}`.
    Json,
}

/// Sets the level and format and, when `path` is given, logs to that file instead
/// of stderr.
pub fn init(level: u8, format: Format, path: Option<PathBuf>) -> std::io::Result<()> {
    LEVEL.store(level.min(MAX_LEVEL), Ordering::Relaxed);
    JSON.store(u8::from(format == Format::Json), Ordering::Relaxed);
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    sink.path = path;
    open(&mut sink)
}

fn open(sink: &mut Sink) -> std::io::Result<()> {
    sink.file = match &sink.path {
        // Readable by all, writable by cashew alone, whatever umask it started with.
        Some(p) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o644)
                .open(p)?,
        ),
        None => None,
    };
    FD.store(
        sink.file.as_ref().map_or(2, |f| f.as_raw_fd()),
        Ordering::Relaxed,
    );
    Ok(())
}

/// Reopens the log file (after rotation).
pub(crate) fn reopen() {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = open(&mut sink) {
        eprintln!("cashew: cannot reopen log file: {e}");
    }
}

pub(crate) fn raise_level() {
    let _ = LEVEL.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
        Some((l + 1).min(MAX_LEVEL))
    });
}

pub(crate) fn lower_level() {
    let _ = LEVEL.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
        Some(l.saturating_sub(1))
    });
}

pub(crate) fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

#[inline]
pub(crate) fn enabled(level: u8) -> bool {
    level <= LEVEL.load(Ordering::Relaxed)
}

/// The descriptor the crash handler writes to.
/// At most one line a second from one place in a worker (a client or a peer can
/// cause as many as it likes); the next line tells how many were left out.
#[derive(Default)]
pub(crate) struct Limiter {
    logged_at: std::cell::Cell<u64>,
    unlogged: std::cell::Cell<u64>,
}

impl Limiter {
    /// `Some(what to append to the line)` when a line may be written now.
    pub(crate) fn check(&self, level: u8) -> Option<String> {
        if !enabled(level) {
            return None;
        }
        let now = crate::clock::now_usec();
        if self.logged_at.get() != 0 && now.saturating_sub(self.logged_at.get()) < 1_000_000 {
            self.unlogged.set(self.unlogged.get() + 1);
            return None;
        }
        self.logged_at.set(now);
        Some(match self.unlogged.replace(0) {
            0 => String::new(),
            n => format!(" ({n} more in the last second not logged)"),
        })
    }
}

pub(crate) fn raw_fd() -> i32 {
    FD.load(Ordering::Relaxed)
}

/// The name of a level in JSON lines.
fn level_name(level: u8) -> &'static str {
    match level {
        0 => "emergency",
        1 => "alert",
        2 => "critical",
        ERROR => "error",
        WARN => "warning",
        NOTICE => "notice",
        INFO => "info",
        _ => "debug",
    }
}

pub(crate) fn write(level: u8, args: fmt::Arguments<'_>) {
    let line = match JSON.load(Ordering::Relaxed) {
        0 => format!("[{}] {args}\n", timestamp()),
        _ => format!(
            "{{\"time\":\"{}\",\"level\":\"{}\",\"pid\":{},\"message\":{}}}\n",
            timestamp(),
            level_name(level),
            std::process::id(),
            serde_json::to_string(&args.to_string()).unwrap_or_default()
        ),
    };
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    let _ = match sink.file.as_mut() {
        Some(f) => f.write_all(line.as_bytes()),
        None => std::io::stderr().write_all(line.as_bytes()),
    };
}

/// A fatal error: to stderr, and to the log file too when there is one, so that
/// an operator reading either sees why cashew stopped.
pub fn fatal(message: &str) {
    eprintln!("cashew: {message}");
    let to_file = SINK
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .file
        .is_some();
    if to_file {
        write(ERROR, format_args!("cannot start: {message}"));
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
fn timestamp() -> String {
    format_time(SystemTime::now())
}

/// `at` as `YYYY-MM-DD HH:MM:SS.mmm` in UTC.
pub(crate) fn format_time(at: SystemTime) -> String {
    let now = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        now.subsec_millis()
    )
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            $crate::log::write($level, format_args!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        assert_eq!(t.len(), 23, "{t}");
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], " ");
    }
}
