//! The two deployments without a single proxy to lose, each on hosts made of
//! network namespaces: two cashew instances behind a virtual IP moved by
//! keepalived, and a local cashew on every application host. Both rest on one
//! fact: instances with the same config place every key on the same server.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cashew_testkit::netns::{Host, Lan};
use cashew_testkit::{program, temp_dir, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
const PORT: u16 = 22121;
const ADMIN: &str = "127.0.0.1:22223";

/// The test network, or `None` (with the reason printed) where this machine does
/// not permit network namespaces.
fn lan() -> Option<Lan> {
    cashew_testkit::prerequisite("network namespaces (root)", Lan::new())
}

fn addr(last: u8) -> Ipv4Addr {
    // TEST-NET-1: documentation addresses, inside the test's namespaces only.
    Ipv4Addr::new(192, 0, 2, last)
}

/// One config for every instance: a pool over the cache host's two servers.
fn config(dir: &Path, listen: &str, cache: &Host) -> std::path::PathBuf {
    let conf = dir.join("cashew.yml");
    let yaml = format!(
        "cache:\n  listen: {listen}\n  hash: fnv1a_64\n  distribution: ketama\n  timeout: 1000\n  servers:\n    - {0}:11211:1\n    - {0}:11212:1\n",
        cache.addr
    );
    std::fs::write(&conf, yaml).unwrap();
    conf
}

fn cashew_on(host: &Host, conf: &Path, listen: SocketAddr) -> Process {
    let dir = temp_dir("cashew-host");
    let mut cmd = host.command(CASHEW);
    cmd.arg("-c").arg(conf);
    cmd.args([
        "-s",
        "22222",
        "-a",
        "127.0.0.1",
        "--admin",
        ADMIN,
        "--threads",
        "1",
    ]);
    cmd.arg("-o").arg(dir.join("cashew.log"));
    host.spawn("cashew", &mut cmd, listen)
}

/// A keepalived stopped with SIGTERM when dropped, so that it ends its own
/// children (a SIGKILL would leave its VRRP process behind).
struct Keepalived(Process);

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.0.signal("TERM");
        let _ = self.0.wait_exit(Duration::from_secs(5));
    }
}

/// keepalived holding `vip` on `host`, with `cashew status` as its health check.
fn keepalived(host: &Host, peer: &Host, priority: u8, vip: Ipv4Addr, dir: &Path) -> Keepalived {
    let conf = dir.join(format!("keepalived-{}.conf", host.namespace));
    let text = format!(
        "global_defs {{
  router_id {ns}
  script_user root
}}
vrrp_script cashew_ready {{
  script \"{CASHEW} status --admin {ADMIN} --wait 1\"
  interval 1
  timeout 1
  fall 1
  rise 1
}}
vrrp_instance cache {{
  state BACKUP
  interface {iface}
  virtual_router_id 51
  priority {priority}
  version 3
  advert_int 0.2
  unicast_src_ip {src}
  unicast_peer {{
    {peer}
  }}
  virtual_ipaddress {{
    {vip}/24
  }}
  track_script {{
    cashew_ready
  }}
}}
",
        ns = host.namespace,
        iface = host.interface,
        src = host.addr,
        peer = peer.addr,
    );
    std::fs::write(&conf, text).unwrap();
    let log =
        std::fs::File::create(dir.join(format!("keepalived-{}.log", host.namespace))).unwrap();
    let mut cmd = host.command(program("keepalived"));
    cmd.args([
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "--no-syslog",
        "--vrrp",
    ])
    .arg("-f")
    .arg(&conf)
    .arg("-p")
    .arg(dir.join(format!("{}.pid", host.namespace)))
    .arg("-r")
    .arg(dir.join(format!("{}-vrrp.pid", host.namespace)))
    .stdin(Stdio::null())
    .stdout(log.try_clone().unwrap())
    .stderr(log);
    Keepalived(Process::start(
        "keepalived",
        &mut cmd,
        SocketAddr::from((host.addr, 0)),
    ))
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

/// A memcached text connection that reports I/O errors instead of panicking.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(to: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&to, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line)
    }

    /// `set` then `get` of `key`: Ok(None) when all is right, Ok(Some(what)) for a
    /// wrong reply, Err for a lost connection.
    fn set_get(&mut self, key: &str, value: &str) -> std::io::Result<Option<String>> {
        let request = format!("set {key} 0 0 {}\r\n{value}\r\nget {key}\r\n", value.len());
        self.writer.write_all(request.as_bytes())?;
        let replies = [self.line()?, self.line()?, self.line()?, self.line()?];
        let expected = [
            "STORED\r\n".to_string(),
            format!("VALUE {key} 0 {}\r\n", value.len()),
            format!("{value}\r\n"),
            "END\r\n".to_string(),
        ];
        Ok((replies != expected).then(|| format!("{key}: {replies:?}")))
    }

    fn get(&mut self, key: &str) -> std::io::Result<Option<String>> {
        self.writer.write_all(format!("get {key}\r\n").as_bytes())?;
        let header = self.line()?;
        if header == "END\r\n" {
            return Ok(None);
        }
        let value = self.line()?;
        self.line()?;
        Ok(Some(value.trim_end().to_string()))
    }
}

/// What a client that reconnects at once after every error saw.
#[derive(Debug, Default)]
struct Service {
    requests: u64,
    wrong: Vec<String>,
    /// The longest time between two answered requests.
    longest_gap: Duration,
    lost_connections: u64,
}

/// Sends `set`+`get` pairs to `to` until `stop`.
fn steady_client(to: SocketAddr, tag: &str, stop: &AtomicBool) -> Service {
    let mut service = Service::default();
    let mut last_ok = Instant::now();
    let mut conn: Option<Client> = None;
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let client = match conn.as_mut() {
            Some(c) => c,
            None => match Client::connect(to) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        seq += 1;
        match client.set_get(&format!("{tag}:{seq}"), &format!("v{seq}")) {
            Ok(wrong) => {
                service.requests += 2;
                service.wrong.extend(wrong);
                service.longest_gap = service.longest_gap.max(last_ok.elapsed());
                last_ok = Instant::now();
            }
            Err(_) => {
                service.lost_connections += 1;
                conn = None;
            }
        }
    }
    service
}

fn write_keys(host: &Host, to: SocketAddr, keys: &[String]) {
    host.run(|| {
        let mut c = Client::connect(to).expect("connect");
        for k in keys {
            assert_eq!(c.set_get(k, &format!("={k}")).unwrap(), None);
        }
    });
}

/// How many of `keys` read back with the value [`write_keys`] gave them.
fn hits(host: &Host, to: SocketAddr, keys: &[String]) -> usize {
    host.run(|| {
        let mut c = Client::connect(to).expect("connect");
        keys.iter()
            .filter(|k| c.get(k).unwrap().as_deref() == Some(&format!("={k}")))
            .count()
    })
}

#[test]
fn keepalived_moves_the_virtual_ip_to_the_backup_when_the_master_cashew_dies() {
    let Some(mut lan) = lan() else { return };
    let proxy_a = lan.host("a", addr(11)).unwrap();
    let proxy_b = lan.host("b", addr(12)).unwrap();
    let app = lan.host("app", addr(20)).unwrap();
    let cache = lan.host("mc", addr(30)).unwrap();
    let _servers = [cache.memcached(11211), cache.memcached(11212)];
    let dir = temp_dir("vip");
    let conf = config(&dir, &format!("0.0.0.0:{PORT}"), &cache);
    let cashew_a = cashew_on(&proxy_a, &conf, SocketAddr::from((proxy_a.addr, PORT)));
    let _cashew_b = cashew_on(&proxy_b, &conf, SocketAddr::from((proxy_b.addr, PORT)));
    let vip_ip = addr(100);
    let vip = SocketAddr::from((vip_ip, PORT));
    let _keepalived = [
        keepalived(&proxy_a, &proxy_b, 150, vip_ip, &dir),
        keepalived(&proxy_b, &proxy_a, 100, vip_ip, &dir),
    ];
    wait_until("the VIP on the master", Duration::from_secs(15), || {
        proxy_a.has_address(vip_ip)
    });
    let keys: Vec<String> = (0..200).map(|i| format!("before:{i}")).collect();
    write_keys(&app, vip, &keys);

    let stop = AtomicBool::new(false);
    let (service, failover) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            app.enter();
            steady_client(vip, "steady", &stop)
        });
        std::thread::sleep(Duration::from_millis(500));
        cashew_a.signal("KILL");
        let failover = wait_until("the VIP on the backup", Duration::from_secs(15), || {
            proxy_b.has_address(vip_ip)
        });
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        (load.join().unwrap(), failover)
    });
    println!(
        "VIP moved {:.2} s after the kill; the client went {:.2} s without service; {} requests, {} connections lost",
        failover.as_secs_f64(),
        service.longest_gap.as_secs_f64(),
        service.requests,
        service.lost_connections
    );
    assert!(service.wrong.is_empty(), "{:?}", service.wrong);
    assert!(service.longest_gap < Duration::from_secs(10));
    assert!(service.lost_connections >= 1, "the master was killed");
    assert!(!proxy_a.has_address(vip_ip));
    // The backup places keys as the master did: what was written through one
    // reads through the other.
    assert_eq!(hits(&app, vip, &keys), keys.len());
}

#[test]
fn a_local_cashew_on_every_host_shares_one_cache_and_fails_alone() {
    let Some(mut lan) = lan() else { return };
    let app1 = lan.host("app1", addr(21)).unwrap();
    let app2 = lan.host("app2", addr(22)).unwrap();
    let cache = lan.host("mc", addr(30)).unwrap();
    let _servers = [cache.memcached(11211), cache.memcached(11212)];
    let dir = temp_dir("local");
    let local = SocketAddr::from(([127, 0, 0, 1], PORT));
    let conf = config(&dir, &local.to_string(), &cache);
    let mut proxy1 = cashew_on(&app1, &conf, local);
    let _proxy2 = cashew_on(&app2, &conf, local);

    // Written through one host's proxy, read through the other's.
    let keys: Vec<String> = (0..200).map(|i| format!("shared:{i}")).collect();
    write_keys(&app1, local, &keys);
    assert_eq!(hits(&app2, local, &keys), keys.len());

    // One host's proxy dies: the other host's clients do not notice.
    let stop = AtomicBool::new(false);
    let service = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            app2.enter();
            steady_client(local, "app2", &stop)
        });
        std::thread::sleep(Duration::from_millis(300));
        proxy1.signal("KILL");
        proxy1
            .wait_exit(Duration::from_secs(5))
            .expect("cashew exits");
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });
    println!(
        "other host while one proxy died: {} requests, {} connections lost, longest gap {} ms",
        service.requests,
        service.lost_connections,
        service.longest_gap.as_millis()
    );
    assert!(service.wrong.is_empty(), "{:?}", service.wrong);
    assert_eq!(service.lost_connections, 0);
    assert!(service.requests > 100);

    // Its own host gets service back when its supervisor starts it again.
    let started = Instant::now();
    let _proxy1 = cashew_on(&app1, &conf, local);
    println!(
        "local proxy serving again {} ms after its start",
        started.elapsed().as_millis()
    );
    assert_eq!(hits(&app1, local, &keys), keys.len());
}
