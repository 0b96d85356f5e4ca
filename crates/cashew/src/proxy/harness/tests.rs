//! The client path driven by the harness, as the `client_path` fuzz target drives
//! it: on the inputs kept in tests/data/client_path/ (each one a failure found
//! once) and on a fixed series of pseudo-random inputs.

#[test]
fn kept_inputs() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/client_path");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| super::run(&input));
        assert!(run.is_ok(), "{} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "no inputs in {dir}");
}

#[test]
fn pseudo_random_inputs() {
    // xorshift64: the same series every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut replies = 0;
    for round in 0..1500 {
        let len = (next() % 400) as usize;
        let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let run = std::panic::catch_unwind(|| super::run(&input));
        assert!(run.is_ok(), "round {round} fails on {input:?}");
        replies += run.unwrap();
    }
    // About one byte in ten makes a request that gets a reply.
    assert!(replies > 1500 * 15, "only {replies} replies checked");
}
