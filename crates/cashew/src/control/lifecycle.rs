//! Restart into the binary on disk (handing the listening sockets over) and the
//! graceful stop that drains the workers.

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::handover::Successor;
use super::supervisor::Supervisor;
use super::RESTART_TIMEOUT;
use super::{notify, Phase};
use crate::log::{ERROR, NOTICE, WARN};
use crate::log_at;
use crate::proxy::worker::{Directive, Mode, Reports};
use crate::state::counters::ProxyCounter;

impl Supervisor {
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
    pub(super) async fn drain(self: Rc<Self>, handover: bool) {
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
    pub(super) fn stop_at_once(&self) -> ! {
        self.pid_file.borrow_mut().take();
        std::process::exit(0);
    }
}
