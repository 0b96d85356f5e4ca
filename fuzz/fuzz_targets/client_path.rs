//! The client path: requests parsed, routed, split over servers and merged back,
//! with server replies, errors, timeouts and closes chosen by the input (see
//! `cashew::harness`): each request gets exactly one reply, in order, and a
//! multi-key reply keeps its keys' order.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cashew::harness::run(data);
});
