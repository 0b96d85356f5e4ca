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
        while self.pos < line.len() && line[self.pos] != b' ' {
            self.pos += 1;
        }
        Some(start..self.pos)
    }
}

/// The keys of a retrieval request, given the key-list span from [`crate::memcache::Request`].
pub fn keys(buf: &[u8], span: Range<usize>) -> impl Iterator<Item = &[u8]> + Clone {
    let line = &buf[span.clone()];
    Tokens::new(line).map(move |r| &line[r])
}
