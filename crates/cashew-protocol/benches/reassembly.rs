//! What a message costs to parse when it arrives in 16 KiB reads and is parsed
//! again after each one: per byte, for growing sizes, parsed from its start each
//! time ("again") and resumed where the last read stopped ("resumed", what the
//! proxy does). A cost per byte that grows with the size is quadratic.

use std::hint::black_box;

use cashew_protocol::{memcache, resp, ReplyParse, Resume};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const READ: usize = 16 * 1024;

/// Parses every 16 KiB-longer prefix of `message` until one is complete.
fn reassemble(message: &[u8], mut parse: impl FnMut(&[u8]) -> bool) {
    let mut have = 0;
    loop {
        have = (have + READ).min(message.len());
        if parse(black_box(&message[..have])) {
            return;
        }
        assert!(have < message.len(), "never complete");
    }
}

fn multiget_reply(values: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..values {
        out.extend_from_slice(format!("VALUE key:{i} 0 32\r\n{:032}\r\n", i).as_bytes());
    }
    out.extend_from_slice(b"END\r\n");
    out
}

fn big_value(bytes: usize) -> Vec<u8> {
    let mut out = format!("VALUE big 0 {bytes}\r\n").into_bytes();
    out.resize(out.len() + bytes, b'v');
    out.extend_from_slice(b"\r\nEND\r\n");
    out
}

fn resp_array(values: usize) -> Vec<u8> {
    let mut out = format!("*{values}\r\n").into_bytes();
    for i in 0..values {
        out.extend_from_slice(format!("$32\r\n{:032}\r\n", i).as_bytes());
    }
    out
}

fn mset_request(keys: usize) -> Vec<u8> {
    let mut out = format!("*{}\r\n$4\r\nMSET\r\n", 1 + 2 * keys).into_bytes();
    for i in 0..keys {
        out.extend_from_slice(
            format!("$10\r\n{i:010}\r\n$8\r\nvalue{:03}\r\n", i % 1000).as_bytes(),
        );
    }
    out
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// One case: `message` reassembled with a parser that `parser` makes afresh for
/// each run (holding whatever state it resumes from).
fn case<P: FnMut(&[u8]) -> bool>(
    group: &mut Group<'_>,
    name: &str,
    size: usize,
    message: &[u8],
    parser: impl Fn() -> P,
) {
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.bench_with_input(BenchmarkId::new(name, size), message, |b, m| {
        b.iter(|| reassemble(m, parser()))
    });
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("reassembly");
    group.sample_size(10);
    let g = &mut group;
    for n in [1_000, 10_000, 100_000] {
        let reply = multiget_reply(n);
        case(g, "memcached multi-get reply, again", n, &reply, || {
            |buf: &[u8]| matches!(memcache::parse_reply(buf), ReplyParse::Complete(_))
        });
        case(g, "memcached multi-get reply, resumed", n, &reply, || {
            let mut resume = Resume::default();
            move |buf: &[u8]| {
                let parsed = memcache::parse_reply_resumable(buf, &mut resume);
                matches!(parsed, ReplyParse::Complete(_))
            }
        });
        let reply = resp_array(n);
        case(g, "redis array reply, again", n, &reply, || {
            |buf: &[u8]| matches!(resp::parse_reply(buf), ReplyParse::Complete(_))
        });
        case(g, "redis array reply, resumed", n, &reply, || {
            let mut resume = Resume::default();
            move |buf: &[u8]| {
                let parsed = resp::parse_reply_resumable(buf, &mut resume);
                matches!(parsed, ReplyParse::Complete(_))
            }
        });
        let request = mset_request(n);
        case(g, "redis MSET request, again", n, &request, || {
            let mut args = Vec::new();
            move |buf: &[u8]| {
                matches!(
                    resp::parse_request(buf, &mut args),
                    resp::Parsed::Request(_)
                )
            }
        });
        case(g, "redis MSET request, resumed", n, &request, || {
            let (mut args, mut resume) = (Vec::new(), resp::RequestResume::default());
            move |buf: &[u8]| {
                let parsed = resp::parse_request_resumable(buf, &mut args, &mut resume);
                matches!(parsed, resp::Parsed::Request(_))
            }
        });
    }
    for bytes in [64 * 1024, 1 << 20, 16 << 20] {
        case(g, "memcached large value", bytes, &big_value(bytes), || {
            |buf: &[u8]| matches!(memcache::parse_reply(buf), ReplyParse::Complete(_))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
