//! Commands every server must run, since each keeps its own scripts and
//! functions: SCRIPT LOAD, EXISTS, FLUSH and KILL; FUNCTION LOAD, DELETE, FLUSH,
//! RESTORE and KILL. They go to every live server and the replies are put
//! together as Redis says in `COMMAND` (each one's `response_policy`), as cluster
//! clients do. A server that comes back or joins later lacks what was loaded
//! meanwhile: EVALSHA there gets NOSCRIPT, on which clients load the script again.

use bytes::Bytes;
use cashew_protocol::resp::{array_header, integer, is_error, reply_elements, Combine};

use super::{Client, Pending};
use crate::proxy::client::Part;
use crate::proxy::ids::ServerId;
use crate::proxy::pool::PoolRt;
use crate::state::counters::PoolCounter;

impl Client {
    /// Sends the command to every live server (`replicas`: a cluster pool's
    /// replicas too), its replies combined by `combine`.
    pub(super) fn every_server(
        &self,
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
        Pending::EveryServer(combine, parts)
    }

    /// The parts' replies as one. A server that could not be reached (down, not
    /// yet found so) does not fail the command: it lacks the script as a server
    /// that joins later does, and EVALSHA's NOSCRIPT there has clients load it
    /// again. A server's error reply does (a script that does not compile).
    pub(super) fn combined(&self, pool: &PoolRt, combine: Combine, parts: &mut [Part]) -> Bytes {
        let mut replies = Vec::with_capacity(parts.len());
        let mut unreachable = None;
        for p in parts.iter_mut() {
            match p.take() {
                Ok(r) => replies.push(r),
                Err(e) => {
                    let reply = self.failed(pool, e);
                    unreachable.get_or_insert(reply);
                }
            }
        }
        if replies.is_empty() {
            return unreachable.unwrap_or_default();
        }
        combine_replies(combine, replies)
    }
}

/// The servers' replies as one.
fn combine_replies(combine: Combine, mut replies: Vec<Bytes>) -> Bytes {
    let first_error = replies.iter().position(|r| is_error(r));
    match (combine, first_error) {
        // KILL: `+OK` if one server stopped what it ran; else the first refusal
        // (`NOTBUSY` when none was running anything).
        (Combine::OneSucceeded, _) => match replies.iter().position(|r| !is_error(r)) {
            Some(ok) => replies.swap_remove(ok),
            None => replies.swap_remove(0),
        },
        (_, Some(error)) => replies.swap_remove(error),
        // They are all the same (the script's SHA1, the library's name, `+OK`).
        (Combine::AllSucceeded, None) => replies.swap_remove(0),
        (Combine::LogicalAnd, None) => logical_and(&replies),
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
            &combine_replies(Combine::LogicalAnd, replies.to_vec())[..],
            b"*3\r\n:1\r\n:0\r\n:0\r\n"
        );
        // One server: its reply.
        assert_eq!(
            &combine_replies(Combine::LogicalAnd, replies[..1].to_vec())[..],
            &replies[0][..]
        );
        // An error wins.
        let refused = Bytes::from_static(b"-ERR Error compiling script\r\n");
        assert_eq!(
            combine_replies(
                Combine::AllSucceeded,
                vec![replies[0].clone(), refused.clone()]
            ),
            refused
        );
        // KILL: one server that stopped a script is enough.
        let notbusy = Bytes::from_static(b"-NOTBUSY No scripts in execution right now.\r\n");
        let ok = Bytes::from_static(b"+OK\r\n");
        assert_eq!(
            combine_replies(Combine::OneSucceeded, vec![notbusy.clone(), ok.clone()]),
            ok
        );
        assert_eq!(
            combine_replies(
                Combine::OneSucceeded,
                vec![notbusy.clone(), notbusy.clone()]
            ),
            notbusy
        );
    }
}
