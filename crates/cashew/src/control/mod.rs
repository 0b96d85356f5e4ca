//! The control plane, on the main thread. It owns the configuration generations
//! and publishes each one to the workers; it handles signals, the stats port and
//! the admin API; and it carries out reload, graceful stop and restart. Nothing
//! here runs on the request path.

pub(crate) mod admin;
mod handover;
pub(crate) mod listen;
mod memory;
mod notify;
mod probe;
mod signals;
mod threads;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::Socket;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, LocalSet};

use cashew_config::Secret;

use crate::log::{ERROR, NOTICE, WARN};
use crate::log_at;
use crate::net::BoundAddr;
use crate::net::Listener;
use crate::process::PidFile;
use crate::proxy::worker::{self, Directive, Mode, Reports};
use crate::state::counters::{ProxyCounter, Registry, ServerCounter};
use crate::state::generation::{Generation, Source};
use handover::{ReadyPipe, Successor};
use listen::Inherited;
use signals::Signals;

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
        let (config, source) = load(&options.conf_file)?;
        if options.threads == 0 {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            options.threads = threads::default_threads(&config, cpus);
        }
        let admin_token = admin_token(&options)?;
        let admin_addr = match &options.admin {
            Some(text) => Some(admin_address(text, admin_token.is_some())?),
            None => None,
        };
        let registry = Arc::new(Registry::new(options.threads));
        let mut next_listener_id = 0;
        let listeners = listen::for_config(
            &config,
            None,
            &mut inherited,
            options.threads,
            &mut next_listener_id,
        )?;
        let generation = Generation::new(1, config, source, registry, listeners, None);

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

/// Reads and validates the config file.
fn load(path: &std::path::Path) -> Result<(cashew_config::Config, Source), String> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{file}: cannot read the config file: {e}"))?;
    let config = cashew_config::parse(&file, &text).map_err(|e| e.to_string())?;
    Ok((config, Source::new(path.to_path_buf(), text)))
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

pub(crate) struct Supervisor {
    options: Options,
    /// The admin API's bearer token; re-read from its file at every reload.
    admin_token: RefCell<Option<Secret>>,
    directives: watch::Sender<Directive>,
    reports: Arc<Reports>,
    phase: Cell<Phase>,
    next_listener_id: Cell<u64>,
    requests: mpsc::UnboundedSender<Request>,
    stats_socket: Socket,
    admin_socket: Option<Socket>,
    /// The stats port and admin API servers: a restart stops them once the new
    /// process serves the same sockets.
    servers: RefCell<Vec<JoinHandle<()>>>,
    pid_file: RefCell<Option<PidFile>>,
    /// Health probes of the generation in force.
    probes: RefCell<Vec<JoinHandle<()>>>,
    /// Requests per second of each pool, sampled every second.
    rates: RefCell<HashMap<String, (u64, f64)>>,
    hostname: String,
}

impl Supervisor {
    /// Starts the worker threads on generation 1.
    #[allow(clippy::type_complexity)]
    fn start(
        prepared: Prepared,
    ) -> Result<
        (
            Rc<Supervisor>,
            mpsc::UnboundedReceiver<Request>,
            Vec<std::thread::JoinHandle<()>>,
        ),
        String,
    > {
        let threads = prepared.options.threads;
        let (directives, _) = watch::channel(Directive {
            generation: Arc::new(prepared.generation),
            mode: Mode::Serve,
        });
        let reports = Arc::new(Reports::new(threads));
        let mut workers = Vec::new();
        for id in 0..threads {
            let (rx, reports) = (directives.subscribe(), reports.clone());
            let handle = std::thread::Builder::new()
                .name(format!("cashew-w{id}"))
                .spawn(move || worker::run(id, rx, reports))
                .map_err(|e| format!("cannot start worker thread: {e}"))?;
            workers.push(handle);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let supervisor = Rc::new(Supervisor {
            options: prepared.options,
            admin_token: RefCell::new(prepared.admin_token),
            directives,
            reports,
            phase: Cell::new(Phase::Starting),
            next_listener_id: Cell::new(prepared.next_listener_id),
            requests: tx,
            stats_socket: prepared.stats_socket,
            admin_socket: prepared.admin_socket,
            servers: RefCell::default(),
            pid_file: RefCell::default(),
            probes: RefCell::default(),
            rates: RefCell::default(),
            hostname: hostname(),
        });
        Ok((supervisor, rx, workers))
    }

    /// Serves the admin API at once (it answers `/ready` 503 until ready), waits
    /// for the workers, then writes the pid file, opens the stats port, and tells
    /// the service manager and any predecessor that cashew serves.
    async fn become_ready(
        self: &Rc<Self>,
        predecessor: &mut Option<ReadyPipe>,
    ) -> Result<(), String> {
        if let Some(socket) = &self.admin_socket {
            let listener = Listener::tcp_dup(socket, 128).map_err(|e| format!("admin API: {e}"))?;
            let task = tokio::task::spawn_local(admin::serve(listener, self.clone()));
            self.servers.borrow_mut().push(task);
        }
        if !self
            .reports
            .wait_for(APPLY_TIMEOUT, |r| r.all_applied(1))
            .await
        {
            return Err("the worker threads did not start".into());
        }
        if let Some(path) = &self.options.pid_file {
            *self.pid_file.borrow_mut() = Some(PidFile::create(path)?);
        }
        let stats =
            Listener::tcp_dup(&self.stats_socket, 128).map_err(|e| format!("stats port: {e}"))?;
        let task = tokio::task::spawn_local(serve_stats(stats, self.clone()));
        self.servers.borrow_mut().push(task);
        tokio::task::spawn_local(sample_rates(self.clone()));
        tokio::task::spawn_local(memory::give_back(self.clone()));
        self.restart_probes();
        signals::install_crash_handler();

        self.phase.set(Phase::Serving);
        let generation = self.generation();
        log_at!(
            NOTICE,
            "cashew {} started, pid {}, {} worker threads, configuration generation 1 from {} ({}), {} pools, up to {} open files",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            self.options.threads,
            generation.source.path.display(),
            generation.source.checksum,
            generation.config.pools.len(),
            crate::process::open_files_limit()
        );
        for pool in &generation.config.pools {
            log_at!(
                NOTICE,
                "pool '{}': {} on {}, {} servers, hash {}, distribution {}",
                pool.name,
                if pool.redis { "redis" } else { "memcached" },
                pool.listen,
                pool.servers.len(),
                pool.hash,
                pool.distribution
            );
        }
        let local = |socket: &Socket| {
            socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or_else(|| "?".to_string(), |a| a.to_string())
        };
        log_at!(
            NOTICE,
            "stats on {}{}",
            local(&self.stats_socket),
            self.admin_socket
                .as_ref()
                .map_or(String::new(), |a| format!(
                    ", admin API and metrics on http://{}",
                    local(a)
                ))
        );
        match predecessor.take() {
            Some(pipe) => {
                notify::notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
                pipe.ready();
            }
            None => notify::notify("READY=1"),
        }
        Ok(())
    }

    /// Handles signals and admin requests until a stop has drained.
    async fn control_loop(
        self: Rc<Self>,
        mut signals: Signals,
        mut requests: mpsc::UnboundedReceiver<Request>,
    ) {
        let mut drained: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> = None;
        loop {
            let stopping = drained.is_some();
            tokio::select! {
                () = async { drained.as_mut().expect("a drain").await }, if stopping => return,
                signal = signals.recv(stopping) => match signal {
                    signals::Request::Stop if stopping => self.stop_at_once(),
                    signals::Request::Stop => drained = Some(Box::pin(self.clone().drain(false))),
                    signals::Request::Reload => { let _ = self.reload().await; }
                    signals::Request::Restart => {
                        if self.restart().await.is_ok() {
                            drained = Some(Box::pin(self.clone().drain(true)));
                        }
                    }
                    signals::Request::Done => {}
                },
                Some(request) = requests.recv() => match request {
                    Request::Reload(reply) => { let _ = reply.send(self.reload().await); }
                    Request::Restart(reply) => {
                        let result = self.restart().await;
                        let restarted = result.is_ok();
                        let _ = reply.send(result);
                        if restarted {
                            drained = Some(Box::pin(self.clone().drain(true)));
                        }
                    }
                    Request::Stop if stopping => {}
                    Request::Stop => drained = Some(Box::pin(self.clone().drain(false))),
                },
            }
        }
    }

    pub(crate) fn generation(&self) -> Arc<Generation> {
        self.directives.borrow().generation.clone()
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.get()
    }

    pub(crate) fn options(&self) -> &Options {
        &self.options
    }

    /// Whether `given` is the admin token; true when there is none.
    pub(crate) fn admin_token_matches(&self, given: Option<&[u8]>) -> bool {
        match &*self.admin_token.borrow() {
            None => true,
            Some(token) => given.is_some_and(|g| token.matches(g)),
        }
    }

    pub(crate) fn request(&self, request: Request) {
        let _ = self.requests.send(request);
    }

    /// Requests per second of `pool` over the last second.
    pub(crate) fn rate(&self, pool: &str) -> f64 {
        self.rates.borrow().get(pool).map_or(0.0, |&(_, rate)| rate)
    }

    /// Reads, validates and publishes the config file; on any error the running
    /// configuration stays in force and the error says why.
    pub(crate) async fn reload(&self) -> Result<Arc<Generation>, String> {
        if self.phase.get() != Phase::Serving {
            let why = format!("cannot reload while {}", self.phase.get().name());
            log_at!(WARN, "reload refused: {why}");
            return Err(why);
        }
        notify::reloading();
        let result = self.publish_next().await;
        match &result {
            Ok(generation) => log_at!(
                NOTICE,
                "configuration generation {} loaded from {} ({}), {} pools",
                generation.number,
                generation.source.path.display(),
                generation.source.checksum,
                generation.config.pools.len()
            ),
            Err(why) => {
                for line in why.lines() {
                    log_at!(
                        ERROR,
                        "reload failed, the running configuration stays: {line}"
                    );
                }
            }
        }
        notify::notify("READY=1");
        result
    }

    async fn publish_next(&self) -> Result<Arc<Generation>, String> {
        // The token file is read first: if it cannot be, nothing changes.
        let token = match &self.options.admin_token_file {
            Some(_) => Some(admin_token(&self.options)?),
            None => None,
        };
        let (config, source) = load(&self.options.conf_file)?;
        let current = self.generation();
        let mut next_id = self.next_listener_id.get();
        let listeners = listen::for_config(
            &config,
            Some(&current),
            &mut Inherited::default(),
            self.options.threads,
            &mut next_id,
        )?;
        self.next_listener_id.set(next_id);
        for change in changes(&current, &config) {
            log_at!(NOTICE, "reload: {change}");
        }
        let number = current.number + 1;
        let next = Arc::new(Generation::new(
            number,
            config,
            source,
            current.registry.clone(),
            listeners,
            Some(&current),
        ));
        self.directives.send_replace(Directive {
            generation: next.clone(),
            mode: Mode::Serve,
        });
        if let Some(token) = token {
            if *self.admin_token.borrow() != token {
                log_at!(NOTICE, "reload: the admin token changed");
            }
            *self.admin_token.borrow_mut() = token;
        }
        self.restart_probes();
        // Listeners the new generation does not use close here; workers drop theirs
        // as they take the generation.
        for old in &current.pools {
            if !next.pools.iter().any(|p| p.listener.id == old.listener.id) {
                old.listener.retire();
            }
        }
        drop(current);
        if !self
            .reports
            .wait_for(APPLY_TIMEOUT, |r| r.all_applied(number))
            .await
        {
            return Err(format!(
                "generation {number} was published but not every worker took it within {} s",
                APPLY_TIMEOUT.as_secs()
            ));
        }
        Ok(next)
    }

    /// Health probes for the generation in force (their state is carried by name).
    fn restart_probes(&self) {
        let mut probes = self.probes.borrow_mut();
        for task in probes.drain(..) {
            task.abort();
        }
        *probes = probe::start(&self.generation());
    }

    /// Starts a new process from the binary on disk with every listening socket,
    /// and waits until it serves. On failure this process keeps serving.
    pub(crate) async fn restart(&self) -> Result<u32, String> {
        if self.phase.get() != Phase::Serving {
            let why = format!("cannot restart while {}", self.phase.get().name());
            log_at!(WARN, "restart refused: {why}");
            return Err(why);
        }
        self.phase.set(Phase::Restarting);
        let generation = self.generation();
        let mut fds: Vec<RawFd> = generation
            .pools
            .iter()
            .flat_map(|p| p.listener.raw_fds())
            .collect();
        fds.push(self.stats_socket.as_raw_fd());
        fds.extend(self.admin_socket.as_ref().map(AsRawFd::as_raw_fd));
        let exe = &self.options.exe;
        let result = match Successor::spawn(exe, &self.options.args, &fds) {
            Err(e) => Err(format!("cannot start {}: {e}", exe.display())),
            Ok(successor) => {
                let pid = successor.pid();
                log_at!(
                    NOTICE,
                    "restart: started {} as pid {pid}, waiting until it serves",
                    exe.display()
                );
                successor
                    .wait_ready(RESTART_TIMEOUT)
                    .await
                    .map_err(|why| format!("new process {pid}: {why}"))
            }
        };
        match &result {
            Ok(pid) => log_at!(
                NOTICE,
                "restart: pid {pid} serves; this process drains and exits"
            ),
            Err(why) => {
                log_at!(ERROR, "restart failed, this process keeps serving: {why}");
                self.phase.set(Phase::Serving);
            }
        }
        result
    }

    /// Stops accepting, lets every client be answered and closed, and returns once
    /// the workers are done or the drain timeout has passed. After a restart
    /// (`handover`) the listen sockets stay open: the new process serves them.
    async fn drain(self: Rc<Self>, handover: bool) {
        self.phase.set(Phase::Draining);
        for task in self.probes.borrow_mut().drain(..) {
            task.abort();
        }
        if handover {
            for server in self.servers.borrow_mut().drain(..) {
                server.abort();
            }
        } else {
            notify::notify("STOPPING=1");
        }
        let timeout = self.options.drain_timeout;
        let generation = self.generation();
        let clients = generation
            .registry
            .proxy_total(ProxyCounter::CurrConnections);
        log_at!(
            NOTICE,
            "draining {clients} client connections, for at most {} s",
            timeout.as_secs_f64()
        );
        let deadline = Instant::now() + timeout;
        self.directives.send_replace(Directive {
            generation: generation.clone(),
            mode: Mode::Drain { deadline },
        });
        // Once no worker accepts, closing this process's listen sockets refuses new
        // clients at once rather than leaving them in a backlog nobody accepts.
        // After a restart the new process holds its own descriptors of them.
        let grace = Duration::from_secs(1);
        self.reports
            .wait_for(grace, Reports::all_stopped_accepting)
            .await;
        for pool in &generation.pools {
            pool.listener.retire();
        }
        let margin = Duration::from_millis(500);
        if !self
            .reports
            .wait_for(timeout + margin, Reports::all_exited)
            .await
        {
            log_at!(
                WARN,
                "some worker threads did not end after the drain timeout"
            );
        }
        log_at!(NOTICE, "drained, exiting");
        self.pid_file.borrow_mut().take();
    }

    /// A second SIGINT/SIGTERM: leave now.
    fn stop_at_once(&self) -> ! {
        self.pid_file.borrow_mut().take();
        std::process::exit(0);
    }

    pub(crate) fn stats_json(&self) -> String {
        crate::reports::nutcracker::json(&self.generation(), &self.hostname)
    }
}

/// What a reload changes, in words, for the log.
fn changes(current: &Generation, next: &cashew_config::Config) -> Vec<String> {
    let mut out = Vec::new();
    for pool in &next.pools {
        match current.config.pool(&pool.name) {
            None => out.push(format!(
                "pool '{}' added, listening on {}",
                pool.name, pool.listen
            )),
            Some(old) if old == pool => {}
            Some(old) => {
                let names = |p: &cashew_config::Pool| -> Vec<String> {
                    p.servers.iter().map(|s| s.name().to_string()).collect()
                };
                let (before, after) = (names(old), names(pool));
                let added: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
                let removed: Vec<&String> = before.iter().filter(|s| !after.contains(s)).collect();
                let mut what = Vec::new();
                if !added.is_empty() {
                    what.push(format!("servers added: {}", join(&added)));
                }
                if !removed.is_empty() {
                    what.push(format!("servers removed: {}", join(&removed)));
                }
                if old.listen != pool.listen {
                    what.push(format!("listen {} -> {}", old.listen, pool.listen));
                }
                if old.redis != pool.redis {
                    what.push("protocol changed: its clients are closed once answered".into());
                }
                if what.is_empty() {
                    what.push("settings changed".into());
                }
                out.push(format!("pool '{}': {}", pool.name, what.join("; ")));
            }
        }
    }
    for pool in &current.config.pools {
        if next.pool(&pool.name).is_none() {
            out.push(format!(
                "pool '{}' removed: its listener on {} closes, its clients are closed once answered",
                pool.name, pool.listen
            ));
        }
    }
    out
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// nutcracker's stats port: one JSON document per connection, then close.
async fn serve_stats(listener: Listener, supervisor: Rc<Supervisor>) {
    loop {
        match listener.accept().await {
            Ok(mut s) => {
                let doc = supervisor.stats_json();
                tokio::task::spawn_local(async move {
                    let _ = s.write_all(doc.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
            Err(e) => {
                log_at!(WARN, "stats: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Samples each pool's requests every second, for `status`.
async fn sample_rates(supervisor: Rc<Supervisor>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let generation = supervisor.generation();
        let mut rates = supervisor.rates.borrow_mut();
        for (pool, state) in generation.config.pools.iter().zip(&generation.pools) {
            let total: u64 = (0..pool.servers.len())
                .map(|s| state.server_total(s, ServerCounter::Requests))
                .sum();
            let entry = rates.entry(pool.name.clone()).or_insert((total, 0.0));
            entry.1 = total.saturating_sub(entry.0) as f64;
            entry.0 = total;
        }
    }
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
