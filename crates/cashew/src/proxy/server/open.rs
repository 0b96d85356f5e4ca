//! Opening a connection to a server: connect, then send the handshake (`AUTH`,
//! `SELECT`, `HELLO`, the version request) and read its replies.

use std::io;

use bytes::BytesMut;
use cashew_protocol::server::ServerCodec;
use cashew_protocol::{ReplyParse, Resume};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::link::LinkSettings;
use crate::net::{ConnectError, Stream};
use crate::proxy::handoff::BackendError;
use crate::state::health::ServerHealth;

/// Connects and runs the handshake; the version the server gives is kept in its
/// health. `Setup` when the server refuses the handshake.
pub(crate) async fn open<C: ServerCodec>(
    settings: &LinkSettings,
    health: &ServerHealth,
) -> Result<Stream, BackendError> {
    let tls = settings.tls.as_deref();
    let mut stream = Stream::connect(&settings.address, settings.keepalive, tls)
        .await
        .map_err(|e| match e {
            ConnectError::Resolve(why) => BackendError::Resolve(why.into()),
            ConnectError::Tls(why) => {
                BackendError::Tls(format!("TLS handshake failed: {why}").into())
            }
            ConnectError::Io(e) => BackendError::from_io(&e),
        })?;
    if let Some(version) = handshake::<C>(&mut stream, settings).await? {
        health.set_version(&version);
    }
    Ok(stream)
}

/// [`open`] within the settings' `timeout`, when there is one.
pub(crate) async fn open_within<C: ServerCodec>(
    settings: &LinkSettings,
    health: &ServerHealth,
) -> Result<Stream, BackendError> {
    let opening = open::<C>(settings, health);
    match settings.timeout {
        Some(t) => tokio::time::timeout(t, opening)
            .await
            .unwrap_or(Err(BackendError::TimedOut)),
        None => opening.await,
    }
}

/// Sends the handshake and reads its replies; the last one carries the server's
/// version. A refused `AUTH` or `SELECT` fails the connection; a refused version
/// request only leaves the version unknown.
async fn handshake<C: ServerCodec>(
    stream: &mut Stream,
    settings: &LinkSettings,
) -> Result<Option<String>, BackendError> {
    let io_error = |e: io::Error| BackendError::from_io(&e);
    let handshake = &settings.handshake;
    stream.write_all(&handshake.bytes).await.map_err(io_error)?;
    stream.flush().await.map_err(io_error)?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut seen = 0;
    loop {
        match C::parse_reply(&buf, &mut Resume::default()) {
            ReplyParse::Incomplete => {
                if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                    return Err(BackendError::Closed);
                }
            }
            ReplyParse::Invalid => return Err(BackendError::Protocol),
            ReplyParse::Complete(n) => {
                let reply = buf.split_to(n).freeze();
                seen += 1;
                if seen == handshake.replies {
                    return Ok(C::version_of(&reply).map(str::to_string));
                }
                if C::refuses(&reply) {
                    return Err(BackendError::Setup(reply));
                }
            }
        }
    }
}
