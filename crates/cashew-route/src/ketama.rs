//! The ketama continuum, built as nutcracker builds it, float rounding included.

use std::io::Write;

use crate::md5_digest;

const POINTS_PER_SERVER: f32 = 160.0;
const POINTS_PER_HASH: u32 = 4;

/// A sorted ring of points, each owned by a server. Built once per server set;
/// a lookup is a binary search with no allocation.
#[derive(Clone, Debug)]
pub struct Continuum {
    points: Box<[u32]>,
    owners: Box<[u32]>,
}

impl Continuum {
    /// Builds the ring over `(name, weight)` of the live servers. The owner of each
    /// point is the server's position in `servers`.
    pub fn new<'a>(servers: impl Iterator<Item = (&'a [u8], u32)> + Clone) -> Continuum {
        let live = servers.clone().count();
        let total_weight: u32 = servers.clone().map(|(_, w)| w).sum();
        let mut ring: Vec<(u32, u32)> = Vec::new();
        let mut name_buf = Vec::new();
        for (owner, (name, weight)) in servers.enumerate() {
            // nutcracker computes this in float, then adds a double epsilon and
            // floors in float again; other rounding gives other point counts.
            let pct = weight as f32 / total_weight as f32;
            let scaled = pct * POINTS_PER_SERVER / 4.0 * live as f32;
            let points = ((scaled as f64 + 0.000_000_000_1) as f32).floor() as u32 * 4;
            for i in 0..points / POINTS_PER_HASH {
                name_buf.clear();
                name_buf.extend_from_slice(name);
                name_buf.push(b'-');
                write!(name_buf, "{i}").expect("writing to a Vec cannot fail");
                let digest = md5_digest(&name_buf);
                for word in digest.chunks_exact(4) {
                    let value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
                    ring.push((value, owner as u32));
                }
            }
        }
        // Stable, so that equal points keep server order as glibc's merge sort does.
        ring.sort_by_key(|&(value, _)| value);
        Continuum {
            points: ring.iter().map(|&(v, _)| v).collect(),
            owners: ring.iter().map(|&(_, o)| o).collect(),
        }
    }

    /// The owner of the first point at or after `hash`, wrapping around the ring.
    /// `None` only for an empty ring.
    #[inline]
    pub fn owner(&self, hash: u32) -> Option<u32> {
        let i = self.points.partition_point(|&p| p < hash);
        let i = if i == self.points.len() { 0 } else { i };
        self.owners.get(i).copied()
    }

    /// Owners of the points from the first at or after `hash`, clockwise, once
    /// round the ring.
    pub fn owners_from(&self, hash: u32) -> impl Iterator<Item = u32> + '_ {
        let start = self.points.partition_point(|&p| p < hash);
        let (before, after) = self.owners.split_at(start);
        after.iter().chain(before).copied()
    }

    /// The points in ring order with their owners.
    pub fn points_and_owners(&self) -> Vec<(u32, &u32)> {
        self.points
            .iter()
            .copied()
            .zip(self.owners.iter())
            .collect()
    }

    /// Number of points on the ring.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Points owned by each server, in server order.
    pub fn points_per_owner(&self, owners: usize) -> Vec<usize> {
        let mut counts = vec![0; owners];
        for &o in self.owners.iter() {
            counts[o as usize] += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(servers: &[(&str, u32)]) -> Continuum {
        Continuum::new(servers.iter().map(|&(n, w)| (n.as_bytes(), w)))
    }

    #[test]
    fn equal_weights_get_160_points_each() {
        let c = ring(&[("a:1", 1), ("b:1", 1), ("c:1", 1)]);
        assert_eq!(c.points_per_owner(3), vec![160, 160, 160]);
    }

    #[test]
    fn weights_scale_points_with_float_rounding() {
        // Weights 1,2,3,1 of 7: 160*4*w/7 floored to a multiple of 4.
        let c = ring(&[("a", 1), ("b", 2), ("c", 3), ("d", 1)]);
        assert_eq!(c.points_per_owner(4), vec![88, 180, 272, 88]);
    }

    #[test]
    fn lookup_wraps_around() {
        let c = ring(&[("a", 1), ("b", 1)]);
        let first_owner = c.owners[0];
        let last = *c.points.last().unwrap();
        assert_eq!(c.owner(last.wrapping_add(1)), Some(first_owner));
        assert_eq!(c.owner(0), Some(first_owner));
        assert_eq!(c.owner(last), c.owners.last().copied());
    }

    #[test]
    fn empty_ring_has_no_owner() {
        assert_eq!(ring(&[]).owner(7), None);
    }
}
