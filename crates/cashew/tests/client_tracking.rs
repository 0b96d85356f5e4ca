//! Client-side caching through cashew, against real redis servers: a RESP3 client
//! that turns on `CLIENT TRACKING` gets the servers' invalidations of the keys it
//! read (or, with `BCAST`, of its prefixes), as pushes after the replies before
//! them, and is told to forget everything when a server connection of its own is
//! lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cashew_protocol::resp::{element_text, reply_elements};
use cashew_testkit::resp::RespConn;
use cashew_testkit::{redis_server, PoolProxy, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn start(servers: usize) -> PoolProxy {
    let backends: Vec<Process> = (0..servers).map(|_| redis_server(&[])).collect();
    PoolProxy::start(CASHEW, backends, "  redis: true\n  hash: md5\n", &[])
}

/// A RESP3 client of cashew.
fn resp3(p: &PoolProxy) -> RespConn {
    let mut c = RespConn::connect(p.listen);
    let hello = c.request(&[b"HELLO", b"3"]);
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    c
}

fn ok(c: &mut RespConn, args: &[&[u8]]) {
    let reply = c.request(args);
    assert_eq!(reply, b"+OK\r\n", "{}", String::from_utf8_lossy(&reply));
}

/// The keys of an `invalidate` push (`None`: forget everything).
fn invalidated(push: &[u8]) -> Option<Vec<String>> {
    assert!(
        push.starts_with(b">2\r\n"),
        "{}",
        String::from_utf8_lossy(push)
    );
    let parts = reply_elements(push).unwrap();
    assert_eq!(element_text(parts[0]), Some(&b"invalidate"[..]));
    if parts[1] == b"_\r\n" {
        return None;
    }
    Some(
        reply_elements(parts[1])
            .unwrap()
            .into_iter()
            .map(|k| String::from_utf8(element_text(k).unwrap().to_vec()).unwrap())
            .collect(),
    )
}

/// Pushes that come within `wait`: the keys they invalidate.
fn invalidations(c: &mut RespConn, wait: Duration) -> BTreeSet<String> {
    c.0.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut keys = BTreeSet::new();
    let end = Instant::now() + wait;
    while Instant::now() < end {
        if let Some(push) = c.try_reply() {
            keys.extend(invalidated(&push).expect("keys, not everything"));
        }
    }
    c.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    keys
}

fn set_all(p: &PoolProxy, keys: &[String], value: &str) {
    let mut w = RespConn::connect(p.listen);
    for k in keys {
        ok(&mut w, &[b"SET", k.as_bytes(), value.as_bytes()]);
    }
}

#[test]
fn a_tracking_client_hears_of_every_key_it_read_and_only_of_those() {
    let p = start(3);
    let keys: Vec<String> = (0..30).map(|i| format!("user:{i}")).collect();
    let servers: BTreeSet<usize> = p.routed(&keys).into_iter().collect();
    assert_eq!(servers.len(), 3, "the keys are on every server");
    set_all(&p, &keys, "v1");

    let mut c = resp3(&p);
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"ON"]);
    let info = c.request(&[b"CLIENT", b"TRACKINGINFO"]);
    assert!(
        info.starts_with(b"%3\r\n$5\r\nflags\r\n*1\r\n$2\r\non\r\n"),
        "{info:?}"
    );
    assert_eq!(c.request(&[b"CLIENT", b"GETREDIR"]), b":0\r\n");
    let info = c.request(&[b"CLIENT", b"INFO"]);
    assert!(
        String::from_utf8_lossy(&info).contains(" flags=t "),
        "{info:?}"
    );
    // It reads the first twenty.
    for k in &keys[..20] {
        assert_eq!(c.request(&[b"GET", k.as_bytes()]), b"$2\r\nv1\r\n");
    }
    assert_eq!(p.stats()["pool"]["pinned_connections"], 3);

    set_all(&p, &keys, "v2");
    let heard = invalidations(&mut c, Duration::from_secs(2));
    let read: BTreeSet<String> = keys[..20].iter().cloned().collect();
    assert_eq!(heard, read, "every key read, and no other");

    // Read again, it is tracked again; a key changed twice is told once.
    assert_eq!(c.request(&[b"GET", keys[0].as_bytes()]), b"$2\r\nv2\r\n");
    set_all(&p, &keys[..1], "v3");
    set_all(&p, &keys[..1], "v4");
    let heard = invalidations(&mut c, Duration::from_secs(1));
    assert_eq!(heard, BTreeSet::from([keys[0].clone()]));

    // Off: its connections close, it hears nothing more.
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"OFF"]);
    assert_eq!(c.request(&[b"GET", keys[1].as_bytes()]), b"$2\r\nv2\r\n");
    set_all(&p, &keys, "v5");
    assert!(invalidations(&mut c, Duration::from_millis(600)).is_empty());
    let start = Instant::now();
    while p.stats()["pool"]["pinned_connections"] != 0 {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_invalidation_comes_after_the_reply_it_makes_stale() {
    let p = start(2);
    let keys: Vec<String> = (0..40).map(|i| format!("race:{i}")).collect();
    let servers = p.routed(&keys);
    let on_a: Vec<&String> = keys
        .iter()
        .zip(&servers)
        .filter(|(_, s)| **s == 0)
        .map(|(k, _)| k)
        .collect();
    let on_b = keys.iter().zip(&servers).find(|(_, s)| **s == 1).unwrap().0;
    let mut c = resp3(&p);
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"ON"]);
    let mut w = RespConn::connect(p.listen);
    let mut stale_rounds = 0;
    // Each round the tracking client pipelines a slow script on server B, then
    // reads of a key of server A, which the writer changes meanwhile: A answers the
    // reads and sends the invalidation while B still runs the script. Whatever
    // value a read returns, an invalidation must follow any read that returned a
    // value older than the write.
    let slow = b"local i = 0 while i < 300000 do i = i + 1 end return 1";
    for round in 0..100 {
        let key = on_a[round % on_a.len()];
        let mut pipeline =
            cashew_testkit::resp::encode(&[&b"EVAL"[..], slow, b"1", on_b.as_bytes()]);
        for _ in 0..8 {
            pipeline.extend(cashew_testkit::resp::encode(&[b"GET", key.as_bytes()]));
        }
        use std::io::Write;
        c.0.write_all(&pipeline).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        ok(
            &mut w,
            &[b"SET", key.as_bytes(), round.to_string().as_bytes()],
        );
        let mut last_value = None;
        let mut stale_after = false;
        let mut replies = 0;
        while replies < 9 {
            let frame = c.reply();
            if frame.starts_with(b">") {
                if invalidated(&frame).is_none_or(|k| k.contains(key)) {
                    stale_after = false;
                }
                continue;
            }
            replies += 1;
            if replies == 1 {
                assert_eq!(frame, b":1\r\n");
                continue;
            }
            stale_after =
                frame != format!("${}\r\n{round}\r\n", round.to_string().len()).as_bytes();
            last_value = Some(frame);
        }
        if stale_after {
            stale_rounds += 1;
            // The last value read is older than the write: its invalidation comes.
            c.0.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let push = c.try_reply().unwrap_or_else(|| {
                panic!("round {round}: {last_value:?} read, and no invalidation after it")
            });
            c.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let keys = invalidated(&push);
            assert!(
                keys.is_none_or(|k| k.contains(key)),
                "round {round}: {last_value:?} then {}",
                String::from_utf8_lossy(&push)
            );
        }
    }
    println!("{stale_rounds} of 100 rounds read a value older than the write");
    assert!(stale_rounds > 0, "no round raced");
}

#[test]
fn bcast_prefixes_and_optin_are_the_servers_own() {
    let p = start(2);
    let mut c = resp3(&p);
    // BCAST: every key under the prefix, read or not, on every server.
    ok(
        &mut c,
        &[b"CLIENT", b"TRACKING", b"ON", b"BCAST", b"PREFIX", b"news:"],
    );
    let info = c.request(&[b"CLIENT", b"TRACKINGINFO"]);
    let text = String::from_utf8_lossy(&info);
    assert!(text.contains("bcast") && text.contains("news:"), "{text}");
    // The servers track for it once it sends them a command.
    assert_eq!(c.request(&[b"PING"]), b"+PONG\r\n");
    let keys: Vec<String> = (0..10).map(|i| format!("news:{i}")).collect();
    for k in &keys {
        c.request(&[b"EXISTS", k.as_bytes()]);
    }
    set_all(&p, &keys, "x");
    set_all(&p, &["other:1".to_string()], "x");
    let heard = invalidations(&mut c, Duration::from_secs(2));
    assert_eq!(heard, keys.iter().cloned().collect::<BTreeSet<_>>());

    // OPTIN: only what is read after CLIENT CACHING yes.
    let mut c = resp3(&p);
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"ON", b"OPTIN"]);
    c.request(&[b"GET", b"plain"]);
    ok(&mut c, &[b"CLIENT", b"CACHING", b"yes"]);
    c.request(&[b"GET", b"chosen"]);
    set_all(&p, &["plain".to_string(), "chosen".to_string()], "y");
    let heard = invalidations(&mut c, Duration::from_secs(1));
    assert_eq!(heard, BTreeSet::from(["chosen".to_string()]));
    let wrong = c.request(&[b"CLIENT", b"CACHING", b"no"]);
    assert!(wrong.starts_with(b"-ERR CLIENT CACHING NO"), "{wrong:?}");
}

#[test]
fn a_lost_server_connection_makes_the_client_forget_everything() {
    let p = start(1);
    set_all(&p, &["k".to_string()], "v");
    let mut c = resp3(&p);
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"ON"]);
    assert_eq!(c.request(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    // The server drops every normal connection, the tracking one among them.
    let mut admin = RespConn::connect(p.backends[0].addr);
    let killed = admin.request(&[b"CLIENT", b"KILL", b"TYPE", b"normal", b"SKIPME", b"yes"]);
    assert!(killed.starts_with(b":"), "{killed:?}");
    c.0.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let push = c.reply();
    assert_eq!(
        invalidated(&push),
        None,
        "{}",
        String::from_utf8_lossy(&push)
    );
    // It goes on: the next read reconnects and is tracked again.
    assert_eq!(c.request(&[b"GET", b"k"]), b"$1\r\nv\r\n");
    set_all(&p, &["k".to_string()], "w");
    let heard = invalidations(&mut c, Duration::from_secs(1));
    assert_eq!(heard, BTreeSet::from(["k".to_string()]));
}

#[test]
fn what_cannot_be_tracked_through_a_proxy_is_refused_with_the_reason() {
    let p = start(1);
    let mut c = RespConn::connect(p.listen);
    let resp2 = c.request(&[b"CLIENT", b"TRACKING", b"ON"]);
    assert!(
        String::from_utf8_lossy(&resp2).contains("switch to RESP3 with HELLO 3"),
        "{resp2:?}"
    );
    let mut c = resp3(&p);
    let redirect = c.request(&[b"CLIENT", b"TRACKING", b"ON", b"REDIRECT", b"7"]);
    assert!(
        String::from_utf8_lossy(&redirect).contains("with REDIRECT"),
        "{redirect:?}"
    );
    let prefix = c.request(&[b"CLIENT", b"TRACKING", b"ON", b"PREFIX", b"a"]);
    assert_eq!(
        prefix,
        b"-ERR PREFIX option requires BCAST mode to be enabled\r\n"
    );
    assert_eq!(c.request(&[b"CLIENT", b"GETREDIR"]), b":-1\r\n");
}

/// GETs every key, each of which must hold `value`.
async fn read_all_async(con: &mut redis::aio::MultiplexedConnection, keys: &[String], value: &str) {
    for k in keys {
        let v: String = redis::cmd("GET").arg(k).query_async(con).await.unwrap();
        assert_eq!(v, value, "{k}");
    }
}

#[test]
fn the_redis_crate_serves_reads_from_its_cache_and_drops_what_changes() {
    let p = start(2);
    let keys: Vec<String> = (0..20).map(|i| format!("item:{i}")).collect();
    set_all(&p, &keys, "old");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = redis::Client::open(format!("redis://{}/?protocol=resp3", p.listen)).unwrap();
        let config = redis::AsyncConnectionConfig::new()
            .set_cache_config(redis::caching::CacheConfig::default());
        let mut con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap();
        for _ in 0..3 {
            read_all_async(&mut con, &keys, "old").await;
        }
        let stats = con.get_cache_statistics().unwrap();
        assert_eq!((stats.miss, stats.hit), (20, 40), "{stats:?}");

        set_all(&p, &keys, "new");
        let start = Instant::now();
        while con.get_cache_statistics().unwrap().invalidate < 20 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{:?}",
                con.get_cache_statistics()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        read_all_async(&mut con, &keys, "new").await;
        println!("{:?}", con.get_cache_statistics());
    });
}

#[test]
fn invalidations_held_past_the_backlog_become_one_forget_everything() {
    let p = start(1);
    let mut c = resp3(&p);
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"ON"]);
    // It reads 6,000 keys: each change of one is a push of its own.
    for chunk in 0..6 {
        let mut mget: Vec<Vec<u8>> = vec![b"MGET".to_vec()];
        mget.extend((0..1000).map(|i| format!("burst:{}", chunk * 1000 + i).into_bytes()));
        let args: Vec<&[u8]> = mget.iter().map(|a| &a[..]).collect();
        assert!(c.request(&args).starts_with(b"*1000\r\n"));
    }
    // Blocked, it takes no push; the writer changes 6,000 keys meanwhile.
    use std::io::Write;
    c.0.write_all(&cashew_testkit::resp::encode(&[
        &b"BLPOP"[..],
        b"wake",
        b"0",
    ]))
    .unwrap();
    let mut w = RespConn::connect(p.listen);
    let mut pipeline = Vec::new();
    for i in 0..6000 {
        let key = format!("burst:{i}");
        pipeline.extend(cashew_testkit::resp::encode(&[
            &b"SET"[..],
            key.as_bytes(),
            b"x",
        ]));
    }
    w.0.write_all(&pipeline).unwrap();
    for _ in 0..6000 {
        assert_eq!(w.reply(), b"+OK\r\n");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.request(&[b"LPUSH", b"wake", b"now"]), b":1\r\n");
    let popped = c.reply();
    assert!(popped.starts_with(b"*2\r\n"), "{popped:?}");
    // What it is told after: everything to forget, once, and less than the backlog.
    c.0.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = c.try_reply() {
        frames.push(frame);
    }
    let forget_all = frames.iter().filter(|f| invalidated(f).is_none()).count();
    assert_eq!(forget_all, 1, "{} frames", frames.len());
    assert!(frames.len() < 4096, "{} frames", frames.len());
}

#[test]
fn a_tracking_clients_requests_keep_their_order_across_its_connections() {
    let p = start(2);
    let mut c = resp3(&p);
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"ON"]);
    // FLUSHDB goes over every server on the shared connections, GET on the
    // client's own: the GET pipelined after it must see the flush.
    // (The flush's invalidations come between replies: read past.)
    let next = |c: &mut RespConn| loop {
        let frame = c.reply();
        if !frame.starts_with(b">") {
            return frame;
        }
    };
    for round in 0..100 {
        use std::io::Write;
        let value = round.to_string();
        c.0.write_all(&cashew_testkit::resp::encode(&[
            &b"SET"[..],
            b"k",
            value.as_bytes(),
        ]))
        .unwrap();
        assert_eq!(next(&mut c), b"+OK\r\n");
        let mut pipeline = cashew_testkit::resp::encode(&[&b"FLUSHDB"[..]]);
        pipeline.extend(cashew_testkit::resp::encode(&[&b"GET"[..], b"k"]));
        c.0.write_all(&pipeline).unwrap();
        assert_eq!(next(&mut c), b"+OK\r\n");
        assert_eq!(next(&mut c), b"_\r\n", "round {round}");
    }
}

#[test]
fn tracking_connections_count_against_max_pinned_connections() {
    let backends: Vec<Process> = (0..2).map(|_| redis_server(&[])).collect();
    let p = PoolProxy::start(
        CASHEW,
        backends,
        "  redis: true\n  hash: md5\n  max_pinned_connections: 1\n",
        &[],
    );
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let servers = p.routed(&keys);
    let on = |server: usize| keys[servers.iter().position(|&s| s == server).unwrap()].clone();
    let mut c = resp3(&p);
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"ON"]);
    assert_eq!(c.request(&[b"GET", on(0).as_bytes()]), b"_\r\n");
    assert_eq!(
        c.request(&[b"GET", on(1).as_bytes()]),
        b"-ERR max pinned connections reached\r\n"
    );
    // The connection it has goes on serving.
    assert_eq!(c.request(&[b"GET", on(0).as_bytes()]), b"_\r\n");
    assert_eq!(p.stats()["pool"]["pinned_connections"], 1);
}

/// Reloads `p` with `servers` and `extra` pool lines; waits for generation `n`.
fn reload(p: &PoolProxy, servers: &[&Process], extra: &str, n: u32) {
    let list: String = servers
        .iter()
        .map(|s| format!("    - {}:1\n", s.addr))
        .collect();
    p.cashew.write_config(&format!(
        "pool:\n  listen: {}\n  redis: true\n  hash: md5\n{extra}  servers:\n{list}",
        p.listen
    ));
    p.cashew.process.signal("HUP");
    let start = Instant::now();
    while !p
        .cashew
        .log()
        .contains(&format!("configuration generation {n}"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{}",
            p.cashew.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Frames within `wait`, and whether one was `invalidate` with no keys.
fn told_to_forget_all(c: &mut RespConn, wait: Duration) -> bool {
    c.0.set_read_timeout(Some(wait)).unwrap();
    let mut forget = false;
    while let Some(frame) = c.try_reply() {
        forget |= invalidated(&frame).is_none();
    }
    c.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    forget
}

#[test]
fn a_reload_that_moves_keys_makes_a_tracking_client_forget_everything() {
    let p = start(1);
    let added = redis_server(&[]);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    set_all(&p, &keys, "v");
    let mut c = resp3(&p);
    ok(&mut c, &[b"CLIENT", b"TRACKING", b"ON"]);
    for k in &keys {
        assert_eq!(c.request(&[b"GET", k.as_bytes()]), b"$1\r\nv\r\n");
    }
    // A reload that places keys as before (a setting of no placement) keeps the cache.
    let first = &p.backends[0];
    reload(&p, &[first], "  timeout: 900\n", 2);
    assert!(!told_to_forget_all(&mut c, Duration::from_millis(500)));
    // One that adds a server moves keys: reads of them go where the client's cached
    // values were never tracked, so it is told to forget everything.
    reload(&p, &[first, &added], "", 3);
    assert!(told_to_forget_all(&mut c, Duration::from_secs(2)));
    // It goes on, tracked on both servers.
    for k in &keys {
        c.request(&[b"GET", k.as_bytes()]);
    }
    set_all(&p, &keys, "w");
    let heard = invalidations(&mut c, Duration::from_secs(1));
    assert_eq!(heard, keys.iter().cloned().collect::<BTreeSet<_>>());
}
