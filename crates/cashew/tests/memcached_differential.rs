//! cashew answers like memcached: every request of `tests/data/memcached-corpus.txt`
//! (right and wrong argument counts, bad numbers, noreply in odd places, odd and
//! oversized keys and values, bad data blocks, the meta protocol) is sent to a real
//! memcached and, on its own connection, through cashew to another real memcached
//! started the same way; the replies must be the same. Then memcached's own
//! conformance tool and libmemcached's clients run through cashew.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cashew_testkit::{memcached, program, unescape, PoolProxy};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");
const CORPUS: &str = include_str!("data/memcached-corpus.txt");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Compare {
    Exact,
    /// Digit runs masked: CAS values, times.
    Digits,
    /// Value-free: `STAT` lines are left out (a proxy has no slabs or items of its
    /// own, and its counters are not a server's); the rest must match.
    Stats,
}

struct Case {
    line: usize,
    compare: Compare,
    bytes: Vec<u8>,
}

fn corpus() -> Vec<Case> {
    CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let (compare, text) = match l.split_once(' ') {
                Some(("~", rest)) => (Compare::Digits, rest),
                Some(("@stats", rest)) => (Compare::Stats, rest),
                _ => (Compare::Exact, l),
            };
            Case {
                line: i + 1,
                compare,
                bytes: unescape(text),
            }
        })
        .collect()
}

/// How many `mn` requests a case holds: the exchange ends after one more `MN`.
fn noops(bytes: &[u8]) -> usize {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            l == b"mn" || l.starts_with(b"mn ")
        })
        .count()
}

/// Sends a case then `mn` on a new connection; all that comes back until the
/// last `MN`, the end of the stream, or a quiet moment.
fn exchange(addr: SocketAddr, case: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut request = case.to_vec();
    request.extend_from_slice(b"mn\r\n");
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let want = noops(case) + 1;
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.windows(4).filter(|w| w == b"MN\r\n").count() >= want {
            break;
        }
    }
    drop(stream);
    let _ = sender.join();
    got
}

fn normalize(reply: &[u8], compare: Compare) -> Vec<u8> {
    match compare {
        Compare::Exact => reply.to_vec(),
        Compare::Digits => {
            let mut out = Vec::with_capacity(reply.len());
            for &b in reply {
                if b.is_ascii_digit() {
                    if out.last() != Some(&b'#') {
                        out.push(b'#');
                    }
                } else {
                    out.push(b);
                }
            }
            out
        }
        Compare::Stats => reply
            .split_inclusive(|&b| b == b'\n')
            .filter(|line| !line.starts_with(b"STAT "))
            .flatten()
            .copied()
            .collect(),
    }
}

fn show(bytes: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if text.len() > 300 {
        format!("{}... ({} bytes)", &text[..300], bytes.len())
    } else {
        text
    }
}

#[test]
fn every_request_of_the_corpus_gets_memcacheds_reply() {
    compare_with_memcached(1);
}

/// Through a pool of three servers, multi-key gets are split and merged and
/// `flush_all`/`verbosity` go to every server: the client must not tell.
#[test]
fn the_corpus_through_three_servers_gets_the_same_replies() {
    compare_with_memcached(3);
}

fn compare_with_memcached(servers: usize) {
    let direct = memcached();
    let proxy = PoolProxy::start(CASHEW, (0..servers).map(|_| memcached()).collect(), "", &[]);
    // Cases give `cas` a unique of 1 to see it refused: an item gets 1 only on a
    // server that stored nothing before, which one of three servers may be (which,
    // depends on the ports). One store on every server first keeps 1 unused.
    for server in std::iter::once(&direct).chain(&proxy.backends) {
        exchange(server.addr, b"set warm-up 0 0 1\r\nx\r\n");
    }
    let cases = corpus();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut differences = Vec::new();
    for case in &cases {
        let expected = exchange(direct.addr, &case.bytes);
        let got = exchange(proxy.listen, &case.bytes);
        if normalize(&expected, case.compare) != normalize(&got, case.compare) {
            differences.push(format!(
                "line {}: {}\n  memcached: {}\n  cashew:    {}",
                case.line,
                show(&case.bytes),
                show(&expected),
                show(&got)
            ));
        }
    }
    println!(
        "{} requests compared through {servers} server(s), {} differ",
        cases.len(),
        differences.len()
    );
    assert!(
        differences.is_empty(),
        "{} of {} cases differ:\n{}",
        differences.len(),
        cases.len(),
        differences.join("\n")
    );
}

fn run(tool: &str, args: &[String]) -> (bool, String) {
    let out = std::process::Command::new(program(tool))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn memccapable_passes_every_ascii_test_through_cashew() {
    let proxy = PoolProxy::start(CASHEW, vec![memcached(), memcached()], "", &[]);
    let port = proxy.listen.port().to_string();
    let (ok, text) = run(
        "memccapable",
        &[
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port,
            "-a".into(),
        ],
    );
    let passed = text.lines().filter(|l| l.ends_with("[pass]")).count();
    println!("memccapable -a through cashew: {passed} passed\n{text}");
    assert!(ok && text.contains("All tests passed"), "{text}");
    assert_eq!(passed, 27, "{text}");
}

#[test]
fn libmemcached_ping_and_stat_work_through_cashew() {
    let proxy = PoolProxy::start(CASHEW, vec![memcached()], "", &[]);
    let servers = format!("--servers={}", proxy.listen);
    let (ok, text) = run("memcping", std::slice::from_ref(&servers));
    assert!(ok, "memcping: {text}");
    let (ok, text) = run("memcstat", &[servers]);
    assert!(ok, "memcstat: {text}");
    assert!(
        text.contains("version: 1.6"),
        "memcstat shows the server's version: {text}"
    );
}
