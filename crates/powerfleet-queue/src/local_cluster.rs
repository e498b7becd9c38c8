//! A private Redis Cluster on loopback: masters with a replica each, made with `redis-server
//! --cluster-enabled yes` and `redis-cli --cluster create`, for tests of the fleet on a cluster,
//! failovers and resharding. Killed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::local::{LocalRedisError, START_PATIENCE_S, free_port, ping};

/// A running private Redis Cluster.
#[derive(Debug)]
pub struct LocalCluster {
    nodes: Vec<Node>,
    /// How many live nodes should be replicas.
    replicas: usize,
    _tempdir: tempfile::TempDir,
}

#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub struct ClusterNode {
    /// The node id.
    pub id: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master (and not failed).
    pub master: bool,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    /// The slots it serves, as `start-end` ranges.
    pub slots: Vec<(u16, u16)>,
}

/// A free port for a cluster node: its cluster bus listens on the port + 10000, which must be a
/// port too, and free.
fn cluster_port() -> Result<u16, LocalRedisError> {
    for _ in 0..1000 {
        let port = free_port()?;
        if port <= u16::MAX - 10_000
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return Ok(port);
        }
    }
    Err(other(
        "no free port pair (PORT and PORT + 10000) for a cluster node".into(),
    ))
}

fn other(message: String) -> LocalRedisError {
    LocalRedisError::Io(std::io::Error::other(message))
}

/// Runs `redis-cli -p PORT ARGS...`, returning its output; errs when it fails or Redis errs.
pub fn redis_cli(port: u16, args: &[&str]) -> Result<String, LocalRedisError> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => other(
                "redis-cli was not found on PATH; install it with redis-server (apt-get install redis-tools or redis-server)".into(),
            ),
            _ => LocalRedisError::Io(e),
        })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.starts_with("ERR") || text.starts_with("(error)") {
        return Err(other(format!(
            "redis-cli -p {port} {}: {}{}",
            args.join(" "),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(text)
}

impl LocalCluster {
    /// Starts `masters` masters with `replicas` replicas each, and waits until the cluster is ok.
    pub fn start(masters: usize, replicas: usize) -> Result<LocalCluster, LocalRedisError> {
        let tempdir = tempfile::Builder::new()
            .prefix("powerfleet-cluster-")
            .tempdir()?;
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = cluster_port()?;
            let dir = tempdir.path().join(port.to_string());
            std::fs::create_dir_all(&dir)?;
            nodes.push(Node {
                port,
                child: None,
                dir,
            });
        }
        let mut cluster = LocalCluster {
            nodes,
            replicas: masters * replicas,
            _tempdir: tempdir,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        let replicas = replicas.to_string();
        args.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        redis_cli(cluster.nodes[0].port, &args)?;
        // Generous: on a loaded machine the replicas' first sync takes a while.
        cluster.wait_ok(Duration::from_secs(300))?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), LocalRedisError> {
        let node = &mut self.nodes[i];
        let log = node.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &node.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--dir")
            .arg(&node.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => LocalRedisError::NotInstalled,
                _ => LocalRedisError::Io(e),
            })?;
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(START_PATIENCE_S);
        while !ping(node.port) {
            if Instant::now() > deadline {
                return Err(LocalRedisError::NoAnswer {
                    port: node.port,
                    seconds: START_PATIENCE_S,
                    log: log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until every live node says `cluster_state:ok`, and every live replica's link to its
    /// master is up (so it confirms writes).
    pub fn wait_ok(&self, timeout: Duration) -> Result<(), LocalRedisError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut replicas_up = 0;
            let mut masters = Vec::new();
            let ok = self.live_ports().iter().all(|p| {
                let replication = redis_cli(*p, &["INFO", "replication"]).unwrap_or_default();
                if replication.contains("master_link_status:up") {
                    replicas_up += 1;
                }
                if replication.contains("role:master") {
                    masters.push(*p);
                }
                redis_cli(*p, &["CLUSTER", "INFO"])
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            }) && replicas_up == self.replicas;
            // Every live node's gossiped view names the same live masters as they say themselves.
            let live = self.live_ports();
            let agreed = ok
                && live.iter().all(|p| {
                    self.topology_from(*p).is_ok_and(|nodes| {
                        let mut seen: Vec<u16> = nodes
                            .iter()
                            .filter(|n| n.master && live.contains(&n.port))
                            .map(|n| n.port)
                            .collect();
                        seen.sort();
                        masters.sort();
                        seen == masters
                    })
                });
            let ok = agreed;
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(other(format!(
                    "the cluster on ports {:?} did not reach cluster_state:ok within {timeout:?}",
                    self.live_ports()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `redis://127.0.0.1:PORT/` of the `i`th node.
    pub fn url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}/", self.nodes[i].port)
    }

    /// The ports of every node, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The cluster as a live node sees it (`CLUSTER NODES`).
    pub fn topology(&self) -> Result<Vec<ClusterNode>, LocalRedisError> {
        let port = *self
            .live_ports()
            .first()
            .ok_or_else(|| other("no node is running".into()))?;
        self.topology_from(port)
    }

    /// The cluster as the node on `port` sees it.
    fn topology_from(&self, port: u16) -> Result<Vec<ClusterNode>, LocalRedisError> {
        let text = redis_cli(port, &["CLUSTER", "NODES"])?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 8 {
                    return None;
                }
                let port = f[1].split(['@', ':']).nth(1)?.parse().ok()?;
                let flags = f[2];
                let slots = f[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| {
                        let (a, b) = s.split_once('-').unwrap_or((s, s));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect();
                Some(ClusterNode {
                    id: f[0].to_string(),
                    port,
                    master: flags.contains("master")
                        && !flags.contains("fail")
                        && self.live_ports().contains(&port),
                    master_id: (f[3] != "-").then(|| f[3].to_string()),
                    slots,
                })
            })
            .collect())
    }

    /// The master serving `slot`.
    pub fn master_of(&self, slot: u16) -> Result<ClusterNode, LocalRedisError> {
        self.topology()?
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .ok_or_else(|| other(format!("no master serves slot {slot}")))
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> Result<u16, LocalRedisError> {
        let port = self.live_ports()[0];
        redis_cli(port, &["CLUSTER", "KEYSLOT", key])?
            .trim()
            .parse()
            .map_err(|e| other(format!("CLUSTER KEYSLOT: {e}")))
    }

    /// Fails the master of `slot` over to its replica (`CLUSTER FAILOVER` there), then kills the
    /// old master with SIGKILL. Returns the new master's port.
    pub fn fail_over(&mut self, slot: u16) -> Result<u16, LocalRedisError> {
        let master = self.master_of(slot)?;
        // Each replica knows its master's port first hand (`INFO replication`); the gossiped
        // `CLUSTER NODES` of another node can lag behind.
        let master_port = format!("master_port:{}", master.port);
        let replica = self
            .live_ports()
            .into_iter()
            .find(|p| {
                redis_cli(*p, &["INFO", "replication"])
                    .is_ok_and(|i| i.lines().any(|l| l.trim() == master_port))
            })
            .ok_or_else(|| other(format!("the master on {} has no replica", master.port)))?;
        // A manual failover needs the master's handshake; one asked for before the master has
        // taken note of a new replica times out after 5 s, so it is asked for again.
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut asked: Option<Instant> = None;
        while self.master_of(slot)?.port != replica {
            if asked.is_none_or(|t| t.elapsed() > Duration::from_secs(6)) {
                redis_cli(replica, &["CLUSTER", "FAILOVER"])?;
                asked = Some(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(other(format!(
                    "the replica on {replica} did not take slot {slot} over; its log ends:\n{}",
                    self.log_tail(replica)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill(master.port);
        self.replicas -= 1;
        Ok(replica)
    }

    /// Moves `slot` with its keys to the master on `to` (the steps of `redis-cli --cluster
    /// reshard` for one slot): clients see ASK and then MOVED redirections meanwhile.
    pub fn move_slot(&self, slot: u16, to: u16) -> Result<(), LocalRedisError> {
        let from = self.master_of(slot)?;
        let topology = self.topology()?;
        let target = topology
            .iter()
            .find(|n| n.port == to && n.master && self.live_ports().contains(&n.port))
            .ok_or_else(|| other(format!("no master on port {to}")))?;
        let s = slot.to_string();
        redis_cli(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from.id])?;
        redis_cli(
            from.port,
            &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target.id],
        )?;
        loop {
            let keys = redis_cli(from.port, &["CLUSTER", "GETKEYSINSLOT", &s, "100"])?;
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_s = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_s, "", "0", "5000", "KEYS"];
            args.extend(keys);
            redis_cli(from.port, &args)?;
        }
        let live = self.live_ports();
        for n in topology
            .iter()
            .filter(|n| n.master && live.contains(&n.port))
        {
            redis_cli(n.port, &["CLUSTER", "SETSLOT", &s, "NODE", &target.id])?;
        }
        Ok(())
    }

    /// The last lines of the log of the node on `port`, for failure messages.
    pub fn log_tail(&self, port: u16) -> String {
        let Some(node) = self.nodes.iter().find(|n| n.port == port) else {
            return String::new();
        };
        let log = std::fs::read_to_string(node.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills the node on `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for port in self.ports() {
            self.kill(port);
        }
    }
}
