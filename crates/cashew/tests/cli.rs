//! The command line as a user meets it: nutcracker's flags, `-t`, `-D` and `route`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cashew_testkit::{NUTCRACKER_POOL_STATS, NUTCRACKER_SERVER_STATS};

fn cashew(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cashew"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example_conf() -> String {
    repo().join("conf/nutcracker.yml").display().to_string()
}

#[test]
fn test_conf_accepts_the_example() {
    let conf = example_conf();
    let out = cashew(&["-t", "-c", &conf]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("configuration file '{conf}' syntax is ok\n")
    );
}

#[test]
fn test_conf_rejects_every_broken_fixture_with_its_location() {
    let dir = repo().join("crates/cashew-config/tests/fixtures/bad");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.display().to_string();
        let first = std::fs::read_to_string(&path).unwrap();
        let expect = first
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect: ")
            .unwrap();
        let out = cashew(&["--test-conf", "--conf-file", &file]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let stderr = text(&out.stderr);
        let (line_col, message) = expect.split_once(": ").unwrap();
        assert!(
            stderr.contains(&format!("{file}:{line_col}: ")) && stderr.contains(message),
            "{file}: wanted {expect:?}, got {stderr}"
        );
        assert!(stderr.ends_with(&format!("configuration file '{file}' syntax is invalid\n")));
        checked += 1;
    }
    assert!(checked >= 15);
}

#[test]
fn describe_stats_lists_nutcracker_names() {
    let out = cashew(&["-D"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for name in NUTCRACKER_POOL_STATS.iter().chain(&NUTCRACKER_SERVER_STATS) {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing from:\n{stdout}"
        );
    }
    assert!(stdout.starts_with("pool stats:\n"));
    assert!(stdout.contains("\nserver stats:\n"));
}

#[test]
fn bad_flags_print_usage_and_exit_1() {
    for args in [
        &["--bogus"][..],
        &["-x"],
        &["-v", "-1"],
        &["-v", "loud"],
        &["-m", "100"],
        &["-s", "notaport"],
    ] {
        let out = cashew(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn log_levels_above_11_mean_11_as_in_nutcracker() {
    let conf = example_conf();
    for level in ["12", "99999"] {
        let out = cashew(&["-v", level, "-t", "-c", &conf]);
        assert!(out.status.success(), "-v {level}: {}", text(&out.stderr));
    }
}

#[test]
fn help_and_version() {
    for flag in ["-h", "--help", "-?"] {
        let out = cashew(&[flag]);
        assert!(out.status.success(), "{flag}");
        let help = text(&out.stdout);
        for long in [
            "--test-conf",
            "--daemonize",
            "--describe-stats",
            "--verbose",
            "--output",
            "--conf-file",
            "--stats-port",
            "--stats-addr",
            "--stats-interval",
            "--pid-file",
            "--mbuf-size",
        ] {
            assert!(help.contains(long), "{flag} does not mention {long}");
        }
    }
    let out = cashew(&["-V"]);
    assert_eq!(
        text(&out.stdout),
        format!("cashew {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn all_nutcracker_flags_are_accepted_in_both_forms() {
    let conf = example_conf();
    let long = [
        "--test-conf",
        "--verbose=11",
        "--output=/dev/null",
        "--stats-port=22223",
        "--stats-addr=127.0.0.1",
        "--stats-interval=1000",
        "--pid-file=/tmp/x.pid",
        "--mbuf-size=512",
    ];
    let mut args: Vec<&str> = long.to_vec();
    let conf_flag = format!("--conf-file={conf}");
    args.push(&conf_flag);
    assert!(cashew(&args).status.success());
    let short = [
        "-t",
        "-v",
        "0",
        "-o",
        "/dev/null",
        "-s",
        "1",
        "-a",
        "::1",
        "-i",
        "1",
        "-p",
        "/tmp/x.pid",
        "-m",
        "16777216",
        "-c",
        &conf,
    ];
    assert!(cashew(&short).status.success());
}

fn write_conf(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cashew-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn route_gives_a_cluster_pools_keys_their_slot() {
    let conf = write_conf(
        "cluster.yml",
        "c:\n  listen: 127.0.0.1:1\n  redis: true\n  redis_cluster: true\n  servers:\n    - 127.0.0.1:7000:1\n",
    );
    let out = cashew(&[
        "route",
        "-c",
        &conf.display().to_string(),
        "somekey",
        "{user1}:a",
        "foo{hash_tag}",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user1 = cashew_route::cluster_slot(b"user1");
    assert_eq!(
        text(&out.stdout),
        format!("somekey\tslot=11058\n{{user1}}:a\tslot={user1}\nfoo{{hash_tag}}\tslot=2515\n")
    );
}

#[test]
fn route_prints_the_server_entry_as_written() {
    let conf = write_conf(
        "one.yml",
        "only:\n  listen: 127.0.0.1:1\n  servers:\n    - 10.0.0.1:11211:1 cache-a\n    - 10.0.0.2:11211:1 cache-b\n",
    );
    let conf = conf.display().to_string();
    let out = cashew(&["route", "-c", &conf, "k1", "k2", "k3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    for (line, key) in lines.iter().zip(["k1", "k2", "k3"]) {
        let (k, server) = line.split_once('\t').unwrap();
        assert_eq!(k, key);
        assert!(
            server == "10.0.0.1:11211:1 cache-a" || server == "10.0.0.2:11211:1 cache-b",
            "{line}"
        );
    }

    // Keys from standard input give the same answers.
    let piped = cashew_testkit::run_with_input(
        Command::new(env!("CARGO_BIN_EXE_cashew")).args(["route", "-c", &conf]),
        b"k1\nk2\r\nk3\n",
    );
    assert_eq!(text(&piped.stdout), stdout);
}

#[test]
fn route_needs_a_pool_name_only_with_several_pools() {
    let conf = example_conf();
    let out = cashew(&["route", "-c", &conf, "key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("choose one with --pool NAME (one of: alpha, beta, gamma)"));

    let out = cashew(&["route", "-c", &conf, "--pool", "nope", "key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no pool named 'nope'"));

    let out = cashew(&[
        "route",
        "-c",
        &conf,
        "--pool",
        "beta",
        "user:{7}:a",
        "user:{7}:b",
    ]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let servers: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_once('\t').unwrap().1)
        .collect();
    assert_eq!(servers.len(), 2);
    assert_eq!(
        servers[0], servers[1],
        "hash tag should keep both keys together"
    );
}

#[test]
fn route_reports_config_errors() {
    let conf = write_conf(
        "bad.yml",
        "p:\n  listen: 127.0.0.1:1\n  hash: nope\n  servers:\n    - h:1:1\n",
    );
    let conf = conf.display().to_string();
    let out = cashew(&["route", "-c", &conf, "k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&format!("{conf}:3:9: pool 'p': key 'hash'")));
}
