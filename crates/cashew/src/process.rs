//! Process chores: running as a daemon and the pid file.

use std::path::{Path, PathBuf};

/// Detaches from the terminal. Must run before any thread is started.
pub(crate) fn daemonize() -> Result<(), String> {
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
pub(crate) struct PidFile(PathBuf);

impl PidFile {
    /// Writes the pid atomically (a new file renamed over the old), so a reader
    /// never sees a half-written pid, even while a restart replaces it.
    pub(crate) fn create(path: &Path) -> Result<PidFile, String> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let write = |tmp: &Path| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            // Readable by all, writable by cashew alone, whatever the umask.
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(tmp)?
                .write_all(format!("{}\n", std::process::id()).as_bytes())
        };
        write(&tmp)
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

fn nofile() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit)
}

/// The most files the process may have open (each client and server connection
/// is a descriptor).
pub(crate) fn open_files_limit() -> u64 {
    nofile().map_or(0, |l| l.rlim_cur)
}

/// Raises the soft limit on open files to the hard limit.
pub(crate) fn raise_open_files_limit() {
    let Some(limit) = nofile() else { return };
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads only the struct given.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    }
}

/// The process's resident memory, from `/proc/self/statm`.
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}
