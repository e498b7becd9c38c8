//! `Queue`: every Redis operation of the fleet, each fenced write a Lua script.

use std::collections::HashMap;

use std::time::Duration;

use powerfleet_jobs::{BatchId, CorrelationId, JobId, JobResult, JobSpec, JobStatus, ModelRoute};
use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use crate::keys::{COLLECTOR_GROUP, Keys, WORKER_GROUP};

mod admin;
mod dead;
mod jobs;
mod prompts;
mod results;
mod state;
mod submissions;
mod workers;
pub use powerfleet_jobs::redact_url;
pub use submissions::SubmissionDelivery;
pub use workers::{ServedModel, WorkerRegistration, context_tokens, served};

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
    /// The jobs stream it was read from.
    pub stream: String,
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

/// The jobs streams a worker reads: the shared stream (jobs of model references, which every
/// worker resolves) and the stream of each model name it maps. Made by [`Queue::subscription`].
#[derive(Debug)]
pub struct Subscription {
    names: Vec<String>,
    streams: Vec<String>,
    /// Which stream the next read starts at.
    turn: std::sync::atomic::AtomicUsize,
}

impl Subscription {
    /// The model names whose streams it reads, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether it reads the stream of model name `name`.
    pub fn serves_name(&self, name: &str) -> bool {
        self.names
            .binary_search_by(|n| n.as_str().cmp(name))
            .is_ok()
    }

    /// The streams, starting at the next one in turn.
    fn in_turn(&self) -> Vec<String> {
        let start =
            self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.streams.len();
        let mut s = self.streams[start..].to_vec();
        s.extend_from_slice(&self.streams[..start]);
        s
    }
}

/// A worker's claim on a job: valid while its fence and token are the job's current lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The jobs stream of the entry.
    pub stream: String,
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
        /// The JSON of the prompt the job's specification references ([`Prompt::Stored`]),
        /// `None` when it carries its prompt inline or nothing is stored any more.
        ///
        /// [`Prompt::Stored`]: powerfleet_jobs::Prompt::Stored
        prompt: Option<Vec<u8>>,
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
    /// Jobs enqueued per model (as submitted: a name or a reference).
    pub by_model: std::collections::BTreeMap<String, u64>,
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
            } else if let Some(m) = k.strip_prefix("m:") {
                t.by_model.insert(m.to_string(), *v);
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

/// One jobs stream's backlog: what autoscaling and the queue metrics read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StreamBacklog {
    /// The model name whose stream it is; `None` for the shared stream (model references).
    pub model: Option<String>,
    /// The stream's key (what KEDA's redis-streams scaler is given).
    pub stream: String,
    /// Entries never delivered yet.
    pub queued: u64,
    /// Entries delivered and not yet acknowledged (running, or read by a worker that died).
    pub pending: u64,
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
    renew: Script,
    finish: Script,
    hand_back: Script,
    defer: Script,
    promote: Script,
    cancel: Script,
    dead_letter: Script,
    read: Script,
    requeue: Script,
    claim_correlation: Script,
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
            claim_correlation: Script::new(include_str!("lua/claim_correlation.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            finish: with_tally(include_str!("lua/finish.lua")),
            hand_back: Script::new(include_str!("lua/hand_back.lua")),
            defer: Script::new(include_str!("lua/defer.lua")),
            promote: Script::new(include_str!("lua/promote.lua")),
            cancel: with_tally(include_str!("lua/cancel.lua")),
            dead_letter: with_tally(include_str!("lua/dead_letter.lua")),
            read: Script::new(include_str!("lua/read.lua")),
            requeue: Script::new(include_str!("lua/requeue.lua")),
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

/// A delivery from a consumer group's stream: a [`Delivery`] from the jobs stream (the workers'
/// group) or a [`ResultDelivery`] from the results stream (the collectors'). Each says where it
/// is read from and how its fields decode; reading, reclaiming and the checks every entry gets
/// (shape, size, UTF-8, repeated names) are shared. Every entry becomes one delivery, decoded or
/// with the reason it could not be.
trait StreamEntry: Sized {
    /// What a well-formed entry decodes to.
    type Decoded;
    /// The consumer group that reads the stream.
    const GROUP: &'static str;
    /// Largest entry decoded; a larger one gets the reason instead.
    const MAX_BYTES: usize;
    /// Decodes the entry's fields, or says why they cannot be.
    fn decode(fields: &HashMap<&str, &str>) -> Result<Self::Decoded, String>;
    /// The delivery of entry `entry_id` of `stream` with its raw `fields` and what they decoded
    /// to.
    fn new(
        stream: String,
        entry_id: String,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        decoded: Result<Self::Decoded, String>,
    ) -> Self;

    /// The delivery of `entry`, read from `stream`.
    fn from_raw(stream: String, entry: RawEntry) -> Self {
        let decoded = entry
            .text_fields(Self::MAX_BYTES)
            .and_then(|fields| Self::decode(&fields));
        Self::new(stream, entry.id, entry.fields, decoded)
    }
}

impl Queue {
    /// Reads up to `count` new entries of `stream` for `consumer`, waiting up to `block_ms`.
    async fn read_entries<E: StreamEntry>(
        &self,
        stream: &str,
        consumer: &str,
        count: usize,
        block_ms: u64,
    ) -> Result<Vec<E>, QueueError> {
        let entries = self
            .read_group(&[stream], E::GROUP, consumer, count, block_ms)
            .await?;
        Ok(entries
            .into_iter()
            .map(|(stream, e)| E::from_raw(stream, e))
            .collect())
    }

    /// Takes over up to `count` entries of `stream` idle longer than `min_idle_ms`.
    async fn reclaim_entries<E: StreamEntry>(
        &self,
        stream: &str,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<E>, QueueError> {
        let entries = match self
            .autoclaim(stream, E::GROUP, consumer, min_idle_ms, count)
            .await
        {
            // The group is gone with its pending entries: nothing to take over.
            Err(e) if is_nogroup(&e) => {
                self.recreate_group(stream, E::GROUP).await?;
                Vec::new()
            }
            other => other?,
        };
        Ok(entries
            .into_iter()
            .map(|e| E::from_raw(stream.to_string(), e))
            .collect())
    }
}

/// Whether `e` is Redis's `NOGROUP`: the stream or its consumer group does not exist.
pub(crate) fn is_nogroup(e: &QueueError) -> bool {
    matches!(e, QueueError::Redis { message, .. } if message.contains("NOGROUP"))
}

/// The warning that a consumer group was created after a read found it missing.
pub(crate) fn warn_recreated(stream: &str, group: &str) {
    tracing::warn!(
        stream,
        group,
        "consumer group {group} of stream {stream} was missing (Redis lost its data: FLUSHALL, or a new empty server; or the stream is new); created it, reading on"
    );
}

/// The reply of an `XREADGROUP` (or of `read.lua`, which has its shape) as (stream, entry)
/// pairs: RESP2 `[[stream, entries], ...]`, RESP3 `{stream: entries}`, or nil when nothing came.
fn parse_streams(op: &'static str, reply: Value) -> Result<Vec<(String, RawEntry)>, QueueError> {
    let proto = |detail: String| QueueError::Protocol { op, detail };
    let per_stream: Vec<(Value, Value)> = match reply {
        Value::Nil => Vec::new(),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => {
                    let mut pair = pair.into_iter();
                    Ok((pair.next().expect("two"), pair.next().expect("two")))
                }
                other => Err(proto(format!("a stream of shape {}", shape(&other)))),
            })
            .collect::<Result<_, _>>()?,
        Value::Map(streams) => streams,
        other => return Err(proto(format!("a reply of shape {}", shape(&other)))),
    };
    let mut entries = Vec::new();
    for (name, list) in per_stream {
        let name = bytes_of(name)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| proto("a stream without a name".to_string()))?;
        for entry in RawEntry::parse_list(op, list)? {
            entries.push((name.clone(), entry));
        }
    }
    Ok(entries)
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
enum StreamOf<'a> {
    /// This jobs stream, read by the workers.
    Jobs(&'a str),
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
    async fn create_group(&self, stream: &str, group: &str) -> Result<bool, QueueError> {
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
                smc: None,
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
            grading: None,
            grade: None,
            grade_error: None,
            token_log_p: Vec::new(),
            prompt_tokens: None,
            stop: None,
            // The prompt comes from a job entry, so its JSON is under one entry's size.
            prompt: Some(powerfleet_jobs::Prompt::Text(
                "\u{1}".repeat(MAX_ENTRY_BYTES / 6),
            )),
            alpha: None,
            error_code: Some(powerfleet_jobs::ErrorCode::ContextLengthExceeded),
            // The manifest at its largest: every setting, a label of the longest, in 4-byte
            // characters escaped nowhere.
            config: Some(
                powerfleet_sampler::SamplerConfig {
                    top_k: Some(u32::MAX),
                    particles: Some(4096),
                    ess_threshold: Some(0.123_456_789_012_345_67),
                    ..powerfleet_sampler::SamplerConfig::new(Method::PowerSmc)
                }
                .validate()
                .unwrap()
                .manifest(),
            ),
            label: Some(
                "\u{1F600}"
                    .repeat(powerfleet_jobs::MAX_LABEL_LEN)
                    .parse()
                    .unwrap(),
            ),
            version: Some(powerfleet_jobs::VERSION.to_string()),
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
