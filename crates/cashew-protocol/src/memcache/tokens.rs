use std::ops::Range;

/// Space-separated tokens of a command line (without its line ending), as ranges.
#[derive(Clone)]
pub struct Tokens<'a> {
    line: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    pub fn new(line: &'a [u8]) -> Self {
        Tokens { line, pos: 0 }
    }
}

impl Iterator for Tokens<'_> {
    type Item = Range<usize>;

    #[inline]
    fn next(&mut self) -> Option<Range<usize>> {
        let line = self.line;
        while self.pos < line.len() && line[self.pos] == b' ' {
            self.pos += 1;
        }
        if self.pos == line.len() {
            return None;
        }
        let start = self.pos;
        self.pos = next_space(line, start);
        Some(start..self.pos)
    }
}

/// Where the first space at or after `from` is (the end of `line` without one),
/// eight bytes at a time.
#[inline]
fn next_space(line: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const SPACES: u64 = u64::from_ne_bytes([b' '; 8]);
    let mut i = from;
    while let Some(chunk) = line.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte of `x` is zero where `word` has a space; the lowest bit set below
        // marks the first such byte exactly.
        let x = word ^ SPACES;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < line.len() && line[i] != b' ' {
        i += 1;
    }
    i
}

/// The keys of a retrieval request, given the key-list span from [`crate::memcache::Request`].
pub fn keys(buf: &[u8], span: Range<usize>) -> impl Iterator<Item = &[u8]> + Clone {
    let line = &buf[span.clone()];
    Tokens::new(line).map(move |r| &line[r])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_are_found_wherever_they_are() {
        let line = b"abcdefghijklmnop qrs";
        for from in 0..line.len() {
            let want = line[from..]
                .iter()
                .position(|&b| b == b' ')
                .map_or(line.len(), |p| from + p);
            assert_eq!(next_space(line, from), want, "from {from}");
        }
        for n in 0..40 {
            let mut line = vec![b'x'; n];
            assert_eq!(next_space(&line, 0), n);
            for at in 0..n {
                line[at] = b' ';
                assert_eq!(next_space(&line, 0), at, "{n} {at}");
                line[at] = 0xa0;
                assert_eq!(next_space(&line, 0), n, "a byte 0xa0 is no space");
                line[at] = b'x';
            }
        }
    }

    #[test]
    fn tokens_are_split_on_runs_of_spaces() {
        let line = b"  get  key:1 k2   ";
        let words: Vec<&[u8]> = Tokens::new(line).map(|r| &line[r]).collect();
        assert_eq!(words, [&b"get"[..], b"key:1", b"k2"]);
    }
}
