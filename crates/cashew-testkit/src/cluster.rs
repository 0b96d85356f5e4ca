//! A Redis Cluster for tests: redis-server nodes in cluster mode on free loopback
//! ports, joined by `redis-cli --cluster create`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cashew::Cashew;
use crate::process::{free_port, program, reserve, Process};
use crate::servers::{redis_server_on, redis_server_tls_on};
use crate::tls::Issued;

pub struct RedisCluster {
    pub nodes: Vec<Process>,
    /// What redis-cli needs to reach the nodes (TLS, a password).
    cli_args: Vec<String>,
}

/// A port free for a node and for its cluster bus (the port + 10000), both below
/// the range [`free_port`](crate::process::free_port) picks from (15000 and up): the bus port is bound by
/// redis-server itself, and must not take a port another test has picked. Both are
/// claimed as `free_port` claims its ports, so that test processes starting
/// clusters at once do not pick the same.
fn node_port() -> u16 {
    let mut x = u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()));
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 2_000 + (x % 3_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) && reserve(port) && reserve(port + 10_000) {
            return port;
        }
    }
}

/// A redis-server in cluster mode (node timeout 1 s, so failovers take about 2 s).
pub fn cluster_node() -> Process {
    let port = node_port();
    redis_server_on(
        port,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &format!("nodes-{port}.conf"),
            "--cluster-node-timeout",
            "1000",
            // Replicas sync at once rather than after 5 s.
            "--repl-diskless-sync-delay",
            "0",
        ],
    )
}

/// A node that speaks TLS only (its cluster bus and replication too), with the
/// certificate `server` whose CA is `ca` (clients must show a certificate it
/// signed), and that wants `password`.
fn tls_cluster_node(server: &Issued, ca: &Path, password: &str) -> Process {
    redis_server_tls_on(
        node_port(),
        server,
        ca,
        &[
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
            "--cluster-enabled",
            "yes",
            "--cluster-node-timeout",
            "1000",
            "--repl-diskless-sync-delay",
            "0",
            "--requirepass",
            password,
            "--masterauth",
            password,
        ],
    )
}

impl RedisCluster {
    /// cashew (`binary`, with `args`) in front of the cluster: a `redis_cluster`
    /// pool seeded with the first node, a 3 s `timeout`, and `settings` (YAML lines
    /// of the pool); and where it listens.
    pub fn cashew(&self, binary: &str, settings: &str, args: &[&str]) -> (Cashew, SocketAddr) {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap();
        let yaml = format!(
            "cluster:\n  listen: {listen}\n  redis: true\n  redis_cluster: true\n  timeout: 3000\n{settings}  servers:\n    - {}:1\n",
            self.nodes[0].addr
        );
        (Cashew::start(binary, &yaml, args), listen)
    }

    /// `masters` masters with `replicas` replicas each, every slot assigned.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<Process> = (0..masters * (1 + replicas))
            .map(|_| cluster_node())
            .collect();
        Self::create(nodes, replicas, Vec::new())
    }

    /// As [`start`](Self::start) without replicas, every node speaking TLS only with
    /// `server`'s certificate (the CA `ca`) and wanting `password`; redis-cli shows
    /// `client`.
    pub fn start_tls(
        masters: usize,
        server: &Issued,
        client: &Issued,
        ca: &Path,
        password: &str,
    ) -> RedisCluster {
        let nodes: Vec<Process> = (0..masters)
            .map(|_| tls_cluster_node(server, ca, password))
            .collect();
        let path = |p: &Path| p.display().to_string();
        let cli_args = vec![
            "--tls".to_string(),
            "--cert".to_string(),
            path(&client.cert),
            "--key".to_string(),
            path(&client.key),
            "--cacert".to_string(),
            path(ca),
            "-a".to_string(),
            password.to_string(),
            "--no-auth-warning".to_string(),
        ];
        Self::create(nodes, 0, cli_args)
    }

    fn create(nodes: Vec<Process>, replicas: usize, cli_args: Vec<String>) -> RedisCluster {
        let mut cmd = Command::new(program("redis-cli"));
        cmd.args(&cli_args);
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(n.addr.to_string());
        }
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = cmd.output().expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, cli_args };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// `redis-cli -p PORT ARGS...` against node `node`; its output.
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        let mut all: Vec<&str> = self.cli_args.iter().map(String::as_str).collect();
        all.extend(args);
        cli(self.nodes[node].port(), &all)
    }

    /// Waits until every node that runs says `cluster_state:ok`, agrees on the
    /// slot owners, and every replica has synced with its master.
    pub fn wait_ok(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let ok = (0..self.nodes.len()).all(|n| {
                self.cli(n, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
            });
            let check = Command::new(program("redis-cli"))
                .args(&self.cli_args)
                .args(["--cluster", "check", &self.nodes[0].addr.to_string()])
                .output()
                .expect("redis-cli --cluster check");
            let agreed = String::from_utf8_lossy(&check.stdout)
                .contains("[OK] All 16384 slots covered")
                && !String::from_utf8_lossy(&check.stdout).contains("[ERR]");
            let synced = (0..self.nodes.len()).all(|n| {
                let info = self.cli(n, &["INFO", "replication"]);
                info.contains("role:master") || info.contains("master_link_status:up")
            });
            if ok && agreed && synced {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "the cluster is not ok after {limit:?}: {}",
                String::from_utf8_lossy(&check.stdout)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The node id of node `node`.
    pub fn id(&self, node: usize) -> String {
        self.cli(node, &["CLUSTER", "MYID"]).trim().to_string()
    }

    /// Which nodes are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.cli(i, &["ROLE"]).starts_with("master"))
            .collect()
    }
}

/// `redis-cli -p PORT ARGS...`; its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(program("redis-cli"))
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
