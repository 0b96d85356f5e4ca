//! The data plane: worker threads, each with its own event loop, listen sockets,
//! clients and server connections. Workers serve the generation the main thread
//! publishes (see `control`) and drain when told to.

mod client;
mod gutter;
mod handoff;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
mod ids;
mod memcache;
mod pool;
mod redis;
pub(crate) mod server;
mod tasks;
pub(crate) mod worker;
