//! Protocol code for cashew, free of sockets and runtimes: parsers are pure functions
//! over byte slices that say "complete", "need more" or "invalid", so they can be
//! unit-tested, fuzzed and benchmarked alone.

pub mod memcache;
pub mod resp;
