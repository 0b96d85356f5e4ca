//! A nameserver for tests: answers A queries for the names it is given, slowly
//! when told to, and NXDOMAIN for every other name. It listens on port 53 of a
//! loopback address of its own; a process started with [`crate::Cashew::
//! start_with_nameserver`] resolves through it (and only through it).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the nameserver answers for one name.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// At once, with this address.
    Address(Ipv4Addr),
    /// With this address, after this long.
    Slow(Duration, Ipv4Addr),
    /// NXDOMAIN: the name does not exist.
    Unknown,
}

pub struct Nameserver {
    pub addr: Ipv4Addr,
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    stop: Arc<AtomicBool>,
}

impl Nameserver {
    /// Binds UDP port 53 of a free loopback address (which needs root: the
    /// reason is returned otherwise).
    pub fn start() -> Result<Nameserver, String> {
        let mut last = String::new();
        for n in 0..20u32 {
            let seed = std::process::id().wrapping_mul(31).wrapping_add(n * 7919);
            let addr = Ipv4Addr::new(127, 53, (seed >> 8) as u8, (seed as u8).max(1));
            match UdpSocket::bind((addr, 53)) {
                Ok(socket) => return Ok(Self::serve(socket, addr)),
                Err(e) => last = format!("cannot bind {addr}:53: {e}"),
            }
        }
        Err(last)
    }

    fn serve(socket: UdpSocket, addr: Ipv4Addr) -> Nameserver {
        let answers: Arc<Mutex<HashMap<String, Answer>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (a, s) = (answers.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Some(query) = Query::parse(&buf[..n]) else {
                    continue;
                };
                let answer = a
                    .lock()
                    .unwrap()
                    .get(&query.name)
                    .copied()
                    .unwrap_or(Answer::Unknown);
                let socket = socket.try_clone().unwrap();
                let reply = move |addr: Option<Ipv4Addr>, exists: bool| {
                    let _ = socket.send_to(&query.reply(addr, exists), from);
                };
                match answer {
                    Answer::Address(ip) => reply(Some(ip), true),
                    Answer::Unknown => reply(None, false),
                    Answer::Slow(after, ip) => {
                        std::thread::spawn(move || {
                            std::thread::sleep(after);
                            reply(Some(ip), true)
                        });
                    }
                }
            }
        });
        Nameserver {
            addr,
            answers,
            stop,
        }
    }

    /// How `name` is answered from now on.
    pub fn set(&self, name: &str, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), answer);
    }

    pub fn socket_addr(&self) -> SocketAddr {
        (self.addr, 53).into()
    }
}

impl Drop for Nameserver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The parts of a query its reply repeats.
struct Query {
    id: [u8; 2],
    flags: u16,
    /// The question section, as sent.
    question: Vec<u8>,
    qtype: u16,
    name: String,
}

impl Query {
    fn parse(packet: &[u8]) -> Option<Query> {
        let header = packet.get(..12)?;
        if header[4..6] != [0, 1] {
            return None; // exactly one question
        }
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = *packet.get(at)? as usize;
            at += 1;
            if len == 0 {
                break;
            }
            let label = packet.get(at..at + len)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            at += len;
        }
        let qtype = u16::from_be_bytes(packet.get(at..at + 2)?.try_into().ok()?);
        packet.get(at..at + 4)?;
        Some(Query {
            id: [header[0], header[1]],
            flags: u16::from_be_bytes([header[2], header[3]]),
            question: packet[12..at + 4].to_vec(),
            qtype,
            name: labels.join("."),
        })
    }

    /// The reply: NXDOMAIN when the name does not exist, else `addr` for an A
    /// query and no answer for any other type (AAAA among them).
    fn reply(&self, addr: Option<Ipv4Addr>, exists: bool) -> Vec<u8> {
        const A: u16 = 1;
        let answer = addr.filter(|_| self.qtype == A);
        // Response, recursion desired as asked, recursion available.
        let mut flags = 0x8080 | (self.flags & 0x0100);
        if !exists {
            flags |= 3;
        }
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, answer.is_some() as u8, 0, 0, 0, 0]);
        out.extend_from_slice(&self.question);
        if let Some(ip) = answer {
            // The name by pointer to the question, type A, class IN, TTL 0.
            out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
            out.extend_from_slice(&ip.octets());
        }
        out
    }
}
