#![no_main]
//! Any bytes: parsing never panics, every decision covers bytes that exist, and a
//! decision taken on a prefix is the one taken on the whole input (except a hang-up
//! on a line too long without a newline, after which nothing more is read).

use cashew_protocol::memcache::{parse_request, Parsed};
use libfuzzer_sys::fuzz_target;

fn decide(data: &[u8]) -> Option<(usize, bool)> {
    match parse_request(data, Some(4096)) {
        Parsed::Incomplete => None,
        Parsed::Request(r) => {
            assert!(r.len > 0 && r.len <= data.len());
            assert!(r.key.end <= r.len && r.keys.end <= r.len && r.noreply_span.end <= r.len);
            Some((r.len, true))
        }
        Parsed::Invalid(i) => {
            assert!(i.consume > 0 && i.consume <= data.len());
            if i.close && memchr_newline(data).is_none() {
                return None;
            }
            Some((i.consume, false))
        }
    }
}

fn memchr_newline(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

fuzz_target!(|data: &[u8]| {
    if let Some(decision) = decide(data) {
        // More bytes after a complete request change nothing about it.
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"get more\r\n");
        assert_eq!(decide(&longer), Some(decision));
    }
});
