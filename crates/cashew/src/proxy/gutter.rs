//! The gutter pool: while every server that keeps a key is ejected, the key's
//! requests go to another pool of the file (mcrouter's gutter) instead of being
//! re-hashed onto the other servers, whose keys and load stay untouched. What is
//! written there lives at most `gutter_ttl` seconds, so the gutter only bridges an
//! outage.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::ids::ServerId;
use super::pool::PoolRt;

/// memcached reads an exptime above 30 days as a Unix time.
const RELATIVE_LIMIT: i64 = 30 * 24 * 3600;

/// Where one key's request goes: a server of its own pool, or a server of the
/// gutter pool while the key's servers are ejected.
#[derive(Clone)]
pub(crate) enum Target {
    Server(ServerId),
    Gutter(Rc<PoolRt>, ServerId),
}

impl Target {
    pub(crate) fn same(&self, other: &Target) -> bool {
        match (self, other) {
            (Target::Server(a), Target::Server(b)) => a == b,
            (Target::Gutter(_, a), Target::Gutter(_, b)) => a == b,
            _ => false,
        }
    }

    /// The pool to send to (`home` or the gutter) and the server in it.
    pub(crate) fn resolve<'a>(&'a self, home: &'a PoolRt) -> (&'a PoolRt, ServerId) {
        match self {
            Target::Server(s) => (home, *s),
            Target::Gutter(gutter, s) => (gutter, *s),
        }
    }

    pub(crate) fn is_gutter(&self) -> bool {
        matches!(self, Target::Gutter(..))
    }
}

/// The gutter pool of `pool` and the server there for `key`, when `pool` has a
/// gutter with a live server.
pub(crate) fn route(pool: &PoolRt, key: &[u8]) -> Option<(Rc<PoolRt>, ServerId)> {
    let gutter = pool.gutter()?.pool().clone();
    let server = gutter.route(key)?;
    Some((gutter, server))
}

/// An exptime no later than `ttl` seconds from now, as memcached reads exptimes:
/// 0 never expires, a negative one already has, above 30 days is a Unix time.
pub(crate) fn capped_exptime(exptime: i64, ttl: u64, now: i64) -> i64 {
    let ttl = ttl as i64;
    match exptime {
        e if e < 0 => e,
        0 => ttl,
        e if e > RELATIVE_LIMIT => (e - now).clamp(-1, ttl),
        e => e.min(ttl),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `request` with its token `index` (an exptime) capped to `ttl` seconds; the rest
/// of the line and any data block as they were.
pub(crate) fn cap_token(request: &[u8], line_len: usize, index: usize, ttl: u64) -> Bytes {
    let line = &request[..line_len];
    let mut out = BytesMut::with_capacity(request.len() + 8);
    let mut pos = 0;
    let mut n = 0;
    while pos < line.len() {
        let start = pos;
        while pos < line.len() && !matches!(line[pos], b' ' | b'\r' | b'\n') {
            pos += 1;
        }
        if pos > start {
            if n == index {
                let exptime = std::str::from_utf8(&line[start..pos])
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .unwrap_or(0);
                let capped = capped_exptime(exptime, ttl, unix_now());
                out.extend_from_slice(capped.to_string().as_bytes());
            } else {
                out.extend_from_slice(&line[start..pos]);
            }
            n += 1;
        }
        while pos < line.len() && matches!(line[pos], b' ' | b'\r' | b'\n') {
            out.extend_from_slice(&line[pos..pos + 1]);
            pos += 1;
        }
    }
    out.extend_from_slice(&request[line_len..]);
    out.freeze()
}

/// A meta `ms` with its `T` flag capped to `ttl` seconds (added when absent).
pub(crate) fn cap_meta_ttl(request: &[u8], line_len: usize, ttl: u64) -> Bytes {
    let line_end = request[..line_len]
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |p| p + 1);
    let line = &request[..line_end];
    let mut out = BytesMut::with_capacity(request.len() + 12);
    let mut has_ttl = false;
    for (i, token) in line
        .split(|&b| b == b' ')
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.extend_from_slice(b" ");
        }
        match token {
            [b'T', digits @ ..] if i >= 3 => {
                has_ttl = true;
                let exptime = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .unwrap_or(0);
                out.extend_from_slice(
                    format!("T{}", capped_exptime(exptime, ttl, unix_now())).as_bytes(),
                );
            }
            other => out.extend_from_slice(other),
        }
    }
    if !has_ttl {
        out.extend_from_slice(format!(" T{ttl}").as_bytes());
    }
    out.extend_from_slice(&request[line_end..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exptimes_are_capped_as_memcached_reads_them() {
        let now = 1_800_000_000;
        assert_eq!(capped_exptime(0, 10, now), 10, "never expires: capped");
        assert_eq!(capped_exptime(5, 10, now), 5);
        assert_eq!(capped_exptime(3600, 10, now), 10);
        assert_eq!(capped_exptime(-1, 10, now), -1, "already expired");
        assert_eq!(capped_exptime(now + 3600, 10, now), 10, "a Unix time");
        assert_eq!(capped_exptime(now + 5, 10, now), 5);
    }

    #[test]
    fn a_storage_request_gets_a_capped_exptime() {
        let request = b"set k 7 3600 2 noreply\r\nhi\r\n";
        let capped = cap_token(request, 24, 3, 10);
        assert_eq!(&capped[..], b"set k 7 10 2 noreply\r\nhi\r\n");
    }

    #[test]
    fn a_meta_set_gets_a_ttl() {
        assert_eq!(
            &cap_meta_ttl(b"ms k 2 F1\r\nhi\r\n", 11, 10)[..],
            b"ms k 2 F1 T10\r\nhi\r\n"
        );
        assert_eq!(
            &cap_meta_ttl(b"ms k 2 T0 q\r\nhi\r\n", 13, 10)[..],
            b"ms k 2 T10 q\r\nhi\r\n"
        );
    }
}
