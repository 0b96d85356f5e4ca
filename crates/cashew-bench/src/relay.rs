//! cashew-relay: the least work a proxy can do, as a yardstick for what is left for
//! cashew to save. Each client connection gets its own connection to one server and
//! bytes are copied both ways, unparsed, on one thread, in one of two ways:
//!
//! - `epoll`: on readiness, one read and one write per direction, the way cashew's
//!   event loop does it;
//! - `uring`: every receive and send is an io_uring operation, and all of one loop
//!   turn's operations are submitted with one system call.
//!
//! Not a proxy (no parsing, no routing, no limits): a send that would block is
//! retried, which the loads of `scripts/bench-floor` never cause.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Epoll,
    Uring,
}

#[derive(Parser)]
struct Args {
    /// Address to listen on (loopback only)
    #[arg(long)]
    listen: SocketAddr,
    /// The one server every client is relayed to (loopback only)
    #[arg(long)]
    server: SocketAddr,
    #[arg(long, value_enum)]
    mode: Mode,
}

const BUFFER: usize = 64 * 1024;

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    assert!(
        args.listen.ip().is_loopback() && args.server.ip().is_loopback(),
        "cashew-relay only uses loopback addresses"
    );
    let listener = std::net::TcpListener::bind(args.listen)?;
    match args.mode {
        Mode::Epoll => epoll::run(listener, args.server),
        Mode::Uring => uring::run(listener, args.server),
    }
}

fn connect(server: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(server)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

mod epoll {
    use super::*;
    use mio::net::{TcpListener, TcpStream as MioStream};
    use mio::{Events, Interest, Poll, Token};

    const LISTENER: Token = Token(usize::MAX);

    /// Token `2 * pair + side`: side 0 is the client, 1 the server.
    pub fn run(listener: std::net::TcpListener, server: SocketAddr) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let mut poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let mut pairs: Vec<Option<[MioStream; 2]>> = Vec::new();
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; BUFFER];
        loop {
            match poll.poll(&mut events, None) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                result => result?,
            }
            for event in events.iter() {
                if event.token() == LISTENER {
                    while let Ok((client, _)) = listener.accept() {
                        client.set_nodelay(true)?;
                        let upstream = connect(server)?;
                        upstream.set_nonblocking(true)?;
                        let mut pair = [client, MioStream::from_std(upstream)];
                        let slot = pairs.len();
                        for (side, stream) in pair.iter_mut().enumerate() {
                            poll.registry().register(
                                stream,
                                Token(2 * slot + side),
                                Interest::READABLE,
                            )?;
                        }
                        pairs.push(Some(pair));
                    }
                    continue;
                }
                let (slot, side) = (event.token().0 / 2, event.token().0 % 2);
                let Some(pair) = pairs[slot].as_mut() else {
                    continue;
                };
                if !relay(pair, side, &mut buf) {
                    pairs[slot] = None;
                }
            }
        }
    }

    /// Moves what `side` has to the other side; false once either side is done.
    fn relay(pair: &mut [MioStream; 2], side: usize, buf: &mut [u8]) -> bool {
        loop {
            let n = match pair[side].read(buf) {
                Ok(0) => return false,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            };
            let mut sent = 0;
            while sent < n {
                match pair[1 - side].write(&buf[sent..n]) {
                    Ok(m) => sent += m,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            // Edge-triggered: a short read emptied the socket, and data arriving
            // later raises a new event, so no second read to meet EAGAIN.
            if n < buf.len() {
                return true;
            }
        }
    }
}

mod uring {
    use super::*;
    use io_uring::{opcode, squeue, types, IoUring};

    const ACCEPT: u64 = u64::MAX;
    const RECEIVE: u64 = 0;
    const SEND: u64 = 1;

    /// One client and its server connection. Direction `side` receives from
    /// `streams[side]` into `buffers[side]` and sends that to the other stream.
    struct Pair {
        streams: [TcpStream; 2],
        buffers: [Box<[u8]>; 2],
        /// Bytes of `buffers[side]` received and already sent.
        pending: [(usize, usize); 2],
        /// Directions still running; the pair is dropped when none is.
        running: u8,
    }

    fn user_data(slot: usize, side: usize, op: u64) -> u64 {
        ((slot as u64) << 2) | ((side as u64) << 1) | op
    }

    pub fn run(listener: std::net::TcpListener, server: SocketAddr) -> std::io::Result<()> {
        let mut ring = IoUring::new(4096)?;
        let mut pairs: Vec<Option<Pair>> = Vec::new();
        let mut queue: Vec<squeue::Entry> = Vec::new();
        let accept = || {
            opcode::Accept::new(
                types::Fd(listener.as_raw_fd()),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .build()
            .user_data(ACCEPT)
        };
        queue.push(accept());
        loop {
            // All of this turn's operations go to the kernel in one system call.
            for entry in queue.drain(..) {
                // SAFETY: every buffer an entry points at lives in a `Pair` that is
                // kept until its operations have completed.
                while unsafe { ring.submission().push(&entry) }.is_err() {
                    ring.submit()?;
                }
            }
            match ring.submit_and_wait(1) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                result => result?,
            };
            let completions: Vec<(u64, i32)> = ring
                .completion()
                .map(|c| (c.user_data(), c.result()))
                .collect();
            for (data, result) in completions {
                if data == ACCEPT {
                    if result >= 0 {
                        // SAFETY: a successful accept returns a new descriptor we own.
                        let client = unsafe { TcpStream::from_raw_fd(result) };
                        client.set_nodelay(true)?;
                        let slot = pairs.len();
                        let pair = Pair {
                            streams: [client, connect(server)?],
                            buffers: [vec![0; BUFFER].into(), vec![0; BUFFER].into()],
                            pending: [(0, 0); 2],
                            running: 2,
                        };
                        pairs.push(Some(pair));
                        for side in 0..2 {
                            queue.push(receive(pairs[slot].as_mut().unwrap(), slot, side));
                        }
                    }
                    queue.push(accept());
                    continue;
                }
                let (slot, side, op) = ((data >> 2) as usize, ((data >> 1) & 1) as usize, data & 1);
                let pair = pairs[slot].as_mut().expect("completion for a live pair");
                if result <= 0 {
                    // End of stream or an error: stop both directions.
                    for stream in &pair.streams {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    pair.running -= 1;
                    if pair.running == 0 {
                        pairs[slot] = None;
                    }
                    continue;
                }
                let n = result as usize;
                let (sent, received) = &mut pair.pending[side];
                if op == RECEIVE {
                    (*sent, *received) = (0, n);
                } else {
                    *sent += n;
                }
                if sent < received {
                    queue.push(send(pair, slot, side));
                } else {
                    queue.push(receive(pair, slot, side));
                }
            }
        }
    }

    fn receive(pair: &mut Pair, slot: usize, side: usize) -> squeue::Entry {
        let buf = &mut pair.buffers[side];
        opcode::Recv::new(
            types::Fd(pair.streams[side].as_raw_fd()),
            buf.as_mut_ptr(),
            buf.len() as u32,
        )
        .build()
        .user_data(user_data(slot, side, RECEIVE))
    }

    fn send(pair: &mut Pair, slot: usize, side: usize) -> squeue::Entry {
        let (sent, received) = pair.pending[side];
        let rest = &pair.buffers[side][sent..received];
        opcode::Send::new(
            types::Fd(pair.streams[1 - side].as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .build()
        .user_data(user_data(slot, side, SEND))
    }
}
