//! `--one-thread`: every connection on one thread, driven by epoll, as a
//! single-threaded event-driven client (memtier_benchmark `--threads 1`) runs
//! them. Each connection still sends a batch at once and waits for all its replies
//! before the next. A client process that is one thread wakes once for the replies
//! of many connections, where a thread per connection is woken for each: the
//! proxy's cost of waking its clients differs between the two.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::{Args, Shape, Totals};

struct Conn {
    stream: TcpStream,
    shape: Shape,
    /// Bytes of the batch written so far.
    written: usize,
    /// Replies of the batch read so far, and how many were errors.
    done: usize,
    errors: u64,
    batch_keys: u64,
    sent: Instant,
    /// Batches left in this phase (`u64::MAX`: until the time is up).
    left: u64,
}

impl Conn {
    fn start_batch(&mut self) {
        self.batch_keys = self.shape.next_batch();
        self.written = 0;
        self.done = 0;
        self.errors = 0;
        self.sent = Instant::now();
        self.flush();
    }

    /// Writes what the socket takes of the batch.
    fn flush(&mut self) {
        while self.written < self.shape.request.len() {
            match self.stream.write(&self.shape.request[self.written..]) {
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("write: {e}"),
            }
        }
    }

    /// Reads what has come; each batch completed is counted in `totals` (when
    /// `counted`) and the next is sent while batches are left.
    fn read(&mut self, totals: &mut Totals, counted: bool) {
        loop {
            let n = match self.stream.read(self.shape.read_space()) {
                Ok(0) => panic!("server closed the connection"),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("read: {e}"),
            };
            let (replies, errors) = self.shape.replies_read(n);
            self.done += replies;
            self.errors += errors;
            if self.done >= self.shape.pipeline && self.written == self.shape.request.len() {
                if counted {
                    totals.ops += self.shape.pipeline as u64;
                    totals.keys += self.batch_keys;
                    totals.errors += self.errors;
                    let us = self.sent.elapsed().as_micros().min(u32::MAX as u128);
                    totals.latencies_us.push(us as u32);
                }
                self.left -= 1;
                if self.left > 0 {
                    self.start_batch();
                }
            }
        }
    }

    fn busy(&self) -> bool {
        self.left > 0
    }
}

/// Runs `batches` batches on every connection (until each has done them or `until`).
fn phase(
    poll: &mut Poll,
    conns: &mut [Conn],
    batches: u64,
    until: Instant,
    totals: &mut Totals,
    counted: bool,
) {
    if batches == 0 {
        return;
    }
    for conn in conns.iter_mut() {
        conn.left = batches;
        conn.start_batch();
    }
    let mut events = Events::with_capacity(1024);
    while conns.iter().any(Conn::busy) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        poll.poll(&mut events, Some(until - now)).expect("epoll");
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if !conn.busy() {
                continue;
            }
            if event.is_writable() {
                conn.flush();
            }
            if event.is_readable() {
                conn.read(totals, counted);
            }
        }
    }
}

/// The whole load on this thread: warm-up batches, then (after `ready`, which
/// waits for a profiler) the measured ones for `seconds` at most. The totals of
/// the measured batches and the time they took.
pub(crate) fn run(
    args: &Args,
    addr: SocketAddr,
    seconds: u64,
    ready: impl FnOnce(),
) -> (Totals, Duration) {
    let mut poll = Poll::new().expect("epoll");
    let mut conns: Vec<Conn> = (0..args.connections)
        .map(|c| {
            let stream = std::net::TcpStream::connect(addr).expect("connect");
            stream.set_nodelay(true).unwrap();
            stream.set_nonblocking(true).unwrap();
            let mut stream = TcpStream::from_std(stream);
            poll.registry()
                .register(
                    &mut stream,
                    Token(c),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .expect("epoll");
            Conn {
                stream,
                shape: Shape::new(args, c),
                written: 0,
                done: 0,
                errors: 0,
                batch_keys: 0,
                sent: Instant::now(),
                left: 0,
            }
        })
        .collect();
    let mut totals = Totals::default();
    let limit = Instant::now() + Duration::from_secs(120);
    phase(
        &mut poll,
        &mut conns,
        args.warmup_batches,
        limit,
        &mut totals,
        false,
    );
    assert!(
        !conns.iter().any(Conn::busy),
        "the warm-up did not end in 120 s"
    );
    ready();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let batches = args.batches.unwrap_or(u64::MAX);
    phase(&mut poll, &mut conns, batches, until, &mut totals, true);
    (totals, started.elapsed())
}
