//! Load for tests that change cashew while traffic flows (reloads, restarts,
//! faults). Every client checks each reply against its request, so a lost,
//! duplicated, reordered or wrong reply is caught, and runs until told to stop.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What a load client saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: u64,
    /// Gets that missed (allowed: a reload may move a key between its set and get).
    pub misses: u64,
    /// Wrong, missing, reordered or error replies.
    pub failures: Vec<String>,
    /// Connections refused.
    pub refused: u64,
    /// Connections cashew closed at a request boundary (allowed only where the
    /// test says so, e.g. a restart's drain; requests not yet read are resent).
    pub closed: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.misses += other.misses;
        self.failures.extend(other.failures);
        self.refused += other.refused;
        self.closed += other.closed;
    }

    fn fail(&mut self, what: String) {
        if self.failures.len() < 20 {
            self.failures.push(what);
        }
    }
}

/// Batch `seq` of a client: six keys with values that name their key.
fn batch_pairs(tag: &str, seq: u64) -> Vec<(String, String)> {
    (0..6)
        .map(|i| {
            let key = format!("{tag}:{seq}:{i}");
            (key.clone(), format!("v-{key}"))
        })
        .collect()
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

struct Replies(BufReader<TcpStream>);

impl Replies {
    /// True when the stream ends here, between two replies.
    fn ends_here(&mut self) -> bool {
        self.0.fill_buf().is_ok_and(|b| b.is_empty())
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        if self.0.read_until(b'\n', &mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        self.0.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads one `get`/multi-get reply; `expected` are the keys asked for with
    /// their values. Values must come in key order; returns the hits.
    fn values(&mut self, expected: &[(String, String)]) -> Result<usize, String> {
        let mut next = 0;
        let mut hits = 0;
        loop {
            let line = self
                .line()
                .map_err(|e| format!("reading a get reply: {e}"))?;
            if line == "END\r\n" {
                return Ok(hits);
            }
            let mut words = line.trim_end().split(' ');
            let (Some("VALUE"), Some(key), Some(_flags), Some(len)) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(format!("expected VALUE or END, got {line:?}"));
            };
            let Some(at) = expected[next..].iter().position(|(k, _)| k == key) else {
                return Err(format!("value for {key} out of order or not asked for"));
            };
            next += at + 1;
            let len: usize = len.parse().map_err(|_| format!("bad length in {line:?}"))?;
            let data = self
                .bytes(len + 2)
                .map_err(|e| format!("reading a value: {e}"))?;
            let want = &expected[next - 1].1;
            if data[..len] != *want.as_bytes() {
                return Err(format!(
                    "{key}: got {:?}, expected {want:?}",
                    String::from_utf8_lossy(&data[..len])
                ));
            }
            hits += 1;
        }
    }
}

/// A persistent memcached client sending pipelines of `set`, `get` and multi-key
/// `get` with values unique to this client, on one connection for its life: a
/// closed connection is a failure.
pub fn memcached_pipelines(addr: SocketAddr, tag: &str, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut seq = 0u64;
    memcached_connection(addr, tag, stop, &mut seq, &mut tally);
    tally
}

/// As [`memcached_pipelines`], but a connection closed at a request boundary (a
/// drain) is counted and replaced by a new one, as clients of a restarting proxy do.
pub fn memcached_pipelines_reconnecting(addr: SocketAddr, tag: &str, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if !memcached_connection(addr, tag, stop, &mut seq, &mut tally) {
            return tally;
        }
    }
    tally
}

/// Runs pipelines on one connection until `stop` (true) or a failure (false).
/// A connection that ends between two replies is counted in `closed` and ends
/// with true: the requests after that point were not answered, nor executed.
fn memcached_connection(
    addr: SocketAddr,
    tag: &str,
    stop: &AtomicBool,
    seq: &mut u64,
    tally: &mut Tally,
) -> bool {
    let stream = match connect(addr) {
        Ok(s) => s,
        Err(e) => {
            tally.refused += 1;
            tally.fail(format!("connect {addr}: {e}"));
            return false;
        }
    };
    let mut writer = stream.try_clone().unwrap();
    let mut replies = Replies(BufReader::new(stream));
    while !stop.load(Ordering::Relaxed) {
        let pairs = batch_pairs(tag, *seq);
        *seq += 1;
        let mut batch = Vec::new();
        for (key, value) in &pairs {
            batch.extend(format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).bytes());
            batch.extend(format!("get {key}\r\n").bytes());
        }
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        batch.extend(format!("get {}\r\n", keys.join(" ")).bytes());
        if writer.write_all(&batch).is_err() {
            tally.closed += 1;
            return true;
        }
        for pair in &pairs {
            if replies.ends_here() {
                tally.closed += 1;
                return true;
            }
            match replies.line() {
                Ok(line) if line == "STORED\r\n" => {}
                Ok(line) => tally.fail(format!("{tag}: set {}: {line:?}", pair.0)),
                Err(e) => {
                    tally.fail(format!("{tag}: set {}: {e}", pair.0));
                    return false;
                }
            }
            tally.requests += 1;
            if replies.ends_here() {
                tally.closed += 1;
                return true;
            }
            tally.requests += 1;
            match replies.values(std::slice::from_ref(pair)) {
                Ok(0) => tally.misses += 1,
                Ok(_) => {}
                Err(e) => {
                    tally.fail(format!("{tag}: get {}: {e}", pair.0));
                    return false;
                }
            }
        }
        if replies.ends_here() {
            tally.closed += 1;
            return true;
        }
        tally.requests += 1;
        match replies.values(&pairs) {
            Ok(hits) => tally.misses += (pairs.len() - hits) as u64,
            Err(e) => {
                tally.fail(format!("{tag}: multi-get: {e}"));
                return false;
            }
        }
    }
    true
}

/// A persistent redis client (the `redis` crate) sending pipelines of SET, GET and
/// MGET with values unique to this client, on one connection for its life.
pub fn redis_pipelines(addr: SocketAddr, tag: &str, stop: &AtomicBool) -> Tally {
    use redis::Value;
    let mut tally = Tally::default();
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let mut con = match client.get_connection_with_timeout(Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            tally.fail(format!("connect {addr}: {e}"));
            return tally;
        }
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(15)));
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let pairs = batch_pairs(tag, seq);
        seq += 1;
        let mut pipe = redis::pipe();
        for (key, value) in &pairs {
            pipe.cmd("SET").arg(key).arg(value).cmd("GET").arg(key);
        }
        pipe.cmd("MGET")
            .arg(pairs.iter().map(|(k, _)| k).collect::<Vec<_>>());
        let replies: Vec<Value> = match pipe.query(&mut con) {
            Ok(r) => r,
            Err(e) => {
                tally.fail(format!("{tag}: pipeline: {e}"));
                if e.is_io_error() || e.is_connection_dropped() {
                    tally.closed += 1;
                }
                return tally;
            }
        };
        tally.requests += replies.len() as u64;
        let bulk_is =
            |v: &Value, want: &str| matches!(v, Value::BulkString(b) if b == want.as_bytes());
        for (i, (key, value)) in pairs.iter().enumerate() {
            if !matches!(replies[2 * i], Value::Okay) {
                tally.fail(format!("{tag}: SET {key}: {:?}", replies[2 * i]));
            }
            match &replies[2 * i + 1] {
                Value::Nil => tally.misses += 1,
                v if bulk_is(v, value) => {}
                other => tally.fail(format!("{tag}: GET {key}: {other:?}")),
            }
        }
        match replies.last() {
            Some(Value::Array(values)) if values.len() == pairs.len() => {
                for (v, (key, value)) in values.iter().zip(&pairs) {
                    match v {
                        Value::Nil => tally.misses += 1,
                        v if bulk_is(v, value) => {}
                        other => tally.fail(format!("{tag}: MGET {key}: {other:?}")),
                    }
                }
            }
            other => tally.fail(format!("{tag}: MGET: {other:?}")),
        }
    }
    tally
}

/// A client that opens a new connection for every request (`set`, then close).
pub fn connection_per_request(addr: SocketAddr, tag: &str, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let stream = match connect(addr) {
            Ok(s) => s,
            Err(e) => {
                tally.refused += 1;
                tally.fail(format!("{tag}: connect {addr}: {e}"));
                continue;
            }
        };
        let mut writer = stream.try_clone().unwrap();
        let mut replies = Replies(BufReader::new(stream));
        let request = format!("set {tag}:{seq} 0 0 2\r\nok\r\n");
        tally.requests += 1;
        let reply = writer
            .write_all(request.as_bytes())
            .and_then(|()| replies.line());
        match reply {
            Ok(line) if line == "STORED\r\n" => {}
            Ok(line) => tally.fail(format!("{tag}: {line:?}")),
            Err(e) => tally.fail(format!("{tag}: request {seq}: {e}")),
        }
    }
    tally
}

/// A persistent client that pipelines `incr` of its own counter (set to 0 first).
/// Each reply must be one more than the last: a request executed twice, or executed
/// without its reply reaching the client, shows as a jump. When cashew closes the
/// connection (a drain), the requests it had not answered are resent on a new one.
pub fn counter_increments(addr: SocketAddr, key: &str, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let mut last = 0u64;
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let stream = match connect(addr) {
            Ok(s) => s,
            Err(e) => {
                tally.refused += 1;
                tally.fail(format!("{key}: connect {addr}: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let mut writer = stream.try_clone().unwrap();
        let mut replies = Replies(BufReader::new(stream));
        if std::mem::take(&mut first) {
            let set = format!("set {key} 0 0 1\r\n0\r\n");
            let stored = writer
                .write_all(set.as_bytes())
                .and_then(|()| replies.line());
            if !matches!(&stored, Ok(l) if l == "STORED\r\n") {
                tally.fail(format!("{key}: setting the counter: {stored:?}"));
                return tally;
            }
        }
        'connection: while !stop.load(Ordering::Relaxed) {
            let batch = format!("incr {key} 1\r\n").repeat(16);
            if writer.write_all(batch.as_bytes()).is_err() {
                tally.closed += 1;
                break 'connection;
            }
            for _ in 0..16 {
                match replies.line() {
                    Ok(line) => match line.trim_end().parse::<u64>() {
                        Ok(n) if n == last + 1 => {
                            last = n;
                            tally.requests += 1;
                        }
                        _ => {
                            tally.fail(format!("{key}: after {last} got {line:?}"));
                            return tally;
                        }
                    },
                    Err(_) => {
                        // Closed at a request boundary: what was not answered was
                        // not executed (the next reply proves it), so it is resent.
                        tally.closed += 1;
                        break 'connection;
                    }
                }
            }
        }
    }
    // Every increment executed was acknowledged, and no more.
    let stored = connect(addr).and_then(|stream| {
        let mut writer = stream.try_clone()?;
        writer.write_all(format!("get {key}\r\n").as_bytes())?;
        let mut replies = Replies(BufReader::new(stream));
        let header = replies.line()?;
        let len: usize = header
            .trim_end()
            .rsplit(' ')
            .next()
            .unwrap_or("")
            .parse()
            .unwrap_or(0);
        let value = replies.bytes(len + 2)?;
        Ok(String::from_utf8_lossy(&value[..len]).into_owned())
    });
    match stored {
        Ok(value) if value == last.to_string() => {}
        other => tally.fail(format!(
            "{key}: counter holds {other:?}, {last} increments acknowledged"
        )),
    }
    tally
}

/// A load client to run with [`run`].
pub type Client = Box<dyn FnOnce(&AtomicBool) -> Tally + Send>;

/// The longest any load runs: a test that fails before it sets `stop` must not
/// leave its load (and itself) running for ever.
pub const LOAD_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Runs `clients` concurrently until `stop` is set (or [`LOAD_LIMIT`] has passed),
/// then adds up their tallies.
pub fn run<F>(clients: Vec<F>, stop: &AtomicBool) -> Tally
where
    F: FnOnce(&AtomicBool) -> Tally + Send,
{
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let done = &done;
        scope.spawn(move || {
            let until = std::time::Instant::now() + LOAD_LIMIT;
            while !done.load(Ordering::Relaxed) {
                if std::time::Instant::now() >= until {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        let handles: Vec<_> = clients
            .into_iter()
            .map(|client| scope.spawn(move || client(stop)))
            .collect();
        let mut total = Tally::default();
        for handle in handles {
            total.add(handle.join().expect("a load client panicked"));
        }
        done.store(true, Ordering::Relaxed);
        total
    })
}
