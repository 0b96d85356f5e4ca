//! Every Redis 7 command has a class in cashew, and cashew's replies are the
//! server's: a real redis-server is asked for its `COMMAND` list; multi-key
//! commands, streams, RESP3 and the versions reported are checked against it.

use std::net::SocketAddr;

use cashew_protocol::resp::{lookup, CommandKind};
use cashew_testkit::resp::{compare_sequences, sequences, split_args, RespConn};
use cashew_testkit::{redis_server, PoolProxy, Process};
use redis::{Commands, Connection, Value};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn start(servers: usize) -> PoolProxy {
    let backends: Vec<Process> = (0..servers).map(|_| redis_server(&[])).collect();
    PoolProxy::start(
        CASHEW,
        backends,
        "  redis: true\n  hash: md5\n  hash_tag: \"{}\"\n",
        &[],
    )
}

fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

/// The names and arities a server lists in `COMMAND`.
fn server_commands(addr: SocketAddr) -> Vec<(String, i64, (i64, i64, i64))> {
    let mut c = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let Value::Array(entries) = redis::cmd("COMMAND").query::<Value>(&mut c).unwrap() else {
        panic!("COMMAND is an array")
    };
    entries
        .iter()
        .map(|e| {
            let Value::Array(fields) = e else {
                panic!("{e:?}")
            };
            let name = match &fields[0] {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                other => panic!("{other:?}"),
            };
            let int = |i: usize| match fields[i] {
                Value::Int(n) => n,
                ref other => panic!("{other:?}"),
            };
            (name, int(1), (int(3), int(4), int(5)))
        })
        .collect()
}

#[test]
fn every_command_redis_lists_has_a_class_with_its_arity() {
    let server = redis_server(&[]);
    let commands = server_commands(server.addr);
    assert!(commands.len() > 200, "{} commands", commands.len());
    let mut missing = Vec::new();
    for (name, arity, keys) in &commands {
        match lookup(name.as_bytes()) {
            None => missing.push(name.clone()),
            Some(spec) => {
                assert_eq!(i64::from(spec.arity), *arity, "arity of {name}");
                let ours = (
                    i64::from(spec.keys.0),
                    i64::from(spec.keys.1),
                    i64::from(spec.keys.2),
                );
                assert_eq!(ours, *keys, "key positions of {name}");
            }
        }
    }
    assert!(
        missing.is_empty(),
        "commands Redis knows and cashew does not classify: {missing:?}"
    );
    println!("{} commands of redis-server classified", commands.len());
}

#[test]
fn refused_commands_say_why_and_unknown_is_only_for_unknown_commands() {
    let p = start(1);
    let server = &p.backends[0];
    let mut raw = RespConn::connect(p.listen);
    let mut refused = 0;
    for (name, arity, _) in server_commands(server.addr) {
        let spec = lookup(name.as_bytes()).unwrap();
        let CommandKind::Refused(reason) = spec.kind else {
            continue;
        };
        let argc = arity.unsigned_abs() as usize;
        let mut args: Vec<&[u8]> = vec![name.as_bytes()];
        args.resize(argc.max(1), b"x");
        let reply = text(&raw.request(&args));
        assert_eq!(
            reply,
            format!(
                "-ERR command '{name}' is not supported by the proxy: {}\r\n",
                reason.text()
            ),
        );
        refused += 1;
    }
    assert!(refused >= 30, "{refused}");
    let reply = text(&raw.request(&[b"NOSUCHCOMMAND", b"a"]));
    assert!(
        reply.starts_with("-ERR unknown command 'NOSUCHCOMMAND'"),
        "{reply}"
    );
    for served in [
        &[&b"XLEN"[..], b"s"][..],
        &[b"LCS", b"{a}1", b"{a}2"],
        &[b"BITOP", b"AND", b"{a}d", b"{a}s"],
    ] {
        let reply = text(&raw.request(served));
        assert!(
            !reply.contains("unknown command") && !reply.contains("not supported"),
            "{reply}"
        );
    }
}

#[test]
fn multi_key_commands_run_when_their_keys_share_a_server() {
    let p = start(3);
    let mut c: Connection = redis::Client::open(format!("redis://{}/", p.listen))
        .unwrap()
        .get_connection()
        .unwrap();
    // Hash tags put these keys together.
    let _: () = c.set("{u1}:a", "hello").unwrap();
    let _: () = redis::cmd("COPY")
        .arg("{u1}:a")
        .arg("{u1}:b")
        .query(&mut c)
        .unwrap();
    assert_eq!(c.get::<_, String>("{u1}:b").unwrap(), "hello");
    let _: () = redis::cmd("RENAME")
        .arg("{u1}:b")
        .arg("{u1}:c")
        .query(&mut c)
        .unwrap();
    assert_eq!(c.get::<_, String>("{u1}:c").unwrap(), "hello");
    let _: () = c.set("{u1}:d", "help").unwrap();
    let lcs: String = redis::cmd("LCS")
        .arg("{u1}:a")
        .arg("{u1}:d")
        .query(&mut c)
        .unwrap();
    assert_eq!(lcs, "hel");
    let len: i64 = redis::cmd("BITOP")
        .arg("OR")
        .arg("{u1}:or")
        .arg("{u1}:a")
        .arg("{u1}:d")
        .query(&mut c)
        .unwrap();
    assert_eq!(len, 5);
    let _: () = c.rpush("{u1}:l1", &["x", "y"]).unwrap();
    let moved: String = redis::cmd("LMOVE")
        .arg("{u1}:l1")
        .arg("{u1}:l2")
        .arg("LEFT")
        .arg("RIGHT")
        .query(&mut c)
        .unwrap();
    assert_eq!(moved, "x");
    let _: () = c.sadd("{u1}:s1", &["a", "b", "c"]).unwrap();
    let _: () = c.sadd("{u1}:s2", &["b", "c", "d"]).unwrap();
    let card: i64 = redis::cmd("SINTERCARD")
        .arg(2)
        .arg("{u1}:s1")
        .arg("{u1}:s2")
        .query(&mut c)
        .unwrap();
    assert_eq!(card, 2);
    let ok: i64 = redis::cmd("MSETNX")
        .arg("{u1}:m1")
        .arg(1)
        .arg("{u1}:m2")
        .arg(2)
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, 1);

    // Keys on different servers: refused with the rule.
    let keys: Vec<String> = (0..30).map(|i| format!("spread:{i}")).collect();
    let placed = p.routed(&keys);
    let other = (1..keys.len())
        .find(|&i| placed[i] != placed[0])
        .expect("two servers");
    for args in [
        vec!["COPY", &keys[0], &keys[other]],
        vec!["RENAME", &keys[0], &keys[other]],
        vec!["SINTERCARD", "2", &keys[0], &keys[other]],
        vec!["MSETNX", &keys[0], "1", &keys[other], "2"],
    ] {
        let err = redis::cmd(args[0])
            .arg(&args[1..])
            .query::<Value>(&mut c)
            .unwrap_err();
        assert_eq!(err.code(), Some("CROSSSLOT"), "{args:?}: {err}");
        assert!(err.to_string().contains("hash tag"), "{err}");
    }

    // Commands nutcracker forwards by their first key still are.
    let _: () = c.zadd("{z}1", "a", 1).unwrap();
    let _: () = c.zadd("{z}2", "a", 2).unwrap();
    let union: Vec<String> = redis::cmd("ZUNION")
        .arg(2)
        .arg("{z}1")
        .arg("{z}2")
        .query(&mut c)
        .unwrap();
    assert_eq!(union, ["a"]);
    let inter: Vec<String> = redis::cmd("SINTER")
        .arg("{u1}:s1")
        .arg("{u1}:s2")
        .query(&mut c)
        .unwrap();
    assert_eq!(inter.len(), 2);
}

#[test]
fn streams_through_the_proxy() {
    let p = start(3);
    let mut c: Connection = redis::Client::open(format!("redis://{}/", p.listen))
        .unwrap()
        .get_connection()
        .unwrap();
    let id1: String = redis::cmd("XADD")
        .arg("events")
        .arg("*")
        .arg("kind")
        .arg("a")
        .query(&mut c)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("events")
        .arg("*")
        .arg("kind")
        .arg("b")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        redis::cmd("XLEN")
            .arg("events")
            .query::<i64>(&mut c)
            .unwrap(),
        2
    );
    let range: Value = redis::cmd("XRANGE")
        .arg("events")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert!(
        matches!(&range, Value::Array(items) if items.len() == 2),
        "{range:?}"
    );
    let rev: Value = redis::cmd("XREVRANGE")
        .arg("events")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert!(matches!(&rev, Value::Array(items) if items.len() == 1));
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("events")
        .arg("g")
        .arg("0")
        .query(&mut c)
        .unwrap();
    let read: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("c1")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg("events")
        .arg(">")
        .query(&mut c)
        .unwrap();
    assert!(
        matches!(&read, Value::Array(streams) if streams.len() == 1),
        "{read:?}"
    );
    let pending: Value = redis::cmd("XPENDING")
        .arg("events")
        .arg("g")
        .query(&mut c)
        .unwrap();
    assert!(
        matches!(&pending, Value::Array(p) if p.first() == Some(&Value::Int(2))),
        "{pending:?}"
    );
    let claimed: Value = redis::cmd("XCLAIM")
        .arg("events")
        .arg("g")
        .arg("c2")
        .arg(0)
        .arg(&id1)
        .query(&mut c)
        .unwrap();
    assert!(matches!(&claimed, Value::Array(c) if c.len() == 1));
    let auto: Value = redis::cmd("XAUTOCLAIM")
        .arg("events")
        .arg("g")
        .arg("c3")
        .arg(0)
        .arg("0")
        .query(&mut c)
        .unwrap();
    assert!(matches!(&auto, Value::Array(_)));
    assert_eq!(
        redis::cmd("XACK")
            .arg("events")
            .arg("g")
            .arg(&id1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    let info: Value = redis::cmd("XINFO")
        .arg("STREAM")
        .arg("events")
        .query(&mut c)
        .unwrap();
    assert!(!matches!(info, Value::Nil));
    let read: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("events")
        .arg("0")
        .query(&mut c)
        .unwrap();
    assert!(matches!(&read, Value::Array(s) if s.len() == 1), "{read:?}");
    assert_eq!(
        redis::cmd("XDEL")
            .arg("events")
            .arg(&id1)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("XTRIM")
            .arg("events")
            .arg("MAXLEN")
            .arg(0)
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    // XREAD BLOCK waits on a connection of its own, and times out as Redis does.
    let nothing = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(10)
        .arg("STREAMS")
        .arg("events")
        .arg("$")
        .query::<Value>(&mut c)
        .unwrap();
    assert_eq!(nothing, Value::Nil);
}

#[test]
fn info_and_hello_report_the_servers_version() {
    let p = start(1);
    let mut direct = RespConn::connect(p.backends[0].addr);
    let info = text(&direct.request(&[b"INFO", b"server"]));
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim()
        .to_string();
    let mut raw = RespConn::connect(p.listen);
    let info = text(&raw.request(&[b"INFO"]));
    assert!(
        info.contains(&format!("redis_version:{version}\r\n")),
        "{info}"
    );
    let hello = text(&raw.request(&[b"HELLO", b"3"]));
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert!(
        hello.contains(&format!(
            "$7\r\nversion\r\n${}\r\n{version}\r\n",
            version.len()
        )),
        "{hello}"
    );
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
}

/// What a client gets for each request, sent directly to redis-server and through
/// cashew, must be the same bytes, in RESP2 and in RESP3.
#[test]
fn replies_are_the_servers_own_in_resp2_and_resp3() {
    let p = start(3);
    let reference = redis_server(&[]);
    let requests: Vec<Vec<&[u8]>> = vec![
        vec![b"SET", b"{t}str", b"value"],
        vec![b"GET", b"{t}str"],
        vec![b"GET", b"{t}missing"],
        vec![b"HSET", b"{t}h", b"f1", b"v1", b"f2", b"v2"],
        vec![b"HGETALL", b"{t}h"],
        // Integers: an intset keeps its order the same on every server.
        vec![b"SADD", b"{t}s", b"3", b"1", b"2"],
        vec![b"SMEMBERS", b"{t}s"],
        vec![b"SISMEMBER", b"{t}s", b"1"],
        vec![b"ZADD", b"{t}z", b"1.5", b"a", b"2.25", b"b"],
        vec![b"ZSCORE", b"{t}z", b"a"],
        vec![b"ZRANGE", b"{t}z", b"0", b"-1", b"WITHSCORES"],
        vec![b"ZINCRBY", b"{t}z", b"0.5", b"a"],
        vec![b"INCRBYFLOAT", b"{t}f", b"1.5"],
        vec![b"XADD", b"{t}x", b"1-1", b"k", b"v"],
        vec![b"XRANGE", b"{t}x", b"-", b"+"],
        vec![b"XINFO", b"STREAM", b"{t}x"],
        vec![b"OBJECT", b"ENCODING", b"{t}str"],
        vec![
            b"EVAL",
            b"redis.setresp(3); return {double=3.5}",
            b"1",
            b"{t}k",
        ],
        vec![b"EVAL", b"redis.setresp(3); return true", b"1", b"{t}k"],
        vec![
            b"EVAL",
            b"redis.setresp(3); return {map={a=1}}",
            b"1",
            b"{t}k",
        ],
        vec![
            b"EVAL",
            b"redis.setresp(3); return {big_number='123456789012345678901234567890'}",
            b"1",
            b"{t}k",
        ],
        vec![
            b"EVAL",
            b"redis.setresp(3); return {verbatim_string={format='txt', string='hi'}}",
            b"1",
            b"{t}k",
        ],
        vec![
            b"EVAL",
            b"redis.setresp(3); return redis.call('hgetall', KEYS[1])",
            b"1",
            b"{t}h",
        ],
        vec![b"LPOS", b"{t}nolist", b"x"],
        vec![b"TYPE", b"{t}z"],
        vec![b"GETDEL", b"{t}str"],
        vec![b"DEL", b"{t}h", b"{t}s", b"{t}z"],
    ];
    for protocol in [&b"2"[..], b"3"] {
        let mut direct = RespConn::connect(reference.addr);
        let mut through = RespConn::connect(p.listen);
        let hello = [&b"HELLO"[..], protocol];
        let (a, b) = (direct.request(&hello), through.request(&hello));
        assert_eq!(&a[..4], &b[..4], "HELLO reply shape");
        for args in &requests {
            let expected = direct.request(args);
            let got = through.request(args);
            assert_eq!(
                text(&got),
                text(&expected),
                "RESP{} {:?}",
                String::from_utf8_lossy(protocol),
                args.iter()
                    .map(|a| String::from_utf8_lossy(a))
                    .collect::<Vec<_>>()
            );
        }
    }
}

const CORPUS: &str = include_str!("data/redis-corpus.txt");

/// Digit runs as one `0`: idle times differ from one server to the other.
fn mask_digits(reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.len());
    for &b in reply {
        if !(b.is_ascii_digit() && out.last().is_some_and(u8::is_ascii_digit)) {
            out.push(if b.is_ascii_digit() { b'0' } else { b });
        }
    }
    out
}

/// Every command of `tests/data/redis-corpus.txt` (each type's commands, wrong
/// arities, wrong types, bad numbers and options, scripts, unknown commands and
/// subcommands) gets through cashew the bytes redis-server gives it directly.
#[test]
fn every_command_of_the_corpus_gets_the_servers_reply() {
    let p = start(3);
    let reference = redis_server(&[]);
    let cases: Vec<(usize, bool, Vec<Vec<u8>>)> = CORPUS
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|(i, line)| match line.strip_prefix("~ ") {
            Some(masked) => (i + 1, true, split_args(masked)),
            None => (i + 1, false, split_args(line)),
        })
        .collect();
    assert!(cases.len() > 200, "the corpus is read");
    let mut differ = Vec::new();
    for protocol in [&b"2"[..], b"3"] {
        let mut direct = RespConn::connect(reference.addr);
        let mut through = RespConn::connect(p.listen);
        for raw in [&mut direct, &mut through] {
            raw.request(&[b"FLUSHALL"]);
            raw.request(&[b"HELLO", protocol]);
        }
        for (line, masked, args) in &cases {
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let (mut expected, mut got) = (direct.request(&args), through.request(&args));
            if *masked {
                (expected, got) = (mask_digits(&expected), mask_digits(&got));
            }
            if got != expected {
                differ.push(format!(
                    "line {line}, RESP{}: {}\n  redis : {}\n  cashew: {}",
                    String::from_utf8_lossy(protocol),
                    String::from_utf8_lossy(&args.join(&b' ')),
                    text(&expected).escape_debug(),
                    text(&got).escape_debug()
                ));
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

const SEQUENCES: &str = include_str!("data/redis-sequences.txt");

/// Sequences of `tests/data/redis-sequences.txt` (transactions with errors in them,
/// subscriptions over several servers), each pipelined on one connection, get
/// through cashew the bytes redis-server gives them, in the same order.
#[test]
fn pipelined_sequences_get_the_servers_replies_in_order() {
    let p = start(3);
    let reference = redis_server(&[]);
    assert!(sequences(SEQUENCES).len() >= 10, "the sequences are read");
    compare_sequences(SEQUENCES, reference.addr, p.listen);
}

#[test]
fn the_redis_crate_in_resp3_and_resp2() {
    let p = start(3);
    for protocol in ["resp3", "resp2"] {
        redis_crate_session(p.listen, protocol);
    }
}

fn redis_crate_session(listen: SocketAddr, protocol: &str) {
    let url = format!("redis://{listen}/?protocol={protocol}");
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let _: () = c.set("r3:s", "v").unwrap();
    assert_eq!(c.get::<_, Option<String>>("r3:missing").unwrap(), None);
    let _: () = c.hset_multiple("r3:h", &[("a", "1"), ("b", "2")]).unwrap();
    let h: std::collections::HashMap<String, String> = c.hgetall("r3:h").unwrap();
    assert_eq!(h.len(), 2);
    let _: () = c.zadd_multiple("r3:z", &[(1.5, "a"), (2.5, "b")]).unwrap();
    let scores: Vec<(String, f64)> = c.zrange_withscores("r3:z", 0, -1).unwrap();
    assert_eq!(scores, [("a".to_string(), 1.5), ("b".to_string(), 2.5)]);
    let score: f64 = c.zscore("r3:z", "b").unwrap();
    assert_eq!(score, 2.5);
    let members: std::collections::HashSet<String> = {
        let _: () = c.sadd("r3:set", &["x", "y"]).unwrap();
        c.smembers("r3:set").unwrap()
    };
    assert_eq!(members.len(), 2);
    // Across servers.
    let keys: Vec<String> = (0..20).map(|i| format!("r3:k{i}")).collect();
    let pairs: Vec<(String, i64)> = keys.iter().cloned().zip(0..).collect();
    let _: () = c.mset(&pairs).unwrap();
    let mut wanted = keys.clone();
    wanted.insert(5, "r3:none".into());
    let values: Vec<Option<i64>> = c.mget(&wanted).unwrap();
    assert_eq!(values[5], None);
    assert_eq!(values[6], Some(5));
    assert_eq!(c.exists::<_, i64>(&keys).unwrap(), 20);
    assert_eq!(c.del::<_, i64>(&keys).unwrap(), 20);
    // A pipeline of 100.
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.incr(format!("r3:n{}", i % 10), 1);
    }
    let counts: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(counts.len(), 100);
    assert_eq!(counts[99], 10);
    let _: () = redis::cmd("DEL")
        .arg((0..10).map(|i| format!("r3:n{i}")).collect::<Vec<_>>())
        .query(&mut c)
        .unwrap();
    // Streams.
    let id: String = redis::cmd("XADD")
        .arg("r3:x")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut c)
        .unwrap();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg("r3:x")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert_eq!(entries.len(), 1, "{protocol}");
    assert_eq!(entries[0].0, id);
    assert_eq!(entries[0].1["f"], "v");
    let _: () = redis::cmd("DEL")
        .arg(&["r3:s", "r3:h", "r3:z", "r3:set", "r3:x"])
        .query(&mut c)
        .unwrap();
}

/// The README's table of redis commands names every command cashew knows.
#[test]
fn the_readme_lists_every_command() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## Redis pools")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Redis pools section");
    let missing: Vec<&str> = cashew_protocol::resp::COMMANDS
        .iter()
        .map(|c| c.name)
        .filter(|name| !section.contains(&format!("`{}`", name.to_ascii_uppercase())))
        .collect();
    assert!(missing.is_empty(), "README misses: {missing:?}");
}
