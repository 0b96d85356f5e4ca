//! Several hosts on one machine, for tests of deployments that span hosts: each
//! host is a network namespace with one interface on a bridge (itself in a
//! namespace of its own), so addresses given here exist only inside them.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::Process;

fn ip(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(crate::program("ip"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    match out.status.success() {
        true => Ok(out),
        false => Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// A bridge and the hosts plugged into it; every namespace, and every process in
/// them, is removed when dropped.
pub struct Lan {
    prefix: String,
    namespaces: Vec<String>,
}

/// One host of a [`Lan`]: a network namespace with `addr` on `interface`.
#[derive(Clone, Debug)]
pub struct Host {
    pub namespace: String,
    pub interface: String,
    pub addr: Ipv4Addr,
}

impl Lan {
    /// A bridge in a namespace of its own; the reason when this machine does not
    /// permit network namespaces (no privilege, no veth or bridge support).
    pub fn new() -> Result<Lan, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        // Short: interface names have at most 15 bytes.
        let prefix = format!(
            "cw{:x}{}",
            std::process::id() % 0x10000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut lan = Lan {
            namespaces: Vec::new(),
            prefix,
        };
        let ns = lan.add_namespace("lan")?;
        ip(&["-n", &ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &ns, "link", "set", "br0", "up"])?;
        Ok(lan)
    }

    fn add_namespace(&mut self, name: &str) -> Result<String, String> {
        let ns = format!("{}{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A new host with `addr`/24 on the bridge.
    pub fn host(&mut self, name: &str, addr: Ipv4Addr) -> Result<Host, String> {
        let ns = self.add_namespace(name)?;
        let n = self.namespaces.len();
        let (inside, outside) = (
            format!("{}i{n}", self.prefix),
            format!("{}o{n}", self.prefix),
        );
        let bridge_ns = &self.namespaces[0];
        ip(&[
            "link", "add", &inside, "type", "veth", "peer", "name", &outside,
        ])?;
        ip(&["link", "set", &inside, "netns", &ns])?;
        ip(&["link", "set", &outside, "netns", bridge_ns])?;
        ip(&[
            "-n", bridge_ns, "link", "set", &outside, "master", "br0", "up",
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &inside,
        ])?;
        ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        Ok(Host {
            namespace: ns,
            interface: inside,
            addr,
        })
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Ok(out) = ip(&["netns", "pids", ns]) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

impl Host {
    /// `program` run inside this host.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(crate::program("ip"));
        cmd.args(["netns", "exec", &self.namespace]).arg(program);
        cmd
    }

    /// Moves the calling thread into this host: its new sockets are the host's.
    pub fn enter(&self) {
        let ns = File::open(format!("/run/netns/{}", self.namespace))
            .unwrap_or_else(|e| panic!("namespace {}: {e}", self.namespace));
        // SAFETY: setns with a namespace file descriptor it only reads.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }

    /// Runs `f` on a thread inside this host.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter();
                    f()
                })
                .join()
                .expect("a thread inside a namespace panicked")
        })
    }

    /// The addresses on this host's interface, as `ip -brief addr` shows them.
    pub fn addresses(&self) -> String {
        ip(&[
            "-n",
            &self.namespace,
            "-brief",
            "addr",
            "show",
            &self.interface,
        ])
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default()
    }

    pub fn has_address(&self, addr: Ipv4Addr) -> bool {
        self.addresses()
            .split_whitespace()
            .any(|a| a.split('/').next() == Some(&addr.to_string()))
    }

    /// Starts `command` (made with [`Host::command`]) and waits until it accepts
    /// connections on `addr`, as seen from inside this host.
    pub fn spawn(&self, what: &str, command: &mut Command, addr: SocketAddr) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut process = Process::start(what, command, addr);
        let listening = self.run(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        if !listening {
            let status = process.wait_exit(Duration::ZERO);
            panic!(
                "{what} in {} is not listening on {addr} ({status:?})",
                self.namespace
            );
        }
        process
    }

    /// A memcached server on this host's address and `port`.
    pub fn memcached(&self, port: u16) -> Process {
        let mut cmd = self.command(crate::program("memcached"));
        cmd.args(["-l", &self.addr.to_string(), "-p", &port.to_string()]);
        cmd.args(["-U", "0", "-t", "1", "-m", "64", "-u", "nobody"]);
        self.spawn("memcached", &mut cmd, SocketAddr::from((self.addr, port)))
    }
}
