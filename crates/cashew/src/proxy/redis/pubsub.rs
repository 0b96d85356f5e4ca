//! Pub/sub: a channel lives on the server its name is placed on (the pool's hash
//! and distribution, so PUBLISH and SUBSCRIBE of a channel meet there); a shard
//! channel likewise. A subscriber gets a connection of its own to each server it
//! needs, opened with the pool's handshake; a pattern is subscribed on every
//! server, since a channel anywhere may match it, and each message still comes
//! once (it is published on one server).
//!
//! A (un)subscribe command's reply is its confirmations, in the order of its
//! arguments, once every server concerned has confirmed: so it comes in its place
//! among the client's replies, as from one Redis. The servers' confirmations carry
//! their own count of subscriptions; the client is shown its own (over all
//! servers), and a pattern's confirmation comes once, not once per server.
//! Messages go out between replies. A subscriber whose server connection is lost
//! is closed, so that it reconnects and subscribes again, as after losing a Redis;
//! so is one whose server has not confirmed within the pool's `timeout` (after
//! that error as the reply).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cashew_protocol::resp::{
    array_header, bulk, element_text, integer, is_error, null, null_bulk, parse_reply,
    reply_elements, PubSubCommand, ReplyParse,
};
use cashew_protocol::server::Redis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::session::PinSlot;
use super::{command, err, Client, Pending};
use crate::proxy::handoff::BackendError;
use crate::proxy::ids::ServerId;
use crate::proxy::pool::PoolRt;
use crate::proxy::server::{open_within, ServerLink};
use crate::state::counters::ServerCounter;

/// Frames a subscriber's connections may hold for it before they stop reading
/// their servers (whose output buffer limits then apply, as to a slow subscriber
/// of Redis).
const BACKLOG: usize = 1024;

enum Frame {
    Data(Bytes),
    /// A server connection ended, or could not be opened.
    Lost(BackendError),
}

struct Tunnel {
    /// The server's name: a reload may give it another place in the pool.
    server: String,
    commands: mpsc::UnboundedSender<Bytes>,
    _slot: PinSlot,
}

/// Channels, patterns and shard channels, each with when it was added: leaving
/// all of them confirms them in that order.
#[derive(Default)]
struct Subscriptions {
    added: u64,
    channels: HashMap<Bytes, u64>,
    patterns: HashMap<Bytes, u64>,
    shards: HashMap<Bytes, u64>,
}

impl Subscriptions {
    /// The set a command, confirmation or message of `kind` is about.
    fn set(&self, kind: &[u8]) -> &HashMap<Bytes, u64> {
        match kind {
            b"ssubscribe" | b"sunsubscribe" | b"smessage" => &self.shards,
            b"psubscribe" | b"punsubscribe" | b"pmessage" => &self.patterns,
            _ => &self.channels,
        }
    }

    fn set_mut(&mut self, kind: &[u8]) -> &mut HashMap<Bytes, u64> {
        match kind {
            b"ssubscribe" | b"sunsubscribe" | b"smessage" => &mut self.shards,
            b"psubscribe" | b"punsubscribe" | b"pmessage" => &mut self.patterns,
            _ => &mut self.channels,
        }
    }

    fn contains(&self, kind: &[u8], name: &[u8]) -> bool {
        self.set(kind).contains_key(name)
    }

    /// Adds or removes `name` as a command of `kind` does.
    fn apply(&mut self, kind: &[u8], name: &Bytes) {
        if is_leaving(kind) {
            self.set_mut(kind).remove(name);
        } else {
            self.added += 1;
            let added = self.added;
            self.set_mut(kind).entry(name.clone()).or_insert(added);
        }
    }

    /// What a confirmation of `kind` counts: shard channels apart, as Redis does.
    fn count(&self, kind: &[u8]) -> usize {
        match kind {
            b"ssubscribe" | b"sunsubscribe" => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    fn in_order(&self, kind: &[u8]) -> Vec<Bytes> {
        let mut names: Vec<(&Bytes, &u64)> = self.set(kind).iter().collect();
        names.sort_unstable_by_key(|(_, added)| **added);
        names.into_iter().map(|(name, _)| name.clone()).collect()
    }

    fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty() && self.shards.is_empty()
    }
}

fn is_leaving(kind: &[u8]) -> bool {
    kind.ends_with(b"unsubscribe")
}

/// One argument of a command: its confirmation, and how many servers are still
/// to confirm it.
struct Item {
    kind: &'static [u8],
    name: Option<Bytes>,
    servers_left: usize,
}

/// A command's confirmations, in the order of its arguments.
struct Owed {
    items: Vec<Item>,
    /// A server refused it: its error is the reply.
    refused: Option<Bytes>,
    sent: Instant,
}

impl Owed {
    fn waiting(&self) -> bool {
        self.refused.is_none() && self.items.iter().any(|i| i.servers_left > 0)
    }
}

/// A client's subscriptions and the connections that carry them.
pub(crate) struct Subscriber {
    tunnels: Vec<Tunnel>,
    frames: mpsc::Receiver<Frame>,
    sender: mpsc::Sender<Frame>,
    /// What the client has asked for, as of its last request: routes its
    /// unsubscribes and lets through only the messages it wants.
    asked: Subscriptions,
    /// What the confirmations it was given show: their counts.
    shown: Subscriptions,
    /// Commands whose confirmations are owed, oldest first.
    owed: VecDeque<Owed>,
    /// Messages, and anything else a server sent unasked, waiting for a moment
    /// between replies.
    messages: VecDeque<Bytes>,
    /// A server connection was lost, or did not confirm in time: the client is
    /// closed, after this error as the reply of a command waiting.
    lost: Option<BackendError>,
    /// Where each channel and shard channel was subscribed (its server's name),
    /// and the servers the patterns were: a reload that moves one closes the
    /// client, which subscribes again where they now are.
    homes: Vec<(&'static [u8], Bytes, String)>,
    pattern_homes: Vec<String>,
    /// The generation whose placement was last checked against `homes`.
    checked_generation: u64,
    /// The pool's `timeout`: how long a confirmation may take.
    timeout: Option<Duration>,
    /// Armed for the oldest command waiting, while the client waits for it.
    timer: Option<Pin<Box<Sleep>>>,
    /// Subscribed mode (RESP2): from a subscribe until no subscription is left.
    subscribed: bool,
    resp3: bool,
}

impl Subscriber {
    fn new(resp3: bool, timeout: Option<Duration>) -> Subscriber {
        let (sender, frames) = mpsc::channel(BACKLOG);
        Subscriber {
            tunnels: Vec::new(),
            frames,
            sender,
            asked: Subscriptions::default(),
            shown: Subscriptions::default(),
            owed: VecDeque::new(),
            messages: VecDeque::new(),
            lost: None,
            homes: Vec::new(),
            pattern_homes: Vec::new(),
            checked_generation: 0,
            timeout,
            timer: None,
            subscribed: false,
            resp3,
        }
    }

    /// After a (un)subscribe was sent: where the client's channels of its kind
    /// now live (`homes`), or the patterns' servers.
    fn note_homes(&mut self, pool: &PoolRt, command: PubSubCommand) {
        use PubSubCommand::*;
        let subscribed: &'static [u8] = match command {
            Subscribe | Unsubscribe => b"subscribe",
            Ssubscribe | Sunsubscribe => b"ssubscribe",
            Psubscribe | Punsubscribe => {
                self.pattern_homes = match self.asked.patterns.is_empty() {
                    true => Vec::new(),
                    false => pattern_servers(pool, self)
                        .iter()
                        .map(|&s| name_of(pool, s))
                        .collect(),
                };
                return;
            }
        };
        let asked = &self.asked;
        self.homes.retain(|(k, name, _)| asked.contains(k, name));
        for name in self.asked.in_order(subscribed) {
            if self
                .homes
                .iter()
                .any(|(k, n, _)| *k == subscribed && *n == name)
            {
                continue;
            }
            if let Some(server) = pool.route(&name) {
                self.homes.push((subscribed, name, name_of(pool, server)));
            }
        }
    }

    /// Whether a new generation placed one of the client's channels, or its
    /// patterns, on other servers than those it subscribed on. A Redis Cluster's
    /// nodes all hear every publish: nothing moves there.
    fn moved(&mut self, pool: &PoolRt) -> bool {
        if self.checked_generation == pool.generation.number {
            return false;
        }
        self.checked_generation = pool.generation.number;
        if pool.cluster().is_some() {
            return false;
        }
        let channel_moved = self.homes.iter().any(|(_, name, home)| {
            pool.route(name).map(|s| name_of(pool, s)).as_deref() != Some(home.as_str())
        });
        let patterns_moved = !self.pattern_homes.is_empty() && {
            let now: Vec<String> = pattern_servers(pool, self)
                .iter()
                .map(|&s| name_of(pool, s))
                .collect();
            now != self.pattern_homes
        };
        channel_moved || patterns_moved
    }

    /// Where the connection to the server named `name` is in `tunnels`.
    fn tunnel(&self, name: &str) -> Option<usize> {
        self.tunnels.iter().position(|t| t.server == name)
    }

    /// In RESP2's subscribed mode, where only subscriber commands are served.
    pub(super) fn in_subscribed_mode(&self) -> bool {
        self.subscribed && !self.resp3
    }

    /// A confirmation in the client's protocol with the client's count.
    fn confirmation(&self, out: &mut Vec<u8>, kind: &[u8], name: Option<&[u8]>) {
        if self.resp3 {
            out.extend_from_slice(b">3\r\n");
        } else {
            array_header(out, 3);
        }
        bulk(out, kind);
        match (name, self.resp3) {
            (Some(name), _) => bulk(out, name),
            (None, true) => null(out),
            (None, false) => null_bulk(out),
        }
        integer(out, self.shown.count(kind) as i64);
    }

    /// Takes a frame a server sent: a confirmation is counted for the oldest
    /// command that waits for it; a message is kept for the client if it wants it.
    fn take(&mut self, frame: Bytes) {
        if is_error(&frame) {
            // A server refused a command: the oldest one still waiting gets it.
            if let Some(owed) = self.owed.iter_mut().find(|o| o.waiting()) {
                owed.refused = Some(frame);
            }
            return;
        }
        let kind = reply_elements(&frame).and_then(|elements| {
            let kind = element_text(elements.first()?)?.to_ascii_lowercase();
            let name = elements
                .get(1)
                .and_then(|e| element_text(e))
                .map(Bytes::copy_from_slice);
            Some((kind, name))
        });
        let Some((kind, name)) = kind else {
            self.messages.push_back(frame);
            return;
        };
        match kind.as_slice() {
            b"message" | b"smessage" | b"pmessage" => {
                // Only what the client is subscribed to (a subscription a reload
                // moved away may still deliver for a while), or leaving and not
                // yet left: the server sent it before it confirmed the leaving.
                if name.is_some_and(|name| {
                    self.asked.contains(&kind, &name) || self.leaving(&kind, &name)
                }) {
                    self.messages.push_back(frame);
                }
            }
            b"subscribe" | b"ssubscribe" | b"psubscribe" | b"unsubscribe" | b"sunsubscribe"
            | b"punsubscribe" => {
                let item = self
                    .owed
                    .iter_mut()
                    .flat_map(|o| o.items.iter_mut())
                    .find(|i| i.servers_left > 0 && i.kind == kind.as_slice() && i.name == name);
                if let Some(item) = item {
                    item.servers_left -= 1;
                }
            }
            _ => self.messages.push_back(frame),
        }
    }

    /// Whether a command leaving what a message of `kind` named `name` is about
    /// still waits for a server's confirmation.
    fn leaving(&self, kind: &[u8], name: &[u8]) -> bool {
        let leave: &[u8] = match kind {
            b"smessage" => b"sunsubscribe",
            b"pmessage" => b"punsubscribe",
            _ => b"unsubscribe",
        };
        self.owed
            .iter()
            .flat_map(|o| &o.items)
            .any(|i| i.kind == leave && i.servers_left > 0 && i.name.as_deref() == Some(name))
    }

    /// Takes what the connections have sent, without waiting.
    fn take_sent(&mut self) {
        while let Ok(frame) = self.frames.try_recv() {
            match frame {
                Frame::Data(frame) => self.take(frame),
                Frame::Lost(error) => self.lose(error),
            }
        }
    }

    /// Ready when the oldest command waiting has waited for `timeout`: the
    /// subscriber is then lost.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(timeout), Some(oldest)) = (self.timeout, self.owed.front()) else {
            return Poll::Pending;
        };
        let deadline = oldest.sent + timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        self.lose(BackendError::TimedOut);
        Poll::Ready(())
    }

    /// The first loss is the one reported.
    fn lose(&mut self, error: BackendError) {
        self.lost.get_or_insert(error);
    }

    fn oldest_confirmed(&self) -> bool {
        self.lost.is_some() || self.owed.front().is_none_or(|o| !o.waiting())
    }

    /// The reply of the oldest command, confirmed: its confirmations with the
    /// client's counts, or a server's error, or why the subscriber was lost.
    fn reply_oldest(&mut self) -> Bytes {
        let Some(owed) = self.owed.pop_front() else {
            return Bytes::new();
        };
        if owed.waiting() {
            return self
                .lost
                .as_ref()
                .map_or_else(Bytes::new, BackendError::redis_reply);
        }
        if let Some(error) = owed.refused {
            return error;
        }
        let mut out = Vec::with_capacity(48 * owed.items.len());
        for item in &owed.items {
            if let Some(name) = &item.name {
                self.shown.apply(item.kind, name);
            }
            self.confirmation(&mut out, item.kind, item.name.as_deref());
        }
        out.into()
    }
}

/// The reply of a (un)subscribe command, owed until its servers confirm it.
pub(crate) struct Confirmations(Rc<RefCell<Subscriber>>);

// Apart from the common replies' path, which they would only lengthen.
impl Confirmations {
    #[cold]
    #[inline(never)]
    pub(super) fn try_settle(&mut self) -> bool {
        let mut sub = self.0.borrow_mut();
        sub.take_sent();
        sub.oldest_confirmed()
    }

    #[cold]
    #[inline(never)]
    pub(super) fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut sub = self.0.borrow_mut();
        while !sub.oldest_confirmed() {
            match sub.frames.poll_recv(cx) {
                Poll::Ready(Some(Frame::Data(frame))) => sub.take(frame),
                Poll::Ready(Some(Frame::Lost(error))) => sub.lose(error),
                // The subscriber holds a sender: never.
                Poll::Ready(None) | Poll::Pending => return sub.poll_deadline(cx),
            }
        }
        Poll::Ready(())
    }

    /// The reply, and whether the client is then closed: a server connection
    /// was lost or a server did not confirm in time.
    #[cold]
    #[inline(never)]
    pub(super) fn finish(self) -> (Bytes, bool) {
        let mut sub = self.0.borrow_mut();
        (sub.reply_oldest(), sub.lost.is_some())
    }
}

/// One server connection of a subscriber: writes the commands it is given, and
/// passes every frame the server sends, then why the connection ended.
async fn tunnel(
    link: ServerLink,
    commands: mpsc::UnboundedReceiver<Bytes>,
    out: mpsc::Sender<Frame>,
) {
    if let Err(error) = relay(&link, commands, &out).await {
        link.count_failure(&error);
        let _ = out.send(Frame::Lost(error)).await;
    }
}

/// Counts an open connection in the server's stats while it lives.
struct Connected<'a>(&'a ServerLink);

impl<'a> Connected<'a> {
    fn new(link: &'a ServerLink) -> Self {
        link.counters.add(ServerCounter::ServerConnections, 1);
        Connected(link)
    }
}

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.counters.sub(ServerCounter::ServerConnections, 1);
    }
}

/// Ends well when the subscriber leaves.
async fn relay(
    link: &ServerLink,
    mut commands: mpsc::UnboundedReceiver<Bytes>,
    out: &mpsc::Sender<Frame>,
) -> Result<(), BackendError> {
    let io_error = |e: std::io::Error| BackendError::from_io(&e);
    let stream = open_within::<Redis>(&link.settings, &link.health).await?;
    let _connected = Connected::new(link);
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        tokio::select! {
            command = commands.recv() => {
                // None: the subscriber left; the connection closes.
                let Some(command) = command else { return Ok(()) };
                writer.write_all(&command).await.map_err(io_error)?;
                writer.flush().await.map_err(io_error)?;
            }
            read = reader.read_buf(&mut buf) => {
                if read.map_err(io_error)? == 0 {
                    return Err(BackendError::Closed);
                }
                loop {
                    match parse_reply(&buf) {
                        ReplyParse::Complete(n) => {
                            let frame = buf.split_to(n).freeze();
                            if out.send(Frame::Data(frame)).await.is_err() {
                                return Ok(());
                            }
                        }
                        ReplyParse::Incomplete => break,
                        ReplyParse::Invalid => return Err(BackendError::Protocol),
                    }
                }
            }
        }
    }
}

/// The servers a pattern subscription goes to: every server that holds keyspace
/// (a channel is published on its own server; a replica would hear its master's
/// publishes again), but in a cluster, whose every node hears every publish, one
/// node: one the client already has a connection to, else the first live master.
fn pattern_servers(pool: &PoolRt, sub: &Subscriber) -> Vec<ServerId> {
    let masters = pool.keyspace_servers();
    if pool.cluster().is_none() {
        return (0..masters).map(ServerId).collect();
    }
    let servers = &pool.config().servers;
    let open = (0..masters).find(|&s| sub.tunnel(servers[s].name()).is_some());
    open.map(ServerId)
        .or_else(|| pool.first_live())
        .into_iter()
        .collect()
}

fn name_of(pool: &PoolRt, server: ServerId) -> String {
    pool.config().servers[server.0].name().to_string()
}

fn kind_name(command: PubSubCommand) -> &'static [u8] {
    match command {
        PubSubCommand::Subscribe => b"subscribe",
        PubSubCommand::Unsubscribe => b"unsubscribe",
        PubSubCommand::Psubscribe => b"psubscribe",
        PubSubCommand::Punsubscribe => b"punsubscribe",
        PubSubCommand::Ssubscribe => b"ssubscribe",
        PubSubCommand::Sunsubscribe => b"sunsubscribe",
    }
}

impl Client {
    pub(super) fn in_subscribed_mode(&self) -> bool {
        self.subscriber
            .as_ref()
            .is_some_and(|s| s.borrow().in_subscribed_mode())
    }

    /// Sends `request` on the client's own connection to `server`, opening it.
    fn send_to_server(
        &self,
        pool: &PoolRt,
        sub: &mut Subscriber,
        server: ServerId,
        request: Bytes,
    ) -> Result<(), Pending> {
        let name = pool.config().servers[server.0].name();
        let at = match sub.tunnel(name) {
            Some(at) => at,
            None => {
                let slot = PinSlot::take(pool)?;
                let (commands, receiver) = mpsc::unbounded_channel();
                // With the pool's timeout: it bounds the opening alone, as the
                // connection is read without one.
                let link = pool.private_link(server, self.resp3, false);
                pool.spawn_private(tunnel(link, receiver, sub.sender.clone()));
                sub.tunnels.push(Tunnel {
                    server: name.to_string(),
                    commands,
                    _slot: slot,
                });
                sub.tunnels.len() - 1
            }
        };
        let _ = sub.tunnels[at].commands.send(request);
        Ok(())
    }

    /// SUBSCRIBE, UNSUBSCRIBE and their pattern and shard forms: sent to the
    /// servers concerned; the reply is their confirmations, once all have come.
    pub(super) fn pubsub(
        &mut self,
        pool: &PoolRt,
        command: PubSubCommand,
        bytes: &Bytes,
    ) -> Pending {
        use PubSubCommand::*;
        let config = pool.config();
        let timeout = config
            .timeout_ms
            .filter(|&t| t > 0)
            .map(Duration::from_millis);
        let rc = self
            .subscriber
            .get_or_insert_with(|| {
                let mut sub = Subscriber::new(self.resp3, timeout);
                sub.checked_generation = pool.generation.number;
                Rc::new(RefCell::new(sub))
            })
            .clone();
        let mut sub = rc.borrow_mut();
        let kind = kind_name(command);
        let args: Vec<Bytes> = (1..self.argc())
            .map(|i| Bytes::copy_from_slice(self.arg(bytes, i)))
            .collect();
        let item = |name: &Bytes, servers_left| Item {
            kind,
            name: Some(name.clone()),
            servers_left,
        };
        let sent = match command {
            Subscribe | Ssubscribe => {
                let items = args.iter().map(|n| item(n, 1)).collect();
                self.by_server(pool, &mut sub, kind, &args).map(|()| items)
            }
            Psubscribe => {
                let targets = pattern_servers(pool, &sub);
                if targets.is_empty() {
                    return self.no_server(pool);
                }
                let items = args.iter().map(|n| item(n, targets.len())).collect();
                targets
                    .into_iter()
                    .try_for_each(|s| self.send_to_server(pool, &mut sub, s, bytes.clone()))
                    .map(|()| items)
            }
            Unsubscribe | Sunsubscribe | Punsubscribe => {
                let names = match args.is_empty() {
                    true => sub.asked.in_order(kind),
                    false => args,
                };
                let known: Vec<Bytes> = names
                    .iter()
                    .filter(|n| sub.asked.contains(kind, n))
                    .cloned()
                    .collect();
                let tunnels = sub.tunnels.len();
                let items: Vec<Item> = match names.is_empty() {
                    // Nothing to leave: Redis confirms with no name.
                    true => vec![Item {
                        kind,
                        name: None,
                        servers_left: 0,
                    }],
                    false => names
                        .iter()
                        .map(|n| match (known.contains(n), command) {
                            (false, _) => item(n, 0),
                            (true, Punsubscribe) => item(n, tunnels),
                            (true, _) => item(n, 1),
                        })
                        .collect(),
                };
                let sent = match (known.is_empty(), command) {
                    (true, _) => Ok(()),
                    (false, Punsubscribe) => {
                        let refs: Vec<&[u8]> = known.iter().map(|n| &n[..]).collect();
                        let request = super::command(kind, &refs);
                        for tunnel in &sub.tunnels {
                            let _ = tunnel.commands.send(request.clone());
                        }
                        Ok(())
                    }
                    (false, _) => self.by_server(pool, &mut sub, kind, &known),
                };
                sent.map(|()| items)
            }
        };
        let items = match sent {
            Ok(items) => items,
            Err(reply) => return reply,
        };
        for i in &items {
            if let Some(name) = &i.name {
                sub.asked.apply(kind, name);
            }
        }
        sub.note_homes(pool, command);
        // Subscribed mode starts with a subscribe and ends when nothing is left,
        // in the order of the client's requests.
        sub.subscribed = !sub.asked.is_empty();
        sub.owed.push_back(Owed {
            items,
            refused: None,
            sent: Instant::now(),
        });
        drop(sub);
        Pending::PubSub(Confirmations(rc))
    }

    /// Sends `name` with each of `channels` to the server the channel is on.
    fn by_server(
        &self,
        pool: &PoolRt,
        sub: &mut Subscriber,
        name: &[u8],
        channels: &[Bytes],
    ) -> Result<(), Pending> {
        let mut groups: Vec<(ServerId, Vec<&[u8]>)> = Vec::new();
        for channel in channels {
            let Some(server) = pool.route(channel) else {
                return Err(self.no_server(pool));
            };
            match groups.iter_mut().find(|(s, _)| *s == server) {
                Some((_, list)) => list.push(channel),
                None => groups.push((server, vec![channel])),
            }
        }
        for (server, list) in groups {
            self.send_to_server(pool, sub, server, command(name, &list))?;
        }
        Ok(())
    }

    /// PING in RESP2's subscribed mode: `pong` and the argument, as Redis answers.
    pub(super) fn subscribed_ping(&self, bytes: &Bytes) -> Pending {
        let mut out = Vec::new();
        array_header(&mut out, 2);
        bulk(&mut out, b"pong");
        bulk(
            &mut out,
            if self.argc() > 1 {
                self.arg(bytes, 1)
            } else {
                b""
            },
        );
        Pending::Ready(out.into())
    }

    pub(super) fn not_in_subscribed_mode(&self, name: &str) -> Pending {
        err(&format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ))
    }

    /// A message for the client, asked for only while no reply is owed.
    pub(super) fn poll_subscriber(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let Some(rc) = &self.subscriber else {
            return Poll::Pending;
        };
        let mut sub = rc.borrow_mut();
        if sub.moved(&self.slot.pool()) {
            // Closed as when its server is lost: the client subscribes again.
            sub.lose(BackendError::Closed);
        }
        loop {
            if let Some(message) = sub.messages.pop_front() {
                return Poll::Ready(Some(message));
            }
            if sub.lost.is_some() {
                return Poll::Ready(None);
            }
            match sub.frames.poll_recv(cx) {
                Poll::Ready(Some(Frame::Data(frame))) => sub.take(frame),
                Poll::Ready(Some(Frame::Lost(error))) => sub.lose(error),
                // The subscriber holds a sender: never.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str, name: &str, n: i64) -> Bytes {
        let mut out = Vec::new();
        array_header(&mut out, 3);
        bulk(&mut out, kind.as_bytes());
        bulk(&mut out, name.as_bytes());
        integer(&mut out, n);
        out.into()
    }

    fn owe(sub: &mut Subscriber, kind: &'static [u8], names: &[(&str, usize)]) {
        let items = names
            .iter()
            .map(|&(name, servers_left)| Item {
                kind,
                name: Some(Bytes::copy_from_slice(name.as_bytes())),
                servers_left,
            })
            .collect();
        for &(name, _) in names {
            sub.asked
                .apply(kind, &Bytes::copy_from_slice(name.as_bytes()));
        }
        sub.owed.push_back(Owed {
            items,
            refused: None,
            sent: Instant::now(),
        });
    }

    #[test]
    fn confirmations_come_in_the_arguments_order_with_the_clients_count() {
        let mut sub = Subscriber::new(false, None);
        // SUBSCRIBE a b (on two servers), then PSUBSCRIBE n* (on all three).
        owe(&mut sub, b"subscribe", &[("a", 1), ("b", 1)]);
        owe(&mut sub, b"psubscribe", &[("n*", 3)]);
        // b's server answers first; then a message of b, before a's confirmation.
        sub.take(frame("subscribe", "b", 1));
        let mut message = Vec::new();
        array_header(&mut message, 3);
        bulk(&mut message, b"message");
        bulk(&mut message, b"b");
        bulk(&mut message, b"hello");
        sub.take(message.clone().into());
        assert!(!sub.oldest_confirmed(), "a is not confirmed yet");
        sub.take(frame("subscribe", "a", 1));
        assert!(sub.oldest_confirmed());
        let reply = sub.reply_oldest();
        assert_eq!(
            &reply[..],
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
        );
        // The pattern is confirmed once, after every server did.
        sub.take(frame("psubscribe", "n*", 3));
        sub.take(frame("psubscribe", "n*", 1));
        assert!(!sub.oldest_confirmed());
        sub.take(frame("psubscribe", "n*", 2));
        let reply = sub.reply_oldest();
        assert!(reply.ends_with(b"$2\r\nn*\r\n:3\r\n"), "{reply:?}");
        // The message waited for a moment between replies; one of a channel the
        // client did not ask for is dropped.
        let stray = String::from_utf8(message.clone())
            .unwrap()
            .replace("$1\r\nb\r\n", "$1\r\nz\r\n");
        sub.take(stray.into());
        assert_eq!(sub.messages.len(), 1);
        assert_eq!(&sub.messages[0][..], &message[..]);
    }

    #[test]
    fn a_servers_error_is_the_reply_of_the_command_waiting() {
        let mut sub = Subscriber::new(true, None);
        owe(&mut sub, b"subscribe", &[("a", 1)]);
        sub.take(Bytes::from_static(
            b"-NOPERM no permissions to access a channel\r\n",
        ));
        assert!(sub.oldest_confirmed());
        let reply = sub.reply_oldest();
        assert!(reply.starts_with(b"-NOPERM"));
    }

    #[test]
    fn leaving_everything_confirms_in_the_order_of_joining() {
        let mut s = Subscriptions::default();
        for name in ["c", "a", "b"] {
            s.apply(b"subscribe", &Bytes::from(name));
        }
        s.apply(b"unsubscribe", &Bytes::from("a"));
        assert_eq!(
            s.in_order(b"unsubscribe"),
            vec![Bytes::from("c"), Bytes::from("b")]
        );
        assert_eq!(s.count(b"subscribe"), 2);
    }
}
