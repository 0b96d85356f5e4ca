//! Protocol code for cashew, free of sockets and runtimes: parsers are pure functions
//! over byte slices that say "complete", "need more" or "invalid", so they can be
//! unit-tested, fuzzed and benchmarked alone.

pub mod memcache;
pub mod resp;
pub mod server;

/// What a server reply parser found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyParse {
    /// A whole reply of this many bytes.
    Complete(usize),
    Incomplete,
    /// Not a reply of the protocol: the connection is out of step and cannot be trusted.
    Invalid,
}

/// Where an interrupted parse of one reply picks up again. A reply that arrives in
/// many reads is parsed again after each; starting from here, where the complete
/// part of it ends, walks each byte once instead of once per read. Start with
/// `Resume::default()` for each reply; the parsers reset it when they finish one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// Bytes from the start of the reply known to be complete elements.
    pos: usize,
    /// RESP: elements still to read at each open aggregate, the innermost last;
    /// empty before the first element.
    open: Vec<u64>,
}

impl Resume {
    /// Forgets the reply in progress.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.open.clear();
    }
}

/// Checks a resumable parser against a reply arriving in parts of every size from
/// 1 byte up: every prefix short of the whole is incomplete, the whole is complete,
/// exactly as the one-shot parser says.
#[cfg(test)]
pub(crate) fn check_resuming(reply: &[u8], resumable: impl Fn(&[u8], &mut Resume) -> ReplyParse) {
    for step in 1..=reply.len() {
        let mut resume = Resume::default();
        let mut have = 0;
        loop {
            have = (have + step).min(reply.len());
            let parsed = resumable(&reply[..have], &mut resume);
            if have < reply.len() {
                assert_eq!(parsed, ReplyParse::Incomplete, "step {step}, {have} bytes");
            } else {
                assert_eq!(parsed, ReplyParse::Complete(reply.len()), "step {step}");
                assert_eq!(resume, Resume::default(), "reset after a reply");
                break;
            }
        }
    }
}

/// The next number of a xorshift sequence started at `state` (not 0): the drawn
/// inputs of tests, the same in every run.
#[cfg(test)]
pub(crate) fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
