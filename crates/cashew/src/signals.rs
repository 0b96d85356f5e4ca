//! Signals as nutcracker handles them: each one is logged with its number and name.
//! SIGINT/SIGTERM exit, SIGHUP reopens the log, SIGTTIN/SIGTTOU raise/lower the level,
//! SIGSEGV is logged before the default action (a core dump).

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::log;
use crate::log_at;

/// The signals cashew handles, caught from the moment this exists (before, their
/// default actions apply: most end the process).
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
    ttin: Signal,
    ttou: Signal,
}

impl Signals {
    /// Must run inside a tokio runtime.
    pub fn install() -> Result<Signals, String> {
        let catch = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
        Ok(Signals {
            int: catch(SignalKind::interrupt())?,
            term: catch(SignalKind::terminate())?,
            hup: catch(SignalKind::hangup())?,
            ttin: catch(SignalKind::from_raw(libc::SIGTTIN))?,
            ttou: catch(SignalKind::from_raw(libc::SIGTTOU))?,
        })
    }

    /// Handles signals until one asks the process to exit.
    pub async fn wait_for_exit(mut self) {
        let Signals {
            int,
            term,
            hup,
            ttin,
            ttou,
        } = &mut self;
        loop {
            tokio::select! {
            _ = int.recv() => { announce(libc::SIGINT, "SIGINT", "exiting"); return; }
            _ = term.recv() => { announce(libc::SIGTERM, "SIGTERM", "exiting"); return; }
            _ = hup.recv() => {
                // Reopen first, so that the line lands in the new file after a rotation.
                log::reopen();
                announce(libc::SIGHUP, "SIGHUP", "reopening log file");
            }
            _ = ttin.recv() => { log::raise_level(); announce(libc::SIGTTIN, "SIGTTIN", &format!("up logging level to {}", log::level())); }
            _ = ttou.recv() => { log::lower_level(); announce(libc::SIGTTOU, "SIGTTOU", &format!("down logging level to {}", log::level())); }
            }
        }
    }
}

/// Written whatever the log level: an operator who sends a signal wants to see it taken.
fn announce(number: i32, name: &str, action: &str) {
    log::write(format_args!("signal {number} ({name}) received, {action}"));
}

/// Logs SIGSEGV, then lets the default action (core dump) happen.
pub fn install_crash_handler() {
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
