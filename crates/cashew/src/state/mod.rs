//! What the control plane and the data plane share while cashew runs: the
//! configuration generation in force, each server's health, and the counters the
//! workers keep. Both `control` and `proxy` build on it; it depends on neither.

pub mod counters;
pub mod generation;
pub mod health;
pub mod hotkeys;
pub mod slowlog;
