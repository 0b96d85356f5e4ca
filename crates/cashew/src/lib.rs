//! cashew: a cache proxy for memcached and redis that reads nutcracker's config,
//! takes its flags and places every key where nutcracker would. The binary is a
//! thin `main.rs` over this library.

pub mod admin_client;
pub mod cli;
pub mod control;
pub mod ctl;
pub mod generation;
pub mod hotkeys;
pub mod log;
pub mod metrics;
pub mod net;
pub mod process;
pub mod proxy;
pub mod route_cmd;
pub mod signals;
pub mod slowlog;
pub mod stats;
pub mod top;
