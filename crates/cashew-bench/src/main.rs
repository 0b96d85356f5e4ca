//! cashew-load: a bounded memcached or redis load: each connection sends pipelined
//! batches of gets and sets and waits for every reply, for a fixed time. The two
//! protocols get the same load shape (keys, values, mix, pipeline), so that their
//! costs can be compared. Prints one line:
//! `ops_per_sec=N ops=N keys=N errors=N p50_us=N p99_us=N` (`keys`: keys asked for or
//! stored, more than `ops` with multi-gets; latency of a batch, from its first byte
//! written to its last reply read: of a request, at pipeline 1).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cashew_protocol::{memcache, resp, ReplyParse};
use clap::{Parser, ValueEnum};

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
}

fn main() {
    let args = Args::parse();
    let addr: std::net::SocketAddr = args.target.parse().expect("--target must be ip:port");
    assert!(
        addr.ip().is_loopback(),
        "cashew-load only targets loopback addresses"
    );
    let seconds = args.seconds.min(120);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let keys_done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let value = vec![b'v'; args.value_size];

    let workers: Vec<_> = (0..args.connections)
        .map(|c| {
            let (stop, ops, keys_done, errors, value) = (
                stop.clone(),
                ops.clone(),
                keys_done.clone(),
                errors.clone(),
                value.clone(),
            );
            let (pipeline, keys, get_percent) = (args.pipeline, args.keys, args.get_percent);
            let keys_per_get = args.keys_per_get.max(1);
            let protocol = args.protocol;
            let batches = args.batches.unwrap_or(u64::MAX);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (c as u64 + 1);
                let mut request = Vec::new();
                let mut buf = vec![0u8; 256 * 1024];
                let mut latencies_us: Vec<u32> = Vec::new();
                for _ in 0..batches {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    request.clear();
                    let mut batch_keys = 0;
                    for _ in 0..pipeline {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let key = rng as usize % keys;
                        if (rng >> 32) as usize % 100 < get_percent {
                            let keys = (0..keys_per_get).map(|k| (key + k * 7919) % keys);
                            protocol.get(&mut request, keys);
                            batch_keys += keys_per_get as u64;
                        } else {
                            protocol.set(&mut request, key, &value);
                            batch_keys += 1;
                        }
                    }
                    let sent = Instant::now();
                    s.write_all(&request).expect("write");
                    let (mut filled, mut done) = (0, 0);
                    while done < pipeline {
                        if filled == buf.len() {
                            // A reply larger than the buffer (large values).
                            buf.resize(buf.len() * 2, 0);
                        }
                        let n = s.read(&mut buf[filled..]).expect("read");
                        assert!(n > 0, "server closed the connection");
                        filled += n;
                        let mut start = 0;
                        while let ReplyParse::Complete(len) =
                            protocol.parse_reply(&buf[start..filled])
                        {
                            if protocol.is_error(&buf[start..start + len]) {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            start += len;
                            done += 1;
                        }
                        buf.copy_within(start..filled, 0);
                        filled -= start;
                    }
                    latencies_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    ops.fetch_add(pipeline as u64, Ordering::Relaxed);
                    keys_done.fetch_add(batch_keys, Ordering::Relaxed);
                }
                latencies_us
            })
        })
        .collect();

    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds)
        && !workers.iter().all(|w| w.is_finished())
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<u32> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    latencies.sort_unstable();
    let quantile = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(i - 1).copied().unwrap_or(0)
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "ops_per_sec={:.0} ops={} keys={} errors={} p50_us={} p99_us={}",
        ops.load(Ordering::Relaxed) as f64 / elapsed,
        ops.load(Ordering::Relaxed),
        keys_done.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        quantile(0.5),
        quantile(0.99)
    );
}
