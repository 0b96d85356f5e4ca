//! A generation: one validated configuration as the proxy runs it, published by the
//! main thread to every worker and never changed afterwards. Everything that must
//! outlive a reload (server health, counters, listen sockets) is carried from one
//! generation to the next by pool and server *name* (sockets by address), never by
//! position, so adding or removing a server shifts nothing else.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cashew_config::{Config, Listen, Pool};
use socket2::Socket;

use crate::net::tls::PoolTls;

use super::counters::{Family, HistogramTotal, PoolCounter, PoolStats, Registry, ServerCounter};
use super::health::{PoolShared, ServerHealth};
use super::scan_tags::ScanTags;

pub(crate) struct Generation {
    /// 1 for the configuration cashew started with, then one more per reload.
    pub(crate) number: u64,
    pub(crate) config: Arc<Config>,
    pub(crate) source: Source,
    /// One per pool of `config`, in the same order.
    pub(crate) pools: Vec<PoolGen>,
    pub(crate) registry: Arc<Registry>,
}

/// A configuration as read and checked, with what its files hold, before it
/// becomes a generation.
pub(crate) struct Loaded {
    pub(crate) config: Config,
    pub(crate) source: Source,
    /// One per pool, in order.
    pub(crate) tls: Vec<PoolTls>,
}

impl Loaded {
    /// A configuration whose pools use no TLS (tests and the harness).
    #[cfg(any(test, feature = "harness"))]
    pub(crate) fn without_tls(config: Config, source: Source) -> Loaded {
        let tls = vec![PoolTls::default(); config.pools.len()];
        Loaded {
            config,
            source,
            tls,
        }
    }
}

/// Where a configuration came from.
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    /// `sha256:` and the hex digest of the file's bytes (`sha256sum` prints the same).
    pub(crate) checksum: String,
    pub(crate) loaded_at: SystemTime,
    pub(crate) text: String,
}

impl Source {
    pub(crate) fn new(path: PathBuf, text: String) -> Source {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Source {
            path,
            checksum: format!("sha256:{hex}"),
            loaded_at: SystemTime::now(),
            text,
        }
    }

    pub(crate) fn loaded_at_secs(&self) -> u64 {
        self.loaded_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    }
}

/// A pool's shared state in one generation.
pub(crate) struct PoolGen {
    pub(crate) shared: Arc<PoolShared>,
    /// One per server of the pool, in config order.
    pub(crate) servers: Vec<Arc<ServerHealth>>,
    /// `[worker]`: that worker's counters for the pool.
    pub(crate) workers: Vec<PoolStats>,
    pub(crate) listener: Arc<ListenSockets>,
    /// TLS towards clients and servers, loaded with the generation.
    pub(crate) tls: PoolTls,
    /// While a reload's change of placement is being bridged (`migrate_ms`).
    pub(crate) migration: Option<Arc<Migration>>,
    /// The tags of the pool's recent server lists, for SCAN cursors.
    pub(crate) scan_tags: ScanTags,
}

/// A change of where a pool's keys are placed, bridged for a while: a key that
/// misses on its new server is looked for where the previous placement put it.
pub(crate) struct Migration {
    /// The pool as it was placed before (its servers, weights, hash, distribution).
    pub(crate) from: Pool,
    pub(crate) until: std::time::Instant,
}

impl Migration {
    pub(crate) fn is_active(&self) -> bool {
        std::time::Instant::now() < self.until
    }

    /// The migration a pool has after a reload from `old` to `new`: a new one when
    /// the placement changed (from the placement in force then), the one in
    /// progress when it did not.
    fn after_reload(old: (&Pool, &PoolGen), new: &Pool) -> Option<Arc<Migration>> {
        if new.migrate_ms == 0 || new.redis {
            return None;
        }
        let (old_pool, old_state) = old;
        if placement(old_pool) != placement(new) {
            let until =
                std::time::Instant::now() + std::time::Duration::from_millis(new.migrate_ms);
            return Some(Arc::new(Migration {
                from: old_pool.clone(),
                until,
            }));
        }
        old_state.migration.clone().filter(|m| m.is_active())
    }
}

/// What decides where a pool's keys go (not the replicas found for reads).
fn placement(pool: &Pool) -> impl PartialEq + '_ {
    let servers: Vec<(&str, u32)> = pool.servers[..pool.keyspace_servers()]
        .iter()
        .map(|s| (s.name(), s.weight))
        .collect();
    (servers, pool.hash, pool.distribution, pool.hash_tag)
}

impl PoolGen {
    /// A pool counter summed over the workers.
    pub(crate) fn total(&self, counter: PoolCounter) -> u64 {
        self.workers
            .iter()
            .map(|w| w.pool.get(counter))
            .fold(0, u64::wrapping_add)
    }

    /// Requests of `family`, over the workers.
    pub(crate) fn requests(&self, family: Family) -> u64 {
        self.workers
            .iter()
            .map(|w| w.pool.requests(family))
            .fold(0, u64::wrapping_add)
    }

    /// Replies owed to requests of `family`, over the workers.
    pub(crate) fn replies(&self, family: Family) -> u64 {
        self.workers
            .iter()
            .map(|w| w.pool.replies(family))
            .fold(0, u64::wrapping_add)
    }

    /// A server counter summed over the workers.
    pub(crate) fn server_total(&self, server: usize, counter: ServerCounter) -> u64 {
        if counter == ServerCounter::ServerEjectedAt {
            // An ejection is shared by every worker: its time is kept with the health.
            return self.servers[server].ejected_at_usec();
        }
        self.workers
            .iter()
            .map(|w| w.servers[server].get(counter))
            .fold(0, u64::wrapping_add)
    }

    /// The pool's client latency over all workers.
    pub(crate) fn latency(&self) -> HistogramTotal {
        let mut total = HistogramTotal::default();
        for w in &self.workers {
            w.pool.latency.add_to(&mut total);
        }
        total
    }

    /// A server's latency over all workers.
    pub(crate) fn server_latency(&self, server: usize) -> HistogramTotal {
        let mut total = HistogramTotal::default();
        for w in &self.workers {
            w.servers[server].latency.add_to(&mut total);
        }
        total
    }
}

/// A pool's bound listen sockets: one shared by every worker, or with `reuseport`
/// one per worker (the kernel then spreads connections over them). Workers accept
/// on duplicates of these descriptors; the control plane retires its own copies
/// when no generation in force uses the listener any more, which closes it (old
/// generations may live on a while, held by clients that are finishing).
pub(crate) struct ListenSockets {
    /// Unique for the life of the process: workers know a listener they already
    /// accept on by it.
    pub(crate) id: u64,
    pub(crate) listen: Listen,
    pub(crate) reuseport: bool,
    sockets: Mutex<Vec<Socket>>,
}

impl ListenSockets {
    pub(crate) fn new(
        id: u64,
        listen: Listen,
        reuseport: bool,
        sockets: Vec<Socket>,
    ) -> ListenSockets {
        ListenSockets {
            id,
            listen,
            reuseport,
            sockets: Mutex::new(sockets),
        }
    }

    fn sockets(&self) -> std::sync::MutexGuard<'_, Vec<Socket>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Duplicates of the sockets worker `worker` of `threads` accepts on: every
    /// socket is served by some worker, and every worker serves at least one.
    pub(crate) fn for_worker(&self, worker: usize, threads: usize) -> Vec<io::Result<Socket>> {
        let sockets = self.sockets();
        indices_for(sockets.len(), worker, threads)
            .into_iter()
            .map(|i| sockets[i].try_clone())
            .collect()
    }

    pub(crate) fn raw_fds(&self) -> Vec<RawFd> {
        self.sockets().iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Applies `backlog` (listen(2) again on a listening socket changes it).
    pub(crate) fn set_backlog(&self, backlog: i32) -> io::Result<()> {
        self.sockets().iter().try_for_each(|s| s.listen(backlog))
    }

    /// Closes this process's descriptors; the listener ends once workers have
    /// dropped theirs.
    pub(crate) fn retire(&self) {
        self.sockets().clear();
    }
}

/// Which of `n` sockets worker `worker` of `threads` accepts on.
fn indices_for(n: usize, worker: usize, threads: usize) -> Vec<usize> {
    let mine: Vec<usize> = (0..n).filter(|i| i % threads == worker).collect();
    if mine.is_empty() && n > 0 {
        vec![worker % n]
    } else {
        mine
    }
}

impl Generation {
    /// Builds generation `number` for `config`, carrying health and counters over
    /// from `previous` by name. `listeners` and `tls` hold one entry per pool, in
    /// order.
    pub(crate) fn new(
        number: u64,
        loaded: Loaded,
        registry: Arc<Registry>,
        listeners: Vec<Arc<ListenSockets>>,
        previous: Option<&Generation>,
    ) -> Generation {
        let Loaded {
            config,
            source,
            tls,
        } = loaded;
        let threads = registry.threads();
        let pools = config
            .pools
            .iter()
            .zip(listeners)
            .zip(tls)
            .map(|((pool, listener), tls)| {
                let old = previous.and_then(|g| {
                    let i = g.config.pools.iter().position(|p| p.name == pool.name)?;
                    Some((&g.config.pools[i], &g.pools[i]))
                });
                let shared = old.map_or_else(Arc::default, |(_, o)| o.shared.clone());
                let old_server = |name: &str| {
                    let (old_pool, old_gen) = old?;
                    let i = old_pool.servers.iter().position(|s| s.name() == name)?;
                    Some((old_gen, i))
                };
                let servers = pool
                    .servers
                    .iter()
                    .map(|s| match old_server(s.name()) {
                        Some((o, i)) => {
                            let health = o.servers[i].clone();
                            if !pool.auto_eject_hosts {
                                health.clear_automatic_ejection();
                            }
                            health
                        }
                        None => Arc::new(ServerHealth::new(shared.clone())),
                    })
                    .collect();
                let workers = (0..threads)
                    .map(|w| PoolStats {
                        pool: old.map_or_else(Arc::default, |(_, o)| o.workers[w].pool.clone()),
                        servers: pool
                            .servers
                            .iter()
                            .map(|s| match old_server(s.name()) {
                                Some((o, i)) => o.workers[w].servers[i].clone(),
                                None => Arc::default(),
                            })
                            .collect(),
                    })
                    .collect();
                let migration = old.and_then(|o| Migration::after_reload(o, pool));
                let scan_tags = old
                    .map_or_else(ScanTags::default, |(_, o)| o.scan_tags.clone())
                    .next(
                        pool.servers[..pool.keyspace_servers()]
                            .iter()
                            .map(|s| s.name()),
                    );
                PoolGen {
                    shared,
                    servers,
                    workers,
                    listener,
                    tls,
                    migration,
                    scan_tags,
                }
            })
            .collect();
        Generation {
            number,
            config: Arc::new(config),
            source,
            pools,
            registry,
        }
    }

    pub(crate) fn pool_index(&self, name: &str) -> Option<usize> {
        self.config.pools.iter().position(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::counters::ServerCounter as St;

    fn config(yaml: &str) -> Config {
        cashew_config::parse("test.yml", yaml).unwrap()
    }

    fn build(number: u64, yaml: &str, previous: Option<&Generation>) -> Generation {
        let config = config(yaml);
        let listeners = config
            .pools
            .iter()
            .map(|p| Arc::new(ListenSockets::new(0, p.listen.clone(), false, Vec::new())))
            .collect();
        let registry = previous.map_or_else(|| Arc::new(Registry::new(2)), |g| g.registry.clone());
        Generation::new(
            number,
            Loaded::without_tls(config, Source::new("test.yml".into(), yaml.into())),
            registry,
            listeners,
            previous,
        )
    }

    #[test]
    fn counters_and_health_follow_server_names_not_positions() {
        let first = build(
            1,
            "a:\n  listen: 127.0.0.1:1\n  servers:\n    - 127.0.0.1:2:1 one\n    - 127.0.0.1:3:1 two\n",
            None,
        );
        first.pools[0].workers[1].servers[1].add(St::Requests, 7);
        first.pools[0].servers[1].eject_by_hand();

        // "one" removed, "three" and "zero" added before "two": "two" moves from
        // index 1 to index 2.
        let second = build(
            2,
            "a:\n  listen: 127.0.0.1:1\n  servers:\n    - 127.0.0.1:4:1 three\n    - 127.0.0.1:5:1 zero\n    - 127.0.0.1:3:1 two\n",
            Some(&first),
        );
        assert_eq!(second.pools[0].workers[1].servers[2].get(St::Requests), 7);
        assert!(
            !second.pools[0].servers[2].is_live(),
            "the ejection carries over"
        );
        assert_eq!(second.pools[0].workers[1].servers[0].get(St::Requests), 0);
        assert!(second.pools[0].servers[0].is_live());
        assert!(Arc::ptr_eq(&first.pools[0].shared, &second.pools[0].shared));
    }

    #[test]
    fn a_pool_added_under_a_new_name_starts_afresh() {
        let first = build(
            1,
            "a:\n  listen: 127.0.0.1:1\n  servers:\n    - 127.0.0.1:2:1\n",
            None,
        );
        first.pools[0].workers[0]
            .pool
            .add(PoolCounter::ClientEof, 3);
        let second = build(
            2,
            "b:\n  listen: 127.0.0.1:1\n  servers:\n    - 127.0.0.1:2:1\n",
            Some(&first),
        );
        assert_eq!(
            second.pools[0].workers[0].pool.get(PoolCounter::ClientEof),
            0
        );
    }

    #[test]
    fn every_socket_has_a_worker_and_every_worker_a_socket() {
        assert_eq!(indices_for(4, 0, 2), [0, 2]);
        assert_eq!(indices_for(4, 1, 2), [1, 3]);
        assert_eq!(indices_for(1, 0, 3), [0]);
        assert_eq!(indices_for(1, 2, 3), [0]);
        assert_eq!(indices_for(2, 2, 3), [0]);
        assert!(indices_for(0, 0, 2).is_empty());
    }
}
