//! Real backends for tests: each process is started on a loopback address with a
//! free port, waited for until it accepts connections, and killed when dropped.

pub mod dns;
pub mod faulty;
pub mod load;
pub mod netns;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Runs `command` with `input` on its standard input, and returns what it printed once
/// it exits.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A port that was free on `host` a moment ago.
/// The Python that `scripts/install-deps` sets up with the client libraries of
/// `crates/cashew/tests/python/requirements.txt` (or `CASHEW_PYTHON`).
pub fn python() -> PathBuf {
    let path = std::env::var_os("CASHEW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/python/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: scripts/install-deps installs the Python libraries the tests use",
        path.display()
    );
    path
}

/// A port nothing listens on now, below the kernel's ephemeral range (32768 and
/// up): a port the kernel picks is one it may also give, a moment later, to an
/// outgoing connection or to another test's port-0 request, and the process the
/// test starts on it would then find it taken.
pub fn free_port(host: &str) -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()) << 32
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
    let mut x = seed ^ SEQ.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    for _ in 0..200 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 15_000 + (x % 17_000) as u16;
        if TcpListener::bind((host, port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {host}: {e}"))
}

/// The path of an installed program, or a panic that says how to get it.
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("'{name}' is not installed; scripts/test installs what the tests need")
        })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Waits until `addr` accepts a TCP connection.
pub fn wait_until_listening(addr: SocketAddr, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            // Someone listens: make sure it is this child and not another process
            // that holds the port.
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{what} exited with {status}; another process listens on {addr}");
            }
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited with {status} before listening on {addr}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while a process with this pid runs (a zombie does not count).
pub fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// Resident memory of process `pid`, in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("VmRSS in /proc/PID/status")
}

/// Raises this process's soft limit on open files to its hard limit; the limit now.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

/// CPU time (user + system) process `pid` has used, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let (_, rest) = stat.rsplit_once(") ").expect("stat line");
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Kills the process `pid` (one the tests did not start themselves, e.g. a cashew
/// that a restart started) when dropped.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

/// A process killed when dropped.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
}

impl Process {
    /// Starts `command` and waits until it accepts connections on `addr`.
    pub fn spawn(what: &str, command: &mut Command, addr: SocketAddr) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut process = Process::start(what, command, addr);
        wait_until_listening(addr, &mut process.child, what);
        process
    }

    /// Starts `command` as it is set up (its standard streams too), without waiting.
    pub fn start(what: &str, command: &mut Command, addr: SocketAddr) -> Process {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Process { child, addr }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Sends a signal by name (`STOP`, `CONT`, `KILL`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it runs on.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGSTOP, then waits until every thread of the process is stopped.
    pub fn freeze(&self) {
        self.signal("STOP");
        let deadline = Instant::now() + Duration::from_secs(5);
        let stopped = || {
            std::fs::read_dir(format!("/proc/{}/task", self.pid()))
                .map(|tasks| {
                    tasks.filter_map(Result::ok).all(|t| {
                        let stat =
                            std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                        // The state follows the parenthesised command name.
                        stat.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('T'))
                    })
                })
                .unwrap_or(false)
        };
        while !stopped() {
            assert!(
                Instant::now() < deadline,
                "process {} did not stop",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A memcached server on `127.0.0.1` and a free port.
pub fn memcached() -> Process {
    memcached_on("127.0.0.1", free_port("127.0.0.1"))
}

/// A memcached server on `host:port` (any loopback address).
pub fn memcached_on(host: &str, port: u16) -> Process {
    let mut cmd = Command::new(program("memcached"));
    cmd.args([
        "-l",
        host,
        "-p",
        &port.to_string(),
        "-U",
        "0",
        "-t",
        "1",
        "-m",
        "64",
    ]);
    if running_as_root() {
        cmd.args(["-u", "nobody"]);
    }
    let addr = format!("{host}:{port}").parse().unwrap();
    Process::spawn("memcached", &mut cmd, addr)
}

/// A redis-server on `127.0.0.1` and a free port, with no persistence; `extra` are
/// further `--name value` settings (e.g. `["--requirepass", "secret"]`).
pub fn redis_server(extra: &[&str]) -> Process {
    redis_server_on(free_port("127.0.0.1"), extra)
}

/// As [`redis_server`], on a given port (e.g. to restart a server where it was).
pub fn redis_server_on(port: u16, extra: &[&str]) -> Process {
    let mut cmd = Command::new(program("redis-server"));
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    cmd.args(extra);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    Process::spawn("redis-server", &mut cmd, addr)
}

/// nutcracker started with the config `yaml`, listening (for readiness) on `wait_for`.
pub fn nutcracker(yaml: &str, wait_for: SocketAddr) -> Process {
    let dir = temp_dir("nutcracker");
    let conf = dir.join("nutcracker.yml");
    std::fs::write(&conf, yaml).unwrap();
    let stats_port = free_port("127.0.0.1");
    let mut cmd = Command::new(program("nutcracker"));
    cmd.arg("-c")
        .arg(&conf)
        .args(["-s", &stats_port.to_string(), "-a", "127.0.0.1"])
        .arg("-o")
        .arg(dir.join("nutcracker.log"))
        .arg("-p")
        .arg(dir.join("nutcracker.pid"));
    Process::spawn("nutcracker", &mut cmd, wait_for)
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    // A process id comes back in a later run: the time keeps a directory (and the
    // log file a test reads in it) from being one an earlier test left behind.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "cashew-{tag}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A minimal memcached text-protocol connection for checking backends directly.
pub struct McConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl McConn {
    pub fn connect(addr: SocketAddr) -> McConn {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        McConn {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// The connection's socket, for writing from another thread.
    pub fn clone_stream(&self) -> TcpStream {
        self.writer.try_clone().unwrap()
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
        buf
    }

    /// Reads exactly as many bytes as `expected` holds and checks they match.
    pub fn expect(&mut self, expected: &[u8]) {
        let got = self.read_exact(expected.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Sends `request` and checks the reply is exactly `reply`.
    pub fn roundtrip(&mut self, request: &[u8], reply: &[u8]) {
        self.send(request);
        self.expect(reply);
    }

    /// True when the other side has closed the connection (reads end of stream).
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0))
    }

    pub fn set(&mut self, key: &str, value: &[u8]) {
        let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
        self.send(&request);
        assert_eq!(self.line(), "STORED\r\n", "set {key}");
    }

    /// Sets every pair with pipelined `set`s (TTL `exptime`), each expecting `STORED`.
    pub fn set_many(&mut self, pairs: &[(String, String)], exptime: u32) {
        for chunk in pairs.chunks(100) {
            let mut request = Vec::new();
            for (key, value) in chunk {
                request.extend_from_slice(
                    format!("set {key} 0 {exptime} {}\r\n{value}\r\n", value.len()).as_bytes(),
                );
            }
            self.send(&request);
            for (key, _) in chunk {
                assert_eq!(self.line(), "STORED\r\n", "set {key}");
            }
        }
    }

    /// The hits among `keys`, read with multi-key `get`s of up to 100 keys; any
    /// reply but values and `END` (a `SERVER_ERROR`) is a panic.
    pub fn get_many(&mut self, keys: &[String]) -> HashMap<String, String> {
        let mut hits = HashMap::new();
        for chunk in keys.chunks(100) {
            self.send(format!("get {}\r\n", chunk.join(" ")).as_bytes());
            loop {
                let header = self.line();
                if header == "END\r\n" {
                    break;
                }
                let words: Vec<&str> = header.trim_end().split(' ').collect();
                let ["VALUE", key, _flags, len] = words[..] else {
                    panic!("expected VALUE or END, got {header:?}");
                };
                let len: usize = len.parse().unwrap();
                let mut value = self.read_exact(len + 2);
                value.truncate(len);
                let value = String::from_utf8(value).unwrap();
                hits.insert(key.to_string(), value);
            }
        }
        hits
    }

    /// A number from the server's `stats` (e.g. `curr_items`).
    pub fn stat(&mut self, name: &str) -> u64 {
        self.send(b"stats\r\n");
        let mut found = None;
        loop {
            let line = self.line();
            if line == "END\r\n" {
                break;
            }
            let mut words = line.trim_end().splitn(3, ' ');
            if let (Some("STAT"), Some(n), Some(v)) = (words.next(), words.next(), words.next()) {
                if n == name {
                    found = v.parse().ok();
                }
            }
        }
        found.unwrap_or_else(|| panic!("no stat {name}"))
    }

    /// The seconds `key` has left to live, as the meta command `mg <key> t` says.
    pub fn ttl(&mut self, key: &str) -> i64 {
        self.send(format!("mg {key} t\r\n").as_bytes());
        let line = self.line();
        line.trim_end()
            .strip_prefix("HD t")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("mg {key} t: {line:?}"))
    }

    /// The value of `key`, or `None` on a miss.
    pub fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        self.send(format!("get {key}\r\n").as_bytes());
        let header = self.line();
        if header == "END\r\n" {
            return None;
        }
        let len: usize = header
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad get reply {header:?}"));
        let mut value = vec![0; len + 2];
        self.reader.read_exact(&mut value).unwrap();
        value.truncate(len);
        assert_eq!(self.line(), "END\r\n");
        Some(value)
    }
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
