//! Commands every server must run, since each keeps its own scripts and
//! functions: SCRIPT LOAD, EXISTS, FLUSH and KILL; FUNCTION LOAD, DELETE, FLUSH,
//! RESTORE and KILL. They go to every live server and the replies are put
//! together as Redis says in `COMMAND` (each one's `response_policy`), as cluster
//! clients do. A server that comes back or joins later lacks what was loaded
//! meanwhile: EVALSHA there gets NOSCRIPT, on which clients load the script again.

use bytes::Bytes;
use cashew_protocol::resp::{array_header, integer, reply_elements, Combine};

use super::{Client, Pending};
use crate::proxy::client::Part;
use crate::proxy::ids::ServerId;
use crate::proxy::pool::PoolRt;
use crate::state::counters::PoolCounter;

impl Client {
    /// Sends the command to every live server (`replicas`: a cluster pool's
    /// replicas too), its replies combined by `combine`.
    pub(super) fn every_server(
        &mut self,
        pool: &PoolRt,
        replicas: bool,
        combine: Combine,
        bytes: &Bytes,
    ) -> Pending {
        let servers = match replicas {
            true => pool.config().servers.len(),
            false => pool.keyspace_servers(),
        };
        let parts: Vec<Part> = (0..servers)
            .map(ServerId)
            .filter(|&s| pool.is_live(s))
            .map(|s| self.forward_part(pool, s, bytes.clone()))
            .collect();
        if parts.is_empty() {
            return self.no_server(pool);
        }
        pool.pool_stats()
            .add(PoolCounter::Fragments, parts.len() as u64);
        self.gather_combined(combine, parts)
    }

    /// KILL: `+OK` if one server stopped what it ran; else the first refusal
    /// (`NOTBUSY` when none was running anything).
    pub(super) fn one_succeeded(&self, pool: &PoolRt, parts: &mut [Part]) -> Bytes {
        let mut first_error = None;
        for p in parts.iter_mut() {
            match p.take() {
                Ok(r) if r.starts_with(b"+") => return r,
                Ok(r) => {
                    first_error.get_or_insert(r);
                }
                Err(e) => {
                    let reply = self.failed(pool, e);
                    first_error.get_or_insert(reply);
                }
            }
        }
        first_error.unwrap_or_default()
    }
}

/// The servers' replies (none an error) as one.
pub(super) fn combined(combine: Combine, mut replies: Vec<Bytes>) -> Bytes {
    match combine {
        // They are all the same (the script's SHA1, the library's name, `+OK`).
        Combine::AllSucceeded | Combine::OneSucceeded => replies.swap_remove(0),
        Combine::LogicalAnd => logical_and(&replies),
    }
}

/// SCRIPT EXISTS: each server's array of 0 and 1; 1 where every server says 1.
fn logical_and(replies: &[Bytes]) -> Bytes {
    let arrays: Option<Vec<Vec<&[u8]>>> = replies.iter().map(|r| reply_elements(r)).collect();
    let Some(arrays) = arrays.filter(|a| a.iter().all(|e| e.len() == a[0].len())) else {
        return replies[0].clone();
    };
    let mut out = Vec::with_capacity(replies[0].len());
    array_header(&mut out, arrays[0].len());
    for i in 0..arrays[0].len() {
        let all = arrays.iter().all(|a| a[i] == b":1\r\n");
        integer(&mut out, i64::from(all));
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_exists_only_where_every_server_has_it() {
        let replies = [
            Bytes::from_static(b"*3\r\n:1\r\n:1\r\n:0\r\n"),
            Bytes::from_static(b"*3\r\n:1\r\n:0\r\n:0\r\n"),
        ];
        assert_eq!(
            &combined(Combine::LogicalAnd, replies.to_vec())[..],
            b"*3\r\n:1\r\n:0\r\n:0\r\n"
        );
        // One server: its reply.
        assert_eq!(
            &combined(Combine::LogicalAnd, replies[..1].to_vec())[..],
            &replies[0][..]
        );
    }
}
