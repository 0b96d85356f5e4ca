//! The commands that are not the proxy: `route` (where keys go, from a config
//! file; with `--diff`, what a change of config moves) and the ones that talk to a running cashew through its admin API or pid
//! file (`reload`, `stop`, `restart`, `status`, `top`).

pub(crate) mod admin_client;
pub mod ctl;
pub mod route;
pub mod route_diff;
pub mod top;
