//! Redis Cluster pools: requests follow the cluster's redirections before their
//! reply is the client's (MOVED: to the slot's new owner, and the map is read
//! again; ASK: `ASKING` and the request to the importing node, once; TRYAGAIN and
//! CLUSTERDOWN: again after a short wait), at most [`MAX_REDIRECTS`] times and
//! within the pool's timeout; a request its node refused a connection for (it was
//! never sent) waits for the map to name the slot's new master; and the `CLUSTER` commands a cluster-aware client
//! asks are answered as by one node that owns every slot: cashew.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cashew_config::ReadFrom;
use cashew_protocol::resp::{
    array_header, bulk, error, integer, parse_redirect, simple, CommandSpec, Redirect,
};
use cashew_route::{cluster_slot, SLOTS};

use super::{err, Client, Pending};
use crate::proxy::client::{Follow, Part};
use crate::proxy::handoff::{BackendError, Reply, ReplyRx};
use crate::proxy::ids::{ClientId, ServerId};
use crate::proxy::pool::{PoolRt, PoolSlot};
use crate::state::cluster::request_refresh;
use crate::state::counters::PoolCounter;

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

/// A request to a cluster pool, until its reply is not a redirection.
pub(crate) struct Following {
    slot: Rc<PoolSlot>,
    client: ClientId,
    resp3: bool,
    bytes: Bytes,
    /// The slot of the key that places the request.
    slot_of_key: u16,
    rx: Option<ReplyRx>,
    done: Option<Reply>,
    redirects: u8,
    until: Instant,
    next: Option<Next>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    last_redirect: Option<Bytes>,
}

impl Following {
    fn pool(&self) -> Rc<PoolRt> {
        self.slot.pool().clone()
    }

    /// Takes the reply when it has come: the client's, or a redirection to follow.
    fn advance(&mut self, mut cx: Option<&mut Context<'_>>) -> bool {
        loop {
            if self.done.is_some() {
                return true;
            }
            if let Some(wait) = &mut self.wait {
                let waited = match cx.as_deref_mut() {
                    Some(cx) => wait.as_mut().poll(cx).is_ready(),
                    None => wait.is_elapsed(),
                };
                if !waited {
                    return false;
                }
                self.wait = None;
                self.send_next();
                continue;
            }
            let Some(rx) = &mut self.rx else {
                self.done = Some(Err(BackendError::Closed));
                return true;
            };
            let ready = match cx.as_deref_mut() {
                Some(cx) => rx.poll_ready(cx).is_ready(),
                None => rx.is_ready(),
            };
            if !ready {
                return false;
            }
            let reply = rx.try_recv().unwrap_or(Err(BackendError::Closed));
            self.rx = None;
            match &reply {
                Ok(bytes) if self.redirects < MAX_REDIRECTS && Instant::now() < self.until => {
                    match parse_redirect(bytes) {
                        Some(redirect) => {
                            self.redirects += 1;
                            self.last_redirect = Some(bytes.clone());
                            self.follow(redirect);
                        }
                        None => self.done = Some(reply),
                    }
                }
                Ok(_) => self.done = Some(reply),
                Err(BackendError::Io(std::io::ErrorKind::ConnectionRefused))
                    if Instant::now() < self.until =>
                {
                    // Never sent: a master that is gone. Its replica takes over
                    // within the cluster's failover time; the request waits for the
                    // map that says so, within its timeout.
                    request_refresh();
                    self.next = Some(Next::Owner);
                    self.wait_then_send(UNREACHABLE_WAIT);
                }
                Err(_) => {
                    // A node that fails may be a master that failed over.
                    request_refresh();
                    self.done = Some(reply);
                }
            }
        }
    }

    fn follow(&mut self, redirect: Redirect<'_>) {
        let pool = self.pool();
        let stats = pool.pool_stats();
        match redirect {
            Redirect::Moved { address, .. } => {
                stats.add(PoolCounter::ClusterMoved, 1);
                request_refresh();
                self.next = Some(Next::Node {
                    address: address.to_string(),
                    ask: false,
                });
                self.send_next();
            }
            Redirect::Ask { address, .. } => {
                stats.add(PoolCounter::ClusterAsk, 1);
                self.next = Some(Next::Node {
                    address: address.to_string(),
                    ask: true,
                });
                self.send_next();
            }
            Redirect::TryAgain | Redirect::ClusterDown => {
                stats.add(PoolCounter::ClusterRetries, 1);
                if matches!(redirect, Redirect::ClusterDown) {
                    request_refresh();
                }
                self.next = Some(Next::Owner);
                self.wait_then_send(FIRST_BACKOFF * (1 << self.redirects.min(5)));
            }
        }
    }

    /// Sends the request where `next` says, or waits for the map to name the node.
    fn send_next(&mut self) {
        let pool = self.pool();
        let server = match &self.next {
            Some(Next::Node { address, .. }) => pool.server_named(address),
            Some(Next::Owner) | None => pool
                .cluster()
                .and_then(|c| c.slots.owner(self.slot_of_key))
                .map(|s| ServerId(usize::from(s))),
        };
        let Some(server) = server else {
            // A node the map does not have yet: read it again and wait for it.
            if Instant::now() >= self.until {
                self.give_up();
                return;
            }
            request_refresh();
            self.wait_then_send(Duration::from_millis(20));
            return;
        };
        if let Some(Next::Node { ask: true, .. }) = self.next {
            pool.send_redis_job(
                server,
                self.client,
                Bytes::from_static(b"*1\r\n$6\r\nASKING\r\n"),
                self.resp3,
                false,
            );
        }
        self.rx = pool.send_redis(server, self.client, self.bytes.clone(), self.resp3);
    }

    fn wait_then_send(&mut self, wait: Duration) {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            self.give_up();
            return;
        }
        self.wait = Some(Box::pin(tokio::time::sleep(wait.min(left))));
    }

    /// Out of time: the client gets the last redirection (what a cluster-aware
    /// client would have had to follow).
    fn give_up(&mut self) {
        self.done = Some(self.last_redirect.clone().ok_or(BackendError::NoServer));
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
        self.done.take().unwrap_or(Err(BackendError::Closed))
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
        let patience = pool
            .config()
            .timeout_ms
            .filter(|&t| t > 0)
            .map_or(DEFAULT_PATIENCE, Duration::from_millis);
        let rx = pool.send_redis(server, self.id, bytes.clone(), self.resp3);
        Part::Follow(Box::new(Following {
            slot: self.slot.clone(),
            client: self.id,
            resp3: self.resp3,
            bytes,
            slot_of_key: slot,
            rx,
            done: None,
            redirects: 0,
            until: Instant::now() + patience,
            next: None,
            wait: None,
            last_redirect: None,
        }))
    }

    /// The node a read-only command of a cluster pool goes to: with `read_from`
    /// a replica, one of the master's replicas that is live (spread by client),
    /// else the master.
    pub(super) fn read_node(&self, pool: &PoolRt, master: ServerId) -> ServerId {
        let Some(cluster) = pool.cluster() else {
            return master;
        };
        if pool.config().read_from == ReadFrom::Master {
            return master;
        }
        let replicas = &cluster.replicas[master.0];
        let live: Vec<ServerId> = replicas
            .iter()
            .map(|&r| ServerId(usize::from(r)))
            .filter(|&r| pool.is_live(r))
            .collect();
        match live.len() {
            0 => master,
            n => live[self.id.0 % n],
        }
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
