//! Listen sockets, bound before any worker starts so that errors stop the start.
//! TCP: one `SO_REUSEPORT` socket per worker, so the kernel spreads clients over the
//! workers. Unix sockets: one socket, its descriptor shared by every worker.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use cashew_config::{Listen, Pool};
use socket2::{Domain, SockAddr, Socket, Type};

pub enum Bound {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Binds `pool`'s listen address once per worker.
pub fn bind(pool: &Pool, workers: usize) -> io::Result<Vec<Bound>> {
    match &pool.listen {
        Listen::Tcp { host, port } => {
            let addr = resolve(host, *port)?;
            (0..workers)
                .map(|_| {
                    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
                    socket.set_reuse_address(true)?;
                    socket.set_reuse_port(true)?;
                    if addr.is_ipv6() {
                        socket.set_only_v6(true)?;
                    }
                    socket.bind(&SockAddr::from(addr))?;
                    socket.listen(pool.backlog.min(i32::MAX as u32) as i32)?;
                    socket.set_nonblocking(true)?;
                    Ok(Bound::Tcp(socket.into()))
                })
                .collect()
        }
        Listen::Unix { path, mode } => {
            // A socket file left by an earlier run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            let listener = std::os::unix::net::UnixListener::bind(path)?;
            if let Some(mode) = mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
            }
            listener.set_nonblocking(true)?;
            (0..workers)
                .map(|_| listener.try_clone().map(Bound::Unix))
                .collect()
        }
    }
}

pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("'{host}' has no address")))
}
