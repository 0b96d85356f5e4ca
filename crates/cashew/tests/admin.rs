//! The admin API over real HTTP, and `cashew reload | stop | restart | status`
//! talking to a running instance through it or through its pid file.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use cashew_testkit::{free_port, memcached, pid_alive, temp_dir, AdminApi, Cashew, McConn};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
const TOKEN: &str = "s3cret-token";

fn addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

fn yaml(listen: u16, servers: &[SocketAddr]) -> String {
    let servers: String = servers
        .iter()
        .enumerate()
        .map(|(i, s)| format!("    - {s}:1 cache-{i}\n"))
        .collect();
    format!("alpha:\n  listen: 127.0.0.1:{listen}\n  servers:\n{servers}")
}

fn cashew_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CASHEW)
        .args(args)
        .env_remove("CASHEW_ADMIN_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_endpoint_with_a_token() {
    let backends = [memcached(), memcached()];
    let listen = free_port("127.0.0.1");
    let admin_addr = addr(free_port("127.0.0.1"));
    let cashew = Cashew::start(
        CASHEW,
        &yaml(listen, &[backends[0].addr, backends[1].addr]),
        &["--admin", &admin_addr.to_string(), "--admin-token", TOKEN],
    );
    let open = AdminApi::new(admin_addr, None);
    let api = AdminApi::new(admin_addr, Some(TOKEN));
    let wrong = AdminApi::new(admin_addr, Some("guess"));

    // The probes need no token; every other read does.
    let (status, health) = open.get("/health");
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    assert_eq!(health["pid"], cashew.process.pid());
    let (status, ready) = open.get("/ready");
    assert_eq!((status, ready["phase"].as_str()), (200, Some("serving")));
    let (status, stats) = api.get("/stats");
    assert_eq!(status, 200);
    assert_eq!(stats["service"], "nutcracker");
    assert_eq!(stats["generation"], 1);
    assert!(stats["alpha"]["cache-0"]["requests"].is_u64(), "{stats}");
    let (status, config) = api.get("/config");
    assert_eq!(status, 200);
    let file = cashew.dir.join("cashew.yml");
    assert_eq!(config["text"], std::fs::read_to_string(&file).unwrap());
    let sha256sum = Command::new("sha256sum").arg(&file).output().unwrap();
    let digest = String::from_utf8_lossy(&sha256sum.stdout);
    let digest = digest.split_whitespace().next().unwrap();
    assert_eq!(config["checksum"], format!("sha256:{digest}"));
    assert_eq!(stats["config_checksum"], config["checksum"]);
    let (_, status_doc) = api.get("/status");
    assert_eq!(status_doc["pools"][0]["name"], "alpha");
    assert_eq!(status_doc["pools"][0]["servers"][1]["name"], "cache-1");
    assert_eq!(status_doc["pools"][0]["servers"][1]["state"], "up");

    // Changes need the token.
    for client in [&open, &wrong] {
        for path in [
            "/reload",
            "/restart",
            "/stop",
            "/pools/alpha/servers/cache-0/eject",
        ] {
            let (status, body) = client.post(path);
            assert_eq!(status, 401, "{path}: {body}");
        }
    }
    assert_eq!(open.get("/ready").0, 200, "nothing was stopped");

    let (status, body) = api.post("/reload");
    assert_eq!(
        (status, body["generation"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    cashew.write_config("alpha:\n  listen: nowhere\n  servers: []\n");
    let (status, body) = api.post("/reload");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cashew.yml:2:"),
        "{body}"
    );
    assert_eq!(api.get("/stats").1["generation"], 2);

    let (status, body) = api.post("/pools/alpha/servers/cache-1/eject");
    assert_eq!((status, body["state"].as_str()), (200, Some("manual")));
    assert_eq!(
        api.get("/status").1["pools"][0]["servers"][1]["state"],
        "manual"
    );
    assert!(api.get("/stats").1["alpha"]["cache-1"]["server_ejected_at"].as_u64() > Some(0));
    let (status, body) = api.post("/pools/alpha/servers/cache-1/restore");
    assert_eq!((status, body["state"].as_str()), (200, Some("up")));
    let (status, body) = api.post("/pools/alpha/servers/nope/eject");
    assert_eq!(status, 404);
    assert_eq!(body["servers"][0], "cache-0", "{body}");
    assert_eq!(api.post("/pools/nope/servers/cache-0/eject").0, 404);

    assert_eq!(api.get("/nothing").0, 404);
    assert_eq!(api.get("/reload").0, 405);
    assert_eq!(api.post("/health").0, 405);
}

#[test]
fn a_public_admin_address_needs_a_token() {
    let mc = memcached();
    let dir = temp_dir("admin-public");
    let conf = dir.join("cashew.yml");
    std::fs::write(&conf, yaml(free_port("127.0.0.1"), &[mc.addr])).unwrap();
    let port = free_port("127.0.0.1").to_string();
    let (code, _, stderr) = cashew_cli(&[
        "-c",
        conf.to_str().unwrap(),
        "-s",
        &free_port("127.0.0.1").to_string(),
        "-a",
        "127.0.0.1",
        "--admin",
        &format!("0.0.0.0:{port}"),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--admin-token"), "{stderr}");
}

#[test]
fn the_cli_talks_to_a_running_instance() {
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let admin = addr(free_port("127.0.0.1")).to_string();
    let pid_file = temp_dir("cli").join("cashew.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let mut cashew = Cashew::start(
        CASHEW,
        &yaml(listen, &[mc.addr]),
        &["--admin", &admin, "--admin-token", TOKEN, "-p", pid_arg],
    );
    let mut c = McConn::connect(addr(listen));
    c.set("k", b"v");

    let (code, _, err) = cashew_cli(&["status", "--admin", &admin]);
    assert_eq!(code, 1, "status needs the token too");
    assert!(err.contains("--admin-token"), "{err}");
    let (code, out, err) = cashew_cli(&["status", "--admin", &admin, "--admin-token", TOKEN]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("generation 1"), "{out}");
    assert!(
        out.contains("pool alpha (memcached) on 127.0.0.1:"),
        "{out}"
    );
    assert!(out.contains("cache-0"), "{out}");

    let (code, _, err) = cashew_cli(&["reload", "--admin", &admin]);
    assert_eq!(code, 1);
    assert!(err.contains("--admin-token"), "{err}");
    let (code, out, err) = cashew_cli(&["reload", "--admin", &admin, "--admin-token", TOKEN]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("reloaded: generation 2"), "{out}");

    // Through the pid file: a reload of an invalid file is refused before any signal.
    let good = std::fs::read_to_string(cashew.dir.join("cashew.yml")).unwrap();
    cashew.write_config("alpha:\n  listen: 127.0.0.1:1\n  distribution: nope\n  servers: []\n");
    let (code, _, err) = cashew_cli(&["reload", "-p", pid_arg]);
    assert_eq!(code, 1);
    assert!(err.contains("cashew.yml:3:"), "{err}");
    assert!(!cashew.log().contains("SIGHUP"), "no signal was sent");
    cashew.write_config(&good);
    let (code, out, err) = cashew_cli(&["reload", "-p", pid_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sent SIGHUP"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        cashew.log().contains("configuration generation 3 loaded"),
        "{}",
        cashew.log()
    );

    let (code, out, _) = cashew_cli(&["status", "-p", pid_arg]);
    assert_eq!(code, 0);
    assert!(out.contains(&cashew.process.pid().to_string()), "{out}");

    let (code, out, err) = cashew_cli(&["stop", "-p", pid_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stopped"));
    let pid = cashew.process.pid();
    assert!(cashew.process.wait_exit(Duration::from_secs(5)).is_some());
    assert!(!pid_alive(pid));
    assert!(c.is_closed());
    let (code, _, _) = cashew_cli(&["status", "-p", pid_arg]);
    assert_eq!(code, 3, "not running");
    let (code, _, err) = cashew_cli(&["status", "--admin", &admin]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn the_status_page_works_in_a_real_browser() {
    let servers = [cashew_testkit::memcached(), cashew_testkit::memcached()];
    let listen = cashew_testkit::free_port("127.0.0.1");
    let admin = format!("127.0.0.1:{}", cashew_testkit::free_port("127.0.0.1"));
    let yaml = format!(
        "cache:\n  listen: 127.0.0.1:{listen}\n  health_check_interval: 300\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  servers:\n    - {}:1 one\n    - {}:1 two\n",
        servers[0].addr, servers[1].addr
    );
    let _cashew = cashew_testkit::Cashew::start_with_env(
        CASHEW,
        &yaml,
        &["--threads", "1", "--admin", &admin],
        &[("CASHEW_ADMIN_TOKEN", "page-token")],
    );
    let args = [
        format!("http://{admin}"),
        "page-token".into(),
        format!("127.0.0.1:{listen}"),
        servers[1].pid().to_string(),
    ];
    let text = cashew_testkit::run_python_script("status_page.py", &args);
    assert!(text.contains("status page: ok"), "{text}");
}
