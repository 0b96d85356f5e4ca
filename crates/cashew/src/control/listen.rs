//! Listen sockets, bound by the main thread: at start (before daemonizing, so an
//! address in use stops the start) and at reload (before the new generation is
//! published, so a reload that cannot bind changes nothing).
//!
//! Without `reuseport`, a pool has one socket that every worker accepts on, so a
//! second process cannot bind the port. With `reuseport: true`, each worker has
//! its own `SO_REUSEPORT` socket, and other processes may join on purpose.
//! Sockets handed over by a previous cashew or by systemd are used as they are.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use cashew_config::{Config, Listen, Pool};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::log::{self, NOTICE};
use crate::log_at;
use crate::net::BoundAddr;
use crate::state::generation::{Generation, ListenSockets};

/// Listening sockets this process was given at start, not yet claimed by a pool.
#[derive(Default)]
pub(crate) struct Inherited {
    sockets: Vec<(BoundAddr, Socket)>,
}

impl Inherited {
    /// Keeps the listening sockets among `sockets`; others are closed and logged.
    pub(crate) fn new(sockets: Vec<Socket>) -> Inherited {
        let mut kept = Vec::new();
        for socket in sockets {
            let listening = socket.is_listener().unwrap_or(false);
            match BoundAddr::of_socket(&socket) {
                Some(addr) if listening => kept.push((addr, socket)),
                _ => log_at!(
                    log::WARN,
                    "ignoring an inherited descriptor that is not a listening socket"
                ),
            }
        }
        Inherited { sockets: kept }
    }

    /// Every inherited socket bound to `addr`.
    pub(crate) fn take(&mut self, addr: &BoundAddr) -> Vec<Socket> {
        let (mine, rest) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|(a, _)| a == addr);
        self.sockets = rest;
        mine.into_iter().map(|(_, s)| s).collect()
    }

    /// Closes what no pool claimed.
    pub(crate) fn close_unclaimed(&mut self) {
        for (addr, _) in self.sockets.drain(..) {
            log_at!(
                NOTICE,
                "closing inherited listen socket {addr:?}: no pool listens there"
            );
        }
    }
}

/// The listen sockets for every pool of `config`, in order: those of `previous`
/// kept where the address is the same, inherited ones used where they match,
/// new ones bound for the rest. `next_id` numbers new listeners.
pub(crate) fn for_config(
    config: &Config,
    previous: Option<&Generation>,
    inherited: &mut Inherited,
    threads: usize,
    next_id: &mut u64,
) -> Result<Vec<Arc<ListenSockets>>, String> {
    let mut out: Vec<Arc<ListenSockets>> = Vec::new();
    for pool in &config.pools {
        let fail = |e: io::Error| {
            format!(
                "pool '{}': cannot listen on {}: {e}",
                pool.name, pool.listen
            )
        };
        let addr = BoundAddr::of_listen(&pool.listen).map_err(fail)?;
        let kept = previous.and_then(|g| {
            g.pools
                .iter()
                .map(|p| &p.listener)
                .find(|l| BoundAddr::of_listen(&l.listen).is_ok_and(|a| a == addr))
        });
        if let Some(kept) = kept {
            if kept.reuseport != pool.reuseport {
                log_at!(
                    NOTICE,
                    "pool '{}': a change of reuseport on {} takes effect only when cashew is stopped and started again (a restart hands the same sockets over)",
                    pool.name,
                    pool.listen
                );
            }
            kept.set_backlog(backlog(pool)).map_err(fail)?;
            out.push(kept.clone());
            continue;
        }
        if let Some(same) = out
            .iter()
            .find(|l| BoundAddr::of_listen(&l.listen).is_ok_and(|a| a == addr))
        {
            return Err(format!(
                "pool '{}': cannot listen on {}: another pool of the file listens there",
                pool.name, same.listen
            ));
        }
        let given = inherited.take(&addr);
        let sockets = if given.is_empty() {
            bind(pool, &addr, threads).map_err(fail)?
        } else {
            for socket in &given {
                socket.set_nonblocking(true).map_err(fail)?;
                socket.listen(backlog(pool)).map_err(fail)?;
            }
            given
        };
        *next_id += 1;
        out.push(Arc::new(ListenSockets::new(
            *next_id,
            pool.listen.clone(),
            pool.reuseport,
            sockets,
        )));
    }
    Ok(out)
}

fn backlog(pool: &Pool) -> i32 {
    pool.backlog.min(i32::MAX as u32) as i32
}

fn bind(pool: &Pool, addr: &BoundAddr, threads: usize) -> io::Result<Vec<Socket>> {
    match addr {
        BoundAddr::Tcp(addr) => {
            let count = if pool.reuseport { threads } else { 1 };
            (0..count)
                .map(|_| {
                    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
                    socket.set_reuse_address(true)?;
                    if pool.reuseport {
                        socket.set_reuse_port(true)?;
                    }
                    if addr.is_ipv6() {
                        socket.set_only_v6(true)?;
                    }
                    socket.bind(&SockAddr::from(*addr))?;
                    socket.listen(backlog(pool))?;
                    socket.set_nonblocking(true)?;
                    Ok(socket)
                })
                .collect()
        }
        BoundAddr::Unix(path) => {
            let mode = match &pool.listen {
                Listen::Unix { mode, .. } => *mode,
                Listen::Tcp { .. } => None,
            };
            Ok(vec![bind_unix(path, mode, backlog(pool))?])
        }
    }
}

/// Binds a Unix socket at `path`. A socket file left by a process that is gone is
/// replaced; one that a live process serves is not (the address is in use).
fn bind_unix(path: &Path, mode: Option<u32>, backlog: i32) -> io::Result<Socket> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::from(io::ErrorKind::AddrInUse));
        }
        std::fs::remove_file(path)?;
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A TCP socket bound to `addr` but not listening yet (the stats port listens only
/// once cashew is ready: a connection to it is the sign that it is).
pub(crate) fn bind_only(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}
