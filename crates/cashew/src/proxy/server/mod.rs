//! The server side of the data plane: each worker's connections to each server,
//! generic over the server's protocol (`cashew_protocol::server::ServerCodec`).
//!
//! - `link`: what a connection knows of its server (settings, counters, health);
//! - `open`: connecting and the handshake;
//! - `pipeline`: requests in flight and their replies, without I/O;
//! - `connection`: the connection task, sockets and clock around a pipeline;
//! - `probe`: the health probes' own connections;
//! - `push`: a tracking client's invalidations, from its connections to it.

mod connection;
mod link;
mod open;
mod pipeline;
mod probe;
mod push;

pub(crate) use connection::ServerConns;
pub(crate) use link::{LinkSettings, ServerLink};
pub(crate) use open::open_within;
#[cfg(any(test, feature = "harness"))]
pub(crate) use pipeline::Pipeline;
pub(crate) use probe::Probe;
pub(crate) use push::{push_channel, PushSink, PushSource};
