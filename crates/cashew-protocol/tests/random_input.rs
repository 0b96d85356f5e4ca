//! Randomized checks of the memcached parsers: any bytes, cut anywhere, must parse
//! without panicking, and a stream fed in two pieces must give the same results as
//! the stream fed whole. Deterministic (fixed xorshift seeds), so a failure reproduces.

use cashew_protocol::memcache::{parse_reply, parse_request, Parsed, ReplyParse};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&[u8]] = &[
    b"get ",
    b"gets ",
    b"gat 10 ",
    b"set ",
    b"cas ",
    b"incr ",
    b"delete ",
    b"touch ",
    b"flush_all",
    b"version",
    b"quit",
    b"stats",
    b"key",
    b"k2",
    b" ",
    b"  ",
    b"0",
    b"1",
    b"5",
    b"-1",
    b"99999999999",
    b"noreply",
    b"\r\n",
    b"\n",
    b"\r",
    b"abc",
    b"\x00",
    b"\xff",
    b"VALUE ",
    b"END",
    b"STORED",
];

fn random_stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.below(60) {
        out.extend_from_slice(PIECES[rng.below(PIECES.len())]);
    }
    out
}

/// Every decision taken parsing `stream` from the start: (what, bytes it covers).
fn parse_all(stream: &[u8]) -> Vec<(String, usize)> {
    let mut outcomes = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        match parse_request(&stream[pos..], Some(1000)) {
            Parsed::Incomplete => break,
            Parsed::Request(r) => {
                assert!(r.len > 0 && pos + r.len <= stream.len());
                outcomes.push((format!("{:?}", r.command), r.len));
                pos += r.len;
            }
            Parsed::Invalid(i) => {
                assert!(i.consume > 0 && pos + i.consume <= stream.len());
                outcomes.push((
                    String::from_utf8_lossy(i.reply).into_owned(),
                    i.consume + i.skip,
                ));
                if i.close {
                    break;
                }
                pos += i.consume + i.skip;
            }
        }
    }
    outcomes
}

#[test]
fn random_request_streams_parse_the_same_whole_or_in_pieces() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..5000 {
        let stream = random_stream(&mut rng);
        let whole = parse_all(&stream);
        let cut = rng.below(stream.len() + 1);
        // What is decided on the first piece alone must be what the whole stream gives.
        let early = parse_all(&stream[..cut]);
        assert!(early.len() <= whole.len());
        for (a, b) in early.iter().zip(&whole) {
            assert_eq!(a, b, "{:?} cut at {cut}", String::from_utf8_lossy(&stream));
        }
    }
}

#[test]
fn random_reply_streams_complete_only_whole_replies() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..5000 {
        let stream = random_stream(&mut rng);
        let mut pos = 0;
        while let ReplyParse::Complete(n) = parse_reply(&stream[pos..]) {
            assert!(n > 0 && pos + n <= stream.len());
            // A complete reply stays complete, with the same length, whatever follows.
            assert_eq!(parse_reply(&stream[pos..pos + n]), ReplyParse::Complete(n));
            pos += n;
        }
    }
}
