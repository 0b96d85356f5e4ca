//! Signals, each logged with its number and name as nutcracker does, and turned
//! into what the control loop acts on. SIGINT/SIGTERM stop gracefully (a second
//! one stops at once), SIGHUP reopens the log and reloads the configuration,
//! SIGUSR1 only reopens the log, SIGUSR2 restarts into the binary on disk,
//! SIGTTIN/SIGTTOU raise/lower the log level, SIGSEGV is logged before the core dump.

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::log;
use crate::log_at;

/// What a signal asks of the control loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Request {
    Stop,
    Reload,
    Restart,
    /// Handled here already (log reopened, level changed).
    Done,
}

/// The signals cashew handles, caught from the moment this exists (before, their
/// default actions apply: most end the process).
pub(crate) struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
    ttin: Signal,
    ttou: Signal,
}

impl Signals {
    /// Must run inside a tokio runtime.
    pub(crate) fn install() -> Result<Signals, String> {
        let catch = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
        Ok(Signals {
            int: catch(SignalKind::interrupt())?,
            term: catch(SignalKind::terminate())?,
            hup: catch(SignalKind::hangup())?,
            usr1: catch(SignalKind::user_defined1())?,
            usr2: catch(SignalKind::user_defined2())?,
            ttin: catch(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: catch(SignalKind::from_raw(libc::SIGTTOU))?,
        })
    }

    /// The next signal, logged; `stopping` says whether a stop is under way (a
    /// second SIGINT/SIGTERM then stops at once).
    pub(crate) async fn recv(&mut self, stopping: bool) -> Request {
        let stop = if stopping {
            "stopping at once"
        } else {
            "stopping gracefully"
        };
        tokio::select! {
            _ = self.int.recv() => { announce(libc::SIGINT, "SIGINT", stop); Request::Stop }
            _ = self.term.recv() => { announce(libc::SIGTERM, "SIGTERM", stop); Request::Stop }
            _ = self.hup.recv() => {
                // Reopen first, so that the line lands in the new file after a rotation.
                log::reopen();
                announce(libc::SIGHUP, "SIGHUP", "reopening log file and reloading the configuration");
                Request::Reload
            }
            _ = self.usr1.recv() => {
                log::reopen();
                announce(libc::SIGUSR1, "SIGUSR1", "reopening log file");
                Request::Done
            }
            _ = self.usr2.recv() => {
                announce(libc::SIGUSR2, "SIGUSR2", "restarting into the binary on disk");
                Request::Restart
            }
            _ = self.ttin.recv() => {
                log::raise_level();
                announce(libc::SIGTTIN, "SIGTTIN", &format!("up logging level to {}", log::level()));
                Request::Done
            }
            _ = self.ttou.recv() => {
                log::lower_level();
                announce(libc::SIGTTOU, "SIGTTOU", &format!("down logging level to {}", log::level()));
                Request::Done
            }
        }
    }
}

/// Written whatever the log level: an operator who sends a signal wants to see it taken.
fn announce(number: i32, name: &str, action: &str) {
    log::write(
        log::NOTICE,
        format_args!("signal {number} ({name}) received, {action}"),
    );
}

/// Logs SIGSEGV, then lets the default action (core dump) happen.
pub(crate) fn install_crash_handler() {
    extern "C" fn on_segv(_: libc::c_int) {
        const MSG: &[u8] = b"signal 11 (SIGSEGV) received, core dumping\n";
        // SAFETY: write(2) and raise(3) are async-signal-safe; the handler was
        // installed with SA_RESETHAND, so raising again takes the default action.
        unsafe {
            libc::write(log::raw_fd(), MSG.as_ptr().cast(), MSG.len());
            libc::raise(libc::SIGSEGV);
        }
    }
    // SAFETY: a zeroed sigaction is a valid starting point; the handler only makes
    // async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_segv as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGSEGV, &action, std::ptr::null_mut());
    }
    log_at!(log::DEBUG, "crash handler installed");
}
