//! The commands the proxy answers itself: connection state (`AUTH`, `HELLO`,
//! `CLIENT`, `SELECT`, `RESET`), `PING`, `ECHO`, `QUIT`, `COMMAND` and `INFO`
//! (`info.rs` makes its text).

use bytes::Bytes;
use cashew_protocol::resp::{
    array_header, bulk, integer, lookup, map_header, null, simple, CommandSpec, LocalCommand,
    Reason, COMMANDS,
};

use super::auth::{authenticate, Access, Refusal};
use super::clients::client_line;
use super::{
    err, ready, refused, server_version, valid_client_name, wrong_arity, Client, Pending,
    VersionedReply, BAD_CLIENT_NAME,
};
use crate::proxy::client::Part;
use crate::proxy::pool::PoolRt;

impl Client {
    /// A reply that reports the servers' version: now, or once a server is reached.
    pub(super) fn with_version(&self, pool: &PoolRt, reply: VersionedReply) -> Pending {
        if pool.server_version().is_none() {
            if let Some(server) = pool.first_live() {
                let ping = Bytes::from_static(b"*1\r\n$4\r\nPING\r\n");
                let part = Part::new(pool.send(server, self.id, ping, true));
                return Pending::AfterVersion { part, reply };
            }
        }
        Pending::Ready(self.versioned(pool, reply))
    }

    pub(super) fn versioned(&self, pool: &PoolRt, reply: VersionedReply) -> Bytes {
        let mut o = Vec::new();
        match reply {
            VersionedReply::Hello { resp3 } => self.hello_reply(&mut o, pool, resp3),
            VersionedReply::Info(sections) => {
                let text = self.info(pool, sections, &[]);
                self.text(&mut o, text.as_bytes());
            }
        }
        o.into()
    }

    /// Connection-level commands, answered without a server.
    pub(super) fn local(&mut self, pool: &PoolRt, command: LocalCommand, bytes: &Bytes) -> Pending {
        let argc = self.argc();
        let arg = |i: usize| self.arg(bytes, i);
        match command {
            LocalCommand::Ping => match argc {
                1 => ready(|o| simple(o, "PONG")),
                2 => ready(|o| bulk(o, arg(1))),
                _ => wrong_arity("ping"),
            },
            LocalCommand::Echo => ready(|o| bulk(o, arg(1))),
            LocalCommand::Quit => {
                self.done = true;
                Pending::Quit
            }
            LocalCommand::Auth => match argc {
                2 => self.auth(pool, None, arg(1)),
                3 => self.auth(pool, Some(arg(1)), arg(2)),
                _ => err("ERR syntax error"),
            },
            LocalCommand::Select => match std::str::from_utf8(arg(1)).ok().and_then(|n| n.parse::<i64>().ok()) {
                Some(0) => ready(|o| simple(o, "OK")),
                Some(_) => err("ERR SELECT is limited to database 0 by the proxy: the pool's database is set by redis_db in its config"),
                None => err("ERR value is not an integer or out of range"),
            },
            LocalCommand::Reset => {
                // As Redis: out of subscribed mode and any transaction.
                self.subscriber = None;
                self.set_tracking(None);
                self.session = super::session::Session::None;
                self.resp3 = false;
                self.card.set(|p| {
                    p.name.clear();
                    p.resp3 = false;
                    p.subscriber = false;
                });
                self.access = Access::of_new_client(pool.config());
                ready(|o| simple(o, "RESET"))
            }
            LocalCommand::Client => self.client(pool, bytes),
            LocalCommand::Hello => self.hello(pool, bytes),
            LocalCommand::Command => self.command(pool, bytes),
            LocalCommand::Info => {
                let sections = super::info::InfoSections::asked((1..argc).map(arg));
                match sections.needs_servers() && pool.config().keyspace_commands {
                    true => self.info_from_servers(pool, sections),
                    false => self.with_version(pool, VersionedReply::Info(sections)),
                }
            }
        }
    }

    /// `CLIENT` subcommands about this connection are answered here; the ones that
    /// act on the server (or need it to push) are refused.
    pub(super) fn client(&mut self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        let argc = self.argc();
        let sub = self.arg(bytes, 1).to_ascii_lowercase();
        let wrong = || {
            err(&format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub)
            ))
        };
        match sub.as_slice() {
            b"setname" if argc == 3 => {
                let name = self.arg(bytes, 2);
                if !valid_client_name(name) {
                    return err(BAD_CLIENT_NAME);
                }
                let name = String::from_utf8_lossy(name).into_owned();
                self.card.set(|p| p.name = name);
                ready(|o| simple(o, "OK"))
            }
            b"getname" if argc == 2 => {
                let name = self.card.profile().name;
                ready(|o| match name.is_empty() {
                    true => self.null(o),
                    false => bulk(o, name.as_bytes()),
                })
            }
            b"setinfo" if argc == 4 => {
                let value = self.arg(bytes, 3);
                if !valid_client_name(value) {
                    return err("ERR lib-name and lib-ver cannot contain spaces, newlines or special characters.");
                }
                let value = String::from_utf8_lossy(value).into_owned();
                match self.arg(bytes, 2).to_ascii_lowercase().as_slice() {
                    b"lib-name" => self.card.set(|p| p.lib_name = value),
                    b"lib-ver" => self.card.set(|p| p.lib_ver = value),
                    _ => {
                        return err(&format!(
                            "ERR Unrecognized option '{}'",
                            String::from_utf8_lossy(self.arg(bytes, 2))
                        ))
                    }
                }
                ready(|o| simple(o, "OK"))
            }
            b"id" if argc == 2 => ready(|o| integer(o, self.card.id as i64)),
            b"no-evict" | b"no-touch" if argc == 3 => {
                match self.arg(bytes, 2).to_ascii_lowercase().as_slice() {
                    b"on" | b"off" => ready(|o| simple(o, "OK")),
                    _ => err("ERR syntax error"),
                }
            }
            b"info" if argc == 2 => {
                let line = client_line(&self.card, std::time::Instant::now());
                ready(|o| self.text(o, line.as_bytes()))
            }
            b"list" => self.client_list(pool, bytes),
            b"setname" | b"getname" | b"setinfo" | b"id" | b"no-evict" | b"no-touch" | b"info" => wrong(),
            b"tracking" if argc >= 3 => self.client_tracking(pool, bytes),
            b"caching" if argc == 3 => self.client_caching(bytes),
            b"getredir" if argc == 2 => self.client_getredir(),
            b"trackinginfo" if argc == 2 => self.client_trackinginfo(),
            b"tracking" | b"caching" | b"getredir" | b"trackinginfo" => wrong(),
            b"reply" => err("ERR command 'client|reply' is not supported by the proxy: replies are matched to requests"),
            b"kill" | b"pause" | b"unpause" | b"unblock" | b"help" => {
                refused(&format!("client|{}", String::from_utf8_lossy(&sub)), Reason::Admin)
            }
            // As Redis, in the client's own spelling.
            _ => err(&format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(self.arg(bytes, 1))
            )),
        }
    }

    pub(super) fn auth(&mut self, pool: &PoolRt, user: Option<&[u8]>, password: &[u8]) -> Pending {
        match authenticate(pool.config(), user, password) {
            Ok(access) => {
                self.access = access;
                ready(|o| simple(o, "OK"))
            }
            Err(refusal) => {
                if refusal == Refusal::WrongPass {
                    let user = String::from_utf8_lossy(user.unwrap_or(b"default"));
                    let user: String = user.chars().take(64).collect();
                    pool.auth_failed(&user);
                }
                err(refusal.reply())
            }
        }
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`: switches the connection to
    /// RESP2 or RESP3 and answers as Redis does, with a live server's version.
    pub(super) fn hello(&mut self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        let argc = self.argc();
        let mut resp3 = self.resp3;
        if argc >= 2 {
            match self.arg(bytes, 1) {
                b"2" => resp3 = false,
                b"3" => resp3 = true,
                other => {
                    return match std::str::from_utf8(other)
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                    {
                        Some(_) => err("NOPROTO unsupported protocol version"),
                        None => err("ERR Protocol version is not an integer or out of range"),
                    }
                }
            }
        }
        let mut i = 2;
        let mut name = None;
        while i < argc {
            let option = self.arg(bytes, i).to_ascii_lowercase();
            match option.as_slice() {
                b"auth" if i + 2 < argc => {
                    let (user, pass) = (self.args[i + 1].clone(), self.args[i + 2].clone());
                    if let Pending::Ready(e) = self.auth(pool, Some(&bytes[user]), &bytes[pass]) {
                        if e.starts_with(b"-") {
                            return Pending::Ready(e);
                        }
                    }
                    i += 3;
                }
                b"setname" if i + 1 < argc => {
                    let given = self.arg(bytes, i + 1);
                    if !valid_client_name(given) {
                        return err(BAD_CLIENT_NAME);
                    }
                    name = Some(String::from_utf8_lossy(given).into_owned());
                    i += 2;
                }
                _ => {
                    return err(&format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(self.arg(bytes, i))
                    ))
                }
            }
        }
        if self.access == Access::None {
            return err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        self.resp3 = resp3;
        if !resp3 {
            // Invalidations are RESP3 pushes: a RESP2 client gets none.
            self.set_tracking(None);
        }
        self.card.set(|p| {
            p.resp3 = resp3;
            if let Some(name) = name {
                p.name = name;
            }
        });
        self.with_version(pool, VersionedReply::Hello { resp3 })
    }

    /// The `HELLO` reply: a map in RESP3, a flat array in RESP2.
    pub(super) fn hello_reply(&self, o: &mut Vec<u8>, pool: &PoolRt, resp3: bool) {
        let version = server_version(pool);
        let fields: [(&[u8], Field); 7] = [
            (b"server", Field::Text(b"redis")),
            (b"version", Field::Text(version.as_bytes())),
            (b"proto", Field::Number(if resp3 { 3 } else { 2 })),
            (b"id", Field::Number(self.card.id as i64)),
            (b"mode", Field::Text(b"standalone")),
            (b"role", Field::Text(b"master")),
            (b"modules", Field::Empty),
        ];
        if resp3 {
            map_header(o, fields.len());
        } else {
            array_header(o, fields.len() * 2);
        }
        for (key, value) in &fields {
            bulk(o, key);
            match value {
                Field::Text(t) => bulk(o, t),
                Field::Number(n) => integer(o, *n),
                Field::Empty => array_header(o, 0),
            }
        }
    }

    /// `COMMAND`, `COMMAND COUNT|LIST|INFO name...|DOCS`: the commands the proxy
    /// serves, each in the six-field form every client reads, with Redis's arity
    /// and key positions.
    pub(super) fn command(&self, pool: &PoolRt, bytes: &Bytes) -> Pending {
        let served = || COMMANDS.iter().filter(|c| c.is_served());
        let entry = |o: &mut Vec<u8>, c: &CommandSpec| {
            let (first, last, step) = c.keys;
            array_header(o, 6);
            bulk(o, c.name.as_bytes());
            integer(o, c.arity.into());
            array_header(o, 0);
            integer(o, first.into());
            integer(o, last.into());
            integer(o, step.into());
        };
        if self.argc() == 1 {
            return ready(|o| {
                array_header(o, served().count());
                served().for_each(|c| entry(o, c));
            });
        }
        match self.arg(bytes, 1).to_ascii_lowercase().as_slice() {
            b"count" if self.argc() == 2 => ready(|o| integer(o, served().count() as i64)),
            b"count" => wrong_arity("command|count"),
            // About the arguments alone: any server knows.
            b"getkeys" | b"getkeysandflags" => self.forward_any(pool, bytes),
            b"list" => ready(|o| {
                array_header(o, served().count());
                served().for_each(|c| bulk(o, c.name.as_bytes()));
            }),
            b"docs" => ready(|o| match self.resp3 {
                true => map_header(o, 0),
                false => array_header(o, 0),
            }),
            b"info" => ready(|o| {
                array_header(o, self.argc() - 2);
                for i in 2..self.argc() {
                    match lookup(self.arg(bytes, i)).filter(|c| c.is_served()) {
                        Some(c) => entry(o, c),
                        None if self.resp3 => null(o),
                        None => o.extend_from_slice(b"*-1\r\n"),
                    }
                }
            }),
            other => err(&format!(
                "ERR command 'command|{}' is not supported by the proxy: ask a server",
                String::from_utf8_lossy(other)
            )),
        }
    }
}

/// A value of the `HELLO` reply.
enum Field<'a> {
    Text(&'a [u8]),
    Number(i64),
    Empty,
}
