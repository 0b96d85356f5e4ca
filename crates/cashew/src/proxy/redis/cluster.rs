//! Redis Cluster pools: requests follow the cluster's redirections before their
//! reply is the client's (MOVED: to the slot's new owner, and the map is read
//! again; ASK: `ASKING` and the request to the importing node, once; TRYAGAIN and
//! CLUSTERDOWN: again after a short wait), at most [`MAX_REDIRECTS`] times and
//! within the pool's timeout; a request its node refused a connection for (it was
//! never sent) waits for the map to name the slot's new master; and the `CLUSTER` commands a cluster-aware client
//! asks are answered as by one node that owns every slot: cashew.

use std::cell::RefCell;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cashew_protocol::resp::{
    array_header, bulk, error, integer, parse_redirect, simple, CommandSpec, Redirect,
};
use cashew_route::{cluster_slot, SLOTS};

use super::tracking::{send_on, Tracker};
use super::{err, Client, Pending};
use crate::proxy::client::{self, Follow, Part};
use crate::proxy::handoff::{BackendError, Reply, ReplyRx};
use crate::proxy::ids::{ClientId, ServerId};
use crate::proxy::pool::{PoolRt, PoolSlot};
use crate::state::cluster::request_refresh;
use crate::state::counters::PoolCounter;
use cashew_protocol::resp::Effect;

/// Most redirections one request follows.
const MAX_REDIRECTS: u8 = 5;
/// How long a request may keep following without a `timeout` on the pool.
const DEFAULT_PATIENCE: Duration = Duration::from_secs(2);
/// The wait before a request refused a connection is sent again.
const UNREACHABLE_WAIT: Duration = Duration::from_millis(100);
/// The first wait after TRYAGAIN or CLUSTERDOWN, doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);

/// Where a request goes next.
enum Next {
    /// The node at this address (`ASKING` first when `ask`).
    Node { address: String, ask: bool },
    /// The owner of the key's slot in the map in force then.
    Owner,
}

/// A request to a cluster pool, until its reply is not a redirection. Kept small
/// (it is allocated for every request): what following takes is allocated only
/// when a redirection comes.
pub(crate) struct Following {
    slot: Rc<PoolSlot>,
    bytes: Bytes,
    rx: Option<ReplyRx>,
    client: ClientId,
    /// The slot of the key that places the request.
    slot_of_key: u16,
    resp3: bool,
    /// The client's tracking connections, which a tracking client's requests
    /// follow redirections on.
    tracking: Option<Tracker>,
    redirected: Option<Box<Redirected>>,
}

/// A request that was redirected at least once.
struct Redirected {
    redirects: u8,
    until: Instant,
    next: Next,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    last_redirect: Option<Bytes>,
    done: Option<Reply>,
}

impl Following {
    fn pool(&self) -> Rc<PoolRt> {
        self.slot.pool().clone()
    }

    /// Whether the reply has come and is the client's (a redirection is followed).
    fn advance(&mut self, mut cx: Option<&mut Context<'_>>) -> bool {
        loop {
            if let Some(r) = &mut self.redirected {
                if r.done.is_some() {
                    return true;
                }
                if let Some(wait) = &mut r.wait {
                    let waited = match cx.as_deref_mut() {
                        Some(cx) => wait.as_mut().poll(cx).is_ready(),
                        None => wait.is_elapsed(),
                    };
                    if !waited {
                        return false;
                    }
                    r.wait = None;
                    self.send_next();
                    continue;
                }
            }
            let Some(rx) = &mut self.rx else {
                self.finish(Err(BackendError::Closed));
                return true;
            };
            let ready = match cx.as_deref_mut() {
                Some(cx) => rx.poll_ready(cx).is_ready(),
                None => rx.is_ready(),
            };
            if !ready {
                return false;
            }
            // The common case: a reply that is not an error is the client's, left
            // where it is until taken.
            if !rx.is_error() && self.redirected.is_none() {
                return true;
            }
            let reply = rx.try_recv().unwrap_or(Err(BackendError::Closed));
            self.rx = None;
            let redirect = match &reply {
                Ok(bytes) => parse_redirect(bytes).map(|r| (r, bytes.clone())),
                Err(_) => None,
            };
            match (redirect, &reply) {
                (Some((redirect, bytes)), _) if self.may_follow() => {
                    self.follow(redirect, bytes);
                }
                (_, Err(BackendError::Io(std::io::ErrorKind::ConnectionRefused)))
                    if self.in_time() =>
                {
                    // Never sent: a master that is gone. Its replica takes over
                    // within the cluster's failover time; the request waits for the
                    // map that says so, within its timeout.
                    request_refresh();
                    self.redirect().next = Next::Owner;
                    self.wait_then_send(UNREACHABLE_WAIT);
                }
                (_, Err(_)) => {
                    // A node that fails may be a master that failed over.
                    request_refresh();
                    self.finish(reply);
                }
                _ => self.finish(reply),
            }
        }
    }

    /// The redirection state, made at the first redirection.
    fn redirect(&mut self) -> &mut Redirected {
        let patience = self
            .slot
            .pool()
            .config()
            .timeout_ms
            .filter(|&t| t > 0)
            .map_or(DEFAULT_PATIENCE, Duration::from_millis);
        self.redirected.get_or_insert_with(|| {
            Box::new(Redirected {
                redirects: 0,
                until: Instant::now() + patience,
                next: Next::Owner,
                wait: None,
                last_redirect: None,
                done: None,
            })
        })
    }

    fn in_time(&mut self) -> bool {
        Instant::now() < self.redirect().until
    }

    fn may_follow(&mut self) -> bool {
        self.redirect().redirects < MAX_REDIRECTS && self.in_time()
    }

    fn finish(&mut self, reply: Reply) {
        self.redirect().done = Some(reply);
    }

    fn follow(&mut self, redirect: Redirect<'_>, reply: Bytes) {
        let pool = self.pool();
        let stats = pool.pool_stats();
        let r = self.redirect();
        r.redirects += 1;
        r.last_redirect = Some(reply);
        match redirect {
            Redirect::Moved { address, .. } => {
                stats.add(PoolCounter::ClusterMoved, 1);
                request_refresh();
                r.next = Next::Node {
                    address: address.to_string(),
                    ask: false,
                };
                self.send_next();
            }
            Redirect::Ask { address, .. } => {
                stats.add(PoolCounter::ClusterAsk, 1);
                r.next = Next::Node {
                    address: address.to_string(),
                    ask: true,
                };
                self.send_next();
            }
            Redirect::TryAgain | Redirect::ClusterDown => {
                stats.add(PoolCounter::ClusterRetries, 1);
                if matches!(redirect, Redirect::ClusterDown) {
                    request_refresh();
                }
                r.next = Next::Owner;
                let wait = FIRST_BACKOFF * (1 << r.redirects.min(5));
                self.wait_then_send(wait);
            }
        }
    }

    /// Sends the request where `next` says, or waits for the map to name the node.
    fn send_next(&mut self) {
        let pool = self.pool();
        let slot_of_key = self.slot_of_key;
        let r = self.redirect();
        let (server, ask) = match &r.next {
            Next::Node { address, ask } => (pool.server_named(address), *ask),
            Next::Owner => (
                pool.cluster()
                    .and_then(|c| c.slots.owner(slot_of_key))
                    .map(|s| ServerId(usize::from(s))),
                false,
            ),
        };
        let Some(server) = server else {
            // A node the map does not have yet: read it again and wait for it.
            if !self.in_time() {
                self.give_up();
                return;
            }
            request_refresh();
            self.wait_then_send(Duration::from_millis(20));
            return;
        };
        let (client, resp3, tracking) = (self.client, self.resp3, self.tracking.as_ref());
        if ask {
            let asking = Bytes::from_static(b"*1\r\n$6\r\nASKING\r\n");
            send_on(tracking, &pool, server, client, asking, resp3, false);
        }
        self.rx = send_on(
            tracking,
            &pool,
            server,
            client,
            self.bytes.clone(),
            resp3,
            true,
        );
    }

    fn wait_then_send(&mut self, wait: Duration) {
        let r = self.redirect();
        let left = r.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.give_up();
            return;
        }
        r.wait = Some(Box::pin(tokio::time::sleep(wait.min(left))));
    }

    /// Out of time: the client gets the last redirection (what a cluster-aware
    /// client would have had to follow).
    fn give_up(&mut self) {
        let r = self.redirect();
        r.done = Some(r.last_redirect.clone().ok_or(BackendError::NoServer));
    }
}

impl Follow for Following {
    fn try_settle(&mut self) -> bool {
        self.advance(None)
    }

    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.advance(Some(cx)) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    fn take(&mut self) -> Reply {
        if let Some(done) = self.redirected.as_mut().and_then(|r| r.done.take()) {
            return done;
        }
        self.rx
            .take()
            .and_then(|mut rx| rx.try_recv())
            .unwrap_or(Err(BackendError::Closed))
    }

    fn recycle(self: Box<Self>) {
        let raw = Box::into_raw(self);
        // SAFETY: `raw` comes from a `Box<Following>`: its value is dropped here,
        // once, and the allocation is kept as uninitialised memory of its layout.
        let spare = unsafe {
            std::ptr::drop_in_place(raw);
            Box::from_raw(raw.cast::<MaybeUninit<Following>>())
        };
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < MAX_SPARE {
                s.push(spare);
            }
        });
    }
}

thread_local! {
    /// Allocations of finished requests, reused by the next ones: a cluster pool
    /// allocates one per request, and this worker's allocator would otherwise
    /// take them from and give them back to its shared bins each time.
    // The boxes themselves are what is kept: `Vec<MaybeUninit<..>>` would not be.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<MaybeUninit<Following>>>> = const { RefCell::new(Vec::new()) };
}
/// Most allocations kept per worker (about 80 bytes each).
const MAX_SPARE: usize = 4096;

fn boxed(following: Following) -> Box<Following> {
    match SPARE.with(|s| s.borrow_mut().pop()) {
        Some(spare) => {
            let raw = Box::into_raw(spare).cast::<Following>();
            // SAFETY: the allocation has `Following`'s layout and holds no value:
            // it is written once, then owned again by a box.
            unsafe {
                raw.write(following);
                Box::from_raw(raw)
            }
        }
        None => Box::new(following),
    }
}

impl Client {
    /// Sends `bytes`, whose keys are in `slot`, to `server` of a cluster pool,
    /// following redirections.
    pub(super) fn send_following(
        &self,
        pool: &PoolRt,
        server: ServerId,
        bytes: Bytes,
        slot: u16,
    ) -> Part {
        let rx = self.send_redis(pool, server, bytes.clone());
        Part::Follow(client::Following::new(boxed(Following {
            slot: self.slot.clone(),
            bytes,
            rx,
            client: self.id,
            slot_of_key: slot,
            resp3: self.resp3,
            tracking: self.tracking.clone(),
            redirected: None,
        })))
    }

    /// Sends a request whose key is `key` to the owner of its slot (a replica of
    /// it for a read, with `read_from`).
    pub(super) fn forward_in_cluster(
        &self,
        pool: &PoolRt,
        key: &[u8],
        bytes: &Bytes,
        effect: Effect,
    ) -> Pending {
        let slot = cluster_slot(key);
        let owner = pool.cluster().and_then(|c| c.slots.owner(slot));
        match owner {
            Some(s) => Pending::Single(self.send_in_cluster(
                pool,
                ServerId(usize::from(s)),
                bytes.clone(),
                slot,
                effect,
            )),
            None => self.no_server(pool),
        }
    }

    /// Sends `bytes`, whose keys are in `slot` owned by `master`, following
    /// redirections.
    pub(super) fn send_in_cluster(
        &self,
        pool: &PoolRt,
        master: ServerId,
        bytes: Bytes,
        slot: u16,
        effect: Effect,
    ) -> Part {
        let node = pool.server_for(master, effect, self.id);
        self.send_following(pool, node, bytes, slot)
    }

    /// `CLUSTER ...`, `READONLY`, `READWRITE` and `ASKING` from a client of a
    /// cluster pool: cashew is the one node it sees.
    pub(super) fn cluster_command(
        &mut self,
        pool: &PoolRt,
        spec: &CommandSpec,
        bytes: &Bytes,
    ) -> Pending {
        if spec.name != "cluster" {
            // Replica reads are the pool's `read_from`; redirections are followed here.
            return super::ready(|o| simple(o, "OK"));
        }
        let sub = self.arg(bytes, 1).to_ascii_lowercase();
        let (ip, port) = match self.local {
            Some(addr) => (addr.ip().to_string(), addr.port()),
            None => ("127.0.0.1".to_string(), 0),
        };
        let id = node_id(&ip, port);
        match sub.as_slice() {
            b"info" => super::ready(|o| {
                let text = format!(
                    "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:{SLOTS}\r\ncluster_slots_ok:{SLOTS}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:1\r\ncluster_my_epoch:1\r\n"
                );
                bulk(o, text.as_bytes())
            }),
            b"myid" => super::ready(|o| bulk(o, id.as_bytes())),
            b"slots" => super::ready(|o| {
                array_header(o, 1);
                array_header(o, 3);
                integer(o, 0);
                integer(o, SLOTS as i64 - 1);
                array_header(o, 3);
                bulk(o, ip.as_bytes());
                integer(o, i64::from(port));
                bulk(o, id.as_bytes());
            }),
            b"shards" => super::ready(|o| {
                array_header(o, 1);
                array_header(o, 4);
                bulk(o, b"slots");
                array_header(o, 2);
                integer(o, 0);
                integer(o, SLOTS as i64 - 1);
                bulk(o, b"nodes");
                array_header(o, 1);
                array_header(o, 14);
                for (k, v) in [("id", id.as_str()), ("ip", &ip), ("endpoint", &ip)] {
                    bulk(o, k.as_bytes());
                    bulk(o, v.as_bytes());
                }
                bulk(o, b"port");
                integer(o, i64::from(port));
                for (k, v) in [("role", "master"), ("health", "online")] {
                    bulk(o, k.as_bytes());
                    bulk(o, v.as_bytes());
                }
                bulk(o, b"replication-offset");
                integer(o, 0);
            }),
            b"nodes" => super::ready(|o| {
                let line = format!(
                    "{id} {ip}:{port}@{port} myself,master - 0 0 1 connected 0-{}\n",
                    SLOTS - 1
                );
                bulk(o, line.as_bytes())
            }),
            b"keyslot" if self.argc() == 3 => {
                let slot = cluster_slot(self.arg(bytes, 2));
                super::ready(|o| integer(o, i64::from(slot)))
            }
            b"countkeysinslot" | b"getkeysinslot" if self.argc() >= 3 => {
                let slot = std::str::from_utf8(self.arg(bytes, 2))
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
                    .filter(|&s| usize::from(s) < SLOTS);
                let Some(slot) = slot else {
                    return err("ERR Invalid or out of range slot");
                };
                let owner = pool
                    .cluster()
                    .and_then(|c| c.slots.owner(slot))
                    .map(|s| ServerId(usize::from(s)));
                match owner {
                    Some(server) => {
                        Pending::Single(self.send_following(pool, server, bytes.clone(), slot))
                    }
                    None => self.no_server(pool),
                }
            }
            _ => super::ready(|o| {
                error(
                    o,
                    &format!(
                        "ERR CLUSTER {} is not supported by the proxy: it shows the cluster as one node",
                        String::from_utf8_lossy(self.arg(bytes, 1)).to_ascii_uppercase()
                    ),
                )
            }),
        }
    }
}

/// A node id (40 hex digits) for cashew at `ip:port`, the same every time.
fn node_id(ip: &str, port: u16) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("cashew {ip}:{port}").as_bytes());
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}
