//! `Queue`: every Redis operation of the fleet, each fenced write a Lua script.

use std::collections::HashMap;

use std::time::Duration;

use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobResult, JobSpec, JobStatus};
use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use crate::keys::{COLLECTOR_GROUP, Keys, WORKER_GROUP};
pub use powerfleet_jobs::redact_url;

/// Longest a blocking stream read waits; longer requests are cut to it.
pub const MAX_BLOCK: Duration = Duration::from_secs(5);
/// How much longer than a read's block time a reply may take before the client gives up.
const RESPONSE_MARGIN: Duration = Duration::from_secs(5);
/// How long a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest job entry accepted from the jobs stream; larger ones are dead-lettered.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Largest result entry accepted from the results stream. Results are written by workers, not
/// users: the limit only has to hold the largest valid result (65,536 tokens with their text and
/// up to 4,096 blocks of statistics stay far below it).
pub const MAX_RESULT_BYTES: usize = 16 << 20;

/// A queue operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis could not be reached or answered with an error.
    #[error("Redis at {url} failed: {message}; check --redis and that the server is running")]
    Redis {
        /// The server, password redacted.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// Redis answered something the queue did not expect.
    #[error("unexpected reply from Redis to {op}: {detail}")]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What came back.
        detail: String,
    },
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
    /// A write was not copied to enough replicas in time: a failover now could lose it.
    #[error(
        "the {what} reached Redis but only {acked} of {replicas} replicas confirmed it within {timeout_ms} ms, so a failover now could lose it; check the replicas (INFO replication), and resubmit with the same submission key (it is idempotent)"
    )]
    NotReplicated {
        /// What was written.
        what: String,
        /// Replicas required.
        replicas: usize,
        /// Replicas that confirmed.
        acked: usize,
        /// How long it waited.
        timeout_ms: u64,
    },
}

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

/// A job entry delivered from the jobs stream. Every entry of the stream becomes one, however
/// broken: an entry that cannot be decoded (a field name or value that is not UTF-8, a missing
/// field, an oversized entry, a spec that is not a job) has the reason in `spec`, and the worker
/// dead-letters it, so no entry can block the group.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The stream entry id.
    pub entry_id: String,
    /// The entry's fields as stored, in order: raw bytes, which need not be UTF-8.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// The decoded job, or why it could not be decoded.
    pub spec: Result<JobSpec, String>,
}

/// A result entry delivered from the results stream; like [`Delivery`], every entry becomes one.
#[derive(Clone, Debug)]
pub struct ResultDelivery {
    /// The stream entry id.
    pub entry_id: String,
    /// The entry's fields as stored, in order: raw bytes, which need not be UTF-8.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// The decoded result, or why it could not be decoded.
    pub result: Result<JobResult, String>,
}

/// A worker's claim on a job: valid while its fence and token are the job's current lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The stream entry being processed.
    pub entry_id: String,
    /// The fencing token taken by the claim: one more than the job's previous claim.
    pub fence: u64,
    /// A random token unique to this claim. Fenced writes compare `fence:token`, so two claims
    /// never share a lease, even when a Redis failover loses a fence increment.
    pub token: String,
    /// The consumer (worker) name.
    pub consumer: String,
}

impl Lease {
    /// The lease as the scripts compare it.
    fn fenced(&self) -> String {
        format!("{}:{}", self.fence, self.token)
    }
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq)]
pub enum ClaimOutcome {
    /// The caller now owns the job.
    Claimed {
        /// The lease.
        lease: Lease,
        /// Claims so far, this one included.
        deliveries: u32,
        /// Whether a user asked to cancel it.
        cancel_requested: bool,
        /// The latest checkpoint, if a previous owner wrote one.
        checkpoint: Option<Vec<u8>>,
        /// The job's first claim, ms since the epoch.
        started_at_ms: u64,
        /// Since when the job has been waiting for its model, if it was deferred before.
        waiting_since_ms: Option<u64>,
        /// How often the job was deferred so far.
        waits: u32,
    },
    /// The job had already finished; its entry was acknowledged.
    AlreadyFinal(JobStatus),
    /// The entry is an old one of a job that was enqueued again; it was acknowledged.
    Stale,
    /// No state exists for the job.
    Missing,
}

/// Whose tally to read.
#[derive(Clone, Copy, Debug)]
pub enum TallyOf<'a> {
    /// A batch's.
    Batch(BatchId),
    /// A correlation id's.
    Correlation(&'a CorrelationId),
}

/// How many jobs a batch or correlation id has, and how many have finished.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Jobs enqueued.
    pub total: u64,
    /// Jobs finished (any final status).
    pub finished: u64,
    /// Finished jobs by status.
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// Per method: (finished, total).
    pub by_method: std::collections::BTreeMap<String, (u64, u64)>,
}

impl Tally {
    fn from_fields(map: &HashMap<String, u64>) -> Option<Tally> {
        let total = *map.get("total")?;
        let mut t = Tally {
            total,
            finished: map.get("final").copied().unwrap_or(0),
            ..Tally::default()
        };
        for (k, v) in map {
            if let Some(status) = k.strip_prefix("status:") {
                t.by_status.insert(status.to_string(), *v);
            } else if let Some(m) = k.strip_prefix("total:") {
                t.by_method.entry(m.to_string()).or_default().1 = *v;
            } else if let Some(m) = k.strip_prefix("final:") {
                t.by_method.entry(m.to_string()).or_default().0 = *v;
            }
        }
        Some(t)
    }

    /// Whether every job has finished.
    pub fn done(&self) -> bool {
        self.finished >= self.total
    }
}

/// Whether a lease still holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Still the owner; `cancel` says whether a user asked to cancel.
    Owned {
        /// Cancellation requested.
        cancel: bool,
    },
    /// Another claim took the job: stop working on it.
    Lost,
    /// The job's state is gone from Redis (deleted, or evicted under memory pressure): nobody
    /// can finish it, so its entry is dead-lettered.
    Vanished,
}

/// Progress of a running chain, stored in the job's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Current block (0-based).
    pub block_idx: u32,
    /// Blocks in all.
    pub n_blocks: u32,
    /// Current MCMC step in the block.
    pub step_idx: u32,
    /// MCMC steps per block.
    pub n_mcmc: u32,
    /// Proposals so far.
    pub proposals: u64,
    /// Acceptances so far.
    pub acceptances: u64,
    /// Tokens generated so far.
    pub tokens_generated: u64,
}

/// Why and until when a job waits for its model.
#[derive(Clone, Copy, Debug)]
pub struct Wait<'a> {
    /// When it may run again, ms since the epoch.
    pub due_ms: u64,
    /// Why it waits (shown by `status`).
    pub reason: &'a str,
    /// Since when it has been waiting, ms since the epoch; `None` keeps the job's own (now,
    /// when it has none).
    pub since_ms: Option<u64>,
}

/// What `defer` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deferral {
    /// The job waits in the delayed set.
    Deferred,
    /// A cancellation was requested: the caller still owns the job and finishes it as cancelled.
    CancelRequested,
    /// The lease was lost; another worker owns the job.
    Lost,
}

/// What `cancel` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    Cancelled,
    /// The job is running; its worker will stop it between MCMC steps.
    Requested,
    /// The job had already finished with this status.
    AlreadyFinal(JobStatus),
    /// No such job in Redis.
    Missing,
}

/// A job's live state in Redis.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobState {
    /// The job.
    pub job_id: JobId,
    /// Its status.
    pub status: JobStatus,
    /// The job specification.
    pub spec: Option<JobSpec>,
    /// Progress, while running.
    pub progress: Option<Progress>,
    /// Claims so far.
    pub deliveries: u32,
    /// The current owner, if running.
    pub owner: Option<String>,
    /// The final result, once finished.
    pub result: Option<JobResult>,
    /// Why it failed or died.
    pub error: Option<String>,
    /// Whether cancellation was requested.
    pub cancel_requested: bool,
    /// Last update, ms since the epoch.
    pub updated_at_ms: Option<u64>,
    /// Why a queued job waits for its model, if it does.
    pub waiting: Option<String>,
    /// When a waiting job may run again, ms since the epoch.
    pub not_before_ms: Option<u64>,
}

/// What `trim_streams` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrimReport {
    /// Entries trimmed from the jobs stream.
    pub jobs: u64,
    /// Entries trimmed from the results stream.
    pub results: u64,
}

struct Scripts {
    begin_submission: Script,
    enqueue: Script,
    claim: Script,
    heartbeat: Script,
    checkpoint: Script,
    finish: Script,
    hand_back: Script,
    defer: Script,
    promote: Script,
    cancel: Script,
    dead_letter: Script,
}

/// `tally.lua`, then `script`: one script text for the scripts that count finished jobs.
fn with_tally(script: &str) -> Script {
    Script::new(&format!("{}\n{script}", include_str!("lua/tally.lua")))
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            begin_submission: Script::new(include_str!("lua/begin_submission.lua")),
            enqueue: Script::new(include_str!("lua/enqueue.lua")),
            claim: Script::new(include_str!("lua/claim.lua")),
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            checkpoint: Script::new(include_str!("lua/checkpoint.lua")),
            finish: with_tally(include_str!("lua/finish.lua")),
            hand_back: Script::new(include_str!("lua/hand_back.lua")),
            defer: Script::new(include_str!("lua/defer.lua")),
            promote: Script::new(include_str!("lua/promote.lua")),
            cancel: with_tally(include_str!("lua/cancel.lua")),
            dead_letter: with_tally(include_str!("lua/dead_letter.lua")),
        }
    }
}

/// A client of one deployment's queue. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct Queue {
    /// One auto-reconnecting multiplexed connection (per cluster node) for every non-blocking
    /// operation: one round trip each, no pool checkout.
    shared: crate::conn::Shared,
    /// Dedicated connections for blocking stream reads, which would stall a shared connection.
    pool: crate::conn::BlockingSource,
    /// Whether the server is a Redis Cluster.
    cluster: bool,
    /// The cluster slot of the namespace's keys (0 on a single server).
    slot: u16,
    /// Replicas a submission waits for (`WAIT`) before it is acknowledged.
    replicas: usize,
    /// Requests sent to Redis by this client and its clones.
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Where the next XAUTOCLAIM scan starts, per stream: Redis looks at a bounded number of
    /// pending entries per call, so scans resume rather than restart.
    reclaim_cursors: std::sync::Arc<std::sync::Mutex<HashMap<String, String>>>,
    keys: Keys,
    url: String,
    options: QueueOptions,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("url", &self.url)
            .field("namespace", &self.options.namespace)
            .finish()
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The bytes of a string reply.
fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

/// Bytes shown as text: verbatim when they are UTF-8; otherwise each byte that is not valid
/// UTF-8 becomes `\xNN` and each backslash `\\`, so the original bytes can be recovered.
fn shown(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.into();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.into()
}

/// `shown`, cut to a length fit for an error message.
fn shown_short(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let cut = bytes.len().min(MAX);
    let mut s = shown(&bytes[..cut]).into_owned();
    if cut < bytes.len() {
        s.push_str("...");
    }
    s
}

/// A reply's shape for an error message, cut short: a reply may hold megabytes.
fn shape(v: &Value) -> String {
    let mut s = format!("{v:?}");
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// One stream entry as Redis sent it.
#[derive(Debug)]
struct RawEntry {
    id: String,
    /// Its fields, raw, in order.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Why the entry's shape is not that of a stream entry, if it is not.
    malformed: Option<String>,
}

impl RawEntry {
    /// Parses `[id, [name, value, ...]]`; `None` for a nil (an entry deleted meanwhile).
    fn parse(op: &'static str, v: Value) -> Result<Option<RawEntry>, QueueError> {
        let proto = |detail: String| QueueError::Protocol { op, detail };
        let items = match v {
            Value::Nil => return Ok(None),
            Value::Array(items) if items.len() == 2 => items,
            other => return Err(proto(format!("a stream entry of shape {}", shape(&other)))),
        };
        let mut items = items.into_iter();
        let id = items
            .next()
            .and_then(bytes_of)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| proto("a stream entry without an id".to_string()))?;
        let mut entry = RawEntry {
            id,
            fields: Vec::new(),
            malformed: None,
        };
        let flat: Vec<Value> = match items.next() {
            Some(Value::Array(flat)) if flat.len() % 2 == 0 => flat,
            Some(Value::Map(pairs)) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            Some(Value::Nil) => {
                entry.malformed = Some("the entry has no fields (it was deleted)".to_string());
                return Ok(Some(entry));
            }
            _ => {
                entry.malformed = Some("the entry's fields are not name-value pairs".to_string());
                return Ok(Some(entry));
            }
        };
        let mut flat = flat.into_iter();
        while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
            match (bytes_of(k), bytes_of(v)) {
                (Some(k), Some(v)) => entry.fields.push((k, v)),
                _ => {
                    entry.malformed = Some(format!(
                        "field {} of the entry is not a string",
                        entry.fields.len() + 1
                    ));
                    return Ok(Some(entry));
                }
            }
        }
        Ok(Some(entry))
    }

    /// Parses a list of entries (the entries of an `XREADGROUP` stream, an `XAUTOCLAIM` or an
    /// `XRANGE` reply).
    fn parse_list(op: &'static str, v: Value) -> Result<Vec<RawEntry>, QueueError> {
        match v {
            Value::Nil => Ok(Vec::new()),
            Value::Array(entries) => Ok(entries
                .into_iter()
                .map(|e| RawEntry::parse(op, e))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect()),
            other => Err(QueueError::Protocol {
                op,
                detail: format!("a list of stream entries of shape {}", shape(&other)),
            }),
        }
    }

    /// The entry's fields as text, by name: an error says why the entry cannot be decoded (its
    /// shape, its size above `limit`, a name or value that is not UTF-8, a repeated name).
    fn text_fields(&self, limit: usize) -> Result<HashMap<&str, &str>, String> {
        if let Some(why) = &self.malformed {
            return Err(why.clone());
        }
        let size: usize = self.fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > limit {
            return Err(format!(
                "entry of {size} bytes exceeds the limit of {limit} bytes"
            ));
        }
        let mut map = HashMap::with_capacity(self.fields.len());
        for (k, v) in &self.fields {
            let name = std::str::from_utf8(k)
                .map_err(|e| format!("field name \"{}\" is not UTF-8: {e}", shown_short(k)))?;
            let value =
                std::str::from_utf8(v).map_err(|e| format!("field {name} is not UTF-8: {e}"))?;
            if map.insert(name, value).is_some() {
                return Err(format!("field {name} appears more than once"));
            }
        }
        Ok(map)
    }
}

/// The dead-letter payload of an entry: its fields as a JSON object, each name and value shown
/// as by `shown` (verbatim when UTF-8), in the entry's order.
fn payload_of(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    struct Fields<'a>(&'a [(Vec<u8>, Vec<u8>)]);
    impl Serialize for Fields<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (shown(k), shown(v))))
        }
    }
    serde_json::to_string(&Fields(fields)).expect("fields serialize")
}

/// Which stream an entry came from.
#[derive(Clone, Copy, Debug)]
enum StreamOf {
    /// The jobs stream, read by the workers.
    Jobs,
    /// The results stream, read by the collectors.
    Results,
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

    fn err(&self, e: impl std::fmt::Display) -> QueueError {
        QueueError::Redis {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }

    /// The shared connection (a cheap clone), for one request.
    async fn conn(&self) -> Result<crate::conn::Shared, QueueError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.shared.clone())
    }

    /// A dedicated connection for one blocking read.
    async fn blocking_conn(&self) -> Result<crate::conn::Blocking, QueueError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pool.get().await.map_err(|e| self.err(e))
    }

    /// Requests this client (with its clones) has sent to Redis: one per queue operation.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Creates the consumer groups (and streams) if they do not exist.
    pub async fn ensure_groups(&self) -> Result<(), QueueError> {
        for (stream, group) in [
            (self.keys.jobs(), WORKER_GROUP),
            (self.keys.results(), COLLECTOR_GROUP),
        ] {
            let mut c = self.conn().await?;
            let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut c)
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.to_string().contains("BUSYGROUP") => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        Ok(())
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

    /// Records a client's submission key with the fingerprint of its request; returns the batch
    /// and correlation ids and the fingerprint of the first submission under that key (the given
    /// ones if it is new). A key recorded before fingerprints existed returns its own ids and the
    /// given fingerprint.
    pub async fn begin_submission(
        &self,
        key: &str,
        batch_id: BatchId,
        correlation_id: &CorrelationId,
        fingerprint: &str,
    ) -> Result<(BatchId, CorrelationId, String), QueueError> {
        let mut c = self.conn().await?;
        let (b, corr, first): (String, String, String) = self
            .scripts
            .begin_submission
            .key(self.keys.submission(key))
            .arg(batch_id.to_string())
            .arg(correlation_id.as_str())
            .arg(self.options.retention_s)
            .arg(fingerprint)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let parse_err = |detail: String| QueueError::Protocol {
            op: "begin_submission",
            detail,
        };
        Ok((
            b.parse()
                .map_err(|e: powerfleet_jobs::IdError| parse_err(e.to_string()))?,
            corr.parse()
                .map_err(|e: powerfleet_jobs::IdError| parse_err(e.to_string()))?,
            first,
        ))
    }

    /// Enqueues jobs. With a submission key, job `i` of a repeated submission is not enqueued
    /// again: the id it got the first time is returned instead. All jobs of one call must share
    /// one correlation id and batch.
    pub async fn enqueue(
        &self,
        specs: &[JobSpec],
        submission: Option<(&str, usize)>,
    ) -> Result<Vec<JobId>, QueueError> {
        let Some(first) = specs.first() else {
            return Ok(Vec::new());
        };
        if specs
            .iter()
            .any(|s| s.correlation_id != first.correlation_id || s.batch_id != first.batch_id)
        {
            return Err(QueueError::Invalid(
                "all jobs of one enqueue call must share correlation id and batch".into(),
            ));
        }
        let mut c = self.conn().await?;
        let mut inv = self.scripts.enqueue.prepare_invoke();
        inv.key(self.keys.jobs())
            .key(self.keys.correlation(&first.correlation_id))
            .key(
                first
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch(b)),
            )
            .key(submission.map_or(self.keys.unused(), |(k, _)| self.keys.submission(k)))
            .key(self.keys.correlation_tally(&first.correlation_id))
            .key(
                first
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch_tally(b)),
            );
        for s in specs {
            inv.key(self.keys.job(s.job_id));
        }
        inv.arg(powerfleet_jobs::now_ms())
            .arg(if first.batch_id.is_some() { "1" } else { "0" })
            .arg(if submission.is_some() { "1" } else { "0" })
            .arg(self.options.retention_s);
        let offset = submission.map_or(0, |(_, o)| o);
        for (i, s) in specs.iter().enumerate() {
            let spec = serde_json::to_string(s).expect("job specs serialize");
            inv.arg(offset + i)
                .arg(s.job_id.to_string())
                .arg(spec)
                .arg(s.correlation_id.as_str())
                .arg(s.batch_id.map(|b| b.to_string()).unwrap_or_default())
                .arg(s.method().as_str());
        }
        let ids: Vec<String> = inv.invoke_async(&mut c).await.map_err(|e| self.err(e))?;
        ids.iter()
            .map(|s| {
                s.parse().map_err(|_| QueueError::Protocol {
                    op: "enqueue",
                    detail: format!("job id {s:?}"),
                })
            })
            .collect()
    }

    fn delivery(entry: RawEntry) -> Delivery {
        let spec = entry.text_fields(MAX_ENTRY_BYTES).and_then(|fields| {
            match (fields.get("job_id"), fields.get("spec")) {
                (Some(job_id), Some(spec)) => serde_json::from_str::<JobSpec>(spec)
                    .map_err(|e| format!("spec is not a valid job: {e}"))
                    .and_then(|s| {
                        if s.job_id.to_string() == *job_id {
                            Ok(s)
                        } else {
                            Err(format!(
                                "entry job_id {job_id} differs from spec job_id {}",
                                s.job_id
                            ))
                        }
                    }),
                _ => Err("entry lacks the job_id and spec fields".to_string()),
            }
        });
        Delivery {
            entry_id: entry.id,
            fields: entry.fields,
            spec,
        }
    }

    /// Reads up to `count` new jobs for `consumer`, waiting up to `block_ms` for one.
    pub async fn read_jobs(
        &self,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<Delivery>, QueueError> {
        let reply = self
            .read_group(&self.keys.jobs(), WORKER_GROUP, consumer, count, block_ms)
            .await?;
        Ok(reply.into_iter().map(Self::delivery).collect())
    }

    /// Takes over up to `count` jobs whose lease expired (idle longer than `min_idle_ms`).
    pub async fn reclaim_jobs(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let ids = self
            .autoclaim(
                &self.keys.jobs(),
                WORKER_GROUP,
                consumer,
                min_idle_ms,
                count,
            )
            .await?;
        Ok(ids.into_iter().map(Self::delivery).collect())
    }

    async fn read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<RawEntry>, QueueError> {
        let mut c = self.blocking_conn().await?;
        // Read as raw values and decoded entry by entry: a typed reply would fail as a whole on
        // one bad entry, and the group would never get past it.
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("BLOCK")
            .arg(block_ms.min(MAX_BLOCK.as_millis() as u64))
            .arg("STREAMS")
            .arg(stream)
            .arg(">")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        const OP: &str = "XREADGROUP";
        // RESP2: [[stream, entries], ...]; RESP3: {stream: entries}; nil when nothing came.
        let per_stream: Vec<Value> = match reply {
            Value::Nil => Vec::new(),
            Value::Array(streams) => streams
                .into_iter()
                .map(|s| match s {
                    Value::Array(mut pair) if pair.len() == 2 => Ok(pair.pop().expect("two")),
                    other => Err(other),
                })
                .collect::<Result<_, _>>()
                .map_err(|other| QueueError::Protocol {
                    op: OP,
                    detail: format!("a stream of shape {}", shape(&other)),
                })?,
            Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
            other => {
                return Err(QueueError::Protocol {
                    op: OP,
                    detail: format!("a reply of shape {}", shape(&other)),
                });
            }
        };
        let mut entries = Vec::new();
        for list in per_stream {
            entries.extend(RawEntry::parse_list(OP, list)?);
        }
        Ok(entries)
    }

    async fn autoclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<RawEntry>, QueueError> {
        let mut c = self.conn().await?;
        let start = self
            .reclaim_cursors
            .lock()
            .expect("cursors")
            .get(stream)
            .cloned()
            .unwrap_or_else(|| "0-0".to_string());
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(consumer)
            .arg(min_idle_ms)
            .arg(&start)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        const OP: &str = "XAUTOCLAIM";
        // [next id, claimed entries, deleted ids (Redis 7)], decoded entry by entry.
        let mut items = match reply {
            Value::Array(items) if (2..=3).contains(&items.len()) => items.into_iter(),
            other => {
                return Err(QueueError::Protocol {
                    op: OP,
                    detail: format!("a reply of shape {}", shape(&other)),
                });
            }
        };
        let next = items
            .next()
            .and_then(bytes_of)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| QueueError::Protocol {
                op: OP,
                detail: "no next id".to_string(),
            })?;
        let claimed = RawEntry::parse_list(OP, items.next().unwrap_or(Value::Nil))?;
        // "0-0" means the scan went round: the next one starts from the beginning again.
        self.reclaim_cursors
            .lock()
            .expect("cursors")
            .insert(stream.to_string(), next);
        Ok(claimed)
    }

    /// Claims a delivered job: a new fencing token, the delivery count, and the checkpoint.
    pub async fn claim(
        &self,
        job_id: JobId,
        entry_id: &str,
        consumer: &str,
    ) -> Result<ClaimOutcome, QueueError> {
        let token = JobId::new().0.simple().to_string();
        let mut c = self.conn().await?;
        let reply: Vec<Value> = self
            .scripts
            .claim
            .key(self.keys.job(job_id))
            .key(self.keys.checkpoint(job_id))
            .key(self.keys.jobs())
            .arg(entry_id)
            .arg(consumer)
            .arg(powerfleet_jobs::now_ms())
            .arg(WORKER_GROUP)
            .arg(self.options.retention_s)
            .arg(&token)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let proto = |detail: String| QueueError::Protocol {
            op: "claim",
            detail,
        };
        let tag = reply.first().and_then(text).unwrap_or_default();
        match tag.as_str() {
            "missing" => Ok(ClaimOutcome::Missing),
            "stale" => Ok(ClaimOutcome::Stale),
            "final" => {
                let status = reply.get(1).and_then(text).unwrap_or_default();
                Ok(ClaimOutcome::AlreadyFinal(status.parse().map_err(proto)?))
            }
            "ok" => {
                let int = |i: usize| -> Result<u64, QueueError> {
                    reply
                        .get(i)
                        .and_then(text)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| proto(format!("field {i} of {reply:?}")))
                };
                let checkpoint = match reply.get(4) {
                    Some(Value::BulkString(b)) => Some(b.clone()),
                    _ => None,
                };
                Ok(ClaimOutcome::Claimed {
                    lease: Lease {
                        job_id,
                        entry_id: entry_id.to_string(),
                        fence: int(1)?,
                        token,
                        consumer: consumer.to_string(),
                    },
                    deliveries: int(2)? as u32,
                    cancel_requested: int(3)? == 1,
                    checkpoint,
                    started_at_ms: int(5)?,
                    waiting_since_ms: reply.get(6).and_then(text).and_then(|s| s.parse().ok()),
                    waits: reply
                        .get(7)
                        .and_then(text)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                })
            }
            other => Err(proto(format!("tag {other:?}"))),
        }
    }

    fn lease_state(&self, reply: Vec<Value>) -> LeaseState {
        match reply.first().and_then(text).as_deref() {
            Some("1") => LeaseState::Owned {
                cancel: reply.get(1).and_then(text).as_deref() == Some("1"),
            },
            Some("-1") => LeaseState::Vanished,
            _ => LeaseState::Lost,
        }
    }

    /// Renews the lease and records progress, if the lease still holds.
    pub async fn heartbeat(
        &self,
        lease: &Lease,
        progress: &Progress,
    ) -> Result<LeaseState, QueueError> {
        let mut c = self.conn().await?;
        let reply: Vec<Value> = self
            .scripts
            .heartbeat
            .key(self.keys.job(lease.job_id))
            .key(self.keys.jobs())
            .arg(lease.fenced())
            .arg(WORKER_GROUP)
            .arg(&lease.consumer)
            .arg(&lease.entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(serde_json::to_string(progress).expect("progress serializes"))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(self.lease_state(reply))
    }

    /// Stores a checkpoint (renewing the lease), if the lease still holds.
    pub async fn checkpoint(
        &self,
        lease: &Lease,
        progress: &Progress,
        checkpoint: &[u8],
    ) -> Result<LeaseState, QueueError> {
        let mut c = self.conn().await?;
        let reply: Vec<Value> = self
            .scripts
            .checkpoint
            .key(self.keys.job(lease.job_id))
            .key(self.keys.checkpoint(lease.job_id))
            .key(self.keys.jobs())
            .arg(lease.fenced())
            .arg(WORKER_GROUP)
            .arg(&lease.consumer)
            .arg(&lease.entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(serde_json::to_string(progress).expect("progress serializes"))
            .arg(checkpoint)
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(self.lease_state(reply))
    }

    /// Publishes the final result and acknowledges the entry, if the lease still holds.
    /// `dead_reason` also writes a dead-letter entry (for status `dead`). Returns whether it was
    /// published.
    pub async fn finish(
        &self,
        lease: &Lease,
        result: &JobResult,
        dead_reason: Option<&str>,
    ) -> Result<bool, QueueError> {
        let mut c = self.conn().await?;
        let published: i64 = self
            .scripts
            .finish
            .key(self.keys.job(lease.job_id))
            .key(self.keys.checkpoint(lease.job_id))
            .key(self.keys.jobs())
            .key(self.keys.results())
            .key(self.keys.dead())
            .key(self.keys.correlation(&result.correlation_id))
            .key(
                result
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch(b)),
            )
            .key(self.keys.correlation_tally(&result.correlation_id))
            .key(
                result
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch_tally(b)),
            )
            .arg(lease.fenced())
            .arg(WORKER_GROUP)
            .arg(&lease.entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(result.status.as_str())
            .arg(lease.job_id.to_string())
            .arg(serde_json::to_string(result).expect("results serialize"))
            .arg(dead_reason.unwrap_or(""))
            .arg(self.options.retention_s)
            .arg(if result.batch_id.is_some() { "1" } else { "0" })
            .arg(result.method.as_str())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(published == 1)
    }

    /// Gives the job back to the queue at once, keeping its checkpoint.
    pub async fn hand_back(&self, lease: &Lease) -> Result<bool, QueueError> {
        let mut c = self.conn().await?;
        let done: i64 = self
            .scripts
            .hand_back
            .key(self.keys.job(lease.job_id))
            .key(self.keys.jobs())
            .arg(lease.fenced())
            .arg(WORKER_GROUP)
            .arg(&lease.entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(lease.job_id.to_string())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done == 1)
    }

    /// Puts a running job back to wait for its model until `wait.due_ms`, keeping its
    /// checkpoint: the claim is undone and does not count as a delivery. A job with a
    /// cancellation request is not deferred: its owner finishes it as cancelled.
    pub async fn defer(&self, lease: &Lease, wait: &Wait<'_>) -> Result<Deferral, QueueError> {
        let fence = lease.fenced();
        let done = self
            .defer_entry(lease.job_id, &fence, &lease.entry_id, wait)
            .await?;
        Ok(match done {
            1 => Deferral::Deferred,
            2 => Deferral::CancelRequested,
            _ => Deferral::Lost,
        })
    }

    /// Puts a queued job whose entry this worker read, but did not claim, back to wait for its
    /// model until `due_ms`: while every server of a model is down, workers leave its jobs alone.
    /// Returns false when the entry is not the job's current one or the job is not queued (the
    /// caller then claims it as usual).
    pub async fn defer_unclaimed(
        &self,
        job_id: JobId,
        entry_id: &str,
        wait: &Wait<'_>,
    ) -> Result<bool, QueueError> {
        Ok(self.defer_entry(job_id, "", entry_id, wait).await? == 1)
    }

    async fn defer_entry(
        &self,
        job_id: JobId,
        fence: &str,
        entry_id: &str,
        wait: &Wait<'_>,
    ) -> Result<i64, QueueError> {
        let mut c = self.conn().await?;
        let done: i64 = self
            .scripts
            .defer
            .key(self.keys.job(job_id))
            .key(self.keys.jobs())
            .key(self.keys.delayed())
            .arg(fence)
            .arg(WORKER_GROUP)
            .arg(entry_id)
            .arg(powerfleet_jobs::now_ms())
            .arg(job_id.to_string())
            .arg(wait.due_ms)
            .arg(wait.reason)
            .arg(wait.since_ms.map(|t| t.to_string()).unwrap_or_default())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(done)
    }

    /// Moves up to `limit` jobs whose wait is over back to the jobs stream; returns how many.
    pub async fn promote_due(&self, limit: usize) -> Result<usize, QueueError> {
        let mut c = self.conn().await?;
        let now = powerfleet_jobs::now_ms();
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.delayed())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1))
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let mut moved = 0;
        for id in due {
            let job = match id.parse::<JobId>() {
                Ok(j) => self.keys.job(j),
                Err(_) => self.keys.unused(),
            };
            let done: i64 = self
                .scripts
                .promote
                .key(self.keys.delayed())
                .key(self.keys.jobs())
                .key(job)
                .arg(now)
                .arg(&id)
                .invoke_async(&mut c)
                .await
                .map_err(|e| self.err(e))?;
            moved += done as usize;
        }
        Ok(moved)
    }

    /// How many jobs wait for their model.
    pub async fn delayed_len(&self) -> Result<u64, QueueError> {
        let mut c = self.conn().await?;
        redis::cmd("ZCARD")
            .arg(self.keys.delayed())
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))
    }

    /// Moves an undecodable job entry to the dead-letter stream. When it names a job that this
    /// marks dead (or whose state is gone), the job's `dead` result is published too, so it
    /// reaches the results database like every other finished job.
    pub async fn dead_letter_job_entry(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), QueueError> {
        let job_id = delivery
            .fields
            .iter()
            .find(|(k, _)| k == b"job_id")
            .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<JobId>().ok());
        let result = match job_id {
            Some(id) => {
                self.dead_result(id, delivery.spec.as_ref().ok(), reason)
                    .await?
            }
            None => None,
        };
        self.dead_letter(
            StreamOf::Jobs,
            job_id,
            &delivery.entry_id,
            reason,
            &delivery.fields,
            result.as_ref(),
        )
        .await
    }

    /// The `dead` result of job `id`, as JSON: made from the specification in its state, else
    /// from the entry's own (read leniently, so a newer producer's job still gets one); `None`
    /// when neither can be read.
    async fn dead_result(
        &self,
        id: JobId,
        entry_spec: Option<&JobSpec>,
        reason: &str,
    ) -> Result<Option<JobResult>, QueueError> {
        let mut c = self.conn().await?;
        let (spec, deliveries): (Option<String>, Option<u32>) = redis::cmd("HMGET")
            .arg(self.keys.job(id))
            .arg("spec")
            .arg("deliveries")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let deliveries = deliveries.unwrap_or(0);
        let result = spec
            .and_then(|json| JobResult::dead_from_spec_json(&json, deliveries, reason))
            .or_else(|| {
                entry_spec.map(|spec| {
                    JobResult::for_spec(spec, JobStatus::Dead, deliveries, Some(reason.to_string()))
                })
            })
            .filter(|r| r.job_id == id);
        Ok(result)
    }

    /// Dead-letters the entry of a claimed job whose state vanished from Redis while it ran
    /// (deleted, or evicted under memory pressure), publishes its `dead` result, and lets its
    /// checkpoint expire: nobody can finish the job, and nothing of it should stay for good.
    pub async fn dead_letter_vanished(
        &self,
        lease: &Lease,
        spec: &JobSpec,
    ) -> Result<(), QueueError> {
        let reason = format!(
            "the state of job {} vanished from Redis while it ran (deleted, or evicted under memory pressure: use maxmemory-policy noeviction)",
            lease.job_id
        );
        let fields = [
            (b"job_id".to_vec(), lease.job_id.to_string().into_bytes()),
            (
                b"spec".to_vec(),
                serde_json::to_vec(spec).expect("a job spec serializes"),
            ),
        ];
        let result = self.dead_result(lease.job_id, Some(spec), &reason).await?;
        self.dead_letter(
            StreamOf::Jobs,
            Some(lease.job_id),
            &lease.entry_id,
            &reason,
            &fields,
            result.as_ref(),
        )
        .await
    }

    /// Moves a result entry that cannot be stored (undecodable, or refused by the database
    /// however often it is tried) to the dead-letter stream, with its whole payload.
    pub async fn dead_letter_result_entry(
        &self,
        delivery: &ResultDelivery,
        reason: &str,
    ) -> Result<(), QueueError> {
        self.dead_letter(
            StreamOf::Results,
            None,
            &delivery.entry_id,
            reason,
            &delivery.fields,
            None,
        )
        .await
    }
    async fn dead_letter(
        &self,
        stream: StreamOf,
        job: Option<JobId>,
        entry_id: &str,
        reason: &str,
        fields: &[(Vec<u8>, Vec<u8>)],
        dead_result: Option<&JobResult>,
    ) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let mut payload = payload_of(fields);
        // A result is kept whole (it is the only copy of the work); a job entry's head is
        // enough (its job's state keeps the specification), which keeps the stream small.
        let keep = match stream {
            StreamOf::Jobs => 64 * 1024,
            StreamOf::Results => 2 * MAX_RESULT_BYTES,
        };
        if payload.len() > keep {
            let mut cut = keep;
            while !payload.is_char_boundary(cut) {
                cut -= 1;
            }
            payload.truncate(cut);
            payload.push_str("...(truncated)");
        }
        let _: i64 = self
            .scripts
            .dead_letter
            .key(match stream {
                StreamOf::Jobs => self.keys.jobs(),
                StreamOf::Results => self.keys.results(),
            })
            .key(self.keys.dead())
            .key(job.map_or(self.keys.unused(), |id| self.keys.job(id)))
            .key(self.keys.results())
            .key(job.map_or(self.keys.unused(), |id| self.keys.checkpoint(id)))
            .key(dead_result.map_or(self.keys.unused(), |r| {
                self.keys.correlation_tally(&r.correlation_id)
            }))
            .key(
                dead_result
                    .and_then(|r| r.batch_id)
                    .map_or(self.keys.unused(), |b| self.keys.batch_tally(b)),
            )
            .arg(match stream {
                StreamOf::Jobs => WORKER_GROUP,
                StreamOf::Results => COLLECTOR_GROUP,
            })
            .arg(entry_id)
            .arg(reason)
            .arg(payload)
            .arg(powerfleet_jobs::now_ms())
            .arg(self.options.retention_s)
            .arg(dead_result.map_or(String::new(), |r| {
                serde_json::to_string(r).expect("a job result serializes")
            }))
            .arg(job.map(|id| id.to_string()).unwrap_or_default())
            .arg(if dead_result.is_some() { "1" } else { "0" })
            .arg(if dead_result.is_some_and(|r| r.batch_id.is_some()) {
                "1"
            } else {
                "0"
            })
            .arg(dead_result.map_or("", |r| r.method.as_str()))
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Cancels a job: at once if queued (publishing `queued_result`), else by flagging it for its
    /// worker.
    pub async fn cancel(
        &self,
        job_id: JobId,
        queued_result: &JobResult,
    ) -> Result<CancelOutcome, QueueError> {
        let mut c = self.conn().await?;
        let outcome: String = self
            .scripts
            .cancel
            .key(self.keys.job(job_id))
            .key(self.keys.results())
            .key(self.keys.checkpoint(job_id))
            .key(self.keys.jobs())
            .key(self.keys.correlation_tally(&queued_result.correlation_id))
            .key(
                queued_result
                    .batch_id
                    .map_or(self.keys.unused(), |b| self.keys.batch_tally(b)),
            )
            .arg(powerfleet_jobs::now_ms())
            .arg(job_id.to_string())
            .arg(serde_json::to_string(queued_result).expect("results serialize"))
            .arg(self.options.retention_s)
            .arg(WORKER_GROUP)
            .arg(if queued_result.batch_id.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(queued_result.method.as_str())
            .invoke_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        match outcome.as_str() {
            "cancelled" => Ok(CancelOutcome::Cancelled),
            "requested" => Ok(CancelOutcome::Requested),
            "missing" => Ok(CancelOutcome::Missing),
            other => match other.strip_prefix("final:").map(str::parse::<JobStatus>) {
                Some(Ok(status)) => Ok(CancelOutcome::AlreadyFinal(status)),
                _ => Err(QueueError::Protocol {
                    op: "cancel",
                    detail: other.to_string(),
                }),
            },
        }
    }

    /// The tally of a batch's or correlation id's jobs (how many, how many finished, by status and
    /// method), in one read; `None` when Redis holds none (jobs enqueued by an older version, or
    /// all expired).
    pub async fn tally(&self, of: TallyOf<'_>) -> Result<Option<Tally>, QueueError> {
        let key = match of {
            TallyOf::Batch(b) => self.keys.batch_tally(b),
            TallyOf::Correlation(c) => self.keys.correlation_tally(c),
        };
        let mut c = self.conn().await?;
        let map: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(Tally::from_fields(&map))
    }

    /// The live state of a job, if Redis still holds it.
    pub async fn job_state(&self, job_id: JobId) -> Result<Option<JobState>, QueueError> {
        let mut c = self.conn().await?;
        let map: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.job(job_id))
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        if map.is_empty() {
            return Ok(None);
        }
        let status = map
            .get("status")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| QueueError::Protocol {
                op: "job_state",
                detail: format!("job {job_id} has no valid status"),
            })?;
        let nonempty = |k: &str| map.get(k).filter(|s| !s.is_empty()).cloned();
        Ok(Some(JobState {
            job_id,
            status,
            spec: map.get("spec").and_then(|s| serde_json::from_str(s).ok()),
            progress: map
                .get("progress")
                .and_then(|s| serde_json::from_str(s).ok()),
            deliveries: map
                .get("deliveries")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            owner: nonempty("owner"),
            result: map.get("result").and_then(|s| serde_json::from_str(s).ok()),
            error: nonempty("error"),
            cancel_requested: map.get("cancel").map(String::as_str) == Some("1"),
            updated_at_ms: map.get("updated_at_ms").and_then(|s| s.parse().ok()),
            waiting: nonempty("waiting").filter(|_| status == JobStatus::Queued),
            not_before_ms: nonempty("not_before_ms")
                .filter(|_| status == JobStatus::Queued)
                .and_then(|s| s.parse().ok()),
        }))
    }

    /// Job ids under a correlation id.
    pub async fn correlation_jobs(&self, id: &CorrelationId) -> Result<Vec<JobId>, QueueError> {
        self.members(self.keys.correlation(id)).await
    }

    /// Job ids of a batch.
    pub async fn batch_jobs(&self, id: BatchId) -> Result<Vec<JobId>, QueueError> {
        self.members(self.keys.batch(id)).await
    }

    async fn members(&self, key: String) -> Result<Vec<JobId>, QueueError> {
        let mut c = self.conn().await?;
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let mut ids: Vec<JobId> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        ids.sort();
        Ok(ids)
    }

    /// Reads up to `count` new results for a collector.
    pub async fn read_results(
        &self,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<ResultDelivery>, QueueError> {
        let ids = self
            .read_group(
                &self.keys.results(),
                COLLECTOR_GROUP,
                consumer,
                count,
                block_ms,
            )
            .await?;
        Ok(ids.into_iter().map(Self::result_delivery).collect())
    }

    /// Takes over results a dead collector left unacknowledged.
    pub async fn reclaim_results(
        &self,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<ResultDelivery>, QueueError> {
        let ids = self
            .autoclaim(
                &self.keys.results(),
                COLLECTOR_GROUP,
                consumer,
                min_idle_ms,
                count,
            )
            .await?;
        Ok(ids.into_iter().map(Self::result_delivery).collect())
    }

    fn result_delivery(entry: RawEntry) -> ResultDelivery {
        let result =
            entry
                .text_fields(MAX_RESULT_BYTES)
                .and_then(|fields| match fields.get("result") {
                    Some(r) => serde_json::from_str::<JobResult>(r)
                        .map_err(|e| format!("result is not a valid job result: {e}")),
                    None => Err("entry lacks the result field".to_string()),
                });
        ResultDelivery {
            entry_id: entry.id,
            fields: entry.fields,
            result,
        }
    }

    /// Acknowledges a stored result.
    pub async fn ack_result(&self, entry_id: &str) -> Result<(), QueueError> {
        let mut c = self.conn().await?;
        let _: i64 = redis::cmd("XACK")
            .arg(self.keys.results())
            .arg(COLLECTOR_GROUP)
            .arg(entry_id)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Entries of the dead-letter stream, oldest first: (entry id, fields, shown as text).
    pub async fn dead_letters(
        &self,
        count: usize,
    ) -> Result<Vec<(String, HashMap<String, String>)>, QueueError> {
        let mut c = self.conn().await?;
        let reply: Value = redis::cmd("XRANGE")
            .arg(self.keys.dead())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(RawEntry::parse_list("XRANGE", reply)?
            .into_iter()
            .map(|e| {
                let fields = e
                    .fields
                    .iter()
                    .map(|(k, v)| (shown(k).into_owned(), shown(v).into_owned()))
                    .collect();
                (e.id, fields)
            })
            .collect())
    }

    /// Jobs waiting (never delivered) and pending (delivered, not acknowledged) in the jobs stream.
    pub async fn job_backlog(&self) -> Result<(u64, u64), QueueError> {
        let (lag, pending, _) = self.group_info(&self.keys.jobs(), WORKER_GROUP).await?;
        Ok((lag, pending))
    }

    /// (lag, pending, last-delivered id) of a consumer group.
    async fn group_info(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<(u64, u64, String), QueueError> {
        let mut c = self.conn().await?;
        let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        let g = groups
            .iter()
            .find(|g| g.get("name").and_then(text).as_deref() == Some(group))
            .ok_or_else(|| QueueError::Protocol {
                op: "XINFO GROUPS",
                detail: format!("no group {group} on {stream}"),
            })?;
        let num = |k: &str| {
            g.get(k)
                .and_then(text)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        Ok((
            num("lag"),
            num("pending"),
            g.get("last-delivered-id")
                .and_then(text)
                .unwrap_or_default(),
        ))
    }

    /// The status of each job in `ids`, read in pipelined batches; `None` where the job's state
    /// is gone (expired after it finished, deleted, or evicted).
    pub async fn job_statuses(&self, ids: &[JobId]) -> Result<Vec<Option<JobStatus>>, QueueError> {
        let mut c = self.conn().await?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.cmd("HGET").arg(self.keys.job(*id)).arg("status");
            }
            let statuses: Vec<Option<String>> =
                pipe.query_async(&mut c).await.map_err(|e| self.err(e))?;
            out.extend(statuses.into_iter().map(|s| s.and_then(|s| s.parse().ok())));
        }
        Ok(out)
    }

    /// Entries in the jobs and the results stream.
    pub async fn stream_lengths(&self) -> Result<(u64, u64), QueueError> {
        let mut c = self.conn().await?;
        let (jobs, results): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(self.keys.jobs())
            .cmd("XLEN")
            .arg(self.keys.results())
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok((jobs, results))
    }

    /// The server's `INFO stats` counters (commands processed, network bytes, ...).
    pub async fn server_stats(&self) -> Result<HashMap<String, u64>, QueueError> {
        let mut c = self.conn().await?;
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(info
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect())
    }

    /// Trims both streams up to the oldest entry that may still be needed: never past a pending
    /// entry, nor past the group's last-delivered entry.
    pub async fn trim_streams(&self) -> Result<TrimReport, QueueError> {
        Ok(TrimReport {
            jobs: self.trim(&self.keys.jobs(), WORKER_GROUP).await?,
            results: self.trim(&self.keys.results(), COLLECTOR_GROUP).await?,
        })
    }

    async fn trim(&self, stream: &str, group: &str) -> Result<u64, QueueError> {
        let (_, pending, last_delivered) = self.group_info(stream, group).await?;
        let mut min_id = last_delivered;
        if pending > 0 {
            let mut c = self.conn().await?;
            let summary: Vec<Value> = redis::cmd("XPENDING")
                .arg(stream)
                .arg(group)
                .query_async(&mut c)
                .await
                .map_err(|e| self.err(e))?;
            if let Some(oldest) = summary.get(1).and_then(text) {
                min_id = oldest;
            }
        }
        if min_id.is_empty() || min_id == "0-0" {
            return Ok(0);
        }
        let mut c = self.conn().await?;
        let trimmed: i64 = redis::cmd("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg(&min_id)
            .query_async(&mut c)
            .await
            .map_err(|e| self.err(e))?;
        Ok(trimmed as u64)
    }

    /// Appends a raw entry to the jobs stream (for tests of undecodable input).
    pub async fn push_raw_job_entry(&self, fields: &[(&str, &str)]) -> Result<String, QueueError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.jobs()).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut c).await.map_err(|e| self.err(e))
    }

    /// Appends a raw entry to the results stream (for tests and for republishing).
    pub async fn push_raw_result_entry(
        &self,
        fields: &[(&str, &str)],
    ) -> Result<String, QueueError> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.keys.results()).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query_async(&mut c).await.map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_valid_result_fits_in_a_result_entry() {
        use powerfleet_jobs::{CorrelationId, JobId, JobResult, JobStatus};
        use powerfleet_sampler::config::{MAX_BLOCKS, MAX_MAX_NEW_TOKENS};
        use powerfleet_sampler::{BlockStats, ChainStats, Method};
        let n = MAX_MAX_NEW_TOKENS as usize;
        let result = JobResult {
            job_id: JobId::new(),
            correlation_id: CorrelationId::generate(),
            batch_id: None,
            problem_id: Some("p".repeat(200)),
            model: "vllm+http://gpu:8000?model=".to_string() + &"m".repeat(200),
            method: Method::Power,
            seed: u64::MAX,
            stream: u64::MAX,
            status: JobStatus::Completed,
            tokens: vec![999_999; n],
            // A long token's text, escaped in JSON: far more than real text.
            text: Some("\\u00e9\\u00e9ab".repeat(n)),
            log_p: Some(-1e300),
            ends_with_eos: true,
            stats: ChainStats {
                proposals: u64::MAX,
                acceptances: u64::MAX,
                blocks: vec![
                    BlockStats {
                        proposals: u32::MAX,
                        acceptances: u32::MAX
                    };
                    MAX_BLOCKS as usize
                ],
                tokens_generated: u64::MAX,
                model_calls: u64::MAX,
            },
            attempts: u32::MAX,
            error: None,
            submitted_at_ms: u64::MAX,
            started_at_ms: Some(u64::MAX),
            finished_at_ms: u64::MAX,
            exactness: Some("x".repeat(300)),
            fallback: None,
            pin: None,
            text_error: None,
            bench: None,
            grade: None,
        };
        let size = serde_json::to_vec(&result).unwrap().len();
        assert!(size < MAX_RESULT_BYTES / 2, "{size} bytes");
    }

    fn entry(fields: &[(&[u8], &[u8])]) -> RawEntry {
        let flat = fields
            .iter()
            .flat_map(|(k, v)| [Value::BulkString(k.to_vec()), Value::BulkString(v.to_vec())])
            .collect();
        RawEntry::parse(
            "test",
            Value::Array(vec![Value::BulkString(b"1-0".to_vec()), Value::Array(flat)]),
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn entries_are_decoded_field_by_field_from_raw_bytes() {
        let ok = entry(&[(b"job_id", b"j"), (b"spec", b"{}")]);
        assert_eq!(ok.text_fields(100).unwrap()["spec"], "{}");
        let err = |e: RawEntry, limit| e.text_fields(limit).unwrap_err();
        assert_eq!(
            err(entry(&[(b"a\\\xff", b"v")]), 100),
            "field name \"a\\\\\\xff\" is not UTF-8: invalid utf-8 sequence of 1 bytes from index 2"
        );
        assert!(err(entry(&[(b"spec", b"\xc3(")]), 100).starts_with("field spec is not UTF-8"));
        assert_eq!(
            err(entry(&[(b"spec", b"1"), (b"spec", b"2")]), 100),
            "field spec appears more than once"
        );
        assert_eq!(
            err(entry(&[(b"spec", b"123456")]), 9),
            "entry of 10 bytes exceeds the limit of 9 bytes"
        );
        // An entry of the wrong shape is still an entry, with the reason.
        let odd = RawEntry::parse(
            "test",
            Value::Array(vec![
                Value::BulkString(b"1-0".to_vec()),
                Value::Array(vec![Value::Int(1)]),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(odd.id, "1-0");
        assert!(odd.text_fields(100).is_err());
        // A name or value that is not UTF-8 is kept in the payload, its bytes recoverable.
        assert_eq!(shown(b"plain \\ text"), "plain \\ text");
        assert_eq!(shown(b"a\\b\xffc\xc3"), "a\\\\b\\xffc\\xc3");
        assert_eq!(
            payload_of(&[(b"k\xfe".to_vec(), "é".as_bytes().to_vec())]),
            r#"{"k\\xfe":"é"}"#
        );
    }

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
