//! The Redis key schema. Every key of a deployment carries the same hash tag, `{NAMESPACE}`, so
//! the Lua scripts, which touch a job's keys and the streams together, stay valid on Redis Cluster.

use powerfleet_jobs::{BatchId, CorrelationId, JobId, ModelRoute};

/// Consumer group of the workers on the jobs stream.
pub const WORKER_GROUP: &str = "workers";
/// Consumer group of the collectors on the results stream.
pub const COLLECTOR_GROUP: &str = "collectors";

/// Key names of one deployment (namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under namespace `ns`: `pf:{ns}:...`.
    pub fn new(ns: &str) -> Keys {
        Keys {
            prefix: format!("pf:{{{ns}}}"),
        }
    }

    /// The shared jobs stream, which every worker reads: jobs whose model is a reference
    /// (`toy:…`, a server URL) rather than a name, and jobs enqueued before jobs were routed by
    /// model name.
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }
    /// The jobs stream of model name `name`, read only by the workers that map the name. The
    /// name is percent-encoded (bytes other than `A-Z a-z 0-9 - _ .`), so every name gets a key
    /// of its own that is plain to read and to give KEDA.
    pub fn model_jobs(&self, name: &str) -> String {
        let mut key = format!("{}:jobs:model:", self.prefix);
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                key.push(b as char);
            } else {
                key.push_str(&format!("%{b:02X}"));
            }
        }
        key
    }
    /// The jobs stream a job of model `model` goes to: its name's, or the shared one for a
    /// reference.
    pub fn stream_for(&self, model: &str) -> String {
        match ModelRoute::of(model) {
            ModelRoute::Reference => self.jobs(),
            ModelRoute::Name(name) => self.model_jobs(name),
        }
    }
    /// The set of every model name's jobs stream (the shared one is not in it).
    pub fn model_streams(&self) -> String {
        format!("{}:streams", self.prefix)
    }
    /// The hash of the workers' registrations, by worker id.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }
    /// The stream of finished jobs' results, for collectors.
    pub fn results(&self) -> String {
        format!("{}:results", self.prefix)
    }
    /// The submissions stream: one record per submitted batch, for the collectors
    /// ([`powerfleet_jobs::SubmissionRecord`]); entries are deleted once stored.
    pub fn submissions(&self) -> String {
        format!("{}:submissions", self.prefix)
    }
    /// The dead-letter stream: entries given up on, with the reason.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }
    /// The sorted set of jobs waiting for their model, scored by when they may run again.
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.prefix)
    }
    /// A job's state hash.
    pub fn job(&self, id: JobId) -> String {
        format!("{}:job:{id}", self.prefix)
    }
    /// A job's latest chain checkpoint.
    pub fn checkpoint(&self, id: JobId) -> String {
        format!("{}:ckpt:{id}", self.prefix)
    }
    /// The set of job ids under a correlation id.
    pub fn correlation(&self, id: &CorrelationId) -> String {
        format!("{}:corr:{id}", self.prefix)
    }
    /// The set of job ids of a batch.
    pub fn batch(&self, id: BatchId) -> String {
        format!("{}:batch:{id}", self.prefix)
    }
    /// The tally of a correlation id's jobs: how many, and how many have finished, by status and
    /// method.
    pub fn correlation_tally(&self, id: &CorrelationId) -> String {
        format!("{}:tally:corr:{id}", self.prefix)
    }
    /// The tally of a batch's jobs.
    pub fn batch_tally(&self, id: BatchId) -> String {
        format!("{}:tally:batch:{id}", self.prefix)
    }
    /// A prompt stored once for the jobs that reference it, under the SHA-256 of its JSON.
    pub fn prompt(&self, sha256: &str) -> String {
        format!("{}:prompt:{sha256}", self.prefix)
    }
    /// The claim of a correlation id by the one request that may create its jobs (an
    /// OpenAI-compatible completion's).
    pub fn correlation_claim(&self, id: &CorrelationId) -> String {
        format!("{}:claim:corr:{id}", self.prefix)
    }
    /// The record of a client's submission key.
    pub fn submission(&self, key: &str) -> String {
        format!("{}:submission:{key}", self.prefix)
    }
    /// A key no data is ever stored under (fills unused KEYS slots of scripts).
    pub fn unused(&self) -> String {
        format!("{}:unused", self.prefix)
    }
}

/// A namespace that [`validate_namespace`] refuses; it carries the namespace given.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("namespace must be 1 to 64 characters of A-Z a-z 0-9 - _ ., got {0:?}")]
pub struct InvalidNamespace(pub String);

/// Checks a namespace: short, and free of the characters that would break the hash tag.
pub fn validate_namespace(ns: &str) -> Result<(), InvalidNamespace> {
    let ok = !ns.is_empty()
        && ns.len() <= 64
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidNamespace(ns.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot-relevant part of a key: the text between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn every_key_shares_the_namespace_hash_tag() {
        let k = Keys::new("prod");
        let job = JobId::new();
        for key in [
            k.jobs(),
            k.model_jobs("Qwen/Qwen2.5 {x}"),
            k.stream_for("m1"),
            k.model_streams(),
            k.workers(),
            k.results(),
            k.dead(),
            k.job(job),
            k.checkpoint(job),
            k.correlation(&"c".parse().unwrap()),
            k.batch(BatchId::new()),
            k.submission("s"),
            k.prompt("ab12"),
            k.correlation_claim(&"c".parse().unwrap()),
            k.unused(),
        ] {
            assert_eq!(hash_tag(&key), "prod", "{key}");
        }
    }

    #[test]
    fn model_names_get_streams_of_their_own_and_references_share_one() {
        let k = Keys::new("prod");
        assert_eq!(k.stream_for("toy:pivot"), k.jobs());
        assert_eq!(k.stream_for("vllm+http://gpu:8000?model=m"), k.jobs());
        assert_eq!(k.stream_for("qwen"), "pf:{prod}:jobs:model:qwen");
        assert_eq!(
            k.model_jobs("Qwen/Qwen2.5 7b"),
            "pf:{prod}:jobs:model:Qwen%2FQwen2.5%207b"
        );
        // Distinct names, distinct streams: the encoding is one-to-one.
        assert_ne!(k.model_jobs("a%2F"), k.model_jobs("a/"));
    }

    #[test]
    fn namespaces_are_checked() {
        assert!(validate_namespace("team-a.v2").is_ok());
        for bad in ["", "a}b", "a{b", "with space", &"x".repeat(65)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }
}
