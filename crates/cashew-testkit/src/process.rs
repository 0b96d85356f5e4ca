//! Processes the tests start and watch: free ports, programs, readiness, resources.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// Runs a Python script of `crates/cashew/tests/python/` with the tests' Python (in
/// that directory, so it can import its neighbours) and prints what it wrote; its
/// output, standard error after standard output. Panics, with the output, when the
/// script fails.
pub fn run_python_script(script: &str, args: &[String]) -> String {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cashew/tests/python");
    let mut command = Command::new(python());
    command.arg(dir.join(script)).current_dir(&dir);
    run_script(command, script, args)
}

/// Runs a Node.js script of `crates/cashew/tests/node/` with the client libraries
/// `scripts/install-deps` put in `target/node`, as [`run_python_script`] runs one.
pub fn run_node_script(script: &str, args: &[String]) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let modules = root.join("target/node/node_modules");
    assert!(
        modules.exists(),
        "{} is missing: scripts/install-deps installs Node.js and the client libraries the tests use",
        modules.display()
    );
    let dir = root.join("crates/cashew/tests/node");
    let mut command = Command::new("node");
    command
        .arg(dir.join(script))
        .env("NODE_PATH", &modules)
        .current_dir(&dir);
    run_script(command, script, args)
}

/// Runs `command` (a script's interpreter, told the script) with `args`, prints its
/// output and returns it; panics with it when the script fails.
fn run_script(mut command: Command, script: &str, args: &[String]) -> String {
    let out = command.args(args).output().unwrap_or_else(|e| {
        panic!("{script}: {e} (scripts/install-deps installs what the tests run)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", text.trim());
    assert!(out.status.success(), "{script} {args:?}:\n{text}");
    text
}

/// A port nothing listens on now, below the kernel's ephemeral range (32768 and
/// up): a port the kernel picks is one it may also give, a moment later, to an
/// outgoing connection or to another test's port-0 request, and the process the
/// test starts on it would then find it taken. Nor is it given to another test
/// process for two minutes (see `reserve`).
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
        if TcpListener::bind((host, port)).is_ok() && reserve(port) {
            return port;
        }
    }
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {host}: {e}"))
}

/// How long a port given by `free_port` is kept from every other test process: long
/// enough for the process it was picked for to bind it.
const RESERVED_FOR: Duration = Duration::from_secs(120);

/// Claims `port` for this test process, so that another one, running at the same
/// time, is not given it between its pick and its bind: by a file named after it
/// in a directory that every test process of the machine shares. False when another
/// claimed it less than `RESERVED_FOR` ago.
pub(crate) fn reserve(port: u16) -> bool {
    let dir = std::env::temp_dir().join("cashew-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        // Nowhere to keep claims: the bind check alone decides.
        return true;
    }
    let path = dir.join(port.to_string());
    if claim(&path) {
        return true;
    }
    let stale = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|at| at.elapsed().ok())
        .is_none_or(|age| age > RESERVED_FOR);
    // An old claim is taken over by making it anew (its time is now).
    stale && std::fs::remove_file(&path).is_ok() && claim(&path)
}

fn claim(path: &std::path::Path) -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .is_ok()
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

pub(crate) fn running_as_root() -> bool {
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

/// Page faults process `pid` has taken that needed no disk (`minflt` of
/// `/proc/PID/stat`): each is a page the kernel mapped in for it.
pub fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name: state is the first, minflt the eighth.
    let (_, rest) = stat.rsplit_once(") ").expect("/proc/PID/stat");
    rest.split(' ')
        .nth(7)
        .and_then(|v| v.parse().ok())
        .expect("minflt in /proc/PID/stat")
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

/// A test's prerequisite (root, network namespaces, enough descriptors): its value,
/// or, when it is missing, a failure under CI (the `CI` variable set: CI runs as
/// root and can provide all of them) and a skip, said out loud, elsewhere.
pub fn prerequisite<T>(what: &str, available: Result<T, String>) -> Option<T> {
    match available {
        Ok(value) => Some(value),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{what} is missing, and CI must run this test: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED (outside CI only): {what} is missing: {why}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_given_is_not_given_again_while_reserved() {
        let port = free_port("127.0.0.1");
        assert!(!reserve(port), "port {port} was claimed twice");
        let others: Vec<u16> = (0..50).map(|_| free_port("127.0.0.1")).collect();
        assert!(!others.contains(&port), "port {port} was given again");
    }
}
