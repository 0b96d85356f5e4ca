//! What the control plane and the data plane share while cashew runs: the
//! configuration generation in force, each server's health, and the counters the
//! workers keep. Both `control` and `proxy` build on it; it depends on neither.

pub(crate) mod clients;
pub(crate) mod cluster;
pub(crate) mod counters;
pub(crate) mod generation;
pub(crate) mod health;
pub(crate) mod hotkeys;
pub(crate) mod scan_tags;
pub(crate) mod shadow;
pub(crate) mod slowlog;
