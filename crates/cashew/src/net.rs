//! Address resolution shared by listeners and server connections.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// The first address `host` resolves to, with `port`.
pub fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("'{host}' has no address")))
}
