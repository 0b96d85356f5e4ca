//! Random commands, pipelined in random batches, get through cashew (a pool of
//! three servers) the bytes one redis-server gives them, reply by reply, in RESP2
//! and RESP3. The commands come from templates over a few keys, so that types
//! clash, keys come and go and multi-key commands span servers; the seeds are
//! fixed, so a failure is found again by running the test again.

use std::io::Write;
use std::net::SocketAddr;

use cashew_testkit::random::Random;
use cashew_testkit::resp::{encode, RespConn};
use cashew_testkit::{redis_server, PoolProxy, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

/// Commands on any keys: `K` one key, `K*` one to five, `KV*` one to four key-value
/// pairs, `T` a key of the tag {t} (all on one server), `V` a value, `N` a small
/// number. Left out: what Redis answers from a hash table's order (SMEMBERS, the
/// scans, DUMP of a set), at random (RANDOMKEY, HRANDFIELD, XADD *), or from the
/// clock (TTL, TIME); and expiries that could fall between the two servers' runs
/// of a command (`EXPIRE K V` only with values that expire at once or not at all).
const ANY_KEYS: &[&str] = &[
    "SET K V",
    "SET K V NX",
    "SET K V XX GET",
    "SET K V KEEPTTL",
    "GET K",
    "GETSET K V",
    "GETDEL K",
    "GETEX K PERSIST",
    "SETNX K V",
    "SETEX K 1000 V",
    "APPEND K V",
    "STRLEN K",
    "GETRANGE K N N",
    "SETRANGE K N V",
    "INCR K",
    "INCRBY K V",
    "DECRBY K N",
    "INCRBYFLOAT K V",
    "MGET K*",
    "MSET KV*",
    "DEL K*",
    "UNLINK K*",
    "EXISTS K*",
    "TOUCH K*",
    "TYPE K",
    "EXPIRE K 1000",
    "EXPIRE K 0",
    "EXPIRE K V",
    "PERSIST K",
    "OBJECT ENCODING K",
    "LPUSH K V V",
    "RPUSH K V",
    "LPOP K N",
    "RPOP K",
    "LRANGE K 0 -1",
    "LLEN K",
    "LPOS K V",
    "LINDEX K N",
    "HSET K V V",
    "HGET K V",
    "HMGET K V V",
    "HDEL K V",
    "HINCRBY K V V",
    "HLEN K",
    "SADD K V V",
    "SREM K V",
    "SCARD K",
    "SISMEMBER K V",
    "ZADD K V V",
    "ZINCRBY K V V",
    "ZSCORE K V",
    "ZRANGE K 0 -1 WITHSCORES",
    "ZCARD K",
    "SETBIT K N 1",
    "BITCOUNT K",
    "PFADD K V V",
    "PFCOUNT K",
    "XLEN K",
    "SORT K",
    "EVAL return(redis.call('get',KEYS[1])) 1 K",
    "EVAL return(redis.call('incr',KEYS[1])) 1 K",
    "RENAME T T",
    "COPY T T",
    "LMOVE T T LEFT RIGHT",
    "SINTERCARD 2 T T",
    "ZRANGESTORE T T 0 -1",
    "BITOP OR T T T",
    "PING",
    "ECHO V",
    "GET",
    "SET K",
    "MSET K",
    "NOSUCHCOMMAND K",
];

/// Transactions on keys of one tag (a transaction's keys must share a server).
const TRANSACTIONS: &[&str] = &[
    "MULTI", "EXEC", "DISCARD", "WATCH T", "UNWATCH", "MULTI", "EXEC",
];

const VALUES: &[&str] = &["-1", "0", "-3", "abc", "3.5", "", "xxxxxxxxxxxxxxxxxxxx"];

/// One command from `template`, with `keys` for `K`.
fn command(template: &str, keys: &[String], random: &mut Random) -> Vec<Vec<u8>> {
    let tagged = ["{t}0", "{t}1", "{t}2", "{t}3"];
    let mut args = Vec::new();
    for word in template.split(' ') {
        match word {
            "K" => args.push(random.pick(keys).clone().into_bytes()),
            "T" => args.push(random.pick(&tagged).as_bytes().to_vec()),
            "V" => args.push(random.pick(VALUES).as_bytes().to_vec()),
            "N" => args.push((random.below(9) as i64 - 3).to_string().into_bytes()),
            "K*" => {
                for _ in 0..1 + random.below(5) {
                    args.push(random.pick(keys).clone().into_bytes());
                }
            }
            "KV*" => {
                for _ in 0..1 + random.below(4) {
                    args.push(random.pick(keys).clone().into_bytes());
                    args.push(random.pick(VALUES).as_bytes().to_vec());
                }
            }
            word => args.push(word.as_bytes().to_vec()),
        }
    }
    args
}

/// Sends `commands` batches of random size to both, and compares every reply;
/// the differences, each with the commands before it.
fn compare(
    reference: SocketAddr,
    through: SocketAddr,
    protocol: &str,
    templates: &[&str],
    keys: &[String],
    seed: u64,
    commands: usize,
) -> Vec<String> {
    let mut random = Random::new(seed);
    let mut conns = [RespConn::connect(reference), RespConn::connect(through)];
    for conn in &mut conns {
        conn.request(&[b"HELLO", protocol.as_bytes()]);
    }
    let mut history: Vec<String> = Vec::new();
    let mut differ = Vec::new();
    let mut sent = 0;
    while sent < commands && differ.len() < 5 {
        let batch: Vec<Vec<Vec<u8>>> = (0..1 + random.below(16))
            .map(|_| {
                let template = *random.pick(templates);
                command(template, keys, &mut random)
            })
            .collect();
        sent += batch.len();
        let bytes: Vec<u8> = batch.iter().flat_map(|args| encode(args)).collect();
        for conn in &mut conns {
            conn.0.write_all(&bytes).unwrap();
        }
        for args in &batch {
            let expected = conns[0].reply();
            let got = conns[1].reply();
            let line = String::from_utf8_lossy(&args.join(&b' ')).into_owned();
            if got != expected {
                differ.push(format!(
                    "seed {seed}, RESP{protocol}, after {:?}:\n  {line}\n  redis : {}\n  cashew: {}",
                    &history[history.len().saturating_sub(8)..],
                    String::from_utf8_lossy(&expected).escape_debug(),
                    String::from_utf8_lossy(&got).escape_debug()
                ));
            }
            history.push(line);
        }
    }
    differ
}

/// Four seeds from `first_seed`, in RESP2 and RESP3 in turn, 4,000 commands each;
/// fails listing the differences.
fn assert_same_replies(
    p: &PoolProxy,
    reference: &Process,
    templates: &[&str],
    keys: &[String],
    first_seed: u64,
) {
    let mut differ = Vec::new();
    for (seed, protocol) in (first_seed..first_seed + 4).zip(["2", "3", "2", "3"]) {
        differ.extend(compare(
            reference.addr,
            p.listen,
            protocol,
            templates,
            keys,
            seed,
            4000,
        ));
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

fn start() -> (PoolProxy, Process) {
    let backends: Vec<Process> = (0..3).map(|_| redis_server(&[])).collect();
    let proxy = PoolProxy::start(
        CASHEW,
        backends,
        "  redis: true\n  hash: md5\n  hash_tag: \"{}\"\n",
        &[],
    );
    (proxy, redis_server(&[]))
}

#[test]
fn random_commands_over_three_servers_get_the_servers_replies() {
    let (p, reference) = start();
    let keys: Vec<String> = (0..8)
        .map(|i| format!("k{i}"))
        .chain((0..4).map(|i| format!("{{t}}{i}")))
        .collect();
    let placed = p.routed(&keys);
    assert!(
        placed[..8].iter().any(|&s| s != placed[0]),
        "the keys spread over the servers: {placed:?}"
    );
    assert_same_replies(&p, &reference, ANY_KEYS, &keys, 1);
}

#[test]
fn random_transactions_get_the_servers_replies() {
    let (p, reference) = start();
    let keys: Vec<String> = (0..4).map(|i| format!("{{t}}{i}")).collect();
    // One transaction command in about five.
    let mut templates: Vec<&str> = ANY_KEYS.to_vec();
    for _ in 0..3 {
        templates.extend_from_slice(TRANSACTIONS);
    }
    assert_same_replies(&p, &reference, &templates, &keys, 5);
}
