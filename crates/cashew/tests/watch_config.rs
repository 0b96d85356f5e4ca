//! `--watch-config`: an edited file is reloaded by itself, an invalid one changes
//! nothing (and is not retried until it changes), and a Kubernetes ConfigMap's
//! update, a swap of the `..data` symlink, is seen like an edit.

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, Cashew, McConn};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn wait_for_log(cashew: &Cashew, text: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    while !cashew.log().contains(text) {
        assert!(
            started.elapsed() < limit,
            "no '{text}' within {limit:?}:\n{}",
            cashew.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn the_file_is_watched_and_a_configmap_swap_is_seen() {
    let (a, b) = (memcached(), memcached());
    let listen = free_port("127.0.0.1");
    let yaml = |server: &str, extra: &str| {
        format!("cache:\n  listen: 127.0.0.1:{listen}\n{extra}  servers:\n    - {server}:1\n")
    };
    let cashew = Cashew::start(CASHEW, &yaml(&a.addr.to_string(), ""), &["--watch-config"]);
    let mut c = McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
    c.set("k", b"on-a");
    assert!(McConn::connect(a.addr).get("k").is_some());

    // An edit: to server b.
    cashew.write_config(&yaml(&b.addr.to_string(), ""));
    let took = wait_for_log(
        &cashew,
        "configuration generation 2",
        Duration::from_secs(5),
    );
    c.set("k2", b"on-b");
    assert!(
        McConn::connect(b.addr).get("k2").is_some(),
        "served by the new file"
    );

    // An invalid file: logged, nothing changes, not retried.
    cashew.write_config(&yaml(&b.addr.to_string(), "  distributon: ketama\n"));
    wait_for_log(&cashew, "reload failed", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        cashew
            .log()
            .matches("the configuration file changed")
            .count(),
        2,
        "{}",
        cashew.log()
    );
    c.set("k3", b"still-b");
    assert!(McConn::connect(b.addr).get("k3").is_some());

    // A ConfigMap: the file is a symlink through `..data`, which is swapped.
    let conf = cashew.dir.join("cashew.yml");
    let first = cashew.dir.join("..2026_12_04_first");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(first.join("cashew.yml"), yaml(&b.addr.to_string(), "")).unwrap();
    symlink("..2026_12_04_first", cashew.dir.join("..data")).unwrap();
    std::fs::remove_file(&conf).unwrap();
    symlink("..data/cashew.yml", &conf).unwrap();
    // The same content as in force: no reload.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(!cashew.log().contains("configuration generation 3"));
    let second = cashew.dir.join("..2026_12_04_second");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(second.join("cashew.yml"), yaml(&a.addr.to_string(), "")).unwrap();
    symlink("..2026_12_04_second", cashew.dir.join("..data_tmp")).unwrap();
    std::fs::rename(cashew.dir.join("..data_tmp"), cashew.dir.join("..data")).unwrap();
    let swapped = wait_for_log(
        &cashew,
        "configuration generation 3",
        Duration::from_secs(5),
    );
    c.set("k4", b"back-on-a");
    assert!(McConn::connect(a.addr).get("k4").is_some());
    println!("an edit reloaded in {took:?}, a ConfigMap swap in {swapped:?}");
}
