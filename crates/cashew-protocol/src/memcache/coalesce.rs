//! Single-key retrievals sent to one server as one multi-key retrieval, and its reply
//! split back into one reply per request.
//!
//! memcached answers pipelined `get k` requests with one `sendmsg` each, but a
//! `get k1 k2 ...` with one: at pipeline 16 that is sixteen TCP segments instead of
//! one, and most of the cost of a request through a proxy on the same machine.

use super::request::MAX_KEY_LEN;
use super::ValueBlocks;

/// A retrieval command that can carry several keys and answers each with its own
/// `VALUE` block in key order, then one `END`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retrieval {
    Get,
    Gets,
}

impl Retrieval {
    /// The bytes before the key: `get ` or `gets `.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Retrieval::Get => b"get ",
            Retrieval::Gets => b"gets ",
        }
    }
}

/// A request that may join others of the same command: `get KEY\r\n` or
/// `gets KEY\r\n` with one key of printable bytes (so that every server splits the
/// joined line where cashew does, and no key can fail the others' request).
pub fn single_retrieval(request: &[u8]) -> Option<(Retrieval, &[u8])> {
    let command = match request.get(..4)? {
        b"get " => Retrieval::Get,
        b"gets" if request.get(4) == Some(&b' ') => Retrieval::Gets,
        _ => return None,
    };
    let key = request
        .get(command.prefix().len()..)?
        .strip_suffix(b"\r\n")?;
    (!key.is_empty() && key.len() <= MAX_KEY_LEN && printable(key)).then_some((command, key))
}

/// Whether every byte of `key` is printable and no space (`!` to `~`): eight bytes
/// at a time, as most keys are longer than a few bytes.
fn printable(key: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let words = key.chunks_exact(8);
    let rest = words.remainder();
    for word in words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let w = u64::from_le_bytes(bytes);
        // A byte below `!` (the borrow of the lowest one is exact) or above `~`
        // (its high bit set by the carry, or its own).
        let below = w.wrapping_sub(ONES * u64::from(b'!')) & !w & HIGH;
        let above = (w.wrapping_add(ONES * u64::from(0x7f - b'~')) | w) & HIGH;
        if below | above != 0 {
            return false;
        }
    }
    rest.iter().all(|&b| b > b' ' && b < 0x7f)
}

/// Splits the reply to a joined retrieval among the requests that asked for `keys`,
/// in order: `each(Some(block))` is called with a request's `VALUE` block, or
/// `each(None)` for a miss (its reply is then the block, if any, and `END`). `reply` is one whole reply as
/// `parse_reply` delimits it. Returns false, having called nothing, when it is not
/// `VALUE` blocks and `END` (an error line): every request should then get the reply
/// as it is.
pub fn split_reply<'k>(
    reply: &[u8],
    keys: impl IntoIterator<Item = &'k [u8]>,
    mut each: impl FnMut(Option<&[u8]>),
) -> bool {
    // A whole reply that starts as a retrieval and ends with END is VALUE blocks
    // and END (an error line cannot start with VALUE).
    let retrieval =
        reply == b"END\r\n" || reply.starts_with(b"VALUE ") && reply.ends_with(b"END\r\n");
    if !retrieval {
        return false;
    }
    // The server answers the keys in order and leaves misses out.
    let mut blocks = ValueBlocks::new(reply).peekable();
    for key in keys {
        match blocks.peek() {
            Some(&(block_key, block)) if block_key == key => {
                blocks.next();
                each(Some(block));
            }
            _ => each(None),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_is_what_a_byte_walk_says() {
        // Keys of every length up to 40 over the bytes at the edges of the range
        // (and past them, with the high bit): each one alone in a printable key, and
        // drawn mixes.
        let edges = [
            0u8, 0x1f, b' ', b'!', b'"', b'}', b'~', 0x7f, 0x80, 0xa0, 0xa1, 0xfe, 0xff,
        ];
        let walk = |key: &[u8]| key.iter().all(|&b| b > b' ' && b < 0x7f);
        for len in 1..=40 {
            for at in 0..len {
                for &edge in &edges {
                    let mut key = vec![b'k'; len];
                    key[at] = edge;
                    assert_eq!(printable(&key), walk(&key), "{key:?}");
                }
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..50_000 {
            crate::next_random(&mut x);
            let len = 1 + (x % 40) as usize;
            let key: Vec<u8> = (0..len)
                .map(|i| match (x >> (i % 48)) % 8 {
                    0 => edges[(x >> 20) as usize % edges.len()],
                    _ => b'!' + ((x >> (i % 56)) % 94) as u8,
                })
                .collect();
            assert_eq!(printable(&key), walk(&key), "{key:?}");
        }
    }

    #[test]
    fn only_one_printable_key_joins() {
        assert_eq!(
            single_retrieval(b"get k1\r\n"),
            Some((Retrieval::Get, &b"k1"[..]))
        );
        assert_eq!(
            single_retrieval(b"gets k1\r\n"),
            Some((Retrieval::Gets, &b"k1"[..]))
        );
        let longest = format!("get {}\r\n", "k".repeat(MAX_KEY_LEN));
        assert!(single_retrieval(longest.as_bytes()).is_some());
        for no in [
            &b"get a b\r\n"[..],
            b"get \r\n",
            b"get k\n",
            b"get k \r\n",
            b"get  k\r\n",
            b"gat 10 k\r\n",
            b"getx k\r\n",
            b"gets\r\n",
            b"get a\tb\r\n",
            b"get a\x7fb\r\n",
            b"GET k\r\n",
            b"mg k v\r\n",
        ] {
            assert_eq!(
                single_retrieval(no),
                None,
                "{:?}",
                String::from_utf8_lossy(no)
            );
        }
        let too_long = format!("get {}\r\n", "k".repeat(MAX_KEY_LEN + 1));
        assert_eq!(single_retrieval(too_long.as_bytes()), None);
    }

    fn split(reply: &[u8], keys: &[&[u8]]) -> Option<Vec<Option<String>>> {
        let mut out = Vec::new();
        let ok = split_reply(reply, keys.iter().copied(), |block| {
            out.push(block.map(|b| String::from_utf8_lossy(b).into_owned()))
        });
        ok.then_some(out)
    }

    #[test]
    fn hits_misses_and_repeated_keys_go_to_their_requests() {
        let reply = b"VALUE b 0 2\r\nbb\r\nVALUE d 5 1 77\r\nd\r\nVALUE d 5 1 77\r\nd\r\nEND\r\n";
        assert_eq!(
            split(reply, &[b"a", b"b", b"c", b"d", b"d", b"e"]).unwrap(),
            [
                None,
                Some("VALUE b 0 2\r\nbb\r\n".into()),
                None,
                Some("VALUE d 5 1 77\r\nd\r\n".into()),
                Some("VALUE d 5 1 77\r\nd\r\n".into()),
                None
            ]
        );
        assert_eq!(split(b"END\r\n", &[b"a", b"b"]).unwrap(), [None, None]);
    }

    #[test]
    fn a_value_that_looks_like_a_reply_is_data() {
        let reply = b"VALUE a 0 13\r\nVALUE b 0 1\r\n\r\nEND\r\n";
        assert_eq!(
            split(reply, &[b"a", b"b"]).unwrap(),
            [Some("VALUE a 0 13\r\nVALUE b 0 1\r\n\r\n".into()), None]
        );
    }

    #[test]
    fn an_error_is_everyones_reply() {
        for reply in [
            &b"SERVER_ERROR out of memory\r\n"[..],
            b"CLIENT_ERROR bad command line format\r\n",
            b"SERVER_ERROR not at END\r\n",
        ] {
            assert_eq!(split(reply, &[b"a", b"b"]), None);
        }
    }
}
