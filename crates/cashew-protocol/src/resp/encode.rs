//! Encoders for the replies the proxy writes itself.

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
}
