//! The Kubernetes manifests of `contrib/kubernetes/`: valid against the Kubernetes
//! schemas (offline, `kubernetes-validate --strict`), and what the kubelet would run
//! works against a real cashew: its arguments start it, its probes answer, and its
//! preStop command drains it (readiness turns 503) and it exits within the grace
//! period.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cashew_testkit::{free_port, memcached, python, AdminApi, Cashew};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn venv_tool(name: &str) -> PathBuf {
    python().parent().unwrap().join(name)
}

fn validate(files: &[&Path]) -> std::process::Output {
    Command::new(venv_tool("kubernetes-validate"))
        .arg("--strict")
        .args(files)
        .output()
        .expect("kubernetes-validate (scripts/install-deps installs it)")
}

#[test]
fn the_manifests_are_valid_and_a_broken_one_is_not() {
    let dir = repo().join("contrib/kubernetes");
    let files = [dir.join("proxy-tier.yaml"), dir.join("sidecar.yaml")];
    let out = validate(&[&files[0], &files[1]]);
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("passed").count(), 6, "{text}");

    let broken = std::env::temp_dir().join(format!("cashew-broken-{}.yaml", std::process::id()));
    let manifest = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(
        &broken,
        manifest.replace("readinessProbe:", "readynessProbe:"),
    )
    .unwrap();
    let out = validate(&[&broken]);
    assert!(!out.status.success(), "a misspelt field must fail");
    let _ = std::fs::remove_file(broken);
}

#[test]
fn the_probes_and_the_pre_stop_hook_drain_a_real_cashew() {
    let out = Command::new(python())
        .arg(repo().join("crates/cashew/tests/python/k8s_manifest.py"))
        .arg(repo().join("contrib/kubernetes/proxy-tier.yaml"))
        .arg("cashew")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |v: &serde_json::Value| v.as_str().unwrap().to_string();

    // The ConfigMap's pools with a real server, on free ports.
    let mc = memcached();
    let listen = free_port("127.0.0.1");
    let admin = free_port("127.0.0.1");
    let config: String = text(&pod["config"])
        .replace("0.0.0.0:22121", &format!("127.0.0.1:{listen}"))
        .lines()
        .filter(|l| !l.contains("memcached-1.memcached"))
        .map(|l| l.replace("memcached-0.memcached:11211", &mc.addr.to_string()) + "\n")
        .collect();
    assert!(config.contains(&mc.addr.to_string()), "{config}");
    let token_file = std::env::temp_dir().join(format!("cashew-k8s-token-{}", std::process::id()));
    std::fs::write(&token_file, "k8s-token\n").unwrap();
    // The container's arguments, with the mounted paths and ports made local.
    let local = |a: &str| {
        a.replace("/etc/cashew/admin/token", token_file.to_str().unwrap())
            .replace("0.0.0.0:22223", &format!("127.0.0.1:{admin}"))
            .replace("127.0.0.1:22223", &format!("127.0.0.1:{admin}"))
    };
    let args: Vec<String> = pod["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| local(a.as_str().unwrap()))
        .collect();
    let c = args.iter().position(|a| a == "-c").unwrap();
    let mut rest: Vec<String> = args[..c].to_vec();
    rest.extend(args[c + 2..].iter().cloned());
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let mut cashew = Cashew::start(CASHEW, &config, &rest);
    let api = AdminApi::new(format!("127.0.0.1:{admin}").parse().unwrap(), None);
    assert_eq!(api.get_text(&text(&pod["liveness"])).0, 200, "liveness");
    assert_eq!(api.get_text(&text(&pod["readiness"])).0, 200, "readiness");
    assert_eq!(
        api.get_text("/metrics").0,
        200,
        "--metrics-public as the scrape needs"
    );

    // The pool serves.
    let mut client =
        cashew_testkit::McConn::connect(format!("127.0.0.1:{listen}").parse().unwrap());
    client.set("k", b"v");
    assert_eq!(client.get("k").as_deref(), Some(&b"v"[..]));

    // preStop, as the kubelet runs it (the binary from PATH is this build).
    let pre_stop: Vec<String> = pod["pre_stop"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| local(a.as_str().unwrap()))
        .collect();
    assert_eq!(pre_stop[0], "cashew");
    let started = Instant::now();
    let mut hook = Command::new(CASHEW).args(&pre_stop[1..]).spawn().unwrap();
    // Readiness turns 503 while it drains (the pod leaves the Service first).
    let mut saw_503 = false;
    while started.elapsed() < Duration::from_secs(10) && !saw_503 {
        match api.try_get_status(&text(&pod["readiness"])) {
            Some(503) => saw_503 = true,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            None => break,
        }
    }
    let status = hook.wait().unwrap();
    assert!(status.success(), "preStop exited with {status}");
    let exit = cashew
        .process
        .wait_exit(Duration::from_secs(pod["grace"].as_u64().unwrap()));
    println!(
        "preStop: ready 503 seen: {saw_503}; cashew exited {:?} after {:?} (grace {} s)",
        exit,
        started.elapsed(),
        pod["grace"]
    );
    assert!(exit.is_some(), "cashew still runs after the grace period");
    assert!(saw_503 || started.elapsed() < Duration::from_secs(1));
    let _ = std::fs::remove_file(token_file);
}
