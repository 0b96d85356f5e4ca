//! `cashew route` against a live nutcracker 0.5.0: keys are stored through nutcracker,
//! each backend is asked which keys it holds, and cashew must name the same server.
//! This covers what the recorded vectors do not: servers on port 11211 (named by host
//! alone) and modula order over node names of different lengths.

use cashew_testkit::{
    cashew_route, free_port, memcached, memcached_on, nutcracker, temp_dir, McConn, Process,
};

/// For each key, the index of the backend that holds it.
fn holders(backends: &[Process], keys: &[String]) -> Vec<usize> {
    let mut conns: Vec<McConn> = backends.iter().map(|b| McConn::connect(b.addr)).collect();
    keys.iter()
        .map(|k| {
            let found: Vec<usize> = (0..conns.len())
                .filter(|&i| conns[i].get(k).is_some())
                .collect();
            assert_eq!(found.len(), 1, "{k} is on backends {found:?}");
            found[0]
        })
        .collect()
}

#[test]
fn cashew_places_keys_where_nutcracker_does() {
    // Port 11211 on three loopback addresses: nutcracker names these by host alone.
    let ketama: Vec<Process> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|h| memcached_on(h, 11211))
        .collect();
    // Node names of different lengths, written out of order, weighted: modula
    // follows nutcracker's sort by name length, then bytes.
    let modula: Vec<Process> = (0..3).map(|_| memcached()).collect();
    let ketama_entries: Vec<String> = ketama.iter().map(|b| format!("{}:1", b.addr)).collect();
    let modula_entries = [
        format!("{}:1 a-long-name", modula[0].addr),
        format!("{}:2 bb", modula[1].addr),
        format!("{}:1 c", modula[2].addr),
    ];
    let (listen_k, listen_m) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let yaml = format!(
        "ketama11211:\n  listen: 127.0.0.1:{listen_k}\n  hash: md5\n  distribution: ketama\n  servers:\n{}\
         modula_named:\n  listen: 127.0.0.1:{listen_m}\n  hash: fnv1a_32\n  distribution: modula\n  servers:\n{}",
        ketama_entries.iter().map(|e| format!("    - {e}\n")).collect::<String>(),
        modula_entries.iter().map(|e| format!("    - {e}\n")).collect::<String>(),
    );
    let conf = temp_dir("placement").join("nutcracker.yml");
    std::fs::write(&conf, &yaml).unwrap();
    let conf = conf.display().to_string();
    let proxy = nutcracker(&yaml, format!("127.0.0.1:{listen_m}").parse().unwrap());

    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}:{}", i * 7919)).collect();
    for (pool, listen, backends, entries) in [
        ("ketama11211", listen_k, &ketama, &ketama_entries[..]),
        ("modula_named", listen_m, &modula, &modula_entries[..]),
    ] {
        let mut through = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
        for k in &keys {
            through.set(k, b"v");
        }
        let actual = holders(backends, &keys);
        let routed = cashew_route(
            env!("CARGO_BIN_EXE_cashew"),
            conf.as_ref(),
            Some(pool),
            &keys,
        );
        let mut used = [false; 3];
        for ((key, server), held) in keys.iter().zip(&routed).zip(&actual) {
            assert_eq!(server, &entries[*held], "{pool}: {key}");
            used[*held] = true;
        }
        assert_eq!(
            used, [true; 3],
            "{pool}: every server should hold some keys"
        );
    }
    drop(proxy);
}
