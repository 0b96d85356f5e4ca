//! The data plane: worker threads, each with its own event loop, listen sockets,
//! clients and server connections. Workers serve the generation the main thread
//! publishes (see `control`) and drain when told to.

mod backend;
mod client;
mod gutter;
mod handoff;
pub mod harness;
mod memcache;
mod pool;
mod redis;
mod tasks;
pub mod worker;

pub use backend::Probe;
