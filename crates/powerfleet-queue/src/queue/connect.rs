//! Connecting a client: its options, the server (a single Redis or a cluster, the slot of the
//! namespace's keys, the replicas a submission waits for), the connections each operation
//! takes, and the consumer groups.

use super::*;

/// Longest a blocking stream read waits; longer requests are cut to it.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);
/// How much longer than a read's block time a reply may take before the client gives up.
const RESPONSE_MARGIN: Duration = Duration::from_secs(5);
/// How long a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a queue client.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    /// Deployment namespace: fleets with different namespaces share a Redis without seeing each
    /// other's jobs.
    pub namespace: String,
    /// Seconds a finished job's state stays in Redis (results live on in SQL).
    pub retention_s: u64,
    /// Largest pool of Redis connections.
    pub max_connections: usize,
    /// Replicas a submission must reach (`WAIT`) before it is acknowledged: `None` waits for one
    /// on a Redis Cluster whose namespace master has a replica, and for none otherwise.
    pub wait_replicas: Option<usize>,
    /// How long a submission waits for its replicas before it fails, in milliseconds.
    pub replica_timeout_ms: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            namespace: "default".to_string(),
            retention_s: 7 * 24 * 3600,
            max_connections: 16,
            wait_replicas: None,
            replica_timeout_ms: 2000,
        }
    }
}

/// The warning that a consumer group was created after a read found it missing.
pub(crate) fn warn_recreated(stream: &str, group: &str) {
    tracing::warn!(
        stream,
        group,
        "consumer group {group} of stream {stream} was missing (Redis lost its data: FLUSHALL, or a new empty server; or the stream is new); created it, reading on"
    );
}

impl Queue {
    /// Connects, checks the server answers, and creates the consumer groups if missing.
    pub async fn connect(url: &str, options: QueueOptions) -> Result<Queue, QueueError> {
        crate::keys::validate_namespace(&options.namespace)
            .map_err(|e| QueueError::Invalid(e.to_string()))?;
        powerfleet_common::install_tls_provider();
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let redacted = urls
            .iter()
            .map(|u| redact_url(u))
            .collect::<Vec<_>>()
            .join(",");
        // Blocking stream reads wait up to MAX_BLOCK; their response timeout must outlast them.
        let connected = crate::conn::connect(
            &urls,
            &crate::conn::Timeouts {
                connect: CONNECT_TIMEOUT,
                response: RESPONSE_MARGIN,
                blocking_response: MAX_BLOCK + RESPONSE_MARGIN,
                max_blocking: options.max_connections,
            },
        )
        .await
        .map_err(|message| QueueError::Redis {
            url: redacted.clone(),
            message,
        })?;
        let mut queue = Queue {
            shared: connected.shared,
            pool: connected.blocking,
            cluster: connected.cluster,
            slot: 0,
            replicas: 0,
            requests: Default::default(),
            reclaim_cursors: Default::default(),
            keys: Keys::new(&options.namespace),
            url: redacted,
            options,
            scripts: std::sync::Arc::new(Scripts::new()),
        };
        queue.ensure_groups().await?;
        if queue.cluster {
            queue.slot = queue.namespace_slot().await?;
        }
        queue.replicas = match queue.options.wait_replicas {
            Some(n) => n,
            // On a cluster, a submission waits for one replica when the namespace's master has
            // one (a single server has none unless the operator says so).
            None if queue.cluster => queue.master_replicas().await?.min(1),
            None => 0,
        };
        Ok(queue)
    }

    /// The cluster slot of the namespace's keys (they share one hash tag).
    async fn namespace_slot(&self) -> Result<u16, QueueError> {
        let mut c = self.conn().await?;
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(self.keys.jobs())
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))
    }

    /// How many replicas the master of the namespace's keys has (`INFO replication` there).
    async fn master_replicas(&self) -> Result<usize, QueueError> {
        let mut c = self.conn().await?;
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        let reply = c
            .on_slot_master(self.slot, info)
            .await
            .map_err(|e| self.err(e))?;
        let text: String =
            redis::FromRedisValue::from_redis_value(reply).map_err(|e| self.err(e))?;
        Ok(text
            .lines()
            .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Whether the queue talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Waits until the writes this client sent so far reached the replicas a submission needs
    /// (`WAIT`, on the namespace's master); errs when they did not within the replica timeout.
    /// Returns at once when no replica is required.
    pub async fn confirm_replicated(&self, what: &str) -> Result<(), QueueError> {
        if self.replicas == 0 {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replicas).arg(self.options.replica_timeout_ms);
        let reply = c
            .on_slot_master(self.slot, wait)
            .await
            .map_err(|e| self.err(e))?;
        let acked: usize =
            redis::FromRedisValue::from_redis_value(reply).map_err(|e| self.err(e))?;
        if acked < self.replicas {
            return Err(QueueError::NotReplicated {
                what: what.to_string(),
                replicas: self.replicas,
                acked,
                timeout_ms: self.options.replica_timeout_ms,
            });
        }
        Ok(())
    }

    /// The key schema.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The server's URL, password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn err(&self, e: impl std::fmt::Display) -> QueueError {
        QueueError::Redis {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }

    /// The shared connection (a cheap clone), for one request.
    pub(super) async fn conn(&self) -> Result<crate::conn::Shared, QueueError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.shared.clone())
    }

    /// A dedicated connection for one blocking read.
    pub(super) async fn blocking_conn(&self) -> Result<crate::conn::Blocking, QueueError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pool.get().await.map_err(|e| self.err(e))
    }

    /// Requests this client (with its clones) has sent to Redis: one per queue operation.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Creates `group` on `stream` (and the stream) after a read found it missing (`NOGROUP`:
    /// Redis lost its data, by `FLUSHALL` or a new empty server, or the stream is new), and says
    /// so in a warning naming the stream. The group starts at the stream's first entry, so
    /// nothing written since is skipped. One that exists already is left alone.
    pub(crate) async fn recreate_group(&self, stream: &str, group: &str) -> Result<(), QueueError> {
        if self.create_group(stream, group).await? {
            warn_recreated(stream, group);
        }
        Ok(())
    }

    /// Creates the consumer groups (and streams) if they do not exist.
    pub async fn ensure_groups(&self) -> Result<(), QueueError> {
        for (stream, group) in [
            (self.keys.jobs(), WORKER_GROUP),
            (self.keys.results(), COLLECTOR_GROUP),
            (self.keys.submissions(), COLLECTOR_GROUP),
        ] {
            self.create_group(&stream, group).await?;
        }
        Ok(())
    }

    /// `XGROUP CREATE stream group 0 MKSTREAM`: true when it created the group, false when the
    /// group exists already.
    pub(super) async fn create_group(&self, stream: &str, group: &str) -> Result<bool, QueueError> {
        let mut c = self.conn().await?;
        let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.to_string().contains("BUSYGROUP") => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Answers whether Redis is reachable.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_never_carry_passwords() {
        assert_eq!(
            redact_url("redis://:s3cret@h:6379/0"),
            "redis://:***@h:6379/0"
        );
        assert_eq!(
            redact_url("rediss://user:s3cret@h/"),
            "rediss://user:***@h/"
        );
        // A lone user name is not a secret.
        assert_eq!(redact_url("redis://alice@h/"), "redis://alice@h/");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }
}
