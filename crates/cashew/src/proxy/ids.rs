//! Which server and which client: numbers that must not be mixed up.

/// A server of a pool, by its place in the pool's `servers:` list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ServerId(pub(crate) usize);

/// A client of a pool on one worker: it picks the client's connection to each
/// server, so one client's requests to a server stay in order on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ClientId(pub(crate) usize);
