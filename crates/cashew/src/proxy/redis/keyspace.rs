//! Commands over the whole keyspace, which is spread over the pool's servers:
//! KEYS (the servers' keys, concatenated), DBSIZE (summed), RANDOMKEY (from a
//! server that has keys), FLUSHDB and FLUSHALL (every server), INFO's sections
//! of the servers (summed: `info.rs`), and SCAN, one server after the other.
//!
//! A SCAN cursor of cashew's holds the server being walked and that server's own
//! cursor, with a tag of the pool's server list so that a cursor from before a
//! reload that changed the servers starts the walk again rather than skipping
//! servers:
//!
//! ```text
//!   bits 63..54  server index (up to 1,024 servers)
//!   bits 53..48  tag of the server list (`state::scan_tags`: no two of the last
//!                16 lists share one)
//!   bits 47..0   the server's cursor
//! ```
//! Cursor 0 starts and ends a walk, as with Redis.

use std::hash::{BuildHasher, RandomState};

use bytes::Bytes;
use cashew_protocol::resp::{
    array_header, bulk, is_error, parse_reply, reply_elements, KeyspaceCommand, PubSubQuery,
    ReplyParse,
};

use super::info::InfoSections;
use super::{err, Client, Pending};
use crate::proxy::client::{poll_settle_all, try_settle_all, Part};
use crate::proxy::ids::ServerId;
use crate::proxy::pool::PoolRt;
use crate::state::counters::PoolCounter;
use crate::state::scan_tags::SCAN_TAG_BITS;

const TAG_SHIFT: u32 = 48;
const SERVER_SHIFT: u32 = TAG_SHIFT + SCAN_TAG_BITS;
const TAG_MASK: u64 = (1 << SCAN_TAG_BITS) - 1;
/// Servers a SCAN cursor can name.
pub(crate) const MAX_SCAN_SERVERS: usize = 1 << (64 - SERVER_SHIFT);
const SERVER_CURSOR_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// Where a walk is: the server, and its cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ScanAt {
    pub(crate) server: usize,
    pub(crate) cursor: u64,
}

/// The server and its cursor a client's cursor stands for; the start for 0, for a
/// cursor of another server list, or for one naming a server the pool lacks.
pub(crate) fn decode_cursor(cursor: u64, tag: u64, servers: usize) -> ScanAt {
    let at = ScanAt {
        server: (cursor >> SERVER_SHIFT) as usize,
        cursor: cursor & SERVER_CURSOR_MASK,
    };
    if cursor == 0 || (cursor >> TAG_SHIFT) & TAG_MASK != tag || at.server >= servers {
        return ScanAt {
            server: 0,
            cursor: 0,
        };
    }
    at
}

/// The client's cursor after `server` answered `next`: the same server further
/// on, the next server from its start, or 0 once the last server is done.
/// `None` when the server's cursor does not fit the layout.
pub(crate) fn next_cursor(server: usize, next: u64, tag: u64, servers: usize) -> Option<u64> {
    if next > SERVER_CURSOR_MASK {
        return None;
    }
    let server = match next {
        0 if server + 1 >= servers => return Some(0),
        0 => server + 1,
        _ => server,
    };
    Some(((server as u64) << SERVER_SHIFT) | (tag << TAG_SHIFT) | next)
}

/// A keyspace command's parts (one per server), put together when all settled.
pub(crate) struct Gather {
    kind: Kind,
    parts: Vec<Part>,
}

enum Kind {
    Keys,
    /// PUBSUB NUMSUB, SHARDNUMSUB: each channel's count summed.
    Counts,
    /// PUBSUB NUMPAT: the largest count (a pattern is on every server).
    Largest,
    Randomkey,
    Scan {
        server: usize,
        tag: u64,
        servers: usize,
    },
    /// The keyspace section of INFO, after the proxy's own sections asked for.
    Info {
        sections: InfoSections,
    },
}

impl Gather {
    pub(super) fn try_settle(&mut self) -> bool {
        try_settle_all(&mut self.parts)
    }

    pub(super) fn poll_settle(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        poll_settle_all(&mut self.parts, cx)
    }
}

impl Client {
    pub(super) fn keyspace(
        &mut self,
        pool: &PoolRt,
        command: KeyspaceCommand,
        bytes: &Bytes,
    ) -> Pending {
        let servers = pool.keyspace_servers();
        let all = |this: &Self, request: &Bytes| -> Vec<Part> {
            (0..servers)
                .map(|s| this.forward_part(pool, ServerId(s), request.clone()))
                .collect()
        };
        pool.pool_stats()
            .add(PoolCounter::Fragments, servers as u64);
        match command {
            KeyspaceCommand::Dbsize => Pending::Sum(all(self, bytes)),
            KeyspaceCommand::Flushdb | KeyspaceCommand::Flushall => {
                if command == KeyspaceCommand::Flushall {
                    pool.pool_stats().add(PoolCounter::FlushallCommands, 1);
                }
                Pending::AllOk(all(self, bytes))
            }
            KeyspaceCommand::Keys => {
                pool.pool_stats().add(PoolCounter::KeysCommands, 1);
                self.gather(Kind::Keys, all(self, bytes))
            }
            KeyspaceCommand::Randomkey => self.gather(Kind::Randomkey, all(self, bytes)),
            KeyspaceCommand::Scan => self.scan(pool, bytes),
        }
    }

    /// `PUBSUB` subcommands, over every server.
    pub(super) fn pubsub_query(
        &mut self,
        pool: &PoolRt,
        query: PubSubQuery,
        bytes: &Bytes,
    ) -> Pending {
        let parts = (0..pool.keyspace_servers())
            .map(|s| self.forward_part(pool, ServerId(s), bytes.clone()))
            .collect();
        let kind = match query {
            PubSubQuery::Names => Kind::Keys,
            PubSubQuery::Counts => Kind::Counts,
            PubSubQuery::Patterns => Kind::Largest,
        };
        self.gather(kind, parts)
    }

    fn gather(&self, kind: Kind, parts: Vec<Part>) -> Pending {
        Pending::Keyspace(Box::new(Gather { kind, parts }))
    }

    pub(super) fn forward_part(&self, pool: &PoolRt, server: ServerId, request: Bytes) -> Part {
        Part::new(pool.send_redis(server, self.id, request, self.resp3))
    }

    /// SCAN: the server the cursor names is asked with its own cursor.
    fn scan(&mut self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        let Some(cursor) = std::str::from_utf8(self.arg(bytes, 1))
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
        else {
            return err("ERR invalid cursor");
        };
        let servers = pool.keyspace_servers();
        if servers > MAX_SCAN_SERVERS {
            return err(&format!(
                "ERR SCAN through the proxy covers pools of up to {MAX_SCAN_SERVERS} servers"
            ));
        }
        let tag = pool.scan_tag();
        let at = decode_cursor(cursor, tag, servers);
        let mut request = Vec::with_capacity(bytes.len());
        array_header(&mut request, self.argc());
        bulk(&mut request, self.arg(bytes, 0));
        bulk(&mut request, at.cursor.to_string().as_bytes());
        for i in 2..self.argc() {
            bulk(&mut request, self.arg(bytes, i));
        }
        let part = self.forward_part(pool, ServerId(at.server), request.into());
        self.gather(
            Kind::Scan {
                server: at.server,
                tag,
                servers,
            },
            vec![part],
        )
    }

    /// INFO with sections made of the servers' own (`sections` asks for one).
    pub(super) fn info_from_servers(&mut self, pool: &PoolRt, sections: InfoSections) -> Pending {
        let request = sections.server_request();
        let parts = (0..pool.keyspace_servers())
            .map(|s| self.forward_part(pool, ServerId(s), request.clone()))
            .collect();
        self.gather(Kind::Info { sections }, parts)
    }

    pub(super) fn gathered(&self, pool: &PoolRt, mut gather: Gather) -> Bytes {
        let mut replies = Vec::with_capacity(gather.parts.len());
        for p in &mut gather.parts {
            match p.take() {
                Ok(r) if is_error(&r) => return r,
                Ok(r) => replies.push(r),
                Err(e) => return self.failed(pool, e),
            }
        }
        match gather.kind {
            Kind::Keys => self.concatenated(pool, &replies),
            Kind::Counts => summed_counts(&replies),
            Kind::Largest => {
                let largest = replies
                    .iter()
                    .filter_map(|r| {
                        std::str::from_utf8(r.get(1..r.len().saturating_sub(2))?)
                            .ok()?
                            .parse::<i64>()
                            .ok()
                    })
                    .max()
                    .unwrap_or(0);
                let mut out = Vec::new();
                cashew_protocol::resp::integer(&mut out, largest);
                out.into()
            }
            Kind::Randomkey => {
                let found: Vec<&Bytes> = replies
                    .iter()
                    .filter(|r| r.starts_with(b"$") && !r.starts_with(b"$-1"))
                    .collect();
                match found.len() {
                    // Every server is empty: its null, in the client's protocol.
                    0 => replies.swap_remove(0),
                    n => {
                        let pick = RandomState::new().hash_one(n) as usize % n;
                        found[pick].clone()
                    }
                }
            }
            Kind::Scan {
                server,
                tag,
                servers,
            } => scan_reply(&replies[0], server, tag, servers),
            Kind::Info { sections } => {
                let text = self.info(pool, sections, &replies);
                let mut out = Vec::with_capacity(text.len() + 16);
                self.text(&mut out, text.as_bytes());
                out.into()
            }
        }
    }

    /// KEYS: the servers' arrays as one, unless it exceeds what the pool lets a
    /// client's replies hold.
    fn concatenated(&self, pool: &PoolRt, replies: &[Bytes]) -> Bytes {
        let mut count = 0;
        let mut bodies = Vec::with_capacity(replies.len());
        for r in replies {
            let Some(nl) = memchr::memchr(b'\n', r) else {
                return r.clone();
            };
            let Some(n) = std::str::from_utf8(&r[1..nl - 1])
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|_| r[0] == b'*')
            else {
                return r.clone();
            };
            count += n;
            bodies.push(&r[nl + 1..]);
        }
        let size: usize = bodies.iter().map(|b| b.len()).sum();
        let limit = pool.config().client_output_limit;
        if size as u64 > limit {
            return error_bytes(&format!(
                "ERR KEYS over the pool's servers would reply {size} bytes, more than client_output_limit ({limit} bytes); iterate with SCAN"
            ));
        }
        let mut out = Vec::with_capacity(size + 16);
        array_header(&mut out, count);
        for b in bodies {
            out.extend_from_slice(b);
        }
        out.into()
    }
}

/// PUBSUB NUMSUB's `[channel, count, ...]` (a map in RESP3) from each server, with
/// each channel's counts summed; the first server's reply gives the order.
fn summed_counts(replies: &[Bytes]) -> Bytes {
    let parsed: Vec<Option<Vec<&[u8]>>> = replies.iter().map(|r| reply_elements(r)).collect();
    let Some(Some(first)) = parsed.first() else {
        return replies[0].clone();
    };
    let mut out = Vec::with_capacity(replies[0].len());
    let header_end = memchr::memchr(b'\n', &replies[0]).map_or(0, |n| n + 1);
    out.extend_from_slice(&replies[0][..header_end]);
    for (i, element) in first.iter().enumerate() {
        if i % 2 == 0 {
            out.extend_from_slice(element);
            continue;
        }
        let total: i64 = parsed
            .iter()
            .flatten()
            .filter_map(|elements| {
                let e = elements.get(i)?;
                std::str::from_utf8(e.get(1..e.len().saturating_sub(2))?)
                    .ok()?
                    .parse::<i64>()
                    .ok()
            })
            .sum();
        cashew_protocol::resp::integer(&mut out, total);
    }
    out.into()
}

fn error_bytes(text: &str) -> Bytes {
    let mut out = Vec::new();
    cashew_protocol::resp::error(&mut out, text);
    out.into()
}

/// A server's `[cursor, keys]` with the cursor made the client's.
fn scan_reply(reply: &Bytes, server: usize, tag: u64, servers: usize) -> Bytes {
    let malformed = || error_bytes("ERR the server's SCAN reply was not [cursor, keys]");
    let Some(rest) = reply.strip_prefix(b"*2\r\n") else {
        return malformed();
    };
    let ReplyParse::Complete(n) = parse_reply(rest) else {
        return malformed();
    };
    let cursor_field = &rest[..n];
    let next = memchr::memchr(b'\n', cursor_field)
        .and_then(|nl| std::str::from_utf8(&cursor_field[nl + 1..n - 2]).ok())
        .and_then(|c| c.parse::<u64>().ok());
    let Some(next) = next else {
        return malformed();
    };
    let Some(cursor) = next_cursor(server, next, tag, servers) else {
        return error_bytes(
            "ERR the server's SCAN cursor is larger than the proxy's cursor layout holds (2^48)",
        );
    };
    let mut out = Vec::with_capacity(reply.len() + 16);
    array_header(&mut out, 2);
    bulk(&mut out, cursor.to_string().as_bytes());
    out.extend_from_slice(&rest[n..]);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(server: usize, cursor: u64) -> ScanAt {
        ScanAt { server, cursor }
    }

    #[test]
    fn a_walk_visits_each_server_from_its_start_and_ends_at_zero() {
        let (tag, servers) = (0x2a, 3);
        let start = decode_cursor(0, tag, servers);
        assert_eq!(start, at(0, 0));
        // Server 0 goes on, then ends: server 1 from its start.
        let c = next_cursor(0, 17, tag, servers).unwrap();
        assert_eq!(decode_cursor(c, tag, servers), at(0, 17));
        let c = next_cursor(0, 0, tag, servers).unwrap();
        assert_eq!(decode_cursor(c, tag, servers), at(1, 0));
        assert_ne!(c, 0, "the walk goes on");
        let c = next_cursor(2, 5, tag, servers).unwrap();
        assert_eq!(decode_cursor(c, tag, servers), at(2, 5));
        assert_eq!(
            next_cursor(2, 0, tag, servers),
            Some(0),
            "the last server done"
        );
        assert_eq!(next_cursor(0, 1 << 48, tag, servers), None);
    }

    #[test]
    fn a_cursor_of_another_server_list_starts_again() {
        let c = next_cursor(1, 99, 7, 3).unwrap();
        assert_eq!(decode_cursor(c, 8, 3), at(0, 0));
        assert_eq!(decode_cursor(c, 7, 1), at(0, 0), "fewer servers");
        assert_eq!(decode_cursor(c, 7, 3), at(1, 99));
    }

    #[test]
    fn scan_replies_carry_the_clients_cursor() {
        let reply = Bytes::from_static(b"*2\r\n$1\r\n0\r\n*1\r\n$1\r\na\r\n");
        let out = scan_reply(&reply, 0, 3, 2);
        let expected_cursor = next_cursor(0, 0, 3, 2).unwrap().to_string();
        let expected = format!(
            "*2\r\n${}\r\n{expected_cursor}\r\n*1\r\n$1\r\na\r\n",
            expected_cursor.len()
        );
        assert_eq!(out, expected.as_bytes());
        assert!(scan_reply(&Bytes::from_static(b"+OK\r\n"), 0, 3, 2).starts_with(b"-ERR"));
    }
}
