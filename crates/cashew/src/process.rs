//! Process chores: running as a daemon and the pid file.

use std::path::{Path, PathBuf};

/// Detaches from the terminal. Must run before any thread is started.
pub fn daemonize() -> Result<(), String> {
    // SAFETY: called while the process is still single-threaded.
    unsafe {
        match libc::fork() {
            -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {}
            _ => libc::_exit(0),
        }
        if libc::setsid() == -1 {
            return Err(format!("setsid: {}", std::io::Error::last_os_error()));
        }
        // A second fork: the daemon is not a session leader and never gets a terminal.
        match libc::fork() {
            -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => {}
            _ => libc::_exit(0),
        }
        libc::umask(0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
    }
    Ok(())
}

/// A pid file that is removed when dropped (on a clean exit).
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn create(path: &Path) -> Result<PidFile, String> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
