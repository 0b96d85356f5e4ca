//! `cashew reload | stop | restart | status | clients`: talking to a running
//! cashew, through its admin API (`--admin`), or through its pid file (`-p`) with
//! signals (`clients` needs the API).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::de::DeserializeOwned;

use super::admin_client::AdminClient;
use crate::cli::{Cli, InstanceArgs};
use crate::reports::api;

/// `status` exit code when no instance answers (the LSB convention).
const NOT_RUNNING: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Reload,
    Stop,
    Restart,
    Status,
    Clients,
}

pub fn run(action: Action, args: &InstanceArgs) -> ExitCode {
    let result = match (&args.admin, action) {
        (Some(admin), _) => Admin::new(admin, args).and_then(|a| a.run(action)),
        (None, _) => {
            let pid_file = args
                .pid_file
                .as_deref()
                .expect("clap requires --admin or -p");
            by_signal(action, pid_file, args.wait)
        }
    };
    match result {
        Ok(code) => code,
        Err((code, message)) => {
            eprintln!("cashew {}: {message}", name(action));
            ExitCode::from(code)
        }
    }
}

fn name(action: Action) -> &'static str {
    match action {
        Action::Reload => "reload",
        Action::Stop => "stop",
        Action::Restart => "restart",
        Action::Status => "status",
        Action::Clients => "clients",
    }
}

type Outcome = Result<ExitCode, (u8, String)>;

struct Admin {
    client: AdminClient,
    wait: Duration,
}

impl Admin {
    fn new(addr: &str, args: &InstanceArgs) -> Result<Admin, (u8, String)> {
        let token = args.token.token().map_err(|e| (1, e))?;
        Ok(Admin {
            client: AdminClient::new(addr, token, args.wait + Duration::from_secs(5)),
            wait: args.wait,
        })
    }

    /// The document a call answers with `expected`; any other answer is an error
    /// in the words of the API's reply.
    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        expected: u16,
    ) -> Result<T, (u8, String)> {
        let result = match method {
            "POST" => self.client.post(path),
            _ => self.client.get(path),
        };
        // Unreachable: not running (the LSB status code); refused: an error.
        let (status, body) = result.map_err(|e| match e.starts_with("cannot reach") {
            true => (NOT_RUNNING, e),
            false => (1, e),
        })?;
        if status != expected {
            let why = match serde_json::from_value::<api::Failure>(body.clone()) {
                Ok(failure) => failure.error,
                Err(_) => body.to_string(),
            };
            return Err((1, why));
        }
        serde_json::from_value(body).map_err(|e| (1, format!("{path}: an unexpected answer: {e}")))
    }

    fn run(&self, action: Action) -> Outcome {
        match action {
            Action::Reload => {
                let reloaded: api::Reloaded = self.call("POST", "/reload", 200)?;
                println!(
                    "reloaded: generation {} ({})",
                    reloaded.generation, reloaded.checksum
                );
                Ok(ExitCode::SUCCESS)
            }
            Action::Restart => {
                let restarted: api::Restarted =
                    self.call("POST", "/restart", 200).map_err(|(code, why)| {
                        (code, format!("{why}; the running process keeps serving"))
                    })?;
                println!("restarted: new process {}", restarted.pid);
                Ok(ExitCode::SUCCESS)
            }
            Action::Stop => {
                let health: api::Health = self.call("GET", "/health", 200)?;
                let _: api::Stopping = self.call("POST", "/stop", 202)?;
                let pid = health.pid;
                if pid != 0 && !wait_until(self.wait, || !alive(pid)) {
                    return Err((
                        1,
                        format!("pid {pid} still runs after {} s", self.wait.as_secs()),
                    ));
                }
                println!("stopped");
                Ok(ExitCode::SUCCESS)
            }
            Action::Clients => {
                let clients: api::Clients = self.call("GET", "/clients", 200)?;
                print!("{}", format_clients(&clients));
                Ok(ExitCode::SUCCESS)
            }
            Action::Status => {
                let status: api::Status = self.call("GET", "/status", 200)?;
                print!("{}", format_status(&status));
                Ok(match status.phase == "serving" {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::from(1),
                })
            }
        }
    }
}

/// A table for people: the generation, then each pool and its servers.
pub(crate) fn format_status(status: &api::Status) -> String {
    let g = &status.generation;
    let mut out = format!(
        "cashew {} pid {} {} up {} s, {} worker threads\ngeneration {} from {} ({})\n",
        status.version,
        status.pid,
        status.phase,
        status.uptime,
        status.threads,
        g.generation,
        g.file,
        g.checksum,
    );
    for pool in &status.pools {
        out.push_str(&format!(
            "\npool {} ({}) on {}: {} clients, {:.0} requests/s\n",
            pool.name,
            pool.protocol,
            pool.listen,
            pool.client_connections,
            pool.requests_per_second,
        ));
        if let Some(pinned) = pool.pinned_connections.filter(|&n| n > 0) {
            out.push_str(&format!(
                "  {pinned} server connections pinned to clients (transactions, blocking calls)\n"
            ));
        }
        if let Some(m) = &pool.migration {
            let window = match m.ends_in_ms {
                0 => "no keys moving".to_string(),
                ms => format!("keys moving for {:.1} s more", ms as f64 / 1000.0),
            };
            out.push_str(&format!(
                "  migration: {window}; {} keys asked of their previous server, {} found there\n",
                m.fallbacks, m.hits
            ));
        }
        if let Some(c) = &pool.cluster {
            out.push_str(&format!(
                "  cluster: {} slots covered; redirections followed: {} MOVED, {} ASK, {} retried; slot map read {} times on schedule, {} when asked, {} changes\n",
                c.slots_covered, c.moved, c.ask, c.retries, c.refreshes_periodic, c.refreshes_asked, c.maps_changed
            ));
        }
        out.push_str(&format!(
            "  {:<24} {:<28} {:<16} {:>12} {:>8}  {}\n",
            "server", "address", "state", "requests", "errors", "health check"
        ));
        for server in &pool.servers {
            let state = format!("{} {}s", server.state, server.state_for_s);
            out.push_str(&format!(
                "  {:<24} {:<28} {:<16} {:>12} {:>8}  {}\n",
                server.name,
                server.address,
                state,
                server.requests,
                server.errors,
                server.health_check,
            ));
            if let (Some(role), Some(slots)) = (&server.cluster_role, &server.slots) {
                let slots = if slots.is_empty() { "no slots" } else { slots };
                out.push_str(&format!("    {role}: {slots}\n"));
            }
            if let Some(master) = &server.replica_of {
                out.push_str(&format!("    replica of {master}, serving reads\n"));
            }
        }
    }
    out
}

/// `GET /clients` as a table, oldest first.
pub(crate) fn format_clients(clients: &api::Clients) -> String {
    let mut out = format!(
        "{:>8}  {:<16} {:<8} {:<22} {:>7} {:>7} {:>10}  {}\n",
        "ID", "POOL", "PROTOCOL", "ADDRESS", "AGE s", "IDLE s", "REQUESTS", "NAME"
    );
    for c in &clients.clients {
        let library = (!c.lib_name.is_empty()).then(|| format!("({} {})", c.lib_name, c.lib_ver));
        let name: Vec<String> = [Some(c.name.clone()), library]
            .into_iter()
            .flatten()
            .chain(c.subscriber.then(|| "[subscriber]".to_string()))
            .filter(|part| !part.is_empty())
            .collect();
        out.push_str(&format!(
            "{:>8}  {:<16} {:<8} {:<22} {:>7} {:>7} {:>10}  {}\n",
            c.id,
            c.pool,
            c.protocol,
            c.address,
            c.age_s,
            c.idle_s,
            c.requests,
            name.join(" ")
        ));
    }
    out.push_str(&format!("{} clients\n", clients.clients.len()));
    out
}

fn by_signal(action: Action, pid_file: &Path, wait: Duration) -> Outcome {
    let pid = read_pid(pid_file).filter(|&pid| alive(pid));
    let Some(pid) = pid else {
        if action == Action::Status {
            println!(
                "cashew is not running (no live pid in {})",
                pid_file.display()
            );
            return Ok(ExitCode::from(NOT_RUNNING));
        }
        return Err((
            NOT_RUNNING,
            format!(
                "no running cashew: {} names no live process",
                pid_file.display()
            ),
        ));
    };
    match action {
        Action::Status => {
            println!("cashew is running, pid {pid}");
            Ok(ExitCode::SUCCESS)
        }
        Action::Reload => {
            // Check the file first, as the running process will: errors are seen
            // here rather than only in its log.
            if let Some(conf) = config_of(pid) {
                if let Err(errors) = cashew_config::load(&conf) {
                    return Err((
                        1,
                        format!("{errors}\nnot reloaded: the running configuration stays"),
                    ));
                }
            }
            signal(pid, libc::SIGHUP)?;
            println!("sent SIGHUP to pid {pid}: it reloads its configuration (see its log)");
            Ok(ExitCode::SUCCESS)
        }
        Action::Stop => {
            signal(pid, libc::SIGTERM)?;
            if !wait_until(wait, || !alive(pid)) {
                return Err((
                    1,
                    format!("pid {pid} still runs after {} s", wait.as_secs()),
                ));
            }
            println!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Action::Restart => {
            signal(pid, libc::SIGUSR2)?;
            let handed_over =
                || read_pid(pid_file).is_some_and(|new| new != pid && alive(new)) && !alive(pid);
            if !wait_until(wait, handed_over) {
                return Err((1, format!(
                    "the restart did not complete within {} s; pid {pid} keeps serving if the new process failed (see the log)",
                    wait.as_secs()
                )));
            }
            println!("restarted: new process {}", read_pid(pid_file).unwrap_or(0));
            Ok(ExitCode::SUCCESS)
        }
        Action::Clients => Err((
            1,
            "the clients are listed by the admin API: give --admin ADDR:PORT".into(),
        )),
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    // A zombie still answers kill(0): look at its state too.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z'));
    // SAFETY: signal 0 only checks that the process exists.
    !zombie && unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
}

fn signal(pid: u32, signal: libc::c_int) -> Result<(), (u8, String)> {
    // SAFETY: kill(2) with a pid read from the pid file and a valid signal.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err((1, format!("cannot signal pid {pid}: {e}")));
    }
    Ok(())
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The config file a running cashew reads, from its command line and directory.
fn config_of(pid: u32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let cli = Cli::try_parse_from(args).ok()?;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    Some(cwd.join(cli.conf_file))
}
