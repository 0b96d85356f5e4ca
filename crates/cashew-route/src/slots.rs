//! Redis Cluster's placement: a key belongs to one of 16,384 slots, CRC-16/XMODEM
//! of the key (or of its hash tag, the part between the first `{` and the next `}`
//! when not empty) modulo 16,384; each slot is owned by one master.

use crate::hash::{crc16_step, crc16_xmodem};

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// The slot of `key`, as `CLUSTER KEYSLOT` gives it. One pass over a key without
/// `{` (most keys): the hash is taken while looking for it.
#[inline]
pub fn cluster_slot(key: &[u8]) -> u16 {
    let mut crc = 0u16;
    for (i, &b) in key.iter().enumerate() {
        if b == b'{' {
            return tagged_slot(key, i);
        }
        crc = crc16_step(crc, b);
    }
    crc & (SLOTS as u16 - 1)
}

/// The slot of a key with a `{` at `open`: of the tag up to the next `}` when not
/// empty, else of the whole key.
fn tagged_slot(key: &[u8], open: usize) -> u16 {
    let rest = &key[open + 1..];
    let hashed = match rest.iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &rest[..len],
        _ => key,
    };
    crc16_xmodem(hashed) & (SLOTS as u16 - 1)
}

/// Which server owns each slot (an index into the pool's servers), or none.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotMap {
    owners: Box<[u16]>,
}

impl SlotMap {
    const UNOWNED: u16 = u16::MAX;

    /// A map where no slot is owned yet.
    pub fn new() -> SlotMap {
        SlotMap {
            owners: vec![Self::UNOWNED; SLOTS].into_boxed_slice(),
        }
    }

    /// Gives slots `first..=last` (clamped to the slots there are) to `server`.
    pub fn assign(&mut self, first: u16, last: u16, server: u16) {
        let last = usize::from(last).min(SLOTS - 1);
        for owner in self
            .owners
            .iter_mut()
            .take(last + 1)
            .skip(usize::from(first))
        {
            *owner = server;
        }
    }

    /// The server that owns `slot`.
    pub fn owner(&self, slot: u16) -> Option<u16> {
        let owner = *self.owners.get(usize::from(slot))?;
        (owner != Self::UNOWNED).then_some(owner)
    }

    /// The server that owns `key`'s slot.
    #[inline]
    pub fn route(&self, key: &[u8]) -> Option<u16> {
        self.owner(cluster_slot(key))
    }

    /// The slots each server owns, as ranges `(first, last)`, in slot order.
    pub fn ranges(&self) -> Vec<(u16, u16, u16)> {
        let mut out: Vec<(u16, u16, u16)> = Vec::new();
        for (slot, &owner) in self.owners.iter().enumerate() {
            if owner == Self::UNOWNED {
                continue;
            }
            match out.last_mut() {
                Some((_, last, o)) if *o == owner && usize::from(*last) + 1 == slot => {
                    *last = slot as u16
                }
                _ => out.push((slot as u16, slot as u16, owner)),
            }
        }
        out
    }

    /// How many slots have an owner.
    pub fn covered(&self) -> usize {
        self.owners.iter().filter(|&&o| o != Self::UNOWNED).count()
    }
}

impl Default for SlotMap {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ranges()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_redis_gives() {
        // CRC-16/XMODEM's check value, and slots from Redis's documentation.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(cluster_slot(b"123456789"), 0x31c3 & 0x3fff);
        assert_eq!(cluster_slot(b"somekey"), 11058);
        assert_eq!(cluster_slot(b"foo{hash_tag}"), 2515);
        assert_eq!(cluster_slot(b"foo"), 12182);
    }

    #[test]
    fn hash_tags_follow_redis_rules() {
        let tagged = cluster_slot(b"user1000");
        assert_eq!(cluster_slot(b"{user1000}.following"), tagged);
        assert_eq!(cluster_slot(b"{user1000}.followers"), tagged);
        // Only the first `{` counts, and the first `}` after it.
        assert_eq!(cluster_slot(b"foo{bar}{zap}"), cluster_slot(b"bar"));
        assert_eq!(cluster_slot(b"foo{{bar}}zap"), cluster_slot(b"{bar"));
        // An empty tag hashes the whole key, as does a `{` never closed.
        assert_eq!(
            cluster_slot(b"foo{}{bar}"),
            crc16_xmodem(b"foo{}{bar}") & 0x3fff
        );
        assert_eq!(cluster_slot(b"foo{bar"), crc16_xmodem(b"foo{bar") & 0x3fff);
    }

    #[test]
    fn a_map_routes_by_slot_and_reports_its_ranges() {
        let mut map = SlotMap::new();
        assert_eq!(map.route(b"foo"), None);
        map.assign(0, 5460, 0);
        map.assign(5461, 10922, 1);
        map.assign(10923, 16383, 2);
        assert_eq!(map.covered(), SLOTS);
        assert_eq!(map.route(b"foo"), Some(2));
        assert_eq!(map.route(b"somekey"), Some(2));
        assert_eq!(map.route(b"foo{hash_tag}"), Some(0));
        assert_eq!(
            map.ranges(),
            vec![(0, 5460, 0), (5461, 10922, 1), (10923, 16383, 2)]
        );
        map.assign(100, 100, 1);
        assert_eq!(map.ranges().len(), 5);
        assert_eq!(map.owner(100), Some(1));
    }
}
