#![no_main]
//! Any bytes: a complete reply stays complete, with the same length, whatever follows.

use cashew_protocol::resp::{parse_reply, ReplyParse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let ReplyParse::Complete(n) = parse_reply(data) {
        assert!(n > 0 && n <= data.len());
        assert_eq!(parse_reply(&data[..n]), ReplyParse::Complete(n));
    }
});
