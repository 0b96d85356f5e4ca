//! A worker thread: its own event loop, listeners, clients and server connections.
//! It serves whatever generation the main thread publishes, swapping pools under
//! connected clients, and drains when told to.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, LocalSet};

use super::client;
use super::handoff::Replies;
use super::pool::{PoolRt, PoolSlot, WorkerCtx};
use super::{memcache, redis};
use crate::log::{self, INFO, NOTICE, WARN};
use crate::log_at;
use crate::net::{Listener, Stream};
use crate::state::clients::ClientCard;
use crate::state::counters::{PoolCounter, ProxyCounter};
use crate::state::generation::{Generation, ListenSockets};

/// What the main thread tells every worker.
#[derive(Clone)]
pub(crate) struct Directive {
    pub(crate) generation: Arc<Generation>,
    pub(crate) mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Serve,
    /// Stop accepting, answer what clients have sent, close them, and end by
    /// `deadline` at the latest.
    Drain {
        deadline: std::time::Instant,
    },
}

/// What workers report back: the generation each serves, and whether it ended.
pub(crate) struct Reports {
    applied: Vec<AtomicU64>,
    stopped_accepting: Vec<AtomicBool>,
    exited: Vec<AtomicBool>,
    changed: Notify,
}

impl Reports {
    pub(crate) fn new(threads: usize) -> Reports {
        Reports {
            applied: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            stopped_accepting: (0..threads).map(|_| AtomicBool::new(false)).collect(),
            exited: (0..threads).map(|_| AtomicBool::new(false)).collect(),
            changed: Notify::new(),
        }
    }

    /// True once every worker serves generation `number` or a later one.
    pub(crate) fn all_applied(&self, number: u64) -> bool {
        self.applied
            .iter()
            .all(|a| a.load(Ordering::Acquire) >= number)
    }

    pub(crate) fn all_stopped_accepting(&self) -> bool {
        let stopped = |s: &AtomicBool| s.load(Ordering::Acquire);
        self.stopped_accepting
            .iter()
            .zip(&self.exited)
            .all(|(s, e)| stopped(s) || stopped(e))
    }

    pub(crate) fn all_exited(&self) -> bool {
        self.exited.iter().all(|e| e.load(Ordering::Acquire))
    }

    /// Waits until `done` holds, or `timeout` passes; true if it holds.
    pub(crate) async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&Reports) -> bool,
    ) -> bool {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if done(self) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    fn set_applied(&self, worker: usize, number: u64) {
        self.applied[worker].store(number, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn set_stopped_accepting(&self, worker: usize) {
        self.stopped_accepting[worker].store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    fn set_exited(&self, worker: usize) {
        self.exited[worker].store(true, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// Runs worker `id` until it has drained (or the main thread is gone).
pub(crate) fn run(id: usize, mut directives: watch::Receiver<Directive>, reports: Arc<Reports>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log_at!(log::ERROR, "worker {id}: cannot start event loop: {e}");
            std::process::exit(1);
        }
    };
    let local = LocalSet::new();
    local.block_on(&runtime, async {
        let threads = directives.borrow().generation.registry.threads();
        let mut worker = Worker::new(id, threads);
        loop {
            let directive = directives.borrow_and_update().clone();
            match directive.mode {
                Mode::Serve => {
                    worker.apply(&directive.generation);
                    reports.set_applied(id, directive.generation.number);
                }
                Mode::Drain { deadline } => {
                    worker
                        .drain(deadline, || reports.set_stopped_accepting(id))
                        .await;
                    break;
                }
            }
            if directives.changed().await.is_err() {
                worker.drain(std::time::Instant::now(), || {}).await;
                break;
            }
        }
    });
    // Whatever is left (past a drain deadline) is cut here.
    drop(local);
    reports.set_exited(id);
}

struct Worker {
    ctx: Rc<WorkerCtx>,
    threads: usize,
    /// By pool name.
    slots: HashMap<String, Rc<PoolSlot>>,
    /// By listener id.
    accepts: HashMap<u64, Accept>,
}

/// A listener's accept tasks on this worker, and the pool they hand clients to.
struct Accept {
    slot: Rc<RefCell<Rc<PoolSlot>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Accept {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Worker {
    fn new(id: usize, threads: usize) -> Worker {
        Worker {
            ctx: Rc::new(WorkerCtx {
                id,
                replies: Rc::new(Replies::default()),
                clients: Rc::default(),
                backends: Rc::default(),
            }),
            threads,
            slots: HashMap::new(),
            accepts: HashMap::new(),
        }
    }

    /// Serves `generation` from now on. Clients keep their connections; a pool that
    /// is gone (or changed protocol) has its slot closed, so its clients finish and
    /// close; listeners that are gone stop accepting.
    fn apply(&mut self, generation: &Arc<Generation>) {
        let mut slots = HashMap::new();
        for (index, pool) in generation.config.pools.iter().enumerate() {
            let slot = match self.slots.remove(&pool.name) {
                Some(slot) if slot.pool().config().redis == pool.redis => {
                    let next =
                        PoolRt::new(generation.clone(), index, &self.ctx, Some(&slot.pool()));
                    slot.replace(next);
                    slot
                }
                other => {
                    if let Some(old) = other {
                        old.close();
                    }
                    let pool_rt = PoolRt::new(generation.clone(), index, &self.ctx, None);
                    Rc::new(PoolSlot::new(pool_rt))
                }
            };
            slots.insert(pool.name.clone(), slot);
        }
        for (_, removed) in self.slots.drain() {
            removed.close();
        }
        // Gutter pools and routes, now that every pool of the generation has its slot.
        for pool in &generation.config.pools {
            if let Some(gutter) = pool.gutter.as_ref().and_then(|g| slots.get(g)) {
                slots[&pool.name].pool().set_gutter(gutter);
            }
            if let Some(target) = pool.shadow.as_ref().and_then(|s| slots.get(&s.pool)) {
                slots[&pool.name].pool().set_shadow(target);
            }
            if !pool.routes.is_empty() {
                let targets = pool
                    .routes
                    .iter()
                    .map(|(_, to)| slots.get(to).map(Rc::downgrade).unwrap_or_default())
                    .collect();
                slots[&pool.name].pool().set_routes(targets);
            }
        }
        self.slots = slots;

        let mut accepts = HashMap::new();
        for (index, pool) in generation.config.pools.iter().enumerate() {
            let listener = &generation.pools[index].listener;
            let slot = self.slots[&pool.name].clone();
            let accept = match self.accepts.remove(&listener.id) {
                Some(accept) => {
                    *accept.slot.borrow_mut() = slot;
                    accept
                }
                None => self.start_accepting(&pool.name, listener, slot),
            };
            accepts.insert(listener.id, accept);
        }
        // Listeners no longer in the config are dropped here: their tasks end.
        self.accepts = accepts;
    }

    fn start_accepting(&self, pool: &str, listener: &ListenSockets, slot: Rc<PoolSlot>) -> Accept {
        let slot = Rc::new(RefCell::new(slot));
        let mut tasks = Vec::new();
        for socket in listener.for_worker(self.ctx.id, self.threads) {
            match socket.and_then(|s| Listener::from_socket(s, &listener.listen)) {
                Ok(acceptor) => {
                    let task = accept_loop(acceptor, slot.clone(), self.ctx.clone());
                    tasks.push(tokio::task::spawn_local(task));
                }
                Err(e) => log_at!(log::ERROR, "pool '{pool}': cannot use listen socket: {e}"),
            }
        }
        Accept { slot, tasks }
    }

    /// Stops accepting, closes every pool (clients answer what they have read, then
    /// close), then lets server connections finish; gives up at `deadline`.
    async fn drain(&mut self, deadline: std::time::Instant, stopped_accepting: impl FnOnce()) {
        self.accepts.clear();
        stopped_accepting();
        for slot in self.slots.values() {
            slot.close();
        }
        // Server connections finish once no client or pool holds them.
        self.slots.clear();
        let deadline = tokio::time::Instant::from_std(deadline);
        let ctx = &self.ctx;
        let all_done = async {
            ctx.clients.idle().await;
            ctx.backends.idle().await;
        };
        if tokio::time::timeout_at(deadline, all_done).await.is_err() {
            log_at!(
                NOTICE,
                "worker {}: drain timed out with {} client connections and {} server connections still open; closing them",
                ctx.id,
                ctx.clients.live(),
                ctx.backends.live()
            );
        }
    }
}

async fn accept_loop(acceptor: Listener, slot: Rc<RefCell<Rc<PoolSlot>>>, ctx: Rc<WorkerCtx>) {
    // Failures since the last one logged, and when that was: once a second at most.
    let mut unlogged = 0u64;
    let mut logged_at: Option<tokio::time::Instant> = None;
    loop {
        let accepted = acceptor.accept().await;
        let target = slot.borrow().clone();
        match accepted {
            Ok(client) => spawn_client(client, target, &ctx),
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin, and
                // say so once a second, not once a try.
                unlogged += 1;
                if logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    let name = target.pool().config().name.clone();
                    let limit = crate::process::open_files_limit();
                    log_at!(
                        WARN,
                        "pool '{name}': cannot accept clients: {e} ({unlogged} tries failed; open files limit {limit}); retrying every 50 ms"
                    );
                    unlogged = 0;
                    logged_at = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A client that has not finished its TLS handshake by then is closed.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn spawn_client(mut client: Stream, slot: Rc<PoolSlot>, ctx: &Rc<WorkerCtx>) {
    let pool = slot.pool().clone();
    let limit = pool.config().client_connections;
    let clients = &pool.shared().clients;
    let count = clients.fetch_add(1, Ordering::Relaxed) + 1;
    pool.proxy_stats().add(ProxyCounter::TotalConnections, 1);
    if limit > 0 && count > limit {
        clients.fetch_sub(1, Ordering::Relaxed);
        pool.pool_stats().add(PoolCounter::ClientErr, 1);
        log_at!(
            INFO,
            "pool '{}': refusing a client over client_connections {limit}",
            pool.config().name
        );
        let reply: &[u8] = if pool.config().redis {
            b"-ERR max number of clients reached\r\n"
        } else {
            b"SERVER_ERROR too many connections\r\n"
        };
        tokio::task::spawn_local(async move {
            let _ = client.write_all(reply).await;
            let _ = client.flush().await;
        });
        return;
    }
    pool.proxy_stats().add(ProxyCounter::CurrConnections, 1);
    pool.pool_stats().add(PoolCounter::ClientConnections, 1);
    pool.pool_stats().add(PoolCounter::ConnectionsOpened, 1);
    drop(pool);
    ctx.clients.spawn(async move {
        let acceptor = slot.pool().tls_acceptor().cloned();
        match acceptor {
            None => serve_client(client, &slot).await,
            Some(acceptor) => {
                let peer = client.peer();
                let handshake = client.accept_tls(&acceptor);
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(client)) => serve_client(client, &slot).await,
                    Ok(Err(e)) => slot.pool().tls_failed(&peer, &crate::net::tls::reason(&e)),
                    Err(_) => slot
                        .pool()
                        .tls_failed(&peer, "the handshake did not finish within 10 s"),
                }
            }
        }
        // Counters and the client count carry over by pool name, so the pool in
        // the slot now holds the ones counted at accept.
        let pool = slot.pool();
        pool.shared().clients.fetch_sub(1, Ordering::Relaxed);
        pool.pool_stats().sub(PoolCounter::ClientConnections, 1);
        pool.proxy_stats().sub(ProxyCounter::CurrConnections, 1);
    });
}

/// Serves a client in its pool's protocol.
async fn serve_client(client: Stream, slot: &Rc<PoolSlot>) {
    let (redis, listen) = {
        let pool = slot.pool();
        (pool.config().redis, pool.config().listen.to_string())
    };
    let local = client.local_address();
    let card = ClientCard::connect(
        &slot.pool().config().name,
        if redis { "redis" } else { "memcache" },
        client.address(),
        local.map_or(listen, |a| a.to_string()),
    );
    let (reader, writer) = client.into_split();
    let id = slot.new_client_id();
    if redis {
        let protocol = redis::Client::new(slot.clone(), id, card.shared()).with_local(local);
        client::serve(reader, writer, slot, (id, &card), protocol).await
    } else {
        let protocol = memcache::Client::new(slot.clone(), id);
        client::serve(reader, writer, slot, (id, &card), protocol).await
    }
}
