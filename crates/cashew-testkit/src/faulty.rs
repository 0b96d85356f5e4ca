//! A faulty network path in front of a real server: a loopback TCP relay that
//! passes bytes both ways until told to misbehave as a broken server or link does.
//! The server behind it is real; only what reaches cashew is damaged.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay does to the server's replies (and to new connections).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Bytes pass unchanged.
    None,
    /// Half of the next reply bytes, then the connection is closed.
    CloseMidReply,
    /// Replies are replaced by bytes that are no reply of any protocol.
    Garbage,
    /// Connections are accepted and requests read, but nothing ever comes back.
    Silent,
    /// Replies pass one byte every 100 ms: even the shortest reply (`+OK`, 5 bytes)
    /// then takes longer than a test's 400 ms timeout, so the fault always shows.
    Slow,
}

impl Fault {
    fn from_u8(v: u8) -> Fault {
        [
            Fault::None,
            Fault::CloseMidReply,
            Fault::Garbage,
            Fault::Silent,
            Fault::Slow,
        ][v as usize]
    }
}

const RECORDED: usize = 1 << 20;

/// The relay: clients connect to `addr`, and reach `upstream` through it.
pub struct FaultyLink {
    pub addr: SocketAddr,
    fault: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    /// The bytes that went toward the server, over all connections (the first
    /// `RECORDED` of them).
    requests: Arc<Mutex<Vec<u8>>>,
}

impl FaultyLink {
    pub fn start(upstream: SocketAddr) -> FaultyLink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (f, s, r) = (fault.clone(), stop.clone(), requests.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (f, r) = (f.clone(), r.clone());
                std::thread::spawn(move || relay(client, upstream, &f, r));
            }
        });
        FaultyLink {
            addr,
            fault,
            stop,
            requests,
        }
    }

    /// The bytes sent toward the server so far.
    pub fn requests(&self) -> Vec<u8> {
        self.requests.lock().unwrap().clone()
    }

    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::Relaxed);
    }

    fn fault(&self) -> Fault {
        Fault::from_u8(self.fault.load(Ordering::Relaxed))
    }
}

impl Drop for FaultyLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.set(Fault::None);
        // Wake the accept loop so that it sees the stop.
        let _ = TcpStream::connect(self.addr);
        let _ = self.fault();
    }
}

fn relay(client: TcpStream, upstream: SocketAddr, fault: &AtomicU8, requests: Arc<Mutex<Vec<u8>>>) {
    let now = || Fault::from_u8(fault.load(Ordering::Relaxed));
    let _ = client.set_nodelay(true);
    if now() == Fault::Silent {
        // Read and drop everything; answer nothing, ever.
        let mut sink = [0u8; 16 * 1024];
        let mut client = client;
        while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut to_server, mut from_client) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = from_client.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut recorded = requests.lock().unwrap();
            let room = RECORDED.saturating_sub(recorded.len()).min(n);
            recorded.extend_from_slice(&buf[..room]);
            drop(recorded);
            if to_server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mut from_server, mut to_client) = (server, client);
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from_server.read(&mut buf) {
        if n == 0 {
            break;
        }
        let ok = match now() {
            Fault::None => to_client.write_all(&buf[..n]).is_ok(),
            Fault::CloseMidReply => {
                let _ = to_client.write_all(&buf[..n.div_ceil(2)]);
                false
            }
            Fault::Garbage => to_client.write_all(b"\x00garbage\xff\r\n").is_ok(),
            Fault::Silent => true,
            Fault::Slow => slowly(&buf[..n], &mut to_client, &now),
        };
        if !ok {
            break;
        }
    }
    let _ = to_client.shutdown(Shutdown::Both);
    let _ = from_server.shutdown(Shutdown::Both);
}

/// Writes `bytes` one every 100 ms while the fault lasts, the rest at once after.
fn slowly(bytes: &[u8], to: &mut TcpStream, now: &impl Fn() -> Fault) -> bool {
    for (i, b) in bytes.iter().enumerate() {
        if now() != Fault::Slow {
            return to.write_all(&bytes[i..]).is_ok();
        }
        std::thread::sleep(Duration::from_millis(100));
        if to.write_all(&[*b]).is_err() {
            return false;
        }
    }
    true
}
