//! The request parser against memcached's own behaviour, case by case.

use super::*;

fn req(buf: &[u8]) -> Request {
    match parse_request(buf, None) {
        Parsed::Request(r) => r,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

fn bad(buf: &[u8]) -> Invalid {
    match parse_request(buf, None) {
        Parsed::Invalid(i) => i,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

#[test]
fn a_binary_packet_is_refused_the_same_however_much_of_it_came() {
    // Found by fuzzing: the decision once depended on the bytes after it.
    let packet = b"\x80\xff\xff\xfequ\x06q\n";
    let first = bad(packet);
    let longer = bad(&[&packet[..], b"get more\r\n"].concat());
    assert_eq!(first, longer);
    assert!(first.close && first.consume == 1);
    assert_eq!(first.reply, BINARY_PROTOCOL);
}

#[test]
fn get_with_keys() {
    let buf = b"get a bb ccc\r\nnext";
    let r = req(buf);
    assert_eq!(r.command, Command::Get);
    assert_eq!(r.len, 14);
    assert_eq!(&buf[r.key.clone()], b"a");
    let keys: Vec<&[u8]> = crate::memcache::keys(buf, r.keys).collect();
    assert_eq!(keys, [&b"a"[..], b"bb", b"ccc"]);
}

#[test]
fn a_get_takes_any_number_of_keys() {
    let many: String = (0..100).map(|i| format!(" k{i}")).collect();
    let buf = format!("get{many}\r\n");
    let r = req(buf.as_bytes());
    assert_eq!(crate::memcache::keys(buf.as_bytes(), r.keys).count(), 100);
}

#[test]
fn gat_skips_the_exptime() {
    let buf = b"gat 100 k1 k2\r\n";
    let r = req(buf);
    assert_eq!(&buf[r.key.clone()], b"k1");
    assert_eq!(&buf[r.keys.clone()], b"k1 k2");
    assert_eq!(bad(b"gat k1\r\n").reply, BAD_EXPTIME);
    assert_eq!(bad(b"gat 100\r\n").reply, b"END\r\n");
}

#[test]
fn set_with_data_block() {
    let buf = b"set k 5 0 3\r\nabc\r\nget k\r\n";
    let r = req(buf);
    assert_eq!(r.command, Command::Set);
    assert_eq!((r.line_len, r.len), (13, 18));
    assert!(!r.noreply);
    assert_eq!(parse_request(&buf[..17], None), Parsed::Incomplete);
}

#[test]
fn a_bad_data_chunk_is_the_servers_to_refuse() {
    // memcached reads exactly length + 2 bytes, whatever they are.
    let r = req(b"set k 0 0 2\r\nabc\r\n");
    assert_eq!(r.len, 17);
}

#[test]
fn noreply_is_found_and_can_be_cut() {
    let buf = b"set k 0 0 1 noreply\r\nx\r\n";
    let r = req(buf);
    assert!(r.noreply);
    let mut stripped = buf[..r.noreply_span.start].to_vec();
    stripped.extend_from_slice(&buf[r.noreply_span.end..r.len]);
    assert_eq!(stripped, b"set k 0 0 1\r\nx\r\n");
    assert!(req(b"delete k noreply\r\n").noreply);
    assert!(req(b"delete k 0 noreply\r\n").noreply);
    assert!(req(b"incr k 1 noreply\r\n").noreply);
    assert!(req(b"flush_all noreply\r\n").noreply);
    assert!(req(b"flush_all 10 noreply\r\n").noreply);
    assert!(!req(b"delete k\r\n").noreply);
    let r = req(b"delete noreply\r\n");
    assert!(!r.noreply, "the key is named noreply");
}

#[test]
fn token_counts_give_error_as_memcached_does() {
    for line in [
        &b"set k 0 0\r\n"[..],
        b"cas k 0 0 1\r\n",
        b"incr k\r\n",
        b"touch k\r\n",
        b"delete\r\n",
        b"delete a b c d e\r\n",
        b"flush_all a b c\r\n",
        b"verbosity\r\n",
        b"verbosity foo bar my\r\n",
        b"get\r\n",
        b"gets   \r\n",
        b"bogus k\r\n",
        b"GET k\r\n",
        b"\r\n",
        b"x\r\n",
        b"mz k\r\n",
        b"mg\r\n",
    ] {
        assert_eq!(
            bad(line).reply,
            ERROR,
            "{:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn keys_are_any_bytes_but_spaces_up_to_250() {
    for key in [&b"a\x01b"[..], b"tab\there", b"\xff\xfe", b"a\rb"] {
        let mut line = b"get ".to_vec();
        line.extend_from_slice(key);
        line.extend_from_slice(b"\r\n");
        let r = req(&line);
        assert_eq!(&line[r.key], key);
    }
    let long = format!("get {}\r\n", "k".repeat(251));
    assert_eq!(bad(long.as_bytes()).reply, BAD_FORMAT);
    assert!(matches!(
        parse_request(format!("get {}\r\n", "k".repeat(250)).as_bytes(), None),
        Parsed::Request(_)
    ));
    let long_set = format!("set {} 0 0 1\r\nx\r\n", "k".repeat(251));
    let i = bad(long_set.as_bytes());
    assert_eq!((i.reply, i.skip), (BAD_FORMAT, 0), "no data read");
}

#[test]
fn a_nul_byte_ends_the_line() {
    let i = bad(b"set k\x00 0 0 1\r\nx\r\n");
    assert_eq!((i.reply, i.consume), (ERROR, 14));
    let r = req(b"get a\x00b c\r\n");
    assert_eq!(r.keys, 4..5);
}

#[test]
fn bad_numbers() {
    let i = bad(b"set k x 0 3\r\nabc\r\n");
    assert_eq!((i.reply, i.skip), (BAD_FORMAT, 0));
    assert_eq!(bad(b"set k 0 0 -1\r\n").reply, BAD_FORMAT);
    assert_eq!(bad(b"set k -1 0 1\r\n").reply, BAD_FORMAT);
    assert_eq!(req(b"set k -0 0 1\r\nx\r\n").len, 17);
    assert_eq!(
        req(b"set k 0 0 4294967297\r\nx\r\n").len,
        25,
        "32-bit length"
    );
    assert_eq!(bad(b"incr k x\r\n").reply, BAD_DELTA);
    assert_eq!(bad(b"incr k -1\r\n").reply, BAD_DELTA);
    assert_eq!(bad(b"touch k soon\r\n").reply, BAD_EXPTIME);
    assert_eq!(bad(b"delete k 5\r\n").reply, BAD_DELETE);
    assert_eq!(req(b"delete k 0\r\n").command, Command::Delete);
    assert_eq!(bad(b"verbosity x\r\n").reply, BAD_FORMAT);
    assert_eq!(bad(b"flush_all soon\r\n").reply, BAD_EXPTIME);
}

#[test]
fn errors_of_noreply_requests_are_quiet() {
    assert!(bad(b"incr k x noreply\r\n").noreply);
    assert!(bad(b"set k 0 0 noreply\r\n").noreply);
    assert!(bad(b"verbosity noreply\r\n").noreply);
    assert!(!bad(b"set k 0 noreply\r\n").noreply, "ERROR is never quiet");
}

#[test]
fn a_proxy_value_limit_is_optional() {
    let i = match parse_request(b"set k 0 0 2000\r\n", Some(1000)) {
        Parsed::Invalid(i) => i,
        other => panic!("{other:?}"),
    };
    assert_eq!((i.reply, i.consume, i.skip), (TOO_LARGE, 16, 2002));
    assert_eq!(
        parse_request(b"set k 0 0 2000\r\n", None),
        Parsed::Incomplete
    );
}

#[test]
fn local_commands_take_any_arguments() {
    assert_eq!(req(b"version foo bar\r\n").command, Command::Version);
    assert_eq!(req(b"quit now\r\n").command, Command::Quit);
    let buf = b"stats  slabs x\r\n";
    let r = req(buf);
    assert_eq!(&buf[r.keys], b"slabs x");
    assert!(req(b"stats\r\n").keys.is_empty());
}

#[test]
fn memcached_hangs_up_on_http_and_on_long_junk() {
    let i = bad(b"GET / HTTP/1.1\r\n");
    assert!(i.close && i.reply.is_empty());
    let junk = vec![b'x'; SHORT_LINE_LEN + 1];
    assert!(bad(&junk).close);
    let mut long_get = b"get ".to_vec();
    long_get.resize(SHORT_LINE_LEN + 10, b'k');
    assert_eq!(parse_request(&long_get, None), Parsed::Incomplete);
}

#[test]
fn meta_requests() {
    let r = req(b"mg foo v q O123\r\n");
    assert_eq!((r.command, r.quiet, r.key), (Command::MetaGet, true, 3..6));
    let r = req(b"mg Zm9v b v\r\n");
    assert!(r.key_base64);
    let buf = b"ms foo 3 T10 q\r\nbar\r\nmn\r\n";
    let r = req(buf);
    assert_eq!((r.command, r.len, r.quiet), (Command::MetaSet, 21, true));
    assert_eq!(parse_request(&buf[..19], None), Parsed::Incomplete);
    // A length memcached cannot read: no data block follows.
    assert_eq!(req(b"ms foo xx\r\n").len, 11);
    assert_eq!(req(b"ms foo\r\n").len, 8);
    assert_eq!(req(b"mn\r\n").command, Command::MetaNoop);
    assert_eq!(req(b"me foo\r\n").command, Command::MetaDebug);
    assert_eq!(bad(b"me\r\n").reply, BAD_FORMAT);
    assert_eq!(bad(b"ma\r\n").reply, ERROR);
}

#[test]
fn every_prefix_of_a_pipeline_is_incomplete_or_a_request() {
    let pipeline: &[u8] =
        b"set a 1 2 5\r\nhello\r\nget a b\r\nincr n 5 noreply\r\nms k 2 q\r\nhi\r\ndelete a\r\n";
    let mut offset = 0;
    let mut seen = 0;
    while offset < pipeline.len() {
        let r = req(&pipeline[offset..]);
        for cut in offset..offset + r.len {
            match parse_request(&pipeline[offset..cut], None) {
                Parsed::Incomplete => {}
                other => panic!("prefix {cut} gave {other:?}"),
            }
        }
        offset += r.len;
        seen += 1;
    }
    assert_eq!(seen, 5);
}
