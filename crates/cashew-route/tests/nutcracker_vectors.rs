//! Golden data: every placement in `tests/data/nutcracker-routing.tsv` was observed on
//! a real nutcracker 0.5.0 (see `tests/data/README.md`). cashew must place each key on
//! the same server. `$CASHEW_ROUTING_VECTORS` may name another file of the same shape.

use std::path::PathBuf;

use cashew_route::{Distribution, HashFunction, HashTag, RouteNode, Router};

fn vectors_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CASHEW_ROUTING_VECTORS") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/nutcracker-routing.tsv")
}

/// The ketama name nutcracker derives from `host:port:weight [name]`.
fn ketama_name(entry: &str) -> String {
    if let Some((_, name)) = entry.rsplit_once(' ') {
        return name.to_string();
    }
    let (host_port, _weight) = entry.rsplit_once(':').unwrap();
    match host_port.rsplit_once(':') {
        Some((host, "11211")) => host.to_string(),
        _ => host_port.to_string(),
    }
}

#[test]
fn every_recorded_placement_matches() {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("routing vectors at {}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("case\thash\tdistribution\thash_tag\tservers\tkey\tserver_index")
    );

    let mut routers: Vec<((String, String, String, String), Router)> = Vec::new();
    let mut rows = 0;
    let mut failures = Vec::new();
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 7, "bad row: {line:?}");
        let [_case, hash, dist, tag, servers, key, expected] = cols[..] else {
            unreachable!()
        };
        let id = (
            hash.to_string(),
            dist.to_string(),
            tag.to_string(),
            servers.to_string(),
        );
        let router = match routers.iter().find(|(k, _)| *k == id) {
            Some((_, r)) => r,
            None => {
                let entries: Vec<&str> = servers.split(';').collect();
                let names: Vec<String> = entries.iter().map(|e| ketama_name(e)).collect();
                let weights: Vec<u32> = entries
                    .iter()
                    .map(|e| {
                        let addr = e.split(' ').next().unwrap();
                        addr.rsplit_once(':').unwrap().1.parse().unwrap()
                    })
                    .collect();
                let nodes: Vec<RouteNode> = names
                    .iter()
                    .zip(&weights)
                    .map(|(n, &weight)| RouteNode {
                        name: n.as_bytes(),
                        weight,
                        live: true,
                    })
                    .collect();
                let router = Router::new(
                    hash.parse::<HashFunction>().unwrap(),
                    dist.parse::<Distribution>().unwrap(),
                    HashTag::new(tag.as_bytes()),
                    &nodes,
                );
                routers.push((id, router));
                &routers.last().unwrap().1
            }
        };
        let got = router.route(key.as_bytes()).unwrap();
        let expected: usize = expected.parse().unwrap();
        if got != expected {
            failures.push(format!(
                "{hash} {dist} tag={tag:?} {servers} key={key:?}: expected {expected}, got {got}"
            ));
        }
        rows += 1;
    }
    assert_eq!(rows, 30_000, "the vector file should hold 30,000 rows");
    assert!(
        failures.is_empty(),
        "{} of {rows} placements differ from nutcracker, e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
