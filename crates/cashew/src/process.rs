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
        // Files the daemon creates (pid file, log) are not writable by others.
        libc::umask(0o022);
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

/// A pid file that is removed when dropped (on a clean exit), unless it names
/// another process by then (the one a restart handed over to).
pub struct PidFile(PathBuf);

impl PidFile {
    /// Writes the pid atomically (a new file renamed over the old), so a reader
    /// never sees a half-written pid, even while a restart replaces it.
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                format!("cannot write pid file {}: {e}", path.display())
            })?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0)
            .is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}
