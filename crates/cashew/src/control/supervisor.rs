//! The supervisor: the control plane's state on the main thread, the workers it
//! starts, the control loop that carries out signals and admin calls, and the
//! stats port.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::handover::ReadyPipe;
use super::signals::{self, Signals};
use super::APPLY_TIMEOUT;
use super::{admin, memory, notify, Options, Phase, Prepared, Request};
use crate::log::{NOTICE, WARN};
use crate::log_at;
use crate::net::Listener;
use crate::process::PidFile;
use crate::proxy::worker::{self, Directive, Mode, Reports};
use crate::state::clients;
use crate::state::counters::ServerCounter;
use crate::state::generation::Generation;
use cashew_config::Secret;

pub(crate) struct Supervisor {
    pub(super) options: Options,
    /// The admin API's bearer token; re-read from its file at every reload.
    pub(super) admin_token: RefCell<Option<Secret>>,
    pub(super) directives: watch::Sender<Directive>,
    pub(super) reports: Arc<Reports>,
    pub(super) phase: Cell<Phase>,
    pub(super) next_listener_id: Cell<u64>,
    pub(super) requests: mpsc::UnboundedSender<Request>,
    pub(super) stats_socket: Socket,
    pub(super) admin_socket: Option<Socket>,
    /// The stats port and admin API servers: a restart stops them once the new
    /// process serves the same sockets.
    pub(super) servers: RefCell<Vec<JoinHandle<()>>>,
    pub(super) pid_file: RefCell<Option<PidFile>>,
    /// Health probes of the generation in force.
    pub(super) probes: RefCell<Vec<JoinHandle<()>>>,
    /// Requests per second of each pool, sampled every second.
    pub(super) rates: RefCell<HashMap<String, (u64, f64)>>,
    pub(super) hostname: String,
}

impl Supervisor {
    #[allow(clippy::type_complexity)]
    pub(super) fn start(
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
            hostname: super::hostname(),
        });
        Ok((supervisor, rx, workers))
    }

    /// Serves the admin API at once (it answers `/ready` 503 until ready), waits
    /// for the workers, then writes the pid file, opens the stats port, and tells
    /// the service manager and any predecessor that cashew serves.
    pub(super) async fn become_ready(
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
        tokio::task::spawn_local(advance_clients_clock());
        tokio::task::spawn_local(memory::give_back(self.clone()));
        if self.options.watch_config {
            tokio::task::spawn_local(super::watch::watch_config(self.clone()));
        }
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
    pub(super) async fn control_loop(
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

    pub(crate) fn stats_json(&self) -> String {
        crate::reports::nutcracker::json(&self.generation(), &self.hostname)
    }
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

/// Keeps the time client cards are stamped with (see `state::clients`).
async fn advance_clients_clock() {
    let mut tick = tokio::time::interval(clients::CLOCK_STEP);
    loop {
        tick.tick().await;
        clients::advance_clock();
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
