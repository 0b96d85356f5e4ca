//! Where does a key live? Pure routing for cashew, bit-exact with nutcracker 0.5.0.
//!
//! - [`HashFunction`]: the twelve key hashes of `nutcracker.yml`.
//! - [`HashTag`]: hash only the part of a key between two tag characters.
//! - [`Distribution`]: `ketama`, `modula` or `random` placement over the servers.
//! - [`Router`]: all three put together, built once per server set and then read-only.
//! - [`cluster_slot`], [`SlotMap`]: Redis Cluster's placement, a key's slot and the
//!   server that owns each slot.
//!
//! Nothing here does I/O or allocates per lookup.

mod distribution;
mod hash;
mod ketama;
mod router;
mod slots;
mod tag;

pub use distribution::Distribution;
pub use hash::{md5_digest, HashFunction, UnknownName};
pub use ketama::Continuum;
pub use router::{RouteNode, Router};
pub use slots::{cluster_slot, SlotMap, SLOTS};
pub use tag::HashTag;
