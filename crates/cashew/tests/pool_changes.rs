//! Changing a memcached pool without a miss storm: `cashew route --diff` says what a
//! change moves before it is made.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn run(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(CASHEW)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
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
