/// A two-character hash tag such as `{}`: when a key holds `{...}` with something
/// between the braces, only that part is hashed, so related keys share a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashTag {
    open: u8,
    close: u8,
}

impl HashTag {
    /// A tag from exactly two bytes, or `None`.
    pub fn new(tag: &[u8]) -> Option<HashTag> {
        match *tag {
            [open, close] => Some(HashTag { open, close }),
            _ => None,
        }
    }

    /// The part of `key` to hash: the bytes between the first `open` and the next
    /// `close` after it, when that is not empty; otherwise the whole key.
    #[inline]
    pub fn apply<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        let Some(start) = key.iter().position(|&b| b == self.open) else {
            return key;
        };
        let inner = &key[start + 1..];
        match inner.iter().position(|&b| b == self.close) {
            Some(end) if end > 0 => &inner[..end],
            _ => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_tagged_part() {
        let tag = HashTag::new(b"{}").unwrap();
        assert_eq!(tag.apply(b"user:{42}:name"), b"42");
        assert_eq!(tag.apply(b"{a}{b}"), b"a");
        assert_eq!(tag.apply(b"a}b{c}"), b"c");
    }

    #[test]
    fn falls_back_to_the_whole_key() {
        let tag = HashTag::new(b"{}").unwrap();
        assert_eq!(tag.apply(b"plain"), b"plain");
        assert_eq!(tag.apply(b"empty{}tag"), b"empty{}tag");
        assert_eq!(tag.apply(b"open{only"), b"open{only");
    }

    #[test]
    fn same_character_on_both_sides() {
        let tag = HashTag::new(b"$$").unwrap();
        assert_eq!(tag.apply(b"a$bc$d"), b"bc");
    }

    #[test]
    fn must_be_two_bytes() {
        assert!(HashTag::new(b"{").is_none());
        assert!(HashTag::new(b"{}}").is_none());
    }
}
