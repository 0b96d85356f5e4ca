//! Key-prefix routes against real memcached: each prefix's keys are served by the
//! pool its route names, and nowhere else; a multi-get over several routes is
//! answered in key order.

use std::net::SocketAddr;
use std::process::Command;

use cashew_testkit::{free_port, memcached, Cashew, McConn, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

fn listen() -> SocketAddr {
    format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap()
}

struct Routed {
    main: Vec<Process>,
    sessions: Process,
    feeds: Process,
    cashew: Cashew,
    listen: SocketAddr,
}

fn start() -> Routed {
    let (main, sessions, feeds) = (vec![memcached(), memcached()], memcached(), memcached());
    let listen = listen();
    let yaml = format!(
        "main:\n  listen: {listen}\n  routes:\n    \"sess:\": sessions\n    \"feed:\": feeds\n    \"sess:admin:\": feeds\n  servers:\n    - {}:1\n    - {}:1\nsessions:\n  listen: {}\n  hash: md5\n  servers:\n    - {}:1\nfeeds:\n  listen: {}\n  servers:\n    - {}:1\n",
        main[0].addr,
        main[1].addr,
        self::listen(),
        sessions.addr,
        self::listen(),
        feeds.addr
    );
    let cashew = Cashew::start(CASHEW, &yaml, &["--threads", "2"]);
    Routed {
        main,
        sessions,
        feeds,
        cashew,
        listen,
    }
}

fn holds(server: &Process, key: &str) -> bool {
    McConn::connect(server.addr).get(key).is_some()
}

#[test]
fn each_prefix_lands_only_on_its_pools_servers() {
    let r = start();
    let mut c = McConn::connect(r.listen);
    let keys: Vec<String> = (0..50)
        .flat_map(|i| {
            [
                format!("sess:{i}"),
                format!("feed:{i}"),
                format!("other:{i}"),
                format!("sess:admin:{i}"),
            ]
        })
        .collect();
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    c.set_many(&pairs, 0);
    for key in &keys {
        let on_sessions = holds(&r.sessions, key);
        let on_feeds = holds(&r.feeds, key);
        let on_main = r.main.iter().filter(|s| holds(s, key)).count();
        let expected = if key.starts_with("sess:admin:") || key.starts_with("feed:") {
            (false, true, 0)
        } else if key.starts_with("sess:") {
            (true, false, 0)
        } else {
            (false, false, 1)
        };
        assert_eq!((on_sessions, on_feeds, on_main), expected, "{key}");
    }

    // A multi-get over the three pools, keys interleaved, misses among them.
    let mut asked: Vec<String> = Vec::new();
    for i in 0..50 {
        asked.extend([
            format!("other:{i}"),
            format!("sess:{i}"),
            format!("nothing:{i}"),
            format!("feed:{i}"),
            format!("sess:admin:{i}"),
        ]);
    }
    c.send(format!("get {}\r\n", asked.join(" ")).as_bytes());
    let mut got = Vec::new();
    loop {
        let line = c.line();
        if line == "END\r\n" {
            break;
        }
        let key = line.split(' ').nth(1).unwrap().to_string();
        let value = String::from_utf8(
            c.read_exact(
                line.trim_end()
                    .rsplit(' ')
                    .next()
                    .unwrap()
                    .parse::<usize>()
                    .unwrap()
                    + 2,
            ),
        )
        .unwrap();
        assert_eq!(value.trim_end(), format!("v-{key}"));
        got.push(key);
    }
    let expected: Vec<String> = asked
        .iter()
        .filter(|k| !k.starts_with("nothing:"))
        .cloned()
        .collect();
    assert_eq!(got, expected, "every value, in key order");

    // Single-key commands of every kind follow the route.
    c.roundtrip(b"delete sess:1\r\n", b"DELETED\r\n");
    assert!(!holds(&r.sessions, "sess:1"));
    c.roundtrip(b"ms feed:new 2 T0\r\nhi\r\n", b"HD\r\n");
    assert!(holds(&r.feeds, "feed:new"));
    c.roundtrip(b"mg feed:new v\r\n", b"VA 2\r\nhi\r\n");
    c.roundtrip(b"incr sess:n 1\r\n", b"NOT_FOUND\r\n");

    // `cashew route` names the pool a key lands in.
    let conf = r.cashew.dir.join("cashew.yml");
    let out = Command::new(CASHEW)
        .args([
            "route",
            "-c",
            conf.to_str().unwrap(),
            "--pool",
            "main",
            "sess:7",
            "sess:admin:7",
            "other:7",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("sess:7\t{}:1\tpool=sessions", r.sessions.addr)
    );
    assert_eq!(
        lines[1],
        format!("sess:admin:7\t{}:1\tpool=feeds", r.feeds.addr)
    );
    assert!(lines[2].ends_with("\tpool=main"), "{text}");
}
