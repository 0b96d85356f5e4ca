//! Requests that go to one server: by the key at a position, to any server, a
//! script by its first key, or a multi-key command whose keys must all be on one
//! server.

use bytes::Bytes;
use cashew_protocol::resp::{CommandSpec, Effect, Keys};
use cashew_route::cluster_slot;

use super::{command, err, Client, Pending};
use crate::proxy::client::Part;
use crate::proxy::gutter::{self, Target};
use crate::proxy::handoff::BackendError;
use crate::proxy::ids::ServerId;
use crate::proxy::pool::PoolRt;
use crate::state::counters::PoolCounter;

impl Client {
    /// Sends the request, as received, to `server`.
    pub(super) fn forward_to(&self, pool: &PoolRt, server: ServerId, bytes: &Bytes) -> Pending {
        Pending::Single(Part::new(self.send_redis(pool, server, bytes.clone())))
    }

    /// Where `key` goes (see [`Target`]); `None` when no server can take it.
    pub(super) fn target(&self, pool: &PoolRt, key: &[u8]) -> Option<Target> {
        let server = pool.route(key)?;
        if !pool.stable_placement() || pool.is_live(server) {
            return Some(Target::Server(server));
        }
        let (gutter, server) = gutter::route(pool, key)?;
        pool.pool_stats().add(PoolCounter::Guttered, 1);
        Some(Target::Gutter(gutter, server))
    }

    /// Sends `bytes`, whose keys are `keys`, to `target`: in a cluster pool,
    /// following redirections.
    pub(super) fn send_keyed(
        &self,
        pool: &PoolRt,
        target: &Target,
        bytes: Bytes,
        effect: Effect,
        keys: &[&[u8]],
    ) -> Part {
        if pool.cluster().is_some() {
            let slot = keys.first().map_or(0, |k| cluster_slot(k));
            let (_, master) = target.resolve(pool);
            return self.send_in_cluster(pool, master, bytes, slot, effect);
        }
        self.send_to(pool, target, bytes, effect, keys)
    }

    /// Sends `bytes` to `target` (a read to one of its replicas, with `read_from`).
    /// A write to the gutter is followed by `EXPIRE key gutter_ttl LT` for each of
    /// `keys`, which only ever shortens a TTL.
    pub(super) fn send_to(
        &self,
        pool: &PoolRt,
        target: &Target,
        bytes: Bytes,
        effect: Effect,
        keys: &[&[u8]],
    ) -> Part {
        let (to, s) = target.resolve(pool);
        let s = to.server_for(s, effect, self.id);
        let part = Part::new(self.send_redis(to, s, bytes));
        if effect == Effect::Write && target.is_gutter() {
            let ttl = pool.config().gutter_ttl.to_string();
            for key in keys {
                let expire = command(b"EXPIRE", &[key, ttl.as_bytes(), b"LT"]);
                to.send(s, self.id, expire, false);
            }
        }
        part
    }

    /// Sends the request to the server of the key at argument `key`. It takes the
    /// request's bytes, which most requests then hand on without another reference.
    pub(super) fn forward_by(
        &self,
        pool: &PoolRt,
        key: usize,
        bytes: Bytes,
        effect: Effect,
    ) -> Pending {
        let key = self.arg(&bytes, key);
        if pool.cluster().is_some() {
            return self.forward_in_cluster(pool, key, &bytes, effect);
        }
        let Some(target) = self.target(pool, key) else {
            return self.no_server(pool);
        };
        if effect == Effect::Write && target.is_gutter() {
            // The key goes with it, for the gutter's EXPIRE.
            return Pending::Single(self.send_to(pool, &target, bytes.clone(), effect, &[key]));
        }
        Pending::Single(self.send_to(pool, &target, bytes, effect, &[]))
    }

    /// Sends the request to the first live server: it is about no key, or its
    /// keys cannot be found (the server then gives Redis's own error).
    pub(super) fn forward_any(&self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        match pool.first_live() {
            Some(server) => self.forward_to(pool, server, bytes),
            None => self.no_server(pool),
        }
    }

    pub(super) fn no_server(&self, pool: &PoolRt) -> Pending {
        pool.pool_stats().add(PoolCounter::ForwardError, 1);
        pool.server_failed(&BackendError::NoServer);
        Pending::Ready(BackendError::NoServer.redis_reply())
    }

    /// EVAL, EVALSHA, FCALL and their read-only forms: `numkeys` at argument 2,
    /// forwarded by the first key, as nutcracker does.
    pub(super) fn script(&self, pool: &PoolRt, spec: &CommandSpec, bytes: &Bytes) -> Pending {
        let keys = std::str::from_utf8(self.arg(bytes, 2))
            .ok()
            .and_then(|n| n.parse::<i64>().ok());
        match keys {
            None => err("ERR value is not an integer or out of range"),
            Some(n) if n < 0 => err("ERR Number of keys can't be negative"),
            Some(n) if n as usize > self.argc() - 3 => {
                err("ERR Number of keys can't be greater than number of args")
            }
            Some(0) => err(&format!(
                "ERR '{}' without keys is not supported by the proxy: it needs a key to choose a server",
                spec.name
            )),
            Some(_) => self.forward_by(pool, 3, bytes.clone(), Effect::Write),
        }
    }

    /// Where the keys of a command that needs them on one server are, or `None`
    /// when they cannot be found (the server will say what is wrong).
    pub(super) fn key_positions(&self, bytes: &[u8], keys: Keys) -> Option<Vec<usize>> {
        let argc = self.argc();
        match keys {
            Keys::Range { first, last, step } => {
                let last = if last < 0 {
                    argc.checked_sub(last.unsigned_abs() as usize)?
                } else {
                    last as usize
                };
                Some(
                    (first as usize..=last.min(argc - 1))
                        .step_by(step as usize)
                        .collect(),
                )
            }
            Keys::NumKeys(at) => {
                let at = usize::from(at);
                let n: usize = std::str::from_utf8(self.arg(bytes, at))
                    .ok()?
                    .parse()
                    .ok()?;
                (n > 0 && at + n < argc).then(|| (at + 1..=at + n).collect())
            }
            Keys::Streams { .. } => {
                let streams =
                    (1..argc).find(|&i| self.arg(bytes, i).eq_ignore_ascii_case(b"streams"))?;
                let rest = argc - streams - 1;
                (rest > 0 && rest % 2 == 0).then(|| (streams + 1..=streams + rest / 2).collect())
            }
        }
    }

    /// A multi-key command forwarded only when all its keys are on one server.
    pub(super) fn same_server(
        &self,
        pool: &PoolRt,
        spec: &CommandSpec,
        keys: Keys,
        bytes: &Bytes,
    ) -> Pending {
        if let Keys::Streams { options } = keys {
            if self.blocks(usize::from(options), bytes) {
                return self.blocking(pool, spec, bytes);
            }
        }
        let Some(positions) = self.key_positions(bytes, keys) else {
            return self.forward_any(pool, bytes);
        };
        let mut target: Option<Target> = None;
        let in_slots = pool.cluster().is_some();
        let first_slot = positions.first().map(|&i| cluster_slot(self.arg(bytes, i)));
        for &i in &positions {
            if in_slots && Some(cluster_slot(self.arg(bytes, i))) != first_slot {
                return err("CROSSSLOT Keys in request don't hash to the same slot");
            }
            let Some(t) = self.target(pool, self.arg(bytes, i)) else {
                return self.no_server(pool);
            };
            if target.as_ref().is_some_and(|first| !first.same(&t)) {
                return err(&format!(
                    "CROSSSLOT Keys in request don't hash to the same server: '{}' is forwarded only when all its keys are on one server of the proxy; put a hash tag such as {{user1}} in each of them",
                    spec.name
                ));
            }
            target = Some(t);
        }
        match target {
            Some(t) => {
                let keys: Vec<&[u8]> = positions.iter().map(|&i| self.arg(bytes, i)).collect();
                Pending::Single(self.send_keyed(pool, &t, bytes.clone(), spec.effect, &keys))
            }
            None => self.forward_any(pool, bytes),
        }
    }

    /// `XREAD`/`XREADGROUP` with `BLOCK` among its options (from argument `from`)
    /// before `STREAMS`.
    pub(super) fn blocks(&self, from: usize, bytes: &[u8]) -> bool {
        (from..self.argc())
            .map(|i| self.arg(bytes, i))
            .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
            .any(|a| a.eq_ignore_ascii_case(b"block"))
    }
}
