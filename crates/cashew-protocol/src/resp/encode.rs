//! Encoders for the replies the proxy writes itself, in RESP2 or RESP3.

pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `text` is the whole message, prefix included (`ERR ...`, `NOAUTH ...`).
pub fn error(out: &mut Vec<u8>, text: &str) {
    out.push(b'-');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(format!(":{n}\r\n").as_bytes());
}

pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub fn null_bulk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

pub fn array_header(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(format!("*{len}\r\n").as_bytes());
}

/// The RESP3 push that tells a tracking client to forget every key it caches (what
/// Redis sends after `FLUSHALL`).
pub const INVALIDATE_ALL: &[u8] = b">2\r\n$10\r\ninvalidate\r\n_\r\n";

/// RESP3's null.
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"_\r\n");
}

/// A RESP3 map of `len` key-value pairs (they follow).
pub fn map_header(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(format!("%{len}\r\n").as_bytes());
}

/// A RESP3 verbatim string of format `txt`.
pub fn verbatim_text(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(format!("={}\r\ntxt:", text.len() + 4).as_bytes());
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{parse_reply, ReplyParse};

    #[test]
    fn encoded_replies_parse_back() {
        let mut out = Vec::new();
        array_header(&mut out, 5);
        simple(&mut out, "OK");
        error(&mut out, "ERR no");
        integer(&mut out, -7);
        bulk(&mut out, b"a\r\nb");
        null_bulk(&mut out);
        assert_eq!(parse_reply(&out), ReplyParse::Complete(out.len()));
        assert_eq!(&out[..9], b"*5\r\n+OK\r\n");
    }

    #[test]
    fn resp3_encodings_parse_back() {
        let mut out = Vec::new();
        map_header(&mut out, 2);
        bulk(&mut out, b"proto");
        integer(&mut out, 3);
        bulk(&mut out, b"info");
        verbatim_text(&mut out, b"# Server\r\n");
        null(&mut out);
        assert_eq!(parse_reply(&out), ReplyParse::Complete(out.len() - 3));
        assert!(out.ends_with(b"=14\r\ntxt:# Server\r\n\r\n_\r\n"));
    }
}
