//! Multi-gets split over servers, meta requests in quiet mode, and single-key
//! gets joined into one multi-key get on their way to a server.

use cashew_testkit::faulty::FaultyLink;
use cashew_testkit::{free_port, memcached, Cashew, McConn, PoolProxy, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn keys(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}:{i}")).collect()
}

#[test]
fn a_failed_fragment_fails_the_multi_get_but_not_the_connection() {
    let p = PoolProxy::memcached(
        CASHEW,
        2,
        "  hash: md5\n  timeout: 200\n",
        &["--threads", "1"],
    );
    let keys = keys(50, "frag");
    let routed = p.routed(&keys);
    let a = &keys[routed.iter().position(|&s| s == 0).unwrap()];
    let b = &keys[routed.iter().position(|&s| s == 1).unwrap()];
    let mut c = p.client();
    c.set(a, b"1");
    c.set(b, b"2");
    p.backends[1].freeze();
    c.roundtrip(
        format!("get {a} {b}\r\n").as_bytes(),
        b"SERVER_ERROR Connection timed out\r\n",
    );
    p.backends[1].signal("CONT");
    c.roundtrip(
        format!("get {a}\r\n").as_bytes(),
        format!("VALUE {a} 0 1\r\n1\r\nEND\r\n").as_bytes(),
    );
    assert!(p.stats()["pool"]["forward_error"].as_u64().unwrap() >= 1);
}

#[test]
fn meta_requests_over_three_servers_keep_quiet_mode_and_opaques_in_order() {
    let p = PoolProxy::memcached(CASHEW, 3, "  hash: md5\n", &[]);
    // Keys on three different servers.
    let candidates = keys(60, "meta");
    let placed = p.routed(&candidates);
    let pick = |server: usize| {
        let i = placed
            .iter()
            .position(|&s| s == server)
            .expect("a key on each server");
        candidates[i].clone()
    };
    let (a, b, c) = (pick(0), pick(1), pick(2));
    let pipeline = format!(
        "ms {a} 2 q O1 T0\r\naa\r\nms {b} 2 O2\r\nbb\r\nmg {a} v q O3\r\nmg {c}:none v q O4\r\n\
         get {a} {b}\r\nmg {b} v O5 k\r\nmd {a} q\r\nmg {a} v\r\nset {c} 7 0 2\r\ncc\r\n\
         mg {c} v f q O6\r\nma {c}:n N0 J10 v\r\nma {c}:n q\r\nmg {c}:n v\r\nmn\r\nversion\r\n"
    );
    let reference = memcached();
    let mut direct = McConn::connect(reference.addr);
    direct.send(pipeline.as_bytes());
    let expected = {
        // Read the direct reply up to the final VERSION line.
        let mut all = Vec::new();
        loop {
            let line = direct.line();
            all.extend_from_slice(line.as_bytes());
            if line.starts_with("VERSION ") {
                break all;
            }
        }
    };
    let mut through = p.client();
    through.send(pipeline.as_bytes());
    let got = through.read_exact(expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    let text = String::from_utf8(got).unwrap();
    assert!(
        text.starts_with(&format!(
            "HD O2\r\nVA 2 O3\r\naa\r\nVALUE {a} 0 2\r\naa\r\nVALUE {b} 0 2\r\nbb\r\nEND\r\n"
        )),
        "{text}"
    );
    assert!(
        !text.contains("O1") && !text.contains("O4"),
        "quiet successes and misses stay silent"
    );
    assert!(
        text.contains("MN\r\nVERSION "),
        "mn answers after everything before it"
    );
    // The servers hold their keys (a was deleted by the pipeline).
    for (server, key) in [(1, &b), (2, &c)] {
        let mut s = McConn::connect(p.backends[server].addr);
        s.send(format!("mg {key} v\r\n").as_bytes());
        let reply = s.line();
        assert_ne!(reply, "EN\r\n", "{key} on server {server}");
    }
}

/// memcached answers every pipelined `get` with a write of its own, and a multi-key
/// `get` with one: consecutive single-key gets for a server go to it joined, and each
/// still gets its own reply, exactly what the server would have given it alone.
#[test]
fn consecutive_gets_reach_the_server_joined_and_each_gets_its_own_reply() {
    for coalesce in [true, false] {
        let (server, link, cashew, listen) = recorded(coalesce);
        let mut direct = McConn::connect(server.addr);
        direct.roundtrip(
            b"set a 0 0 1\r\nA\r\nset c 3 0 2\r\nCC\r\n",
            b"STORED\r\nSTORED\r\n",
        );
        let cas = |direct: &mut McConn, key: &str| {
            direct.send(format!("gets {key}\r\n").as_bytes());
            let line = direct.line();
            direct.read_exact(line.split(' ').nth(3).unwrap().parse::<usize>().unwrap() + 7);
            line.trim_end().rsplit(' ').next().unwrap().to_string()
        };
        let (cas_a, cas_c) = (cas(&mut direct, "a"), cas(&mut direct, "c"));

        let pipeline = "get a\r\nget b\r\nget a\r\nget c\r\ngets a\r\ngets zz\r\ngets c\r\n\
                        set d 0 0 1\r\nD\r\nget d\r\nget a\r\nget a b c\r\nget c\r\n";
        let a = "VALUE a 0 1\r\nA\r\n";
        let c = "VALUE c 3 2\r\nCC\r\n";
        let expected = format!(
            "{a}END\r\nEND\r\n{a}END\r\n{c}END\r\n\
             VALUE a 0 1 {cas_a}\r\nA\r\nEND\r\nEND\r\nVALUE c 3 2 {cas_c}\r\nCC\r\nEND\r\n\
             STORED\r\nVALUE d 0 1\r\nD\r\nEND\r\n{a}END\r\n{a}{c}END\r\n{c}END\r\n"
        );
        let mut client = McConn::connect(listen);
        client.send(pipeline.as_bytes());
        let got = client.read_exact(expected.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            expected,
            "coalesce_gets: {coalesce}"
        );

        let seen = String::from_utf8_lossy(&link.requests()).into_owned();
        let sent = match coalesce {
            true => "get a b a c\r\ngets a zz c\r\nset d 0 0 1\r\nD\r\nget d a\r\nget a b c\r\nget c\r\n",
            false => pipeline,
        };
        assert!(
            seen.ends_with(sent),
            "coalesce_gets: {coalesce}, the server saw {seen:?}"
        );
        drop(cashew);
    }
}

/// cashew with one worker over one memcached that it reaches through a relay that
/// records what it sends, its server connection open (the first request on a new
/// connection goes out as it opens, alone).
fn recorded(coalesce: bool) -> (Process, FaultyLink, Cashew, std::net::SocketAddr) {
    let server = memcached();
    let link = FaultyLink::start(server.addr);
    let listen = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let yaml = format!(
        "pool:\n  listen: {listen}\n  coalesce_gets: {coalesce}\n  servers:\n    - {}:1\n",
        link.addr
    );
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "1"]);
    let listen = listen.parse().unwrap();
    McConn::connect(listen).roundtrip(b"get warm\r\n", b"END\r\n");
    (server, link, cashew, listen)
}

/// Splitting a joined reply copies its values, which costs more than joining saves
/// for large ones: after a joined reply with a large value, the next 64 retrievals go
/// out unjoined, then joining resumes.
#[test]
fn a_large_value_pauses_joining_for_64_retrievals() {
    let (server, link, _cashew, listen) = recorded(true);
    let big = "x".repeat(20_000);
    McConn::connect(server.addr).roundtrip(
        format!("set big 0 0 {}\r\n{big}\r\nset a 0 0 1\r\nA\r\n", big.len()).as_bytes(),
        b"STORED\r\nSTORED\r\n",
    );
    let mut client = McConn::connect(listen);
    let a = "VALUE a 0 1\r\nA\r\nEND\r\n";
    let mut step = |requests: &str, replies: &str, server_saw: &str| {
        client.roundtrip(requests.as_bytes(), replies.as_bytes());
        let seen = String::from_utf8_lossy(&link.requests()).into_owned();
        assert!(
            seen.ends_with(server_saw),
            "after {requests:?} the server saw ...{:?}",
            &seen[seen.len().saturating_sub(80)..]
        );
    };
    step("get a\r\nget b\r\n", &format!("{a}END\r\n"), "get a b\r\n");
    step(
        "get big\r\nget a\r\n",
        &format!("VALUE big 0 {}\r\n{big}\r\nEND\r\n{a}", big.len()),
        "get big a\r\n",
    );
    step(
        "get a\r\nget b\r\n",
        &format!("{a}END\r\n"),
        "get a\r\nget b\r\n",
    );
    let sixty_two = "get b\r\n".repeat(62);
    step(&sixty_two, &"END\r\n".repeat(62), &sixty_two);
    step("get a\r\nget b\r\n", &format!("{a}END\r\n"), "get a b\r\n");
}
