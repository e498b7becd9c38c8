//! Connections to a single Redis or to a Redis Cluster, behind one `ConnectionLike` type each for
//! shared (multiplexed) and blocking use. Which one is decided at connect time by asking the
//! server: a node with `cluster_enabled:1` in `INFO cluster` gets the cluster client, seeded with
//! every URL given, so the fleet works whichever node the URL names and follows failovers and
//! resharding (MOVED and ASK redirections). New connections for blocking reads are seeded again
//! from the nodes serving slots now when every URL given fails (a node that failed over and was
//! shut down).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

/// The connection every non-blocking operation shares: one auto-reconnecting multiplexed
/// connection to a single server, or a cluster connection (multiplexed per node).
#[derive(Clone)]
pub(crate) enum Shared {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// `ConnectionLike` for `$conn`, whose commands go over the connection its `through` method
/// gives, and whose database is its `db`.
macro_rules! commands_through {
    ($conn:ty) => {
        impl ConnectionLike for $conn {
            fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
                self.through().req_packed_command(cmd)
            }

            fn req_packed_commands<'a>(
                &'a mut self,
                pipeline: &'a Pipeline,
                offset: usize,
                count: usize,
            ) -> RedisFuture<'a, Vec<Value>> {
                self.through().req_packed_commands(pipeline, offset, count)
            }

            fn get_db(&self) -> i64 {
                self.db()
            }
        }
    };
}

commands_through!(Shared);
commands_through!(Blocking);

impl Shared {
    fn through(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Shared::Single(c) => c,
            Shared::Cluster(c) => c,
        }
    }

    fn db(&self) -> i64 {
        match self {
            Shared::Single(c) => c.get_db(),
            Shared::Cluster(c) => c.get_db(),
        }
    }

    /// Sends `cmd` to the master that serves `slot` (for keyless commands such as `WAIT` that
    /// must reach the node holding the namespace). On a single server, to that server.
    pub(crate) async fn on_slot_master(
        &mut self,
        slot: u16,
        cmd: Cmd,
    ) -> redis::RedisResult<Value> {
        match self {
            Shared::Single(c) => cmd.query_async(c).await,
            Shared::Cluster(c) => {
                c.route_command(
                    cmd,
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                        slot,
                        SlotAddr::Master,
                    ))),
                )
                .await
            }
        }
    }
}

/// Where dedicated connections for blocking reads come from.
#[derive(Clone)]
pub(crate) enum BlockingSource {
    Single(deadpool_redis::Pool),
    Cluster {
        /// Makes new connections; seeded again from the live nodes when its seeds fail.
        client: Arc<Mutex<Arc<redis::cluster::ClusterClient>>>,
        idle: Arc<Mutex<Vec<ClusterConnection>>>,
        /// The shared connection, which follows the cluster: it names the live nodes.
        shared: ClusterConnection,
        /// The URLs given, whose settings (credentials, TLS) every seed takes.
        urls: Arc<[redis::ConnectionInfo]>,
        response: Duration,
        connect: Duration,
    },
}

/// A connection held by one blocking read: it would stall a shared one.
pub(crate) enum Blocking {
    Single(deadpool_redis::Connection),
    Cluster {
        conn: Option<ClusterConnection>,
        idle: Arc<Mutex<Vec<ClusterConnection>>>,
    },
}

impl Drop for Blocking {
    fn drop(&mut self) {
        if let Blocking::Cluster { conn, idle } = self
            && let Some(conn) = conn.take()
        {
            idle.lock().expect("idle connections").push(conn);
        }
    }
}

impl Blocking {
    fn through(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Blocking::Single(c) => c,
            Blocking::Cluster { conn, .. } => conn.as_mut().expect("held until dropped"),
        }
    }

    fn db(&self) -> i64 {
        match self {
            Blocking::Single(c) => c.get_db(),
            Blocking::Cluster { conn, .. } => conn.as_ref().map_or(0, |c| c.get_db()),
        }
    }
}

impl BlockingSource {
    /// A connection for one blocking read: from the pool, or a cluster connection kept for
    /// reuse when dropped.
    pub(crate) async fn get(&self) -> Result<Blocking, String> {
        match self {
            BlockingSource::Single(pool) => pool
                .get()
                .await
                .map(Blocking::Single)
                .map_err(|e| e.to_string()),
            BlockingSource::Cluster {
                client,
                idle,
                shared,
                urls,
                response,
                connect,
            } => {
                let reused = idle.lock().expect("idle connections").pop();
                let conn = match reused {
                    Some(c) => c,
                    None => {
                        let current = client.lock().expect("cluster client").clone();
                        match current.get_async_connection().await {
                            Ok(c) => c,
                            // Every node the client was seeded with may be gone (a master that
                            // failed over and was shut down): seed it again from the nodes the
                            // shared connection, which follows the cluster, knows now.
                            Err(first) => {
                                let nodes = live_nodes(&mut shared.clone(), urls)
                                    .await
                                    .map_err(|_| first.to_string())?;
                                let fresh = Arc::new(cluster_client(nodes, *connect, *response)?);
                                *client.lock().expect("cluster client") = fresh.clone();
                                fresh
                                    .get_async_connection()
                                    .await
                                    .map_err(|e| e.to_string())?
                            }
                        }
                    }
                };
                Ok(Blocking::Cluster {
                    conn: Some(conn),
                    idle: idle.clone(),
                })
            }
        }
    }
}

/// Connection settings: how long connecting, an ordinary reply and a blocking read's reply may
/// take, and the pool size for blocking reads.
pub(crate) struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    pub blocking_response: Duration,
    pub max_blocking: usize,
}

/// What [`connect`] made.
pub(crate) struct Connected {
    pub shared: Shared,
    pub blocking: BlockingSource,
    /// Whether the server is a Redis Cluster.
    pub cluster: bool,
}

/// Whether the server at `url` runs in cluster mode (`INFO cluster`).
async fn is_cluster(url: &str, t: &Timeouts) -> Result<bool, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(t.connect))
        .set_response_timeout(Some(t.response));
    let mut c = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("cluster")
        .query_async(&mut c)
        .await
        .map_err(|e| e.to_string())?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// A cluster client seeded with `seeds`.
fn cluster_client(
    seeds: Vec<redis::ConnectionInfo>,
    connect: Duration,
    response: Duration,
) -> Result<redis::cluster::ClusterClient, String> {
    redis::cluster::ClusterClient::builder(seeds)
        .connection_timeout(connect)
        .response_timeout(response)
        .retries(6)
        .build()
        .map_err(|e| e.to_string())
}

/// The nodes serving slots now (`CLUSTER SLOTS`, asked through `shared`), each with the
/// settings of the first URL given (credentials, TLS), then the URLs given.
async fn live_nodes(
    shared: &mut ClusterConnection,
    urls: &[redis::ConnectionInfo],
) -> redis::RedisResult<Vec<redis::ConnectionInfo>> {
    let slots: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(shared)
        .await?;
    let mut nodes: Vec<(String, u16)> = Vec::new();
    if let Value::Array(ranges) = slots {
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            for node in fields.iter().skip(2) {
                let Value::Array(node) = node else { continue };
                let host = match node.first() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::SimpleString(s)) => s.clone(),
                    _ => continue,
                };
                let Some(Value::Int(port)) = node.get(1) else {
                    continue;
                };
                let Ok(port) = u16::try_from(*port) else {
                    continue;
                };
                if !host.is_empty() && !nodes.contains(&(host.clone(), port)) {
                    nodes.push((host, port));
                }
            }
        }
    }
    let Some(first) = urls.first() else {
        return Ok(Vec::new());
    };
    let mut seeds: Vec<redis::ConnectionInfo> = nodes
        .into_iter()
        .map(|(host, port)| {
            let addr = match first.addr() {
                redis::ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => redis::ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => redis::ConnectionAddr::Tcp(host, port),
            };
            first.clone().set_addr(addr)
        })
        .collect();
    seeds.extend(urls.iter().cloned());
    Ok(seeds)
}

/// Connects to the Redis (or Redis Cluster) at `urls`: one URL for a single server; for a
/// cluster, any number of its nodes (comma-separated on the command line), which seed the
/// client's view of the cluster.
pub(crate) async fn connect(urls: &[&str], t: &Timeouts) -> Result<Connected, String> {
    let mut last_error = String::from("no Redis URL given");
    let mut cluster = None;
    for url in urls {
        match is_cluster(url, t).await {
            Ok(c) => {
                cluster = Some(c);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let cluster = cluster.ok_or(last_error)?;
    if cluster {
        let infos = urls
            .iter()
            .map(|u| u.into_connection_info().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let client = cluster_client(infos.clone(), t.connect, t.response)?;
        let shared = client
            .get_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let blocking = cluster_client(infos.clone(), t.connect, t.blocking_response)?;
        Ok(Connected {
            shared: Shared::Cluster(shared.clone()),
            blocking: BlockingSource::Cluster {
                client: Arc::new(Mutex::new(Arc::new(blocking))),
                idle: Default::default(),
                shared,
                urls: infos.into(),
                response: t.blocking_response,
                connect: t.connect,
            },
            cluster: true,
        })
    } else {
        let [url] = urls else {
            return Err(format!(
                "{} URLs given, but the server is not a Redis Cluster: give one URL",
                urls.len()
            ));
        };
        let connection = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t.connect))
            .set_response_timeout(Some(t.blocking_response));
        let manager = deadpool_redis::Manager::new_with_config(*url, connection)
            .map_err(|e| e.to_string())?;
        let pool = deadpool_redis::Pool::builder(manager)
            .max_size(t.max_blocking)
            .runtime(deadpool_redis::Runtime::Tokio1)
            .build()
            .map_err(|e| e.to_string())?;
        let client = redis::Client::open(*url).map_err(|e| e.to_string())?;
        let shared = ConnectionManager::new_with_config(
            client,
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(t.connect))
                .set_response_timeout(Some(t.response))
                .set_number_of_retries(2),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Connected {
            shared: Shared::Single(shared),
            blocking: BlockingSource::Single(pool),
            cluster: false,
        })
    }
}
