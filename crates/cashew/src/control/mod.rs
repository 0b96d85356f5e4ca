//! The control plane, on the main thread. It owns the configuration generations
//! and publishes each one to the workers; it handles signals, the stats port and
//! the admin API; and it carries out reload, graceful stop and restart. Nothing
//! here runs on the request path.

pub(crate) mod admin;
mod cluster;
mod dns;
mod handover;
mod lifecycle;
pub(crate) mod listen;
mod memory;
mod notify;
mod probe;
mod reload;
mod resp_client;
mod sentinel;
mod signals;
mod supervisor;
mod threads;
mod watch;
mod watchers;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;
use tokio::sync::oneshot;
use tokio::task::LocalSet;

use cashew_config::Secret;

use crate::net::BoundAddr;
use crate::state::counters::Registry;
use crate::state::generation::{Generation, Loaded, Source};
use handover::ReadyPipe;
use listen::Inherited;
use signals::Signals;
pub(crate) use supervisor::Supervisor;

/// How long a restart waits for the new process to say it serves.
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a reload or the start waits for every worker to take a generation.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the control plane needs from the command line.
pub struct Options {
    /// Absolute, so that reloads find it whatever the working directory.
    pub conf_file: PathBuf,
    /// Worker threads; 0 until chosen from the configuration (see `threads`).
    pub threads: usize,
    pub stats_addr: String,
    pub stats_port: u16,
    pub admin: Option<String>,
    /// The admin token given on the command line or in the environment...
    pub admin_token: Option<String>,
    /// ...or the file it is read from, at start and at every reload.
    pub admin_token_file: Option<PathBuf>,
    /// `/metrics` is served without the token.
    pub metrics_public: bool,
    /// Reload when the file's content changes.
    pub watch_config: bool,
    pub drain_timeout: Duration,
    pub pid_file: Option<PathBuf>,
    pub daemonize: bool,
    /// The binary and arguments a restart runs: the path this process was started
    /// from (so a binary replaced on disk is the one that runs) and the same flags.
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

/// Starts cashew and serves until it has stopped.
pub fn run(options: Options) -> Result<(), String> {
    memory::configure();
    let mut predecessor = ReadyPipe::from_env();
    let result = Prepared::new(options, predecessor.is_some())
        .and_then(|prepared| prepared.serve(&mut predecessor));
    if let (Err(why), Some(pipe)) = (&result, predecessor.take()) {
        pipe.failed(why);
    }
    result
}

/// Everything bound and validated before the process daemonizes and starts threads.
struct Prepared {
    options: Options,
    admin_token: Option<Secret>,
    generation: Generation,
    next_listener_id: u64,
    stats_socket: Socket,
    admin_socket: Option<Socket>,
}

impl Prepared {
    fn new(mut options: Options, restarting: bool) -> Result<Prepared, String> {
        crate::process::raise_open_files_limit();
        let mut inherited = Inherited::new(handover::take_passed_sockets());
        let loaded = load(&options.conf_file)?;
        let config = &loaded.config;
        if options.threads == 0 {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            options.threads = threads::default_threads(config, cpus);
        }
        let admin_token = admin_token(&options)?;
        let admin_addr = match &options.admin {
            Some(text) => Some(admin_address(text, admin_token.is_some())?),
            None => None,
        };
        let registry = Arc::new(Registry::new(options.threads));
        let mut next_listener_id = 0;
        let listeners = listen::for_config(
            config,
            None,
            &mut inherited,
            options.threads,
            &mut next_listener_id,
        )?;
        let generation = Generation::new(1, loaded, registry, listeners, None);

        let stats_addr =
            crate::net::resolve(&options.stats_addr, options.stats_port).map_err(|e| {
                format!(
                    "stats address {}:{}: {e}",
                    options.stats_addr, options.stats_port
                )
            })?;
        let stats_socket = match inherited.take(&BoundAddr::Tcp(stats_addr)).pop() {
            Some(socket) => socket,
            None => listen::bind_only(stats_addr)
                .map_err(|e| format!("cannot listen for stats on {stats_addr}: {e}"))?,
        };
        let admin_socket = match admin_addr {
            Some(addr) => Some(match inherited.take(&BoundAddr::Tcp(addr)).pop() {
                Some(socket) => socket,
                None => listen::bind_only(addr)
                    .map_err(|e| format!("cannot listen for the admin API on {addr}: {e}"))?,
            }),
            None => None,
        };
        inherited.close_unclaimed();
        if options.daemonize && !restarting {
            crate::process::daemonize()?;
        }
        // Threads started before the fork would not have survived it.
        watchers::allow();
        Ok(Prepared {
            options,
            admin_token,
            generation,
            next_listener_id,
            stats_socket,
            admin_socket,
        })
    }

    fn serve(self, predecessor: &mut Option<ReadyPipe>) -> Result<(), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the main event loop: {e}"))?;
        let local = LocalSet::new();
        local.block_on(&runtime, async move {
            let signals = Signals::install()?;
            let (supervisor, requests, workers) = Supervisor::start(self)?;
            supervisor.become_ready(predecessor).await?;
            supervisor.clone().control_loop(signals, requests).await;
            for handle in workers {
                let _ = handle.join();
            }
            Ok(())
        })
    }
}

/// The admin token, from its file or as given.
fn admin_token(options: &Options) -> Result<Option<Secret>, String> {
    match (&options.admin_token_file, &options.admin_token) {
        (Some(path), _) => crate::reports::api::read_token_file(path).map(|t| Some(Secret::new(t))),
        (None, Some(token)) if token.is_empty() => {
            Err("--admin-token (or CASHEW_ADMIN_TOKEN) is empty".into())
        }
        (None, token) => Ok(token.clone().map(Secret::new)),
    }
}

/// The admin address; not on loopback it needs a token.
fn admin_address(text: &str, has_token: bool) -> Result<SocketAddr, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("--admin '{text}': expected ADDR:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--admin '{text}': '{port}' is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr = crate::net::resolve(host, port).map_err(|e| format!("--admin '{text}': {e}"))?;
    if !addr.ip().is_loopback() && !has_token {
        return Err(format!(
            "--admin {addr} is reachable from other hosts: give --admin-token-file (or --admin-token, CASHEW_ADMIN_TOKEN) to protect it, or listen on 127.0.0.1"
        ));
    }
    Ok(addr)
}

/// Reads and validates the config file, and loads the certificates and keys it
/// names.
pub fn check(path: &std::path::Path) -> Result<(), String> {
    read(path, false).map(drop)
}

fn load(path: &std::path::Path) -> Result<Loaded, String> {
    read(path, true)
}

/// Reads and checks the file; `serve`: for serving it, its Sentinels are asked for
/// their masters' addresses (and listened to from then on), and servers' host
/// names are watched.
fn read(path: &std::path::Path, serve: bool) -> Result<Loaded, String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{file}: cannot read the config file: {e}"))?;
    let mut config = cashew_config::parse(&file, &text).map_err(|e| e.to_string())?;
    let tls = crate::net::tls::for_pools(&file, &config.pools)?;
    if serve {
        sentinel::resolve(&file, &mut config, &tls)?;
        cluster::resolve(&file, &mut config, &tls)?;
        dns::resolve(&mut config);
    }
    Ok(Loaded {
        config,
        source: Source::new(path.to_path_buf(), text),
        tls,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Starting,
    Serving,
    Restarting,
    Draining,
}

impl Phase {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Restarting => "restarting",
            Phase::Draining => "draining",
        }
    }
}

/// What the admin API asks of the control loop.
pub(crate) enum Request {
    Reload(oneshot::Sender<Result<Arc<Generation>, String>>),
    Restart(oneshot::Sender<Result<u32, String>>),
    Stop,
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_off_loopback_needs_a_token() {
        assert!(admin_address("127.0.0.1:22223", false).is_ok());
        assert!(admin_address("[::1]:22223", false).is_ok());
        let err = admin_address("0.0.0.0:22223", false).unwrap_err();
        assert!(err.contains("--admin-token"), "{err}");
        assert!(admin_address("0.0.0.0:22223", true).is_ok());
        assert!(admin_address("localhost", true).is_err());
    }
}
