//! The config loader on any bytes (and, with dictionaries/config.dict and the
//! files of crates/cashew-config/tests/fixtures as a seed, on any YAML): it returns
//! a config or errors that name the file, never panics; a config it accepts can be
//! routed over.
#![no_main]

use cashew_route::Router;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match cashew_config::parse("fuzz.yml", &text) {
        Err(errors) => {
            let message = errors.to_string();
            assert!(message.starts_with("fuzz.yml"), "{message}");
        }
        Ok(config) => {
            for pool in &config.pools {
                let router = Router::new(
                    pool.hash,
                    pool.distribution,
                    pool.hash_tag,
                    &pool.route_nodes(),
                );
                let mut out = [0usize; 16];
                let want = (pool.replicas as usize).clamp(1, out.len());
                for key in [&b"a"[..], b"{tag}key", b""] {
                    if let Some(server) = router.route(key) {
                        assert!(server < pool.servers.len());
                    }
                    let n = router.replicas(key, &mut out[..want]);
                    assert!(out[..n].iter().all(|&s| s < pool.servers.len()));
                }
            }
        }
    }
});
