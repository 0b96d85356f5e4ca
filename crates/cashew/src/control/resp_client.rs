//! The few blocking redis calls of the control plane (asking Sentinels, reading a
//! cluster's slot map): a request's bytes, one whole reply read, its strings.

use std::io::Read;

use cashew_protocol::resp::{element_text, parse_reply, reply_elements, ReplyParse};

/// A command as RESP: an array of bulk strings.
pub(super) fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    cashew_protocol::resp::array_header(&mut out, args.len());
    for a in args {
        cashew_protocol::resp::bulk(&mut out, a);
    }
    out
}

/// The next whole reply from `stream`, `buf` holding what was read past it.
pub(super) fn read_frame(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let ReplyParse::Complete(n) = parse_reply(buf) {
            let frame = buf[..n].to_vec();
            buf.drain(..n);
            return Some(frame);
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The bulk strings of an array reply.
pub(super) fn strings(reply: &[u8]) -> Option<Vec<String>> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    reply_elements(reply)?
        .into_iter()
        .map(|e| element_text(e).map(|t| String::from_utf8_lossy(t).into_owned()))
        .collect()
}
