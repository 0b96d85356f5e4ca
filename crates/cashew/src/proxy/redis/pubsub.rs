//! Pub/sub: a channel lives on the server its name is placed on (the pool's hash
//! and distribution, so PUBLISH and SUBSCRIBE of a channel meet there); a shard
//! channel likewise. A subscriber gets a connection of its own to each server it
//! needs, opened with the pool's handshake; a pattern is subscribed on every
//! server, since a channel anywhere may match it, and each message still comes
//! once (it is published on one server).
//!
//! The servers' confirmations carry their own count of subscriptions; the client
//! is shown its own (over all servers), and a pattern's confirmation comes once,
//! not once per server. A subscriber whose server connection is lost is closed,
//! so that it reconnects and subscribes again, as after losing a Redis.

use std::collections::{HashSet, VecDeque};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cashew_protocol::resp::{
    array_header, bulk, element_text, integer, null, null_bulk, parse_reply, reply_elements,
    PubSubCommand, ReplyParse,
};
use cashew_protocol::server::Redis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::session::PinSlot;
use super::{err, Client, Pending};
use crate::proxy::ids::ServerId;
use crate::proxy::pool::PoolRt;
use crate::proxy::server::{open, ServerLink};

/// Frames a subscriber's connections may hold for it before they stop reading
/// their servers (whose output buffer limits then apply, as to a slow subscriber
/// of Redis).
const BACKLOG: usize = 1024;

enum Frame {
    Data(Bytes),
    /// A server connection ended.
    Lost,
}

struct Tunnel {
    commands: mpsc::UnboundedSender<Bytes>,
    _slot: PinSlot,
}

/// A client's subscriptions and the connections that carry them.
pub(crate) struct Subscriber {
    tunnels: Vec<Option<Tunnel>>,
    frames: mpsc::Receiver<Frame>,
    sender: mpsc::Sender<Frame>,
    /// Confirmations made here (of what no server needs to hear).
    local: VecDeque<Bytes>,
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shards: HashSet<Bytes>,
    /// Subscribed mode (RESP2): from a subscribe until no subscription is left.
    subscribed: bool,
    resp3: bool,
}

impl Subscriber {
    fn new(servers: usize, resp3: bool) -> Subscriber {
        let (sender, frames) = mpsc::channel(BACKLOG);
        Subscriber {
            tunnels: (0..servers).map(|_| None).collect(),
            frames,
            sender,
            local: VecDeque::new(),
            channels: HashSet::new(),
            patterns: HashSet::new(),
            shards: HashSet::new(),
            subscribed: false,
            resp3,
        }
    }

    /// In RESP2's subscribed mode, where only subscriber commands are served.
    pub(super) fn in_subscribed_mode(&self) -> bool {
        self.subscribed && !self.resp3
    }

    fn count(&self, kind: &[u8]) -> usize {
        match kind {
            b"ssubscribe" | b"sunsubscribe" => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    fn set(&mut self, kind: &[u8]) -> &mut HashSet<Bytes> {
        match kind {
            b"ssubscribe" | b"sunsubscribe" | b"smessage" => &mut self.shards,
            b"psubscribe" | b"punsubscribe" | b"pmessage" => &mut self.patterns,
            _ => &mut self.channels,
        }
    }

    /// A confirmation in the client's protocol with the client's count.
    fn confirmation(&self, kind: &[u8], name: Option<&[u8]>) -> Bytes {
        let mut out = Vec::with_capacity(48);
        if self.resp3 {
            out.extend_from_slice(b">3\r\n");
        } else {
            array_header(&mut out, 3);
        }
        bulk(&mut out, kind);
        match (name, self.resp3) {
            (Some(name), _) => bulk(&mut out, name),
            (None, true) => null(&mut out),
            (None, false) => null_bulk(&mut out),
        }
        integer(&mut out, self.count(kind) as i64);
        out.into()
    }

    /// What the client gets of a frame a server pushed, if anything.
    fn process(&mut self, frame: Bytes) -> Option<Bytes> {
        let Some(elements) = reply_elements(&frame) else {
            return Some(frame);
        };
        let Some(kind) = elements.first().and_then(|e| element_text(e)) else {
            return Some(frame);
        };
        let kind = kind.to_ascii_lowercase();
        let name = elements
            .get(1)
            .and_then(|e| element_text(e))
            .map(Bytes::copy_from_slice);
        match kind.as_slice() {
            b"message" | b"smessage" | b"pmessage" => {
                // Only what the client is subscribed to (a subscription a reload
                // moved away may still deliver for a while).
                let name = name?;
                self.set(&kind).contains(&name).then_some(frame)
            }
            b"subscribe" | b"ssubscribe" | b"psubscribe" => {
                let name = name?;
                let new = self.set(&kind).insert(name.clone());
                // A pattern is confirmed by every server: the first one counts.
                (new || kind != b"psubscribe").then(|| self.confirmation(&kind, Some(&name)))
            }
            b"unsubscribe" | b"sunsubscribe" | b"punsubscribe" => {
                let name = name?;
                if !self.set(&kind).remove(&name) {
                    return None;
                }
                let reply = self.confirmation(&kind, Some(&name));
                if self.channels.is_empty() && self.patterns.is_empty() && self.shards.is_empty() {
                    self.subscribed = false;
                }
                Some(reply)
            }
            _ => Some(frame),
        }
    }
}

/// One server connection of a subscriber: writes the commands it is given, and
/// passes every frame the server sends.
async fn tunnel(
    link: ServerLink,
    mut commands: mpsc::UnboundedReceiver<Bytes>,
    out: mpsc::Sender<Frame>,
) {
    let Ok(stream) = open::<Redis>(&link.settings, &link.health).await else {
        let _ = out.send(Frame::Lost).await;
        return;
    };
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        tokio::select! {
            command = commands.recv() => {
                // None: the subscriber left; the connection closes.
                let Some(command) = command else { return };
                if writer.write_all(&command).await.is_err() || writer.flush().await.is_err() {
                    let _ = out.send(Frame::Lost).await;
                    return;
                }
            }
            read = reader.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    let _ = out.send(Frame::Lost).await;
                    return;
                }
                loop {
                    match parse_reply(&buf) {
                        ReplyParse::Complete(n) => {
                            let frame = buf.split_to(n).freeze();
                            if out.send(Frame::Data(frame)).await.is_err() {
                                return;
                            }
                        }
                        ReplyParse::Incomplete => break,
                        ReplyParse::Invalid => {
                            let _ = out.send(Frame::Lost).await;
                            return;
                        }
                    }
                }
            }
        }
    }
}

fn request(name: &[u8], args: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    array_header(&mut out, 1 + args.len());
    bulk(&mut out, name);
    for a in args {
        bulk(&mut out, a);
    }
    out.into()
}

impl Client {
    pub(super) fn in_subscribed_mode(&self) -> bool {
        self.subscriber
            .as_ref()
            .is_some_and(|s| s.in_subscribed_mode())
    }

    /// Sends `request` on the client's own connection to `server`, opening it.
    fn send_to_server(
        &mut self,
        pool: &PoolRt,
        server: ServerId,
        request: Bytes,
    ) -> Result<(), Pending> {
        let sub = self.subscriber.as_mut().expect("a subscriber");
        if sub.tunnels[server.0].is_none() {
            let slot = PinSlot::take(pool)?;
            let (commands, receiver) = mpsc::unbounded_channel();
            let link = pool.private_link(server, self.resp3, true);
            pool.spawn_private(tunnel(link, receiver, sub.sender.clone()));
            sub.tunnels[server.0] = Some(Tunnel {
                commands,
                _slot: slot,
            });
        }
        if let Some(tunnel) = &sub.tunnels[server.0] {
            let _ = tunnel.commands.send(request);
        }
        Ok(())
    }

    /// SUBSCRIBE, UNSUBSCRIBE and their pattern and shard forms. Their
    /// confirmations come as pushes; nothing is queued for them.
    pub(super) fn pubsub(
        &mut self,
        pool: &PoolRt,
        command: PubSubCommand,
        bytes: &Bytes,
    ) -> Pending {
        use PubSubCommand::*;
        let servers = pool.config().servers.len();
        if self.subscriber.is_none() {
            self.subscriber = Some(Box::new(Subscriber::new(servers, self.resp3)));
        }
        let name = self.arg(bytes, 0).to_ascii_lowercase();
        let args: Vec<Bytes> = (1..self.argc())
            .map(|i| Bytes::copy_from_slice(self.arg(bytes, i)))
            .collect();
        let result = match command {
            Subscribe | Ssubscribe => {
                if let Some(sub) = self.subscriber.as_mut() {
                    sub.subscribed = true;
                }
                self.by_server(pool, &name, &args)
            }
            Psubscribe => {
                if let Some(sub) = self.subscriber.as_mut() {
                    sub.subscribed = true;
                }
                (0..servers).try_for_each(|s| self.send_to_server(pool, ServerId(s), bytes.clone()))
            }
            Unsubscribe | Sunsubscribe | Punsubscribe => {
                let sub = self.subscriber.as_mut().expect("a subscriber");
                let kind = name.as_slice();
                let held: Vec<Bytes> = match args.is_empty() {
                    true => sub.set(kind).iter().cloned().collect(),
                    false => args,
                };
                if held.is_empty() {
                    // Nothing to leave: Redis confirms with no name.
                    let reply = sub.confirmation(kind, None);
                    sub.local.push_back(reply);
                    return Pending::Ready(Bytes::new());
                }
                let (known, unknown): (Vec<Bytes>, Vec<Bytes>) =
                    held.into_iter().partition(|n| sub.set(kind).contains(n));
                for n in unknown {
                    let reply = sub.confirmation(kind, Some(&n));
                    sub.local.push_back(reply);
                }
                if command == Punsubscribe {
                    let refs: Vec<&[u8]> = known.iter().map(|n| &n[..]).collect();
                    let request = request(&name, &refs);
                    (0..servers).try_for_each(|s| {
                        match self
                            .subscriber
                            .as_ref()
                            .is_some_and(|sub| sub.tunnels[s].is_some())
                        {
                            true => self.send_to_server(pool, ServerId(s), request.clone()),
                            false => Ok(()),
                        }
                    })
                } else {
                    self.by_server(pool, &name, &known)
                }
            }
        };
        match result {
            Ok(()) => Pending::Ready(Bytes::new()),
            Err(reply) => reply,
        }
    }

    /// Sends `name` with each of `channels` to the server the channel is on.
    fn by_server(&mut self, pool: &PoolRt, name: &[u8], channels: &[Bytes]) -> Result<(), Pending> {
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
            self.send_to_server(pool, server, request(name, &list))?;
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

    pub(super) fn poll_subscriber(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let Some(sub) = self.subscriber.as_mut() else {
            return Poll::Pending;
        };
        if let Some(reply) = sub.local.pop_front() {
            return Poll::Ready(Some(reply));
        }
        loop {
            match sub.frames.poll_recv(cx) {
                Poll::Ready(Some(Frame::Data(frame))) => {
                    if let Some(out) = sub.process(frame) {
                        return Poll::Ready(Some(out));
                    }
                }
                Poll::Ready(Some(Frame::Lost)) => return Poll::Ready(None),
                // The subscriber holds a sender: never.
                Poll::Ready(None) => return Poll::Pending,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_carry_the_clients_count_and_patterns_come_once() {
        let mut sub = Subscriber::new(3, false);
        let from = |kind: &str, name: &str, n: i64| -> Bytes {
            let mut out = Vec::new();
            array_header(&mut out, 3);
            bulk(&mut out, kind.as_bytes());
            bulk(&mut out, name.as_bytes());
            integer(&mut out, n);
            out.into()
        };
        let a = sub.process(from("subscribe", "a", 1)).unwrap();
        assert_eq!(&a[..], b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
        // b is on another server, which counts 1 too: the client has 2.
        let b = sub.process(from("subscribe", "b", 1)).unwrap();
        assert!(b.ends_with(b":2\r\n"));
        let p = sub.process(from("psubscribe", "n*", 2)).unwrap();
        assert!(p.ends_with(b":3\r\n"));
        assert!(sub.process(from("psubscribe", "n*", 1)).is_none(), "once");
        assert!(sub.process(from("psubscribe", "n*", 1)).is_none(), "once");
        // Messages of what the client is subscribed to only.
        let mut message = Vec::new();
        array_header(&mut message, 3);
        bulk(&mut message, b"message");
        bulk(&mut message, b"a");
        bulk(&mut message, b"hello");
        assert!(sub.process(message.clone().into()).is_some());
        let stray = String::from_utf8(message)
            .unwrap()
            .replace("$1\r\na\r\n", "$1\r\nz\r\n");
        assert!(sub.process(stray.into()).is_none());
        let u = sub.process(from("unsubscribe", "a", 0)).unwrap();
        assert!(u.ends_with(b":2\r\n"));
        assert!(sub
            .process(from("punsubscribe", "n*", 0))
            .unwrap()
            .ends_with(b":1\r\n"));
        assert!(sub.process(from("punsubscribe", "n*", 0)).is_none());
        assert!(sub.subscribed || !sub.channels.is_empty());
    }
}
