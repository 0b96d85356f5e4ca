//! cashew-load: a bounded memcached or redis load: each connection sends pipelined
//! batches of gets and sets and waits for every reply, for a fixed time. The two
//! protocols get the same load shape (keys, values, mix, pipeline), so that their
//! costs can be compared. Prints one line:
//! `ops_per_sec=N ops=N keys=N errors=N p50_us=N p99_us=N` (`keys`: keys asked for or
//! stored, more than `ops` with multi-gets; latency of a batch, from its first byte
//! written to its last reply read: of a request, at pipeline 1).
//!
//! Each connection runs on its own thread, or with `--one-thread` all of them on one
//! (see `one_thread`). With `--tls-ca` the connections speak TLS; with `--reconnect` every batch goes
//! over a new connection (with TLS, a handshake per batch); with `--hold N` it only
//! opens N connections and keeps them idle for the time given.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cashew_protocol::{memcache, resp, ReplyParse};
use clap::{Parser, ValueEnum};

mod one_thread;

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    Memcache,
    Redis,
}

impl Protocol {
    /// A get of `keys` (a multi-get, `MGET` for redis, when more than one).
    fn get(self, out: &mut Vec<u8>, keys: impl ExactSizeIterator<Item = usize>) {
        match self {
            Protocol::Memcache => {
                out.extend(b"get");
                for key in keys {
                    out.extend(format!(" key:{key}").bytes());
                }
                out.extend(b"\r\n");
            }
            Protocol::Redis => {
                let command: &[u8] = if keys.len() == 1 { b"GET" } else { b"MGET" };
                resp::array_header(out, keys.len() + 1);
                resp::bulk(out, command);
                for key in keys {
                    resp::bulk(out, format!("key:{key}").as_bytes());
                }
            }
        }
    }

    fn set(self, out: &mut Vec<u8>, key: usize, value: &[u8]) {
        match self {
            Protocol::Memcache => {
                out.extend(format!("set key:{key} 0 0 {}\r\n", value.len()).bytes());
                out.extend(value);
                out.extend(b"\r\n");
            }
            Protocol::Redis => {
                resp::array_header(out, 3);
                resp::bulk(out, b"SET");
                resp::bulk(out, format!("key:{key}").as_bytes());
                resp::bulk(out, value);
            }
        }
    }

    fn parse_reply(self, buf: &[u8]) -> ReplyParse {
        match self {
            Protocol::Memcache => memcache::parse_reply(buf),
            Protocol::Redis => resp::parse_reply(buf),
        }
    }

    fn is_error(self, reply: &[u8]) -> bool {
        match self {
            Protocol::Memcache => {
                reply.starts_with(b"SERVER_ERROR") || reply.starts_with(b"CLIENT_ERROR")
            }
            Protocol::Redis => reply.starts_with(b"-"),
        }
    }
}

#[derive(Parser)]
struct Args {
    /// host:port to load (loopback only)
    #[arg(long)]
    target: String,
    #[arg(long, value_enum, default_value_t = Protocol::Memcache)]
    protocol: Protocol,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Requests per batch on each connection
    #[arg(long, default_value_t = 16)]
    pipeline: usize,
    /// Seconds to run (at most 120)
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Percent of requests that are gets; the rest are sets
    #[arg(long, default_value_t = 90)]
    get_percent: usize,
    /// Keys each get asks for (a multi-get when more than one)
    #[arg(long, default_value_t = 1)]
    keys_per_get: usize,
    /// Stop each connection after this many batches (a fixed amount of work, for
    /// instruction counts); the time limit still applies
    #[arg(long)]
    batches: Option<u64>,
    /// Batches each connection sends before the measured ones (not counted)
    #[arg(long, default_value_t = 0)]
    warmup_batches: u64,
    /// Once every connection is open and warmed up, create this file and wait until
    /// it is removed before the measured batches (so that a profiler can be zeroed
    /// in between)
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Speak TLS, trusting the CA certificate in this PEM file
    #[arg(long)]
    tls_ca: Option<std::path::PathBuf>,
    /// Every batch over a new connection
    #[arg(long)]
    reconnect: bool,
    /// Only open this many connections (one handshake each) and keep them idle
    #[arg(long)]
    hold: Option<usize>,
    /// Every connection on one thread, driven by epoll (plain TCP only)
    #[arg(long, conflicts_with_all = ["tls_ca", "reconnect", "hold"])]
    one_thread: bool,
}

/// What the measured batches did.
#[derive(Default)]
struct Totals {
    ops: u64,
    keys: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

impl Totals {
    /// The one line printed.
    fn print(mut self, elapsed: Duration) {
        let latencies = &mut self.latencies_us;
        latencies.sort_unstable();
        let quantile = |q: f64| {
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1));
            latencies.get(i - 1).copied().unwrap_or(0)
        };
        println!(
            "ops_per_sec={:.0} ops={} keys={} errors={} p50_us={} p99_us={}",
            self.ops as f64 / elapsed.as_secs_f64(),
            self.ops,
            self.keys,
            self.errors,
            quantile(0.5),
            quantile(0.99)
        );
    }
}

/// With `--ready-file`: creates it and waits (two minutes at most) until it is removed.
fn wait_for_ready_file(file: Option<&std::path::Path>) {
    if let Some(file) = file {
        std::fs::write(file, b"ready\n").expect("--ready-file");
        let waited = Instant::now();
        while file.exists() && waited.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Wire: Read + Write + Send {}
impl<T: Read + Write + Send> Wire for T {}

/// Opens connections to the target, with TLS when asked.
#[derive(Clone)]
struct Dialer {
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Dialer {
    fn new(addr: SocketAddr, ca: Option<&std::path::Path>) -> Dialer {
        use rustls::pki_types::pem::PemObject;
        let tls = ca.map(|ca| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("--tls-ca") {
                roots.add(cert.expect("--tls-ca")).expect("--tls-ca");
            }
            // The provider cashew uses (deprecated since rustls 0.23.48 for lacking
            // post-quantum key exchange).
            #[allow(deprecated)]
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        });
        Dialer { addr, tls }
    }

    /// A connected stream, its TLS handshake done.
    fn dial(&self) -> Box<dyn Wire> {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let Some(config) = &self.tls else {
            return Box::new(stream);
        };
        let name = rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
        }
        Box::new(tls)
    }
}

/// What one connection sends: batches of gets and sets over random keys, and the
/// parsing of their replies.
struct Shape {
    protocol: Protocol,
    pipeline: usize,
    keys: usize,
    get_percent: usize,
    keys_per_get: usize,
    value: Vec<u8>,
    rng: u64,
    /// The batch being sent.
    request: Vec<u8>,
    /// Replies read and not yet parsed: `buf[..filled]`.
    buf: Vec<u8>,
    filled: usize,
}

impl Shape {
    fn new(args: &Args, connection: usize) -> Shape {
        Shape {
            protocol: args.protocol,
            pipeline: args.pipeline,
            keys: args.keys,
            get_percent: args.get_percent,
            keys_per_get: args.keys_per_get.max(1),
            value: vec![b'v'; args.value_size],
            rng: 0x9e37_79b9_7f4a_7c15u64 ^ (connection as u64 + 1),
            request: Vec::new(),
            buf: vec![0u8; 256 * 1024],
            filled: 0,
        }
    }

    /// Writes the next batch into `request`: the keys it asks for or stores.
    fn next_batch(&mut self) -> u64 {
        self.request.clear();
        let mut batch_keys = 0;
        for _ in 0..self.pipeline {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let key = self.rng as usize % self.keys;
            if (self.rng >> 32) as usize % 100 < self.get_percent {
                let keys = (0..self.keys_per_get).map(|k| (key + k * 7919) % self.keys);
                self.protocol.get(&mut self.request, keys);
                batch_keys += self.keys_per_get as u64;
            } else {
                self.protocol.set(&mut self.request, key, &self.value);
                batch_keys += 1;
            }
        }
        batch_keys
    }

    /// Where the next bytes read go (the buffer grows for a reply larger than it).
    fn read_space(&mut self) -> &mut [u8] {
        if self.filled == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        &mut self.buf[self.filled..]
    }

    /// Takes the complete replies of the `n` bytes just read: how many, and how many
    /// of them were errors.
    fn replies_read(&mut self, n: usize) -> (usize, u64) {
        self.filled += n;
        let (mut start, mut done, mut errors) = (0, 0, 0);
        while let ReplyParse::Complete(len) =
            self.protocol.parse_reply(&self.buf[start..self.filled])
        {
            if self.protocol.is_error(&self.buf[start..start + len]) {
                errors += 1;
            }
            start += len;
            done += 1;
        }
        self.buf.copy_within(start..self.filled, 0);
        self.filled -= start;
        (done, errors)
    }
}

/// One connection's load on its own thread: batches of requests, each sent at once
/// and waited for.
struct Connection {
    stream: Box<dyn Wire>,
    /// With `--reconnect`: where each batch's new connection comes from.
    redial: Option<Dialer>,
    shape: Shape,
}

impl Connection {
    /// Sends one batch and reads its replies: the keys it asked for or stored, and
    /// the replies that were errors.
    fn batch(&mut self) -> (u64, u64) {
        let batch_keys = self.shape.next_batch();
        if let Some(dialer) = &self.redial {
            self.stream = dialer.dial();
        }
        self.stream.write_all(&self.shape.request).expect("write");
        let (mut done, mut errors) = (0, 0);
        while done < self.shape.pipeline {
            let n = self.stream.read(self.shape.read_space()).expect("read");
            assert!(n > 0, "server closed the connection");
            let (replies, failed) = self.shape.replies_read(n);
            done += replies;
            errors += failed;
        }
        (batch_keys, errors)
    }
}

fn main() {
    let args = Args::parse();
    let addr: std::net::SocketAddr = args.target.parse().expect("--target must be ip:port");
    assert!(
        addr.ip().is_loopback(),
        "cashew-load only targets loopback addresses"
    );
    let seconds = args.seconds.min(120);
    if args.one_thread {
        let (totals, elapsed) = one_thread::run(&args, addr, seconds, || {
            wait_for_ready_file(args.ready_file.as_deref())
        });
        totals.print(elapsed);
        return;
    }
    let dialer = Dialer::new(addr, args.tls_ca.as_deref());
    if let Some(n) = args.hold {
        let held: Vec<Box<dyn Wire>> = (0..n).map(|_| dialer.dial()).collect();
        println!("held={}", held.len());
        std::io::stdout().flush().unwrap();
        std::thread::sleep(Duration::from_secs(seconds));
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let keys_done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Every connection open and warmed up; then the measured batches start.
    let warmed = Arc::new(Barrier::new(args.connections + 1));
    let go = Arc::new(Barrier::new(args.connections + 1));

    let workers: Vec<_> = (0..args.connections)
        .map(|c| {
            let (stop, ops, keys_done, errors) =
                (stop.clone(), ops.clone(), keys_done.clone(), errors.clone());
            let (warmed, go) = (warmed.clone(), go.clone());
            let mut conn = Connection {
                stream: dialer.dial(),
                redial: args.reconnect.then(|| dialer.clone()),
                shape: Shape::new(&args, c),
            };
            let (warmup, batches) = (args.warmup_batches, args.batches.unwrap_or(u64::MAX));
            std::thread::spawn(move || {
                for _ in 0..warmup {
                    conn.batch();
                }
                warmed.wait();
                go.wait();
                let mut latencies_us: Vec<u32> = Vec::new();
                for _ in 0..batches {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let sent = Instant::now();
                    let (batch_keys, batch_errors) = conn.batch();
                    latencies_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    ops.fetch_add(conn.shape.pipeline as u64, Ordering::Relaxed);
                    keys_done.fetch_add(batch_keys, Ordering::Relaxed);
                    errors.fetch_add(batch_errors, Ordering::Relaxed);
                }
                latencies_us
            })
        })
        .collect();

    warmed.wait();
    wait_for_ready_file(args.ready_file.as_deref());
    go.wait();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds)
        && !workers.iter().all(|w| w.is_finished())
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let totals = Totals {
        ops: ops.load(Ordering::Relaxed),
        keys: keys_done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        latencies_us: workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect(),
    };
    totals.print(started.elapsed());
}
