//! The error of every queue operation.

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

/// Whether `e` is Redis's `NOGROUP`: the stream or its consumer group does not exist.
pub(crate) fn is_nogroup(e: &QueueError) -> bool {
    matches!(e, QueueError::Redis { message, .. } if message.contains("NOGROUP"))
}
