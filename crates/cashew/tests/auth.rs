//! Authentication on both sides, against real servers: cashew as a Redis ACL user
//! (`redis_auth_user`), clients as the pool's `users` with the replies Redis 7
//! gives, and memcached's text auth (`-Y`) with `memcached_auth`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cashew_testkit::{free_port, memcached_with, redis_server, Cashew, McConn, Process};

const CASHEW: &str = env!("CARGO_BIN_EXE_cashew");

/// `printf %s secret | sha256sum` and `printf %s look | sha256sum`.
const SECRET_SHA256: &str = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";

fn look_sha256() -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(b"look")?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

struct Resp {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Resp {
    fn connect(addr: SocketAddr) -> Resp {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Resp { w, r }
    }

    /// One command and the first line of its reply (a bulk string's data).
    fn call(&mut self, args: &[&str]) -> String {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.w.write_all(req.as_bytes()).unwrap();
        self.reply()
    }

    fn reply(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let line = line.trim_end().to_string();
        if let Some(n) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
            let mut data = vec![0; n + 2];
            self.r.read_exact(&mut data).unwrap();
            return String::from_utf8_lossy(&data[..n]).into_owned();
        }
        if let Some(n) = line
            .strip_prefix('%')
            .or(line.strip_prefix('*'))
            .and_then(|n| n.parse::<usize>().ok())
        {
            // An aggregate (HELLO's reply): its elements are read and left out.
            let items = if line.starts_with('%') { n * 2 } else { n };
            for _ in 0..items {
                self.reply();
            }
        }
        line
    }
}

/// redis-server where the default user is off and `app` may do everything; and a
/// read-only user `dash`, to compare cashew's refusals with the server's own.
fn acl_server() -> Process {
    redis_server(&[
        "--user", "default", "off", "--user", "app", "on", ">secret", "~*", "+@all", "--user",
        "dash", "on", ">look", "~*", "+@read", "+ping", "+auth",
    ])
}

fn start(yaml: &str) -> Cashew {
    Cashew::start(CASHEW, yaml, &["--threads", "2", "-v", "6"])
}

#[test]
fn cashew_authenticates_as_an_acl_user_and_clients_as_the_pools_users() {
    let server = acl_server();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let yaml = format!(
        "web:\n  listen: {listen}\n  redis: true\n  redis_auth_user: app\n  redis_auth: secret\n  users:\n    - name: writer\n      password_sha256: {SECRET_SHA256}\n      commands: all\n    - name: dash\n      password_sha256: {}\n      commands: read\n  servers:\n    - {}:1\n",
        look_sha256(),
        server.addr
    );
    let cashew = start(&yaml);

    // Unauthenticated: refused as Redis refuses.
    let mut c = Resp::connect(listen);
    assert_eq!(c.call(&["GET", "k"]), "-NOAUTH Authentication required.");
    assert_eq!(
        c.call(&["AUTH", "writer", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        c.call(&["AUTH", "nobody", "secret"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(c.call(&["GET", "k"]), "-NOAUTH Authentication required.");
    // A user with every command.
    assert_eq!(c.call(&["AUTH", "writer", "secret"]), "+OK");
    assert_eq!(c.call(&["SET", "k", "v"]), "+OK");
    assert_eq!(c.call(&["GET", "k"]), "v");
    // The `default` user is the pool's redis_auth, as nutcracker has it.
    let mut d = Resp::connect(listen);
    assert_eq!(d.call(&["AUTH", "secret"]), "+OK");
    assert_eq!(d.call(&["GET", "k"]), "v");

    // A read-only user: reads pass, writes get what Redis answers the same user.
    let mut r = Resp::connect(listen);
    assert_eq!(r.call(&["AUTH", "dash", "look"]), "+OK");
    assert_eq!(r.call(&["GET", "k"]), "v");
    let refused = r.call(&["SET", "k", "w"]);
    let mut direct = Resp::connect(server.addr);
    assert_eq!(direct.call(&["AUTH", "dash", "look"]), "+OK");
    assert_eq!(refused, direct.call(&["SET", "k", "w"]));
    assert!(
        refused.starts_with("-NOPERM ")
            && refused.ends_with(" has no permissions to run the 'set' command"),
        "{refused}"
    );
    assert_eq!(r.call(&["DEL", "k"]), direct.call(&["DEL", "k"]));
    assert_eq!(r.call(&["GET", "k"]), "v");
    // Other clients are for users with every command (Redis: @admin).
    assert_eq!(
        r.call(&["CLIENT", "LIST"]),
        "-NOPERM this user has no permissions to run the 'client|list' command"
    );
    assert!(r.call(&["CLIENT", "INFO"]).contains("id="));
    assert!(c.call(&["CLIENT", "LIST"]).lines().count() >= 3);

    // HELLO 3 AUTH: a RESP3 client, whose commands travel on RESP3 server
    // connections opened with HELLO 3 AUTH app.
    let mut h = Resp::connect(listen);
    assert_eq!(
        h.call(&["HELLO", "3", "AUTH", "writer", "nope"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(h.call(&["HELLO", "3", "AUTH", "writer", "secret"]), "%7");
    assert_eq!(h.call(&["GET", "k"]), "v");
    assert_eq!(h.call(&["SET", "k3", "v3"]), "+OK");

    // The redis crate, authenticating as a user through the URL.
    let client = redis::Client::open(format!("redis://writer:secret@{listen}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    let got: String = redis::cmd("GET").arg("k3").query(&mut con).unwrap();
    assert_eq!(got, "v3");

    let stats: serde_json::Value = serde_json::from_str(&cashew.stats_json()).unwrap();
    assert_eq!(stats["web"]["auth_failures"], 3, "{stats}");
    let log = cashew.log();
    assert!(
        log.contains("pool 'web': a client failed to authenticate as 'writer'"),
        "{log}"
    );
    assert!(
        !log.contains("wrong") && !log.contains("nope"),
        "a password was logged:\n{log}"
    );
}

#[test]
fn a_wrong_acl_password_towards_the_server_is_the_servers_refusal() {
    let server = acl_server();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let yaml = format!(
        "web:\n  listen: {listen}\n  redis: true\n  redis_auth_user: app\n  redis_auth: not-the-password\n  servers:\n    - {}:1\n",
        server.addr
    );
    let _cashew = start(&yaml);
    let mut c = Resp::connect(listen);
    assert_eq!(c.call(&["AUTH", "not-the-password"]), "+OK");
    assert_eq!(
        c.call(&["GET", "k"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
}

#[test]
fn memcached_text_auth_is_sent_on_every_server_connection() {
    let dir = cashew_testkit::temp_dir("mc-auth");
    let authfile = dir.join("auth");
    std::fs::write(&authfile, "app:s3cret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&authfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let server = memcached_with(&["-Y", authfile.to_str().unwrap()]);
    // Without credentials the server refuses everything.
    let mut direct = McConn::connect(server.addr);
    direct.send(b"get k\r\n");
    assert!(
        direct.line().starts_with("CLIENT_ERROR"),
        "memcached -Y took a request without auth"
    );

    let pool = |credentials: &str| {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap();
        let yaml = format!(
            "mc:\n  listen: {listen}\n  memcached_auth: {credentials}\n  servers:\n    - {}:1\n",
            server.addr
        );
        (start(&yaml), listen)
    };
    let (_good, listen) = pool("app:s3cret");
    let mut c = McConn::connect(listen);
    c.roundtrip(b"set k 0 0 5\r\nhello\r\n", b"STORED\r\n");
    c.roundtrip(b"get k\r\n", b"VALUE k 0 5\r\nhello\r\nEND\r\n");
    let (_bad, listen) = pool("app:wrong");
    let mut c = McConn::connect(listen);
    c.send(b"get k\r\n");
    let line = c.line();
    // memcached's own words for wrong credentials, passed on.
    assert_eq!(line, "SERVER_ERROR CLIENT_ERROR unauthenticated\r\n");
}
