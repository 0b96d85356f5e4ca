//! Property tests: every request and reply type, written as a client or server
//! writes it, parses back to what was written, in exactly its own bytes (whatever
//! follows it), and is incomplete at every shorter cut; a reply fed in two parts
//! parses as it does whole.

use std::ops::Range;

use cashew_protocol::memcache::{self, Command, Parsed};
use cashew_protocol::{resp, ReplyParse, Resume};
use proptest::prelude::*;

/// A memcached key: 1 to 250 bytes, none a space or a control character.
fn mc_key() -> impl Strategy<Value = String> {
    "[!-~]{1,250}"
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

/// A memcached request, its command and the keys it names.
#[derive(Debug, Clone)]
struct McRequest {
    text: Vec<u8>,
    command: Command,
    keys: Vec<String>,
    noreply: bool,
}

fn mc_request() -> impl Strategy<Value = McRequest> {
    let noreply = any::<bool>();
    let suffix = |n: bool| if n { " noreply" } else { "" };
    prop_oneof![
        (
            prop::sample::select(vec![
                ("get", Command::Get),
                ("gets", Command::Gets),
                ("gat 60", Command::Gat),
                ("gats 0", Command::Gats)
            ]),
            prop::collection::vec("[!-~]{1,40}", 1..20)
        )
            .prop_map(|((verb, command), keys)| McRequest {
                text: format!("{verb} {}\r\n", keys.join(" ")).into_bytes(),
                command,
                keys,
                noreply: false,
            }),
        (
            prop::sample::select(vec![
                ("set", Command::Set),
                ("add", Command::Add),
                ("replace", Command::Replace),
                ("append", Command::Append),
                ("prepend", Command::Prepend),
                ("cas", Command::Cas)
            ]),
            mc_key(),
            any::<u32>(),
            0..100_000u32,
            data(),
            noreply
        )
            .prop_map(move |((verb, command), key, flags, exptime, value, n)| {
                let cas = if command == Command::Cas {
                    " 12345"
                } else {
                    ""
                };
                let mut text = format!(
                    "{verb} {key} {flags} {exptime} {}{cas}{}\r\n",
                    value.len(),
                    suffix(n)
                )
                .into_bytes();
                text.extend_from_slice(&value);
                text.extend_from_slice(b"\r\n");
                McRequest {
                    text,
                    command,
                    keys: vec![key],
                    noreply: n,
                }
            }),
        (
            prop::sample::select(vec![
                ("incr", Command::Incr, "1"),
                ("decr", Command::Decr, "18446744073709551615"),
                ("touch", Command::Touch, "3600"),
                ("delete", Command::Delete, "")
            ]),
            mc_key(),
            noreply
        )
            .prop_map(move |((verb, command, arg), key, n)| {
                let arg = if arg.is_empty() {
                    String::new()
                } else {
                    format!(" {arg}")
                };
                McRequest {
                    text: format!("{verb} {key}{arg}{}\r\n", suffix(n)).into_bytes(),
                    command,
                    keys: vec![key],
                    noreply: n,
                }
            }),
        (
            prop::sample::select(vec![
                ("mg", Command::MetaGet, " v f t"),
                ("md", Command::MetaDelete, " q"),
                ("ma", Command::MetaArithmetic, " N0 D5"),
                ("me", Command::MetaDebug, "")
            ]),
            mc_key()
        )
            .prop_map(|((verb, command, flags), key)| McRequest {
                text: format!("{verb} {key}{flags}\r\n").into_bytes(),
                command,
                keys: vec![key],
                noreply: false,
            }),
        (mc_key(), data()).prop_map(|(key, value)| {
            let mut text = format!("ms {key} {} T0 F5\r\n", value.len()).into_bytes();
            text.extend_from_slice(&value);
            text.extend_from_slice(b"\r\n");
            McRequest {
                text,
                command: Command::MetaSet,
                keys: vec![key],
                noreply: false,
            }
        }),
    ]
}

/// A memcached reply as a server writes it.
fn mc_reply() -> impl Strategy<Value = Vec<u8>> {
    let value_block = (
        mc_key(),
        any::<u32>(),
        data(),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(key, flags, value, cas)| {
            let cas = cas.map(|c| format!(" {c}")).unwrap_or_default();
            let mut block = format!("VALUE {key} {flags} {}{cas}\r\n", value.len()).into_bytes();
            block.extend_from_slice(&value);
            block.extend_from_slice(b"\r\n");
            block
        });
    prop_oneof![
        prop::collection::vec(value_block, 0..8).prop_map(|blocks| {
            let mut reply = blocks.concat();
            reply.extend_from_slice(b"END\r\n");
            reply
        }),
        prop::sample::select(vec![
            "STORED",
            "NOT_STORED",
            "EXISTS",
            "NOT_FOUND",
            "DELETED",
            "TOUCHED",
            "ERROR",
            "OK",
            "RESET",
            "EN",
            "NF",
            "NS",
            "EX",
            "MN",
            "HD",
            "HD c5 t-1",
            "VERSION 1.6.21",
            "CLIENT_ERROR bad data chunk",
            "SERVER_ERROR out of memory storing object",
        ])
        .prop_map(|line| format!("{line}\r\n").into_bytes()),
        any::<u64>().prop_map(|n| format!("{n}\r\n").into_bytes()),
        (data(), "( [a-z][0-9]{1,3}){0,4}").prop_map(|(value, flags)| {
            let mut reply = format!("VA {}{flags}\r\n", value.len()).into_bytes();
            reply.extend_from_slice(&value);
            reply.extend_from_slice(b"\r\n");
            reply
        }),
    ]
}

/// A RESP2 or RESP3 value as a server writes it, nested up to four levels.
fn resp_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        "[ -~]{0,40}".prop_map(|s| with(|o| resp::simple(o, &s))),
        "[ -~]{0,40}".prop_map(|s| with(|o| resp::error(o, &format!("ERR {s}")))),
        any::<i64>().prop_map(|n| with(|o| resp::integer(o, n))),
        data().prop_map(|d| with(|o| resp::bulk(o, &d))),
        Just(with(resp::null_bulk)),
        Just(with(resp::null)),
        Just(b"*-1\r\n".to_vec()),
        data().prop_map(|d| with(|o| resp::verbatim_text(o, &d))),
        any::<f64>().prop_map(|f| format!(",{f}\r\n").into_bytes()),
        Just(b",inf\r\n".to_vec()),
        any::<bool>().prop_map(|b| format!("#{}\r\n", if b { 't' } else { 'f' }).into_bytes()),
        "-?[1-9][0-9]{0,60}".prop_map(|n| format!("({n}\r\n").into_bytes()),
        data().prop_map(|d| {
            let mut out = format!("!{}\r\n", d.len()).into_bytes();
            out.extend_from_slice(&d);
            out.extend_from_slice(b"\r\n");
            out
        }),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            (
                prop::sample::select(vec!['*', '~', '>']),
                prop::collection::vec(inner.clone(), 0..8)
            )
                .prop_map(|(kind, items)| {
                    let mut out = format!("{kind}{}\r\n", items.len()).into_bytes();
                    out.extend(items.concat());
                    out
                }),
            prop::collection::vec((inner.clone(), inner), 0..4).prop_map(|pairs| {
                let mut out = with(|o| resp::map_header(o, pairs.len()));
                for (k, v) in pairs {
                    out.extend(k);
                    out.extend(v);
                }
                out
            }),
        ]
    })
}

fn with(write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out);
    out
}

/// `parse` takes exactly `whole` from `whole` followed by more, and no shorter
/// cut of it; fed in two parts with `resume`, it ends as it does whole.
fn check_reply(
    whole: &[u8],
    parse: impl Fn(&[u8], &mut Resume) -> ReplyParse,
) -> Result<(), TestCaseError> {
    let mut followed = whole.to_vec();
    followed.extend_from_slice(b"+OK\r\nEND\r\n");
    prop_assert_eq!(
        parse(&followed, &mut Resume::default()),
        ReplyParse::Complete(whole.len())
    );
    for cut in (0..whole.len()).step_by(whole.len() / 40 + 1) {
        let mut resume = Resume::default();
        prop_assert_eq!(
            parse(&whole[..cut], &mut resume),
            ReplyParse::Incomplete,
            "cut at {}",
            cut
        );
        prop_assert_eq!(
            parse(&followed, &mut resume),
            ReplyParse::Complete(whole.len())
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn memcached_requests(request in mc_request(), next in mc_request()) {
        let whole = &request.text;
        let stream = [&whole[..], &next.text[..]].concat();
        let Parsed::Request(r) = memcache::parse_request(&stream, None) else {
            return Err(TestCaseError::fail(format!("not parsed: {:?}", String::from_utf8_lossy(whole))));
        };
        prop_assert_eq!(r.command, request.command);
        prop_assert_eq!(r.len, whole.len());
        prop_assert_eq!(r.noreply, request.noreply);
        let keys: Vec<&[u8]> = match r.command.shape() {
            memcache::Shape::Retrieval => memcache::keys(&stream, r.keys.clone()).collect(),
            _ => vec![&stream[r.key.clone()]],
        };
        let expected: Vec<&[u8]> = request.keys.iter().map(|k| k.as_bytes()).collect();
        prop_assert_eq!(keys, expected);
        for cut in (0..whole.len()).step_by(whole.len() / 40 + 1) {
            prop_assert_eq!(memcache::parse_request(&whole[..cut], None), Parsed::Incomplete, "cut at {}", cut);
        }
    }

    #[test]
    fn memcached_replies(reply in mc_reply()) {
        check_reply(&reply, memcache::parse_reply_resumable)?;
    }

    #[test]
    fn resp_requests(args in prop::collection::vec(data(), 1..12)) {
        let mut whole = with(|o| resp::array_header(o, args.len()));
        for a in &args {
            resp::bulk(&mut whole, a);
        }
        let stream = [&whole[..], b"*1\r\n$4\r\nPING\r\n"].concat();
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let parsed = resp::parse_request(&stream, &mut ranges);
        prop_assert_eq!(parsed, resp::Parsed::Request(resp::Request { len: whole.len(), inline: false }));
        let got: Vec<&[u8]> = ranges.iter().map(|r| &stream[r.clone()]).collect();
        let want: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(got, want);
        for cut in (0..whole.len()).step_by(whole.len() / 40 + 1) {
            let parsed = resp::parse_request(&whole[..cut], &mut ranges);
            prop_assert!(matches!(parsed, resp::Parsed::Incomplete { .. }), "cut at {}: {:?}", cut, parsed);
        }
    }

    #[test]
    fn resp_inline_requests(
        command in "[A-Za-z]{1,12}",
        rest in prop::collection::vec("[!-~&&[^\"']]{1,30}", 0..10),
    ) {
        // The first byte is a letter: an inline request starting with `*` is a multibulk.
        let args: Vec<String> = std::iter::once(command).chain(rest).collect();
        let whole = format!("{}\r\n", args.join(" ")).into_bytes();
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let parsed = resp::parse_request(&whole, &mut ranges);
        prop_assert_eq!(parsed, resp::Parsed::Request(resp::Request { len: whole.len(), inline: true }));
        let got: Vec<&[u8]> = ranges.iter().map(|r| &whole[r.clone()]).collect();
        let want: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn resp_replies(reply in resp_value()) {
        check_reply(&reply, resp::parse_reply_resumable)?;
    }
}
