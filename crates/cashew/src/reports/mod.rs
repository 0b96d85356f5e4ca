//! What cashew tells about itself, built from the shared state when asked: the
//! nutcracker stats document, the Prometheus metrics, the admin API's status, hot
//! keys and slow log.

pub(crate) mod api;
pub(crate) mod insight;
pub(crate) mod metrics;
pub mod nutcracker;
pub(crate) mod status;
