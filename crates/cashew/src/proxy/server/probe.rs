//! A health probe's own connection to a server: opened with the usual handshake
//! (whose version request is the first probe), then the protocol's probe request
//! (`version`, `PING`) at each probe; a failed probe drops the connection.

use std::io;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use cashew_protocol::server::{ProbeAnswer, ServerCodec};
use cashew_protocol::{ReplyParse, Resume};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::link::LinkSettings;
use super::open::open;
use crate::net::Stream;
use crate::proxy::handoff::BackendError;
use crate::state::health::ServerHealth;

pub(crate) struct Probe<C> {
    settings: LinkSettings,
    health: Arc<ServerHealth>,
    stream: Option<Stream>,
    codec: PhantomData<C>,
}

impl<C: ServerCodec> Probe<C> {
    pub(crate) fn new(settings: LinkSettings, health: Arc<ServerHealth>) -> Probe<C> {
        Probe {
            settings,
            health,
            stream: None,
            codec: PhantomData,
        }
    }

    /// One probe, within `timeout`.
    pub(crate) async fn once(&mut self, timeout: Duration) -> Result<(), BackendError> {
        let result = tokio::time::timeout(timeout, self.ask())
            .await
            .unwrap_or(Err(BackendError::TimedOut));
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn ask(&mut self) -> Result<(), BackendError> {
        let Some(stream) = &mut self.stream else {
            self.stream = Some(open::<C>(&self.settings, &self.health).await?);
            return Ok(());
        };
        let io_error = |e: io::Error| BackendError::from_io(&e);
        stream.write_all(C::PROBE).await.map_err(io_error)?;
        stream.flush().await.map_err(io_error)?;
        let mut buf = BytesMut::with_capacity(256);
        loop {
            match C::parse_reply(&buf, &mut Resume::default()) {
                ReplyParse::Complete(n) => {
                    return match C::probe_answer(&buf[..n]) {
                        ProbeAnswer::Serves => Ok(()),
                        // -LOADING, -MASTERDOWN...: the server cannot serve.
                        ProbeAnswer::Refuses => Err(BackendError::Setup(buf.freeze())),
                        ProbeAnswer::NotAReply => Err(BackendError::Protocol),
                    };
                }
                ReplyParse::Invalid => return Err(BackendError::Protocol),
                ReplyParse::Incomplete => {
                    if stream.read_buf(&mut buf).await.map_err(io_error)? == 0 {
                        return Err(BackendError::Closed);
                    }
                }
            }
        }
    }
}
