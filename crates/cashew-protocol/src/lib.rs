//! Protocol code for cashew, free of sockets and runtimes: parsers are pure functions
//! over byte slices that say "complete", "need more" or "invalid", so they can be
//! unit-tested, fuzzed and benchmarked alone.

pub mod memcache;
pub mod resp;

/// What a server reply parser found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyParse {
    /// A whole reply of this many bytes.
    Complete(usize),
    Incomplete,
    /// Not a reply of the protocol: the connection is out of step and cannot be trusted.
    Invalid,
}
