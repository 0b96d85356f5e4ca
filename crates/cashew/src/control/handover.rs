//! Passing listen sockets from one process to the next, so a restart or a binary
//! upgrade never refuses a connection: the old process starts the new one with its
//! listening sockets left open across `exec`, the new one serves on those very
//! sockets, says it is ready over a pipe, and only then does the old one drain.
//! The same path takes sockets from systemd's socket activation (`LISTEN_FDS`).

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use socket2::Socket;
use tokio::io::AsyncReadExt;

/// The descriptors a predecessor passes, comma-separated.
const FDS_ENV: &str = "CASHEW_LISTEN_FDS";
/// The pipe on which a successor reports `ready` or `error <why>`.
const READY_FD_ENV: &str = "CASHEW_READY_FD";
/// systemd's first passed descriptor.
const SD_LISTEN_FDS_START: RawFd = 3;

/// Takes the listening sockets this process was given: by a predecessor, or by
/// systemd (`LISTEN_FDS`, checked against `LISTEN_PID`). Must run before any
/// thread starts: it clears those variables so no child sees them.
pub(crate) fn take_passed_sockets() -> Vec<Socket> {
    let mut fds: Vec<RawFd> = Vec::new();
    if let Some(list) = std::env::var_os(FDS_ENV) {
        fds.extend(
            list.to_string_lossy()
                .split(',')
                .filter_map(|s| s.trim().parse::<RawFd>().ok()),
        );
    } else if let Some(count) = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
    {
        let for_us = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        if for_us {
            fds.extend(SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + count.max(0));
        }
    }
    for var in [FDS_ENV, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    fds.into_iter()
        .filter(|&fd| fd_is_open(fd))
        .map(|fd| {
            // SAFETY: the descriptor was passed to this process to own, and is open.
            let socket = unsafe { Socket::from_raw_fd(fd) };
            let _ = socket.set_cloexec(true);
            socket
        })
        .collect()
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// The pipe to a predecessor waiting for this process to be ready.
pub(crate) struct ReadyPipe(std::fs::File);

impl ReadyPipe {
    /// The pipe, when this process was started by a restarting cashew.
    pub(crate) fn from_env() -> Option<ReadyPipe> {
        let fd = std::env::var(READY_FD_ENV).ok()?.parse::<RawFd>().ok()?;
        std::env::remove_var(READY_FD_ENV);
        if !fd_is_open(fd) {
            return None;
        }
        // SAFETY: the predecessor passed this descriptor for this process to own.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        Some(ReadyPipe(file))
    }

    pub(crate) fn ready(mut self) {
        let _ = self.0.write_all(b"ready\n");
    }

    pub(crate) fn failed(mut self, why: &str) {
        let line = why.replace('\n', "; ");
        let _ = writeln!(self.0, "error {line}");
    }
}

/// A new cashew process started to take over, not yet known to be ready.
pub(crate) struct Successor {
    child: Child,
    ready: tokio::net::unix::pipe::Receiver,
}

impl Successor {
    /// Starts `exe` with `args`, passing it `fds` (left open across exec) and a
    /// pipe to report on.
    pub(crate) fn spawn(exe: &Path, args: &[OsString], fds: &[RawFd]) -> io::Result<Successor> {
        let (read, write) = pipe()?;
        let list: Vec<String> = fds.iter().map(RawFd::to_string).collect();
        let mut keep: Vec<RawFd> = fds.to_vec();
        keep.push(write.as_raw_fd());
        let mut command = Command::new(exe);
        command
            .args(args)
            .env(FDS_ENV, list.join(","))
            .env(READY_FD_ENV, write.as_raw_fd().to_string());
        // SAFETY: the closure only calls fcntl(2), which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                for &fd in &keep {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(write);
        let ready = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
        Ok(Successor { child, ready })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the successor to say it serves. On failure it is gone (it exited,
    /// or it is killed when `timeout` passes) and the error says why.
    pub(crate) async fn wait_ready(mut self, timeout: Duration) -> Result<u32, String> {
        let mut said = Vec::new();
        let read = tokio::time::timeout(timeout, async {
            let mut buf = [0u8; 512];
            loop {
                match self.ready.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => said.extend_from_slice(&buf[..n]),
                }
                if said.ends_with(b"\n") {
                    return;
                }
            }
        })
        .await;
        let said = String::from_utf8_lossy(&said).trim().to_string();
        if read.is_ok() && said == "ready" {
            return Ok(self.child.id());
        }
        if read.is_err() {
            let _ = self.child.kill();
        }
        let status = wait_child(&mut self.child).await;
        let why = match (read, said.strip_prefix("error ")) {
            (Err(_), _) => format!("it did not become ready within {} s", timeout.as_secs()),
            (Ok(()), Some(why)) => why.to_string(),
            (Ok(()), None) => format!("it exited ({status}) before it was ready"),
        };
        Err(why)
    }
}

async fn wait_child(child: &mut Child) -> String {
    for _ in 0..200 {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => return e.to_string(),
        }
    }
    "still running".into()
}

/// A pipe whose ends close on exec unless passed on purpose.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The child writes once and may block briefly; only the read end stays non-blocking.
    // SAFETY: F_SETFL on a descriptor this function owns.
    unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETFL, 0) };
    Ok((read, write))
}
