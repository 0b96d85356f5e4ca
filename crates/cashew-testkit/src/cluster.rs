//! A Redis Cluster for tests: redis-server nodes in cluster mode on free loopback
//! ports, joined by `redis-cli --cluster create`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{free_port, program, Process};
use crate::servers::redis_server_on;

pub struct RedisCluster {
    pub nodes: Vec<Process>,
}

/// A port free for a node and for its cluster bus (the port + 10000).
fn node_port() -> u16 {
    loop {
        let port = free_port("127.0.0.1");
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
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

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each, every slot assigned.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<Process> = (0..masters * (1 + replicas))
            .map(|_| cluster_node())
            .collect();
        let mut cmd = Command::new(program("redis-cli"));
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
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// `redis-cli -p PORT ARGS...` against node `node`; its output.
    pub fn cli(&self, node: usize, args: &[&str]) -> String {
        cli(self.nodes[node].port(), args)
    }

    /// Waits until every node that runs says `cluster_state:ok`, agrees on the
    /// slot owners, and every replica has synced with its master.
    pub fn wait_ok(&self, limit: Duration) {
        let started = Instant::now();
        loop {
            let ok = self
                .nodes
                .iter()
                .all(|n| cli(n.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            let check = Command::new(program("redis-cli"))
                .args(["--cluster", "check", &self.nodes[0].addr.to_string()])
                .output()
                .expect("redis-cli --cluster check");
            let agreed = String::from_utf8_lossy(&check.stdout)
                .contains("[OK] All 16384 slots covered")
                && !String::from_utf8_lossy(&check.stdout).contains("[ERR]");
            let synced = self.nodes.iter().all(|n| {
                let info = cli(n.port(), &["INFO", "replication"]);
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
