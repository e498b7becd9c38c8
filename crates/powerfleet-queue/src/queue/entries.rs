//! What Redis sends, decoded: reply values, stream entries (raw bytes checked field by field)
//! and the deliveries of the jobs and results streams they become, with the shared reading and
//! reclaiming of a consumer group's entries.

use super::*;

/// Largest job entry accepted from the jobs stream; larger ones are dead-lettered.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Largest result entry accepted from the results stream. Results are written by workers, not
/// users: the limit only has to hold the largest valid result (65,536 tokens with their text and
/// up to 4,096 blocks of statistics stay far below it).
pub const MAX_RESULT_BYTES: usize = 16 << 20;

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

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The bytes of a string reply.
pub(super) fn bytes_of(v: Value) -> Option<Vec<u8>> {
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
pub(super) fn shown(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
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
pub(super) fn shape(v: &Value) -> String {
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
pub(super) trait StreamEntry: Sized {
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
    pub(super) async fn read_entries<E: StreamEntry>(
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
    pub(super) async fn reclaim_entries<E: StreamEntry>(
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

/// The reply of an `XREADGROUP` (or of `read.lua`, which has its shape) as (stream, entry)
/// pairs: RESP2 `[[stream, entries], ...]`, RESP3 `{stream: entries}`, or nil when nothing came.
pub(super) fn parse_streams(
    op: &'static str,
    reply: Value,
) -> Result<Vec<(String, RawEntry)>, QueueError> {
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
pub(super) struct RawEntry {
    pub(super) id: String,
    /// Its fields, raw, in order.
    pub(super) fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// Why the entry's shape is not that of a stream entry, if it is not.
    pub(super) malformed: Option<String>,
}

impl RawEntry {
    /// Parses `[id, [name, value, ...]]`; `None` for a nil (an entry deleted meanwhile).
    pub(super) fn parse(op: &'static str, v: Value) -> Result<Option<RawEntry>, QueueError> {
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
    pub(super) fn parse_list(op: &'static str, v: Value) -> Result<Vec<RawEntry>, QueueError> {
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
    pub(super) fn text_fields(&self, limit: usize) -> Result<HashMap<&str, &str>, String> {
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
pub(super) fn payload_of(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
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
pub(super) enum StreamOf<'a> {
    /// This jobs stream, read by the workers.
    Jobs(&'a str),
    /// The results stream, read by the collectors.
    Results,
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
            format: Some(powerfleet_jobs::ResultFormat::CURRENT),
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
                lookahead: Some(powerfleet_sampler::LookaheadStats {
                    tokens: u64::MAX,
                    rollouts: u64::MAX,
                    rollout_tokens: u64::MAX,
                    exact_candidates: u64::MAX,
                    clipped: u64::MAX,
                }),
            },
            attempts: u32::MAX,
            error: None,
            submitted_at_ms: u64::MAX,
            started_at_ms: Some(u64::MAX),
            finished_at_ms: u64::MAX,
            exactness: Some(powerfleet_jobs::Exactness::Other("x".repeat(300))),
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
}
