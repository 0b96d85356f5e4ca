//! cashew itself under test: the process, its admin API, its routing.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::*;

/// nutcracker's pool stats, by name: what existing monitoring reads.
pub const NUTCRACKER_POOL_STATS: [&str; 6] = [
    "client_eof",
    "client_err",
    "client_connections",
    "server_ejects",
    "forward_error",
    "fragments",
];

/// nutcracker's server stats, by name.
pub const NUTCRACKER_SERVER_STATS: [&str; 13] = [
    "server_eof",
    "server_err",
    "server_timedout",
    "server_connections",
    "server_ejected_at",
    "requests",
    "request_bytes",
    "responses",
    "response_bytes",
    "in_queue",
    "in_queue_bytes",
    "out_queue",
    "out_queue_bytes",
];

/// `cashew route`: the server entry, as written in the config, of each key.
pub fn cashew_route(
    binary: &str,
    conf: &std::path::Path,
    pool: Option<&str>,
    keys: &[String],
) -> Vec<String> {
    cashew_replicas(binary, conf, pool, keys)
        .into_iter()
        .map(|mut replicas| replicas.swap_remove(0))
        .collect()
}

/// `cashew route`: every server entry that keeps each key, in order (one unless
/// the pool has `replicas`).
pub fn cashew_replicas(
    binary: &str,
    conf: &std::path::Path,
    pool: Option<&str>,
    keys: &[String],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new(binary);
    cmd.arg("route").arg("-c").arg(conf);
    if let Some(pool) = pool {
        cmd.args(["--pool", pool]);
    }
    let out = cmd.args(keys).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (_key, servers) = l.split_once('\t').expect("KEY<TAB>SERVER...");
            servers.split('\t').map(str::to_string).collect()
        })
        .collect()
}

/// For each key, the index in `backends` of the server `cashew route` names, for a
/// config whose server entries are `ADDR:1`.
pub fn routed_backends(
    binary: &str,
    conf: &std::path::Path,
    backends: &[Process],
    keys: &[String],
) -> Vec<usize> {
    cashew_route(binary, conf, None, keys)
        .iter()
        .map(|entry| {
            backends
                .iter()
                .position(|b| *entry == format!("{}:1", b.addr))
                .unwrap_or_else(|| panic!("{entry} is none of the backends"))
        })
        .collect()
}

/// Test-data bytes from text: `\r \n \t \\ \xNN` escapes, and `{{N*text}}` for
/// `text` (itself with escapes) repeated N times.
pub fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"{{") {
            let close = text[i..].find("}}").expect("a closing }}") + i;
            let (count, what) = text[i + 2..close].split_once('*').expect("{{N*text}}");
            let count: usize = count.parse().expect("a count");
            out.extend(unescape(what).repeat(count));
            i = close + 2;
            continue;
        }
        if bytes[i] == b'\\' {
            let (byte, width) = match bytes[i + 1] {
                b'r' => (b'\r', 2),
                b'n' => (b'\n', 2),
                b't' => (b'\t', 2),
                b'\\' => (b'\\', 2),
                b'x' => (u8::from_str_radix(&text[i + 2..i + 4], 16).expect("hex"), 4),
                other => panic!("unknown escape \\{}", other as char),
            };
            out.push(byte);
            i += width;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// cashew with one pool over `backends` (entries `ADDR:1`), on a free loopback port.
pub struct PoolProxy {
    pub backends: Vec<Process>,
    pub cashew: Cashew,
    pub listen: SocketAddr,
    binary: String,
}

impl PoolProxy {
    /// `pool_settings` are extra pool lines (each indented two spaces, newline-ended).
    /// Two worker threads unless `args` says `--threads`.
    pub fn start(
        binary: &str,
        backends: Vec<Process>,
        pool_settings: &str,
        args: &[&str],
    ) -> PoolProxy {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap();
        let servers: String = backends
            .iter()
            .map(|b| format!("    - {}:1\n", b.addr))
            .collect();
        let yaml = format!("pool:\n  listen: {listen}\n{pool_settings}  servers:\n{servers}");
        let mut all_args = args.to_vec();
        if !args.contains(&"--threads") {
            all_args.extend(["--threads", "2"]);
        }
        let cashew = Cashew::start(binary, &yaml, &all_args);
        PoolProxy {
            backends,
            cashew,
            listen,
            binary: binary.to_string(),
        }
    }

    /// Which backend `cashew route` names for each key.
    pub fn routed(&self, keys: &[String]) -> Vec<usize> {
        let conf = self.cashew.dir.join("cashew.yml");
        routed_backends(&self.binary, &conf, &self.backends, keys)
    }

    /// cashew with one pool over `servers` fresh memcached servers.
    pub fn memcached(binary: &str, servers: usize, pool_settings: &str, args: &[&str]) -> Self {
        let backends: Vec<Process> = (0..servers).map(|_| crate::memcached()).collect();
        PoolProxy::start(binary, backends, pool_settings, args)
    }

    /// A memcached client of the pool.
    pub fn client(&self) -> McConn {
        McConn::connect(self.listen)
    }

    /// The stats port's document.
    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.cashew.stats_json()).unwrap()
    }

    /// What the first memcached server answers to `version` (cashew answers the same).
    pub fn server_version(&self) -> String {
        let mut c = McConn::connect(self.backends[0].addr);
        c.send(b"version\r\n");
        c.line()
    }
}

/// A cashew process started from `binary` with the config `yaml`.
pub struct Cashew {
    pub process: Process,
    pub dir: PathBuf,
    pub stats_port: u16,
}

impl Cashew {
    /// Starts cashew and waits until it serves stats, which it does only once every
    /// pool listens (readiness is not probed on a pool, so no client is counted).
    pub fn start(binary: &str, yaml: &str, extra_args: &[&str]) -> Cashew {
        Self::start_with_env(binary, yaml, extra_args, &[])
    }

    /// As [`Cashew::start`], with environment variables set for the process.
    pub fn start_with_env(
        binary: &str,
        yaml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Cashew {
        Self::start_with(binary, yaml, extra_args, |cmd| {
            cmd.envs(env.iter().copied());
        })
    }

    /// As [`Cashew::start`], allowed at most `open_files` descriptors (soft and hard).
    pub fn start_with_open_files(
        binary: &str,
        yaml: &str,
        extra_args: &[&str],
        open_files: u64,
    ) -> Cashew {
        use std::os::unix::process::CommandExt;
        Self::start_with(binary, yaml, extra_args, |cmd| {
            let limit = libc::rlimit {
                rlim_cur: open_files,
                rlim_max: open_files,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        })
    }

    /// As [`Cashew::start`], resolving host names through `nameserver` alone: it
    /// runs in a mount namespace of its own where `/etc/resolv.conf` names only
    /// that server (which needs root).
    pub fn start_with_nameserver(
        binary: &str,
        yaml: &str,
        extra_args: &[&str],
        nameserver: &dns::Nameserver,
    ) -> Cashew {
        let dir = temp_dir("cashew");
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!(
                "nameserver {}\noptions timeout:5 attempts:1\n",
                nameserver.addr
            ),
        )
        .unwrap();
        let mut cmd = Command::new(program("unshare"));
        cmd.args(["--mount", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(&resolv)
            .arg(binary);
        Self::start_in(dir, cmd, yaml, extra_args)
    }

    fn start_with(
        binary: &str,
        yaml: &str,
        extra_args: &[&str],
        setup: impl FnOnce(&mut Command),
    ) -> Cashew {
        let mut cmd = Command::new(binary);
        setup(&mut cmd);
        Self::start_in(temp_dir("cashew"), cmd, yaml, extra_args)
    }

    /// Runs `cmd` (cashew, or what executes it) with the config `yaml` in `dir`.
    fn start_in(dir: PathBuf, mut cmd: Command, yaml: &str, extra_args: &[&str]) -> Cashew {
        let conf = dir.join("cashew.yml");
        std::fs::write(&conf, yaml).unwrap();
        let stats_port = free_port("127.0.0.1");
        cmd.arg("-c")
            .arg(&conf)
            .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
            .arg("-o")
            .arg(dir.join("cashew.log"))
            .args(extra_args);
        let stats_addr = format!("127.0.0.1:{stats_port}").parse().unwrap();
        let process = Process::spawn("cashew", &mut cmd, stats_addr);
        Cashew {
            process,
            dir,
            stats_port,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("cashew.log")).unwrap_or_default()
    }

    /// Replaces the config file (a reload then reads it).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(self.dir.join("cashew.yml"), yaml).unwrap();
    }

    /// The stats port's JSON document.
    pub fn stats_json(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.stats_port)).unwrap();
        let mut doc = String::new();
        s.read_to_string(&mut doc).unwrap();
        doc
    }
}

/// A client of cashew's admin API: status code and parsed JSON body of each call.
pub struct AdminApi {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl AdminApi {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> AdminApi {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        AdminApi {
            base: format!("http://{addr}"),
            token: token.map(str::to_string),
            agent,
        }
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        Self::parse(self.get_request(path).call(), path)
    }

    /// A GET whose body is not JSON (`/metrics`): status and text.
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let mut response = self
            .get_request(path)
            .call()
            .unwrap_or_else(|e| panic!("admin {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// The status of a GET, or `None` when nothing answers (the process is gone).
    pub fn try_get_status(&self, path: &str) -> Option<u16> {
        self.get_request(path)
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// A GET with the token, if any.
    fn get_request(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        request
    }

    pub fn post(&self, path: &str) -> (u16, serde_json::Value) {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        Self::parse(request.send_empty(), path)
    }

    fn parse(
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        path: &str,
    ) -> (u16, serde_json::Value) {
        let mut response = response.unwrap_or_else(|e| panic!("admin {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("admin {path}: not JSON ({e}): {text}"));
        (status, body)
    }
}
