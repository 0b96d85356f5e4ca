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

/// As [`resolve`], off the event loop: a name is looked up on tokio's blocking
/// threads, so a slow DNS answer stalls no client. The error says which name
/// failed and why, in words.
pub async fn resolve_async(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let failed = |why: String| format!("address resolution of '{host}' failed: {why}");
    let mut addrs = tokio::net::lookup_host((host, port)).await.map_err(|e| {
        let text = e.to_string();
        failed(
            text.strip_prefix("failed to lookup address information: ")
                .unwrap_or(&text)
                .to_string(),
        )
    })?;
    addrs.next().ok_or_else(|| failed("no address".into()))
}
