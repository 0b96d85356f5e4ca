//! Cost of placing a key: each hash function alone, then full ketama dispatch
//! (hash + ring search) over 10 and 500 servers. Run: `cargo bench -p cashew-route`.

use std::hint::black_box;

use cashew_route::{Distribution, HashFunction, RouteNode, Router};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn keys(len: usize) -> Vec<Vec<u8>> {
    (0..1024)
        .map(|i| {
            let mut k = format!("user:{i:08}:").into_bytes();
            k.resize(len, b'x');
            k
        })
        .collect()
}

fn hashes(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    for len in [16, 64] {
        let keys = keys(len);
        group.throughput(Throughput::Elements(keys.len() as u64));
        for h in HashFunction::ALL {
            group.bench_with_input(BenchmarkId::new(h.name(), len), &keys, |b, keys| {
                b.iter(|| {
                    let mut acc = 0u32;
                    for k in keys {
                        acc ^= h.hash(black_box(k));
                    }
                    acc
                })
            });
        }
    }
    group.finish();
}

fn ketama_dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("ketama_dispatch");
    let keys = keys(32);
    group.throughput(Throughput::Elements(keys.len() as u64));
    for servers in [10, 500] {
        let names: Vec<String> = (0..servers)
            .map(|i| format!("10.0.{}.{}:11211", i / 250, i % 250))
            .collect();
        let nodes: Vec<RouteNode> = names
            .iter()
            .map(|n| RouteNode {
                name: n.as_bytes(),
                weight: 1,
                live: true,
            })
            .collect();
        let router = Router::new(HashFunction::Fnv1a64, Distribution::Ketama, None, &nodes);
        group.bench_with_input(BenchmarkId::from_parameter(servers), &keys, |b, keys| {
            b.iter(|| {
                let mut acc = 0usize;
                for k in keys {
                    acc ^= router.route(black_box(k)).unwrap();
                }
                acc
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hashes, ketama_dispatch);
criterion_main!(benches);
