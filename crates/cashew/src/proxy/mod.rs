//! The proxy: one worker thread per core, each with its own event loop, listen
//! sockets, clients and server connections; the main thread serves stats and signals.

mod backend;
mod client;
mod handoff;
mod listener;
mod memcache;
mod pool;
mod redis;

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cashew_config::Config;
use tokio::io::AsyncWriteExt;
use tokio::task::LocalSet;

use crate::log::{self, INFO, NOTICE, WARN};
use crate::log_at;
use crate::stats::{pool as ps, proxy as px, Registry, WorkerStats};
use listener::Bound;
use pool::{PoolRt, SharedPool};

/// What `run` needs from the command line.
pub struct Settings {
    pub threads: usize,
    pub stats_addr: String,
    pub stats_port: u16,
}

/// Sockets bound and ready; serving starts with [`Prepared::serve`]. Binding comes
/// first so that an address in use stops the start before daemonizing.
pub struct Prepared {
    config: Arc<Config>,
    settings: Settings,
    /// `[worker][pool]`
    listeners: Vec<Vec<Bound>>,
    /// Bound, but listening only once cashew is fully started: a connection to the
    /// stats port is the sign that it is ready.
    stats_socket: socket2::Socket,
}

pub fn prepare(config: Config, settings: Settings) -> Result<Prepared, String> {
    let threads = settings.threads.max(1);
    let mut listeners: Vec<Vec<Bound>> = (0..threads).map(|_| Vec::new()).collect();
    for pool in &config.pools {
        let bound = listener::bind(pool, threads).map_err(|e| {
            format!(
                "pool '{}': cannot listen on {:?}: {e}",
                pool.name, pool.listen
            )
        })?;
        for (w, b) in bound.into_iter().enumerate() {
            listeners[w].push(b);
        }
    }
    let stats_addr = listener::resolve(&settings.stats_addr, settings.stats_port).map_err(|e| {
        format!(
            "stats address {}:{}: {e}",
            settings.stats_addr, settings.stats_port
        )
    })?;
    let stats_socket = bind_only(stats_addr)
        .map_err(|e| format!("cannot listen for stats on {stats_addr}: {e}"))?;
    Ok(Prepared {
        config: Arc::new(config),
        settings: Settings {
            threads,
            ..settings
        },
        listeners,
        stats_socket,
    })
}

fn bind_only(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

impl Prepared {
    /// Runs until SIGINT or SIGTERM.
    pub fn serve(self) -> Result<(), String> {
        let Prepared {
            config,
            settings,
            listeners,
            stats_socket,
        } = self;
        let registry = Arc::new(Registry::new(config.clone(), settings.threads));
        let shared: Vec<Arc<SharedPool>> = config
            .pools
            .iter()
            .map(|p| Arc::new(SharedPool::new(p.servers.len())))
            .collect();

        for (id, bound) in listeners.into_iter().enumerate() {
            let (config, registry, shared) = (config.clone(), registry.clone(), shared.clone());
            let stats = registry.workers[id].clone();
            std::thread::Builder::new()
                .name(format!("cashew-w{id}"))
                .spawn(move || worker(config, bound, stats, registry, shared))
                .map_err(|e| format!("cannot start worker thread: {e}"))?;
        }
        log_at!(
            NOTICE,
            "cashew {} started with {} worker threads, {} pools",
            env!("CARGO_PKG_VERSION"),
            settings.threads,
            config.pools.len()
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let signals = crate::signals::Signals::install()?;
            stats_socket
                .listen(128)
                .map_err(|e| format!("stats port: {e}"))?;
            let stats = tokio::net::TcpListener::from_std(stats_socket.into())
                .map_err(|e| e.to_string())?;
            tokio::spawn(serve_stats(stats, registry));
            signals.wait_for_exit().await;
            Ok(())
        })
    }
}

fn worker(
    config: Arc<Config>,
    listeners: Vec<Bound>,
    stats: Arc<WorkerStats>,
    registry: Arc<Registry>,
    shared: Vec<Arc<SharedPool>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log_at!(log::ERROR, "worker: cannot start event loop: {e}");
            std::process::exit(1);
        }
    };
    let local = LocalSet::new();
    local.block_on(&runtime, async move {
        for (index, bound) in listeners.into_iter().enumerate() {
            let pool = PoolRt::start(
                index,
                config.clone(),
                stats.clone(),
                registry.clone(),
                shared[index].clone(),
            );
            tokio::task::spawn_local(accept_loop(bound, pool));
        }
        std::future::pending::<()>().await;
    });
}

async fn accept_loop(bound: Bound, pool: Rc<PoolRt>) {
    enum L {
        Tcp(tokio::net::TcpListener),
        Unix(tokio::net::UnixListener),
    }
    let listener = match bound {
        Bound::Tcp(l) => tokio::net::TcpListener::from_std(l).map(L::Tcp),
        Bound::Unix(l) => tokio::net::UnixListener::from_std(l).map(L::Unix),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            log_at!(
                log::ERROR,
                "pool '{}': cannot use listen socket: {e}",
                pool.config().name
            );
            return;
        }
    };
    loop {
        let accepted = match &listener {
            L::Tcp(l) => l.accept().await.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Client::Tcp(s)
            }),
            L::Unix(l) => l.accept().await.map(|(s, _)| Client::Unix(s)),
        };
        match accepted {
            Ok(client) => spawn_client(client, pool.clone()),
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                log_at!(WARN, "pool '{}': accept failed: {e}", pool.config().name);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

enum Client {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

fn spawn_client(client: Client, pool: Rc<PoolRt>) {
    let limit = pool.config().client_connections;
    let count = pool.clients().fetch_add(1, Ordering::Relaxed) + 1;
    let proxy = pool.proxy_stats();
    proxy.add(px::TOTAL_CONNECTIONS, 1);
    if limit > 0 && count > limit {
        pool.clients().fetch_sub(1, Ordering::Relaxed);
        pool.pool_stats().add(ps::CLIENT_ERR, 1);
        log_at!(
            INFO,
            "pool '{}': refusing a client over client_connections {limit}",
            pool.config().name
        );
        tokio::task::spawn_local(async move {
            let reply = if pool.config().redis {
                &b"-ERR max number of clients reached\r\n"[..]
            } else {
                b"SERVER_ERROR too many connections\r\n"
            };
            let _ = match client {
                Client::Tcp(mut s) => s.write_all(reply).await,
                Client::Unix(mut s) => s.write_all(reply).await,
            };
        });
        return;
    }
    proxy.add(px::CURR_CONNECTIONS, 1);
    pool.pool_stats().add(ps::CLIENT_CONNECTIONS, 1);
    tokio::task::spawn_local(async move {
        match client {
            Client::Tcp(s) => {
                let (r, w) = s.into_split();
                serve_client(r, w, &pool).await
            }
            Client::Unix(s) => {
                let (r, w) = s.into_split();
                serve_client(r, w, &pool).await
            }
        }
        pool.clients().fetch_sub(1, Ordering::Relaxed);
        pool.pool_stats().sub(ps::CLIENT_CONNECTIONS, 1);
        pool.proxy_stats().sub(px::CURR_CONNECTIONS, 1);
    });
}

/// Serves a client in its pool's protocol.
async fn serve_client<R, W>(reader: R, writer: W, pool: &Rc<PoolRt>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    if pool.config().redis {
        client::serve(reader, writer, pool, redis::Client::new(pool.clone())).await
    } else {
        client::serve(reader, writer, pool, memcache::Client::new(pool.clone())).await
    }
}

/// nutcracker's stats port: one JSON document per connection, then close.
async fn serve_stats(listener: tokio::net::TcpListener, registry: Arc<Registry>) {
    let source = hostname();
    loop {
        match listener.accept().await {
            Ok((mut s, _)) => {
                let doc = registry.json(&source);
                tokio::spawn(async move {
                    let _ = s.write_all(doc.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
            Err(e) => {
                log_at!(WARN, "stats: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
