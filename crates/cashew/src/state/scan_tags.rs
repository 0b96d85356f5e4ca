//! The tag of a pool's server list that its SCAN cursors carry (the cursor layout is
//! in `proxy/redis/keyspace.rs`): a cursor whose tag is not the current list's starts
//! the walk again, since its server index may now name another server. A tag has few
//! bits, so two lists' hashes can share one; tags are therefore handed out per pool
//! over its generations, so that the lists of the last `REMEMBERED` changes all hold
//! different tags.

use std::hash::{DefaultHasher, Hash, Hasher};

/// Bits of a cursor that hold the tag.
pub(crate) const SCAN_TAG_BITS: u32 = 6;
const TAG_MASK: u64 = (1 << SCAN_TAG_BITS) - 1;
/// Server lists whose tags a new list avoids (fewer than the tags there are).
const REMEMBERED: usize = 16;

/// A pool's recent server lists, newest (the one in force) first.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScanTags {
    /// (hash of a server list, its tag)
    lists: Vec<(u64, u64)>,
}

impl ScanTags {
    /// The tags after a generation whose pool has the servers `names`, in order: a
    /// list seen recently keeps its tag (its cursors walk on); a new one takes its
    /// hash's low bits, or the next value no remembered list holds.
    pub(crate) fn next<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> ScanTags {
        let mut hasher = DefaultHasher::new();
        for name in names {
            name.hash(&mut hasher);
        }
        let list = hasher.finish();
        let mut lists: Vec<(u64, u64)> = Vec::with_capacity(REMEMBERED);
        let tag = match self.lists.iter().find(|&&(l, _)| l == list) {
            Some(&(_, tag)) => tag,
            None => {
                let mut tag = list & TAG_MASK;
                while self.lists.iter().any(|&(_, t)| t == tag) {
                    tag = (tag + 1) & TAG_MASK;
                }
                tag
            }
        };
        lists.push((list, tag));
        let older = self.lists.iter().filter(|&&(l, _)| l != list);
        lists.extend(older.take(REMEMBERED - 1).copied());
        ScanTags { lists }
    }

    /// The tag of the list in force.
    pub(crate) fn current(&self) -> u64 {
        self.lists.first().map_or(0, |&(_, tag)| tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(i: usize) -> Vec<String> {
        (0..3)
            .map(|s| format!("127.0.0.1:{}", 7000 + i * 3 + s))
            .collect()
    }

    fn after(tags: &ScanTags, names: &[String]) -> ScanTags {
        tags.next(names.iter().map(String::as_str))
    }

    #[test]
    fn the_same_list_keeps_its_tag() {
        let first = after(&ScanTags::default(), &list(0));
        let again = after(&first, &list(0));
        assert_eq!(again.current(), first.current());
        assert_eq!(again.lists.len(), 1);
    }

    #[test]
    fn a_changed_list_never_takes_a_recent_lists_tag() {
        // Many changes, so that lists whose hashes share low bits come up.
        let mut tags = ScanTags::default();
        let mut history: Vec<u64> = Vec::new();
        let mut collisions = 0;
        for i in 0..1_000 {
            let names = list(i);
            let next = after(&tags, &names);
            let recent = &history[history.len().saturating_sub(REMEMBERED - 1)..];
            assert!(
                !recent.contains(&next.current()),
                "list {i} took tag {} of one of the last {} lists",
                next.current(),
                REMEMBERED - 1
            );
            if next.lists[0].0 & TAG_MASK != next.current() {
                collisions += 1;
            }
            history.push(next.current());
            tags = next;
        }
        assert!(
            collisions > 0,
            "no list's hash met a recent tag: the test shows nothing"
        );
    }

    #[test]
    fn a_list_back_from_before_takes_its_old_tag() {
        let a = after(&ScanTags::default(), &list(0));
        let b = after(&a, &list(1));
        let back = after(&b, &list(0));
        assert_eq!(back.current(), a.current());
        assert_ne!(b.current(), a.current());
    }
}
