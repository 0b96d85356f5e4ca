#![no_main]
//! Any bytes: parsing never panics and argument ranges stay inside the request.

use cashew_protocol::resp::{parse_request, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut args = Vec::new();
    match parse_request(data, &mut args) {
        Parsed::Request(r) => {
            assert!(r.len > 0 && r.len <= data.len());
            assert!(args.iter().all(|a| a.start <= a.end && a.end <= r.len));
            let mut again = Vec::new();
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
            assert_eq!(parse_request(&longer, &mut again), Parsed::Request(r));
            assert_eq!(args, again);
        }
        Parsed::Incomplete { needed } => assert!(needed.is_none_or(|n| n > data.len())),
        Parsed::Error(_) => {}
    }
});
