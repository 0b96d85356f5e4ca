//! The few blocking redis calls of the control plane (asking Sentinels, reading a
//! cluster's slot map): a request's bytes, one whole reply read, its strings.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use cashew_protocol::resp::{element_text, parse_reply, reply_elements, ReplyParse};

use crate::net::tls::ServerTlsConnector;

/// A blocking connection of the control plane, over TLS or not.
pub(super) trait Duplex: Read + Write + Send {}
impl<T: Read + Write + Send> Duplex for T {}

/// A connection to `host:port`, over TLS with `tls`; connecting, each read and
/// each write wait up to `timeout`.
pub(super) fn connect(
    host: &str,
    port: u16,
    tls: Option<&ServerTlsConnector>,
    timeout: Duration,
) -> Result<Box<dyn Duplex>, String> {
    let addr = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or("the address does not resolve")?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    Ok(match tls {
        Some(tls) => Box::new(tls.connect_blocking(host, tcp).map_err(|e| e.to_string())?),
        None => Box::new(tcp),
    })
}

/// A command as RESP: an array of bulk strings.
pub(super) fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    cashew_protocol::resp::array_header(&mut out, args.len());
    for a in args {
        cashew_protocol::resp::bulk(&mut out, a);
    }
    out
}

/// The next whole reply from `stream`, `buf` holding what was read past it.
pub(super) fn read_frame(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    match wait_frame(stream, buf) {
        Wait::Frame(frame) => Some(frame),
        Wait::Idle | Wait::Closed => None,
    }
}

/// What waiting for a reply on a stream with a read timeout gave.
pub(super) enum Wait {
    Frame(Vec<u8>),
    /// Nothing (or part of a reply, kept in the buffer) within the timeout.
    Idle,
    /// The connection ended or failed.
    Closed,
}

/// The next whole reply from `stream`, telling a stream that was quiet for its read
/// timeout from one that ended; `buf` holds what was read past the reply.
pub(super) fn wait_frame(stream: &mut impl Read, buf: &mut Vec<u8>) -> Wait {
    loop {
        if let ReplyParse::Complete(n) = parse_reply(buf) {
            let frame = buf[..n].to_vec();
            buf.drain(..n);
            return Wait::Frame(frame);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return Wait::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Wait::Idle
            }
            Err(_) => return Wait::Closed,
        }
    }
}

/// The bulk strings of an array reply.
pub(super) fn strings(reply: &[u8]) -> Option<Vec<String>> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    reply_elements(reply)?
        .into_iter()
        .map(|e| element_text(e).map(|t| String::from_utf8_lossy(t).into_owned()))
        .collect()
}

/// `AUTH [user] password` on a connection just opened; `Err` with the reply (or
/// what failed) when it is refused.
pub(super) fn authenticate(
    stream: &mut (impl Read + Write),
    buf: &mut Vec<u8>,
    user: Option<&str>,
    password: &str,
) -> Result<(), String> {
    let mut args: Vec<&[u8]> = vec![b"AUTH"];
    if let Some(user) = user {
        args.push(user.as_bytes());
    }
    args.push(password.as_bytes());
    stream
        .write_all(&request(&args))
        .map_err(|e| e.to_string())?;
    let reply = read_frame(stream, buf).ok_or("the connection ended")?;
    match reply.starts_with(b"+OK") {
        true => Ok(()),
        false => Err(format!(
            "AUTH: {}",
            String::from_utf8_lossy(&reply).trim_end()
        )),
    }
}
