//! cashew: a cache proxy for memcached and redis that reads nutcracker's config,
//! takes its flags and places every key where nutcracker would. The binary is a
//! thin `main.rs` over this library.
//!
//! The modules are layers; each uses only those above it in this list:
//! - `clock`, `log`, `net`, `process`: time, logging, sockets, the OS process;
//! - `state`: what the control and data planes share (generation, health, counters);
//! - `proxy`: the data plane, worker threads serving clients;
//! - `reports`: what cashew tells about itself, built from `state`;
//! - `control`: the control plane on the main thread (config, signals, admin API);
//! - `cli` and `commands`: the command line, and the commands besides the proxy.

pub mod cli;
pub(crate) mod clock;
pub mod commands;
pub mod control;
pub mod log;
pub(crate) mod net;
pub(crate) mod process;
pub(crate) mod proxy;
pub mod reports;
pub(crate) mod state;

/// The client path without sockets, for the `client_path` fuzz target.
#[cfg(feature = "harness")]
pub use proxy::harness;
