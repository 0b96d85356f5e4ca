//! `CLIENT LIST` and `CLIENT INFO`: the pool's client connections, in Redis's
//! format, from the cards every worker keeps of its clients.

use std::time::Instant;

use bytes::Bytes;

use super::auth::Access;
use super::{err, ready, Client, Pending};
use crate::proxy::pool::PoolRt;
use crate::state::clients::{connected, ClientCard};

/// One client's line, as Redis writes it (the fields cashew knows).
pub(super) fn client_line(card: &ClientCard, now: Instant) -> String {
    let p = card.profile();
    let mut flags = String::new();
    if p.subscriber {
        flags.push('P');
    }
    if p.tracking {
        flags.push('t');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} name={} age={} idle={} flags={} db=0 resp={} lib-name={} lib-ver={} tot-cmds={}\n",
        card.id,
        card.address,
        card.local,
        p.name,
        card.age(now).as_secs(),
        card.idle(now).as_secs(),
        flags,
        if p.resp3 { 3 } else { 2 },
        p.lib_name,
        p.lib_ver,
        card.requests(),
    )
}

/// Which clients `CLIENT LIST` asks for.
enum Filter {
    All,
    Subscribers(bool),
    Ids(Vec<u64>),
}

impl Client {
    /// `CLIENT LIST [TYPE NORMAL|PUBSUB|MASTER|REPLICA] [ID id ...]`: the clients
    /// of this client's pool (not of other pools, which may keep other users).
    /// Other clients' addresses and names are for users with every command, as
    /// Redis keeps `CLIENT LIST` to `@admin`.
    pub(super) fn client_list(&self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        if self.access != Access::All {
            return err("NOPERM this user has no permissions to run the 'client|list' command");
        }
        let mut filters = Vec::new();
        let mut i = 2;
        while i < self.argc() {
            match self.arg(bytes, i).to_ascii_lowercase().as_slice() {
                b"type" if i + 1 < self.argc() => {
                    let filter = match self.arg(bytes, i + 1).to_ascii_lowercase().as_slice() {
                        b"normal" => Filter::Subscribers(false),
                        b"pubsub" => Filter::Subscribers(true),
                        // cashew's clients are never servers.
                        b"master" | b"replica" | b"slave" => Filter::Ids(Vec::new()),
                        _ => {
                            return err(&format!(
                                "ERR Unknown client type '{}'",
                                String::from_utf8_lossy(self.arg(bytes, i + 1))
                            ))
                        }
                    };
                    filters.push(filter);
                    i += 2;
                }
                // As Redis: every argument after ID is an id.
                b"id" if i + 1 < self.argc() => {
                    let mut ids = Vec::new();
                    for j in i + 1..self.argc() {
                        match std::str::from_utf8(self.arg(bytes, j))
                            .ok()
                            .and_then(|n| n.parse::<u64>().ok())
                            .filter(|&n| n > 0)
                        {
                            Some(id) => ids.push(id),
                            None => return err("ERR Invalid client ID"),
                        }
                    }
                    filters.push(Filter::Ids(ids));
                    i = self.argc();
                }
                _ => return err("ERR syntax error"),
            }
        }
        if filters.is_empty() {
            filters.push(Filter::All);
        }
        let now = Instant::now();
        let mut text = String::new();
        for card in connected(Some(&pool.config().name)) {
            let shown = filters.iter().all(|f| match f {
                Filter::All => true,
                Filter::Subscribers(s) => card.profile().subscriber == *s,
                Filter::Ids(ids) => ids.contains(&card.id),
            });
            if shown {
                text.push_str(&client_line(&card, now));
            }
        }
        ready(|o| self.text(o, text.as_bytes()))
    }
}
