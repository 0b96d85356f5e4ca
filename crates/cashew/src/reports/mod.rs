//! What cashew tells about itself, built from the shared state when asked: the
//! nutcracker stats document, the Prometheus metrics, the admin API's status, hot
//! keys and slow log.

pub mod api;
pub mod insight;
pub mod metrics;
pub mod nutcracker;
pub mod status;
