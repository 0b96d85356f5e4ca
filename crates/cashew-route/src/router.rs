//! A pool's key → server mapping, built once per set of live servers.

use std::cell::Cell;

use crate::{Continuum, Distribution, HashFunction, HashTag};

/// One server as the router sees it.
#[derive(Clone, Copy, Debug)]
pub struct RouteNode<'a> {
    /// The name hashed onto the ketama ring and used to order servers: the node
    /// name when the config gives one, else `host:port` (`host` alone for port 11211).
    pub name: &'a [u8],
    pub weight: u32,
    /// Ejected servers are left out of placement until they come back.
    pub live: bool,
}

/// Maps keys to server indices (positions in the pool's `servers:` list as written).
#[derive(Clone, Debug)]
pub struct Router {
    hash: HashFunction,
    hash_tag: Option<HashTag>,
    servers: usize,
    placement: Placement,
}

#[derive(Clone, Debug)]
enum Placement {
    /// Ring owners are indices into `order`.
    Ketama { ring: Continuum, order: Box<[u32]> },
    /// One slot per unit of weight; slots hold server indices. `order` is the
    /// live servers in nutcracker's order, for replicas.
    Modula {
        slots: Box<[u32]>,
        order: Box<[u32]>,
    },
    /// One slot per live server.
    Random { slots: Box<[u32]> },
}

impl Router {
    pub fn new(
        hash: HashFunction,
        distribution: Distribution,
        hash_tag: Option<HashTag>,
        nodes: &[RouteNode<'_>],
    ) -> Router {
        // nutcracker sorts a pool's servers by name (shorter names first, then bytes)
        // and places keys over that order: modula slot order depends on it.
        let mut order: Vec<u32> = (0..nodes.len() as u32).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (nodes[a as usize].name, nodes[b as usize].name);
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        });
        order.retain(|&i| nodes[i as usize].live);
        let placement = match distribution {
            Distribution::Ketama => {
                let live = order.iter().map(|&i| {
                    let n = &nodes[i as usize];
                    (n.name, n.weight)
                });
                Placement::Ketama {
                    ring: Continuum::new(live),
                    order: order.into(),
                }
            }
            Distribution::Modula => Placement::Modula {
                slots: order
                    .iter()
                    .flat_map(|&i| std::iter::repeat_n(i, nodes[i as usize].weight as usize))
                    .collect(),
                order: order.into(),
            },
            Distribution::Random => Placement::Random {
                slots: order.into(),
            },
        };
        Router {
            hash,
            hash_tag,
            servers: nodes.len(),
            placement,
        }
    }

    /// The index of the server that holds `key`, or `None` when no server is live.
    #[inline]
    pub fn route(&self, key: &[u8]) -> Option<usize> {
        if !self.has_live_server() {
            return None;
        }
        // As in nutcracker, a one-server pool skips hashing altogether.
        if self.servers == 1 {
            return Some(0);
        }
        let key = match &self.hash_tag {
            Some(tag) => tag.apply(key),
            None => key,
        };
        let index = match &self.placement {
            Placement::Ketama { ring, order } => {
                let owner = ring.owner(self.key_hash(key))?;
                order[owner as usize]
            }
            Placement::Modula { slots, .. } => slots[self.key_hash(key) as usize % slots.len()],
            Placement::Random { slots } => slots[next_random() as usize % slots.len()],
        };
        Some(index as usize)
    }

    /// The servers that keep `key` when each key is kept on `out.len()` servers:
    /// the key's own server first, then the next distinct servers clockwise on the
    /// ketama ring (in server order for modula and random). Fills `out` from the
    /// front and returns how many it filled (fewer when there are fewer servers).
    pub fn replicas(&self, key: &[u8], out: &mut [usize]) -> usize {
        let Some(first) = self.route(key) else {
            return 0;
        };
        let want = out.len();
        if want == 0 {
            return 0;
        }
        out[0] = first;
        let mut filled = 1;
        let mut take = |server: u32| {
            let server = server as usize;
            if filled < want && !out[..filled].contains(&server) {
                out[filled] = server;
                filled += 1;
            }
            filled == want
        };
        match &self.placement {
            Placement::Ketama { ring, order } => {
                let key = match &self.hash_tag {
                    Some(tag) => tag.apply(key),
                    None => key,
                };
                for owner in ring.owners_from(self.key_hash(key)) {
                    if take(order[owner as usize]) {
                        break;
                    }
                }
            }
            Placement::Modula { order, .. } | Placement::Random { slots: order } => {
                let at = order.iter().position(|&s| s as usize == first).unwrap_or(0);
                for i in 1..order.len() {
                    if take(order[(at + i) % order.len()]) {
                        break;
                    }
                }
            }
        }
        filled
    }

    /// How the 2^32 key hashes are placed by this router and by `other`: for each
    /// pair (server here, server there), how many hash values the two place on
    /// them. Exact, from the rings and slots, when both hash keys the same way and
    /// place by the hash alone (ketama or modula, not random); `None` otherwise,
    /// when only sample keys can tell.
    pub fn overlap(&self, other: &Router) -> Option<Vec<(usize, usize, u64)>> {
        if self.hash != other.hash || self.hash_tag != other.hash_tag {
            return None;
        }
        let mut counts: Vec<(usize, usize, u64)> = Vec::new();
        let mut add = |a: u32, b: u32, n: u64| {
            if n == 0 {
                return;
            }
            let (a, b) = (a as usize, b as usize);
            match counts.iter_mut().find(|(x, y, _)| *x == a && *y == b) {
                Some(c) => c.2 += n,
                None => counts.push((a, b, n)),
            }
        };
        match (self.segments(), other.segments()) {
            (Some(mine), Some(theirs)) => {
                // Both are runs of hash values with one owner: walk them together.
                let (mut i, mut j, mut start) = (0, 0, 0u64);
                while i < mine.len() && j < theirs.len() {
                    let end = mine[i].0.min(theirs[j].0);
                    add(mine[i].1, theirs[j].1, end - start + 1);
                    start = end + 1;
                    if mine[i].0 == end {
                        i += 1;
                    }
                    if theirs[j].0 == end {
                        j += 1;
                    }
                }
            }
            _ => {
                let (mine, theirs) = (self.slots()?, other.slots()?);
                // Residues repeat every lcm of the slot counts: count one period
                // and the part of a period the 2^32 values end in.
                let (a, b) = (mine.len() as u64, theirs.len() as u64);
                let lcm = a / gcd(a, b) * b;
                if lcm > 1 << 24 {
                    return None;
                }
                let space = 1u64 << 32;
                let (periods, rest) = (space / lcm, space % lcm);
                for h in 0..lcm {
                    let n = periods + u64::from(h < rest);
                    add(mine[(h % a) as usize], theirs[(h % b) as usize], n);
                }
            }
        }
        Some(counts)
    }

    /// Runs of hash values with one owner, as (last value, server), covering every
    /// value: for ketama, and for one server (which takes every key).
    fn segments(&self) -> Option<Vec<(u64, u32)>> {
        const LAST: u64 = u32::MAX as u64;
        if self.servers == 1 && self.has_live_server() {
            return Some(vec![(LAST, 0)]);
        }
        let Placement::Ketama { ring, order } = &self.placement else {
            return None;
        };
        let points = ring.points_and_owners();
        let first = order[*points.first()?.1 as usize];
        let mut runs: Vec<(u64, u32)> = points
            .iter()
            .map(|&(p, o)| (u64::from(p), order[*o as usize]))
            .collect();
        // Equal points: the first one's owner takes the value (see `owner`).
        runs.dedup_by_key(|r| r.0);
        // Past the last point, keys wrap round to the first.
        if runs.last().is_some_and(|r| r.0 < LAST) {
            runs.push((LAST, first));
        }
        Some(runs)
    }

    /// For modula: the server of each slot (a hash goes to slot hash % slots).
    fn slots(&self) -> Option<&[u32]> {
        match &self.placement {
            Placement::Modula { slots, .. } if self.servers > 1 && !slots.is_empty() => Some(slots),
            _ => None,
        }
    }

    /// Whether any server can take keys.
    pub fn has_live_server(&self) -> bool {
        match &self.placement {
            Placement::Ketama { order, .. } => !order.is_empty(),
            Placement::Modula { slots, .. } | Placement::Random { slots } => !slots.is_empty(),
        }
    }

    #[inline]
    fn key_hash(&self, key: &[u8]) -> u32 {
        if key.is_empty() {
            0
        } else {
            self.hash.hash(key)
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

thread_local! {
    static RANDOM_STATE: Cell<u64> = Cell::new(random_seed());
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0u8) | 1
}

/// xorshift64*: cheap, per thread, good enough to spread load.
fn next_random() -> u32 {
    RANDOM_STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes<'a>(names: &'a [&'a str], live: &[bool]) -> Vec<RouteNode<'a>> {
        names
            .iter()
            .zip(live)
            .map(|(n, &live)| RouteNode {
                name: n.as_bytes(),
                weight: 1,
                live,
            })
            .collect()
    }

    /// The share of hash values whose server (by name) differs, exactly and over
    /// sample keys.
    const HASH: HashFunction = HashFunction::Md5;
    fn moved(old: &[&str], new: &[&str], distribution: Distribution) -> (f64, f64) {
        let (a, b) = (nodes(old, &[true; 8]), nodes(new, &[true; 8]));
        let (ra, rb) = (
            Router::new(HASH, distribution, None, &a),
            Router::new(HASH, distribution, None, &b),
        );
        let exact: u64 = ra
            .overlap(&rb)
            .unwrap()
            .iter()
            .filter(|&&(x, y, _)| old[x] != new[y])
            .map(|c| c.2)
            .sum();
        let total: u64 = ra.overlap(&rb).unwrap().iter().map(|c| c.2).sum();
        assert_eq!(total, 1 << 32, "every hash value is counted once");
        let samples = 50_000;
        let sampled = (0..samples)
            .filter(|i| {
                let key = format!("sample:{i}");
                old[ra.route(key.as_bytes()).unwrap()] != new[rb.route(key.as_bytes()).unwrap()]
            })
            .count();
        (exact as f64 / total as f64, sampled as f64 / samples as f64)
    }

    #[test]
    fn overlap_counts_what_moves_as_sample_keys_find() {
        let four = ["a:1", "b:1", "c:1", "d:1"];
        let five = ["a:1", "b:1", "c:1", "d:1", "e:1"];
        for d in [Distribution::Ketama, Distribution::Modula] {
            let (exact, sampled) = moved(&four, &five, d);
            assert!((exact - sampled).abs() < 0.01, "{d}: {exact} vs {sampled}");
            let (same, _) = moved(&four, &four, d);
            assert_eq!(same, 0.0, "{d}");
        }
        let (ketama, _) = moved(&four, &five, Distribution::Ketama);
        assert!(ketama > 0.15 && ketama < 0.25, "{ketama}");
        let (one, sampled) = moved(&["a:1"], &["a:1", "b:1"], Distribution::Ketama);
        assert!((one - sampled).abs() < 0.01, "{one} vs {sampled}");
    }

    #[test]
    fn overlap_needs_the_same_hash() {
        let n = nodes(&["a", "b"], &[true, true]);
        let a = Router::new(HashFunction::Md5, Distribution::Ketama, None, &n);
        let b = Router::new(HashFunction::Fnv1a64, Distribution::Ketama, None, &n);
        assert!(a.overlap(&b).is_none());
        let r = Router::new(HashFunction::Md5, Distribution::Random, None, &n);
        assert!(r.overlap(&r).is_none());
    }

    #[test]
    fn single_server_skips_hashing() {
        let n = nodes(&["only"], &[true]);
        let r = Router::new(HashFunction::Md5, Distribution::Ketama, None, &n);
        assert_eq!(r.route(b"anything"), Some(0));
    }

    #[test]
    fn no_live_server_routes_nowhere() {
        let n = nodes(&["a", "b"], &[false, false]);
        for d in Distribution::ALL {
            let r = Router::new(HashFunction::Md5, d, None, &n);
            assert_eq!(r.route(b"k"), None, "{d}");
        }
    }

    #[test]
    fn ejected_server_gets_no_keys_and_others_keep_theirs() {
        let names = ["a:1", "b:1", "c:1"];
        let all = Router::new(
            HashFunction::Fnv1a64,
            Distribution::Ketama,
            None,
            &nodes(&names, &[true; 3]),
        );
        let without_b = Router::new(
            HashFunction::Fnv1a64,
            Distribution::Ketama,
            None,
            &nodes(&names, &[true, false, true]),
        );
        let mut moved = 0;
        for i in 0..2000 {
            let key = format!("key-{i}");
            let before = all.route(key.as_bytes()).unwrap();
            let after = without_b.route(key.as_bytes()).unwrap();
            assert_ne!(after, 1);
            if before != 1 {
                assert_eq!(before, after, "{key} moved although its server stayed");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn modula_orders_servers_by_name_length_then_bytes() {
        // Written order b, aa, a: sorted order is a, b, aa.
        let n = nodes(&["b", "aa", "a"], &[true; 3]);
        let r = Router::new(HashFunction::Fnv1a32, Distribution::Modula, None, &n);
        let Placement::Modula { slots, .. } = &r.placement else {
            unreachable!()
        };
        assert_eq!(&**slots, &[2, 0, 1]);
    }

    #[test]
    fn random_uses_only_live_servers() {
        let n = nodes(&["a", "b", "c"], &[true, false, true]);
        let r = Router::new(HashFunction::Md5, Distribution::Random, None, &n);
        let mut seen = [0usize; 3];
        for _ in 0..1000 {
            seen[r.route(b"same key").unwrap()] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 300 && seen[2] > 300, "{seen:?}");
    }

    #[test]
    fn replicas_are_the_keys_server_then_the_next_distinct_ones() {
        let names = ["a:1", "b:1", "c:1", "d:1"];
        for d in Distribution::ALL {
            let r = Router::new(HashFunction::Md5, d, None, &nodes(&names, &[true; 4]));
            for i in 0..200 {
                let key = format!("key-{i}");
                let mut three = [usize::MAX; 3];
                assert_eq!(r.replicas(key.as_bytes(), &mut three), 3, "{d}");
                if d != Distribution::Random {
                    assert_eq!(Some(three[0]), r.route(key.as_bytes()), "{d}");
                }
                assert!(three[0] != three[1] && three[1] != three[2] && three[0] != three[2]);
                let mut all = [0; 9];
                assert_eq!(
                    r.replicas(key.as_bytes(), &mut all),
                    4,
                    "no more than the servers"
                );
            }
        }
    }

    #[test]
    fn ketama_replicas_follow_the_ring() {
        // The second replica of a key is the server that would own it if its first
        // were gone: the ring passes the key on to it.
        let names = ["a:1", "b:1", "c:1"];
        let all = Router::new(
            HashFunction::Md5,
            Distribution::Ketama,
            None,
            &nodes(&names, &[true; 3]),
        );
        for i in 0..300 {
            let key = format!("k{i}");
            let mut two = [0; 2];
            all.replicas(key.as_bytes(), &mut two);
            let mut live = [true; 3];
            live[two[0]] = false;
            let without = Router::new(
                HashFunction::Md5,
                Distribution::Ketama,
                None,
                &nodes(&names, &live),
            );
            assert_eq!(without.route(key.as_bytes()), Some(two[1]), "{key}");
        }
    }

    #[test]
    fn modula_replicas_are_the_next_in_server_order() {
        let n = nodes(&["b", "aa", "a"], &[true; 3]);
        let r = Router::new(HashFunction::Fnv1a32, Distribution::Modula, None, &n);
        // Server order is a, b, aa (indices 2, 0, 1).
        for i in 0..50 {
            let key = format!("m{i}");
            let mut all = [0; 3];
            r.replicas(key.as_bytes(), &mut all);
            let order = [2, 0, 1];
            let at = order.iter().position(|&s| s == all[0]).unwrap();
            assert_eq!(all[1], order[(at + 1) % 3]);
            assert_eq!(all[2], order[(at + 2) % 3]);
        }
    }

    #[test]
    fn hash_tag_groups_keys() {
        let n = nodes(&["a:1", "b:1", "c:1", "d:1"], &[true; 4]);
        let tag = HashTag::new(b"{}");
        let r = Router::new(HashFunction::Murmur, Distribution::Ketama, tag, &n);
        let home = r.route(b"user42").unwrap();
        for i in 0..100 {
            let key = format!("{{user42}}:field{i}");
            assert_eq!(r.route(key.as_bytes()), Some(home));
        }
    }
}
