//! Changing a memcached pool without a miss storm: `cashew route --diff` says what a
//! change moves before it is made, and `migrate_ms` bridges the change: a key that
//! misses on its new server is read from its previous one and written where it
//! now belongs, and writes reach the previous server so nothing stale is found.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, AdminApi, Cashew, McConn, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn run(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(CASHEW)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Written from another thread: the output may fill its pipe before the input
    // is all read.
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn config(dir: &Path, file: &str, hash: &str, servers: usize) -> PathBuf {
    let list: String = (1..=servers)
        .map(|i| format!("    - 127.0.0.1:{}:1\n", 20000 + i))
        .collect();
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!("alpha:\n  listen: 127.0.0.1:1\n  hash: {hash}\n  servers:\n{list}"),
    )
    .unwrap();
    path
}

/// Each key's server as `cashew route` gives it.
fn routes(conf: &Path, keys: &str) -> HashMap<String, String> {
    let out = run(&["route", "-c", conf.to_str().unwrap()], keys.as_bytes());
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, s) = l.split_once('\t').unwrap();
            (k.to_string(), s.to_string())
        })
        .collect()
}

#[test]
fn route_diff_reports_the_share_that_moves_and_exactly_which_keys() {
    let dir = cashew_testkit::temp_dir("route-diff");
    let keys: String = (0..10_000).map(|i| format!("key:{i}\n")).collect();
    std::fs::write(dir.join("keys"), &keys).unwrap();
    for hash in ["md5", "murmur"] {
        let old = config(&dir, &format!("{hash}-4.yml"), hash, 4);
        let new = config(&dir, &format!("{hash}-5.yml"), hash, 5);
        let (before, after) = (routes(&old, &keys), routes(&new, &keys));
        let changed: BTreeSet<String> = before
            .iter()
            .filter(|(k, s)| after[*k] != **s)
            .map(|(k, _)| k.clone())
            .collect();
        let sampled = changed.len() as f64 / 10_000.0;

        let out = run(
            &[
                "route",
                "--diff",
                old.to_str().unwrap(),
                new.to_str().unwrap(),
            ],
            b"",
        );
        assert_eq!(out.status.code(), Some(1), "keys move: exit 1");
        let text = String::from_utf8(out.stdout).unwrap();
        let reported: f64 = text
            .split("): ")
            .nth(1)
            .and_then(|t| t.split('%').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no share in:\n{text}"));
        assert!(
            (reported / 100.0 - sampled).abs() <= 0.01,
            "{hash}: reported {reported}%, {sampled} of 10,000 keys moved:\n{text}"
        );
        // Every share moves onto the new server, from each old one.
        assert_eq!(text.matches("127.0.0.1:20005:1").count(), 4, "{text}");

        let keys_file = dir.join("keys");
        let out = run(
            &[
                "route",
                "--diff",
                old.to_str().unwrap(),
                new.to_str().unwrap(),
                "--keys",
                keys_file.to_str().unwrap(),
            ],
            b"",
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let listed: BTreeSet<String> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() == 4).then(|| {
                    assert_eq!(f[0], "alpha");
                    assert_eq!(before[f[1]], f[2]);
                    assert_eq!(after[f[1]], f[3]);
                    f[1].to_string()
                })
            })
            .collect();
        assert_eq!(
            listed, changed,
            "{hash}: the listed keys are exactly those that move"
        );
        assert!(text.contains(&format!(
            "pool 'alpha': {} of 10000 keys move",
            changed.len()
        )));
    }
    // Nothing moves: exit 0.
    let same = config(&dir, "same.yml", "md5", 4);
    let out = run(
        &[
            "route",
            "--diff",
            same.to_str().unwrap(),
            same.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing moves"));
    // A file that is not valid: exit 2 with the error.
    let bad = dir.join("bad.yml");
    std::fs::write(&bad, "alpha:\n  listen: nowhere\n").unwrap();
    let out = run(
        &[
            "route",
            "--diff",
            same.to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yml:2:"));
}

const KEYS: usize = 20_000;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("user:{i}:profile")).collect()
}

/// A memcached pool over `servers` with `extra` pool lines.
fn pool_yaml(listen: SocketAddr, servers: &[&Process], extra: &str) -> String {
    let list: String = servers
        .iter()
        .map(|s| format!("    - {}:1\n", s.addr))
        .collect();
    format!("cache:\n  listen: {listen}\n  timeout: 2000\n{extra}  servers:\n{list}")
}

struct Rig {
    servers: Vec<Process>,
    cashew: Cashew,
    api: AdminApi,
    listen: SocketAddr,
}

/// cashew over the first `first` of `total` memcached servers, with the keys written.
fn rig(total: usize, first: usize, extra: &str) -> Rig {
    let servers: Vec<Process> = (0..total).map(|_| memcached()).collect();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let refs: Vec<&Process> = servers[..first].iter().collect();
    let cashew = Cashew::start(
        CASHEW,
        &pool_yaml(listen, &refs, extra),
        &["--threads", "2", "--admin", &admin.to_string()],
    );
    let pairs: Vec<(String, String)> = keys()
        .into_iter()
        .map(|k| (k.clone(), format!("v1:{k}")))
        .collect();
    McConn::connect(listen).set_many(&pairs, 0);
    Rig {
        api: AdminApi::new(admin, None),
        servers,
        cashew,
        listen,
    }
}

impl Rig {
    /// Reloads with the servers `which` (indices into `servers`).
    fn reload(&self, which: &[usize], extra: &str) {
        let refs: Vec<&Process> = which.iter().map(|&i| &self.servers[i]).collect();
        self.cashew
            .write_config(&pool_yaml(self.listen, &refs, extra));
        let (status, body) = self.api.post("/reload");
        assert_eq!(status, 200, "{body}");
    }

    /// The share of the keys found, read once each through cashew.
    fn hit_ratio(&self) -> f64 {
        let hits = McConn::connect(self.listen).get_many(&keys());
        for (k, v) in &hits {
            // Each key's first value, or what the test wrote to it since.
            assert!(
                *v == format!("v1:{k}") || ["v2", "v3", "v4"].contains(&v.as_str()),
                "{k}: {v}"
            );
        }
        hits.len() as f64 / KEYS as f64
    }

    fn stat(&self, name: &str) -> u64 {
        let doc: serde_json::Value = serde_json::from_str(&self.cashew.stats_json()).unwrap();
        doc["cache"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {name} in {doc}"))
    }
}

#[test]
fn without_migration_a_fifth_server_costs_hits() {
    let rig = rig(5, 4, "");
    assert_eq!(rig.hit_ratio(), 1.0);
    rig.reload(&[0, 1, 2, 3, 4], "");
    let ratio = rig.hit_ratio();
    println!("hit ratio right after adding a fifth server, without migrate_ms: {ratio:.4}");
    assert!(ratio < 0.95, "{ratio}");
}

#[test]
fn with_migration_adding_a_server_keeps_the_hits_and_moves_the_keys() {
    let extra = "  migrate_ms: 4000\n";
    let rig = rig(5, 4, extra);
    let moved = moved_keys(&rig, &keys(), &[0, 1, 2, 3], &[0, 1, 2, 3, 4]);
    assert!(moved.len() > 1000, "{} keys moved", moved.len());
    // A key that moves, with client flags, read only by a meta get in the window.
    let candidates: Vec<String> = (0..1000).map(|i| format!("probe:{i}:profile")).collect();
    let (probe, probe_to) = &moved_keys(&rig, &candidates, &[0, 1, 2, 3], &[0, 1, 2, 3, 4])[0];
    McConn::connect(rig.listen).roundtrip(
        format!("set {probe} 42 0 2\r\nv4\r\n").as_bytes(),
        b"STORED\r\n",
    );
    rig.reload(&[0, 1, 2, 3, 4], extra);
    let began = Instant::now();
    assert!(rig
        .cashew
        .log()
        .contains("reload: pool 'cache': keys move to new servers; for 4000 ms"));
    let ratio = rig.hit_ratio();
    println!("hit ratio right after adding a fifth server, with migrate_ms: {ratio:.4}");
    assert!(ratio >= 0.995, "{ratio}");
    let (fallbacks, hits) = (rig.stat("migrate_fallbacks"), rig.stat("migrate_hits"));
    assert!(
        hits > 1000 && fallbacks >= hits,
        "{fallbacks} fallbacks, {hits} hits"
    );
    let (_, status) = rig.api.get("/status");
    let migration = &status["pools"][0]["migration"];
    assert!(migration["ends_in_ms"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(migration["hits"], hits);

    // A write during the window is what a read gets, never the previous server's
    // value; a delete during the window leaves nothing to find there either.
    let moved: Vec<String> = moved.iter().map(|(k, _)| k.clone()).collect();
    let mut c = McConn::connect(rig.listen);
    c.set(&moved[0], b"v2");
    assert_eq!(c.get(&moved[0]).as_deref(), Some(&b"v2"[..]));
    c.roundtrip(
        format!("delete {}\r\n", moved[1]).as_bytes(),
        b"DELETED\r\n",
    );
    assert_eq!(c.get(&moved[1]), None);
    c.send(format!("ms {} 2 T0\r\nv3\r\n", moved[2]).as_bytes());
    assert_eq!(c.line(), "HD\r\n");
    assert_eq!(c.get(&moved[2]).as_deref(), Some(&b"v3"[..]));
    // The previous servers no longer hold them.
    for key in &moved[..3] {
        for server in &rig.servers[..4] {
            assert_eq!(
                McConn::connect(server.addr)
                    .get(key)
                    .map(|v| String::from_utf8(v).unwrap()),
                None,
                "{key}"
            );
        }
    }
    // A meta get of a moved key finds it on its previous server, and it is
    // written, with its flags, where it now belongs.
    c.roundtrip(
        format!("mg {probe} v f\r\n").as_bytes(),
        b"VA 2 f42\r\nv4\r\n",
    );
    let to: SocketAddr = probe_to.trim_end_matches(":1").parse().unwrap();
    let mut direct = McConn::connect(to);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        direct.send(format!("mg {probe} v f\r\n").as_bytes());
        match direct.line().as_str() {
            "EN\r\n" => assert!(Instant::now() < deadline, "{probe} was not written to {to}"),
            line => {
                assert_eq!(line, "VA 2 f42\r\n");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // After the window: every key is a hit on its new server, without fallbacks.
    let left = Duration::from_millis(4000).saturating_sub(began.elapsed());
    std::thread::sleep(left + Duration::from_millis(200));
    let fallbacks_before = rig.stat("migrate_fallbacks");
    let ratio = rig.hit_ratio();
    println!("hit ratio after the window: {ratio:.4}");
    assert!(ratio >= 0.995, "{ratio}");
    assert_eq!(
        rig.stat("migrate_fallbacks"),
        fallbacks_before,
        "the previous placement is forgotten"
    );
    let (_, status) = rig.api.get("/status");
    assert_eq!(status["pools"][0]["migration"]["ends_in_ms"], 0);
}

#[test]
fn with_migration_a_removed_servers_keys_are_read_from_it_while_it_runs() {
    let extra = "  migrate_ms: 60000\n";
    let rig = rig(5, 5, extra);
    rig.reload(&[0, 1, 2, 3], extra);
    let ratio = rig.hit_ratio();
    println!("hit ratio right after removing a server, with migrate_ms: {ratio:.4}");
    assert!(ratio >= 0.995, "{ratio}");
    assert!(rig.stat("migrate_hits") > 1000);
    // Once it is stopped, its keys are misses, not errors.
    rig.servers[4].signal("KILL");
    std::thread::sleep(Duration::from_millis(200));
    let ratio = rig.hit_ratio();
    assert!(
        ratio >= 0.995,
        "the keys read once were written to their new servers: {ratio}"
    );
    let log = rig.cashew.log();
    assert!(
        !log.contains(&rig.servers[4].addr.to_string()) || !log.contains("failed"),
        "{log}"
    );
}

/// The keys whose server differs between two server lists of the rig, with the
/// server each moves to, as `cashew route --diff --keys` lists them.
fn moved_keys(rig: &Rig, keys: &[String], old: &[usize], new: &[usize]) -> Vec<(String, String)> {
    let dir = cashew_testkit::temp_dir("moved");
    let write = |name: &str, which: &[usize]| {
        let refs: Vec<&Process> = which.iter().map(|&i| &rig.servers[i]).collect();
        let path = dir.join(name);
        std::fs::write(&path, pool_yaml(rig.listen, &refs, "")).unwrap();
        path
    };
    let (a, b) = (write("old.yml", old), write("new.yml", new));
    let list: String = keys.join("\n");
    let out = run(
        &[
            "route",
            "--diff",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--keys",
            "-",
        ],
        list.as_bytes(),
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4).then(|| (f[1].to_string(), f[3].to_string()))
        })
        .collect()
}

#[test]
fn with_migration_replicated_pools_keep_their_hits_too() {
    let extra = "  replicas: 2\n  migrate_ms: 60000\n";
    let rig = rig(5, 4, extra);
    rig.reload(&[0, 1, 2, 3, 4], extra);
    let ratio = rig.hit_ratio();
    println!(
        "replicas 2, hit ratio right after adding a fifth server, with migrate_ms: {ratio:.4}"
    );
    assert!(ratio >= 0.995, "{ratio}");
    // Read again: found where they now belong, none asked of the previous placement.
    let fallbacks = rig.stat("migrate_fallbacks");
    assert!(rig.hit_ratio() >= 0.995);
    assert_eq!(rig.stat("migrate_fallbacks"), fallbacks);
}
