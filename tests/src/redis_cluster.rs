//! A private Redis Cluster per test: three primaries and a replica for each, made the way an
//! operator makes one (`redis-server --cluster-enabled yes`, then `redis-cli --cluster create`),
//! each node on its own port with its own directory and log, all killed on `Drop`.
//!
//! A test can move a slot's primary to its replica as an operator does before maintenance
//! ([`RedisCluster::fail_over`], `CLUSTER FAILOVER`), or kill the primary outright and let the
//! replica take over when the others notice ([`RedisCluster::kill_primary_of`]).

use std::{
    net::{Ipv4Addr, TcpListener},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{redis::tail, wait::poll_until};

/// Primaries; each gets one replica.
const PRIMARIES: usize = 3;
/// How long a node may be unreachable before the others fail it over. Short, so that a test
/// killing a primary sees its replica take over within seconds (production keeps the default
/// 15 s, or a few seconds on a fast network).
const NODE_TIMEOUT_MS: u32 = 1_000;
/// How long forming the cluster, or a failover, may take.
const CLUSTER_LIMIT: Duration = Duration::from_secs(30);
/// The cluster bus listens this far above each client port (Redis's fixed rule).
const BUS_PORT_OFFSET: u16 = 10_000;

#[derive(Debug)]
struct Node {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

/// A running three-primary, three-replica Redis Cluster on 127.0.0.1.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: TempDir,
}

/// One line of `CLUSTER NODES`, as much of it as the tests need.
#[derive(Debug, Clone)]
struct NodeView {
    port: u16,
    primary: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes, forms the cluster and waits until every slot is served and every
    /// replica is in sync.
    ///
    /// # Panics
    /// If a node does not start or the cluster does not form in time; the panic carries the
    /// nodes' logs.
    pub async fn start() -> Self {
        let mut cluster = Self::start_unformed().await;
        cluster.form().await;
        cluster
    }

    /// Starts six cluster-enabled nodes that do not know each other yet: no slot is served
    /// until [`RedisCluster::form`].
    ///
    /// # Panics
    /// If a node does not start.
    pub async fn start_unformed() -> Self {
        let dir = tempfile::Builder::new().prefix("ridecast-redis-cluster-").tempdir().expect("a temp dir");
        let mut cluster = Self { nodes: Vec::new(), dir };
        for k in 0..PRIMARIES * 2 {
            let node_dir = cluster.dir.path().join(format!("node-{k}"));
            std::fs::create_dir_all(&node_dir).expect("a node dir");
            let mut node = Node { port: 0, dir: node_dir, child: None };
            spawn_on_free_ports(&mut node).await;
            cluster.nodes.push(node);
        }
        cluster
    }

    /// Forms the cluster (`redis-cli --cluster create`, a replica per primary) and waits until
    /// every slot is served and every replica is in sync.
    ///
    /// # Panics
    /// If it does not form in time; the panic carries the nodes' logs.
    pub async fn form(&mut self) {
        let addresses: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let create = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .expect("running redis-cli --cluster create");
        if !create.status.success() {
            self.fail(&format!("redis-cli --cluster create failed:\n{}", String::from_utf8_lossy(&create.stdout)));
        }
        self.wait_until_healthy("the new cluster to serve every slot with synced replicas").await;
    }

    /// `redis-cluster://` with every primary as a seed node, for `--redis-url`.
    pub fn url(&self) -> String {
        let seeds: Vec<String> =
            self.nodes.iter().take(PRIMARIES).map(|node| format!("127.0.0.1:{}", node.port)).collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// The port of the primary serving `key`'s slot now.
    ///
    /// # Panics
    /// If no live primary serves it.
    pub async fn primary_of(&self, key: &str) -> u16 {
        match self.live_primary_of(key).await {
            Some(port) => port,
            None => panic!("no live primary serves {key}: {:?}", self.views().await),
        }
    }

    async fn live_primary_of(&self, key: &str) -> Option<u16> {
        let slot = self.slot_of(key).await;
        let views = self.views().await;
        views
            .iter()
            .find(|view| view.primary && !view.failed && view.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|view| view.port)
    }

    /// Moves `key`'s slot to a replica of its primary with `CLUSTER FAILOVER` (the replica
    /// catches up first, so no write is lost) and waits until the cluster agrees. Returns
    /// the old and the new primary's port.
    pub async fn fail_over(&self, key: &str) -> (u16, u16) {
        let old = self.primary_of(key).await;
        let replica = self.replica_of(old).await;
        let reply = self.cli(replica, &["CLUSTER", "FAILOVER"]).await;
        assert_eq!(reply.trim(), "OK", "CLUSTER FAILOVER on {replica}");
        poll_until(CLUSTER_LIMIT, format!("{replica} to take {key}'s slot over from {old}"), || async {
            (self.live_primary_of(key).await == Some(replica)).then_some(())
        })
        .await;
        self.wait_until_healthy("the cluster to agree after the failover").await;
        (old, replica)
    }

    /// Kills the primary serving `key`'s slot with SIGKILL and waits until its replica has
    /// taken over and every slot is served again. Returns the killed and the new primary's port.
    pub async fn kill_primary_of(&mut self, key: &str) -> (u16, u16) {
        let old = self.primary_of(key).await;
        let replica = self.replica_of(old).await;
        let node = self.nodes.iter_mut().find(|node| node.port == old).expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            child.kill().await.expect("SIGKILL to a redis primary");
        }
        poll_until(CLUSTER_LIMIT, format!("{replica} to be promoted after {old} was killed"), || async {
            let ok = self.cli(replica, &["CLUSTER", "INFO"]).await.contains("cluster_state:ok");
            (ok && self.live_primary_of(key).await == Some(replica)).then_some(())
        })
        .await;
        (old, replica)
    }

    /// How many client connections are subscribed to `channel` with `SSUBSCRIBE`, on the
    /// primary that serves it (`PUBSUB SHARDNUMSUB`): one per instance with local watchers.
    pub async fn shard_subscribers(&self, channel: &str) -> u64 {
        let primary = self.primary_of(channel).await;
        let reply = self.cli(primary, &["PUBSUB", "SHARDNUMSUB", channel]).await;
        count_reply(&reply, channel)
    }

    /// How many client connections are subscribed to `channel` with a classic `SUBSCRIBE`, on
    /// all live nodes together (`PUBSUB NUMSUB`).
    pub async fn classic_subscribers(&self, channel: &str) -> u64 {
        let mut total = 0;
        for node in self.nodes.iter().filter(|node| node.child.is_some()) {
            total += count_reply(&self.cli(node.port, &["PUBSUB", "NUMSUB", channel]).await, channel);
        }
        total
    }

    async fn replica_of(&self, primary: u16) -> u16 {
        let id = self.cli(primary, &["CLUSTER", "MYID"]).await.trim().to_string();
        let replicas = self.cli(primary, &["CLUSTER", "REPLICAS", &id]).await;
        replicas
            .lines()
            .find_map(|line| line.split_whitespace().nth(1).and_then(port_of_address))
            .unwrap_or_else(|| panic!("{primary} has no replica: {replicas:?}"))
    }

    async fn slot_of(&self, key: &str) -> u16 {
        let reply = self.cli(self.live_port(), &["CLUSTER", "KEYSLOT", key]).await;
        reply.trim().parse().unwrap_or_else(|_| panic!("CLUSTER KEYSLOT {key}: {reply:?}"))
    }

    /// Every node as the first live node sees it.
    async fn views(&self) -> Vec<NodeView> {
        let nodes = self.cli(self.live_port(), &["CLUSTER", "NODES"]).await;
        nodes.lines().filter_map(parse_node_line).collect()
    }

    /// Waits until every live node says the cluster is ok and every replica's link to its
    /// primary is up.
    async fn wait_until_healthy(&self, what: &str) {
        let limit = tokio::time::Instant::now() + CLUSTER_LIMIT;
        loop {
            let mut healthy = true;
            for node in self.nodes.iter().filter(|node| node.child.is_some()) {
                let info = self.cli(node.port, &["CLUSTER", "INFO"]).await;
                let replication = self.cli(node.port, &["INFO", "replication"]).await;
                let known = info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()));
                let replica_synced =
                    !replication.contains("role:slave") || replication.contains("master_link_status:up");
                healthy &= info.contains("cluster_state:ok") && known && replica_synced;
            }
            if healthy {
                return;
            }
            if tokio::time::Instant::now() >= limit {
                self.fail(&format!("timed out waiting for {what}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn live_port(&self) -> u16 {
        self.nodes.iter().find(|node| node.child.is_some()).map(|node| node.port).expect("a live node")
    }

    /// `redis-cli -p <port> <args>`'s output ("" if it could not run).
    async fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await;
        output.map(|out| String::from_utf8_lossy(&out.stdout).into_owned()).unwrap_or_default()
    }

    fn fail(&self, why: &str) -> ! {
        let logs: Vec<String> =
            self.nodes.iter().map(|node| format!("---- node {} ----\n{}", node.port, tail(&node.log(), 30))).collect();
        panic!("{why}\n{}", logs.join("\n"));
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("---- redis cluster node {} log ----\n{}", node.port, tail(&node.log(), 20));
            }
        }
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

/// Starts `node` on a port whose bus port is free too, trying a few.
async fn spawn_on_free_ports(node: &mut Node) {
    let mut last_log = String::new();
    for _ in 0..10 {
        node.port = free_port_pair();
        let child = Command::new("redis-server")
            .args(["--port", &node.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&node.dir)
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning redis-server (is it installed?)");
        node.child = Some(child);
        let limit = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if crate::redis::ping(node.port).await {
                return;
            }
            let exited = node.child.as_mut().and_then(|child| child.try_wait().ok().flatten()).is_some();
            if exited || tokio::time::Instant::now() >= limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if let Some(mut child) = node.child.take() {
            let _ = child.kill().await;
        }
        last_log = node.log();
        let _ = std::fs::remove_file(node.dir.join("nodes.conf"));
    }
    panic!("a redis cluster node did not start after 10 attempts; last log:\n{last_log}");
}

/// A port that is free, and whose cluster bus port (10,000 above) is free as well.
fn free_port_pair() -> u16 {
    loop {
        let port = crate::net::free_port();
        let Some(bus) = port.checked_add(BUS_PORT_OFFSET) else { continue };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return port;
        }
    }
}

/// The count in a `PUBSUB *NUMSUB <channel>` reply (`<channel>\n<count>`).
fn count_reply(reply: &str, channel: &str) -> u64 {
    let lines: Vec<&str> = reply.lines().collect();
    match lines.as_slice() {
        [name, count] if *name == channel => count.trim().parse().unwrap_or_else(|_| panic!("NUMSUB count {reply:?}")),
        _ => panic!("unexpected NUMSUB reply for {channel}: {reply:?}"),
    }
}

/// `127.0.0.1:7001@17001` → 7001.
fn port_of_address(address: &str) -> Option<u16> {
    address.split('@').next()?.rsplit(':').next()?.parse().ok()
}

fn parse_node_line(line: &str) -> Option<NodeView> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags = fields.get(2)?;
    let slots = fields
        .iter()
        .skip(8)
        .filter(|range| !range.starts_with('['))
        .filter_map(|range| match range.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => range.parse().ok().map(|slot| (slot, slot)),
        })
        .collect();
    Some(NodeView {
        port: port_of_address(fields.get(1)?)?,
        primary: flags.contains("master"),
        failed: flags.contains("fail"),
        slots,
    })
}

/// One Redis or a Redis Cluster, as the benchmarks' `REDIS` setting picks: `single` (the
/// default) or `cluster`.
#[derive(Debug)]
pub enum AnyRedis {
    Single(crate::RedisServer),
    Cluster(RedisCluster),
}

impl AnyRedis {
    /// Starts what `REDIS` names.
    ///
    /// # Panics
    /// If `REDIS` is something else, or the servers do not start.
    pub async fn start_from_env() -> Self {
        match std::env::var("REDIS").as_deref() {
            Err(_) | Ok("single") => Self::Single(crate::RedisServer::start().await),
            Ok("cluster") => Self::Cluster(RedisCluster::start().await),
            Ok(other) => panic!("REDIS must be single or cluster, not {other:?}"),
        }
    }

    /// What it is, for a report's title.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Single(_) => "one Redis",
            Self::Cluster(_) => "a Redis Cluster (3 primaries, 3 replicas)",
        }
    }

    /// Its `--redis-url`.
    pub fn url(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Cluster(cluster) => cluster.url(),
        }
    }
}
