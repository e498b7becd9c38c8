//! What a chain's numbers depend on besides its own configuration: the backend it ran with
//! ([`Pin`]), recorded with every checkpoint (a chain resumes only under the same pin) and with
//! every result (a study says what made it).
//!
//! The JSON is the one workers have always written: `{"kind": "toy", "model": NAME}` for a toy
//! model, the server's fields (`kind` is the server type's reference prefix, `llamacpp`, `vllm`,
//! `sglang`) for an inference server. Results and checkpoints written before `deterministic`
//! existed read with it unknown.

use powerfleet_sampler::TokenId;
use serde::{Deserialize, Serialize};

/// The backend a chain ran with: what its stored log p and log q depend on besides the chain's
/// configuration (which holds the temperature and the job's top-k).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Pin {
    /// An in-process toy model: exact, and deterministic by construction.
    #[serde(rename = "toy")]
    Toy {
        /// The model's name (`toy:pivot`, or the path it was loaded from).
        model: String,
    },
    /// An inference server.
    #[serde(untagged)]
    Server(ServerPin),
}

/// What a chain's log q depends on when an inference server answers: the server type, the
/// served model, the default K, the terminal tokens and what the requests pin on the server;
/// and what the start-up probe found about its reproducibility.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPin {
    /// The server type, as its references spell it: `llamacpp`, `vllm` or `sglang`.
    pub kind: String,
    /// The served model: llama.cpp's `model_alias`, the id vLLM and SGLang list at `/v1/models`.
    pub served_model: String,
    /// The reference's default top-K, used when the job sets no top-k.
    pub k: u32,
    /// Token ids that end a generation, sorted.
    pub terminal_tokens: Vec<TokenId>,
    /// What the request bodies pin on the server: for llama.cpp the sampler chain and every
    /// setting that could change q.
    pub sampler: String,
    /// Whether the start-up probe saw the server answer the same request with bit-identical
    /// log-probabilities every time (docs/backends.md, "Reproducibility"); `None` in pins
    /// written before the probe checked. Not part of what a resume must match: a server's
    /// floating-point noise does not change the proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deterministic: Option<bool>,
}

impl Pin {
    /// Whether the backend answers the same request with the same numbers: always for a toy
    /// model, what the start-up probe saw for a server, `None` when the pin predates the check.
    pub fn deterministic(&self) -> Option<bool> {
        match self {
            Pin::Toy { .. } => Some(true),
            Pin::Server(s) => s.deterministic,
        }
    }

    /// The fields in which `self` (a checkpoint's pin) and `mine` (this worker's) differ, as
    /// "field: checkpoint X, this worker Y" sorted by field, values as JSON (`k: checkpoint 64,
    /// this worker 20`); empty when a chain checkpointed under `self` may continue under `mine`.
    /// `deterministic` is left out: it describes the server's noise, not the proposal.
    pub fn differences(&self, mine: &Pin) -> Vec<String> {
        let fields = |pin: &Pin| {
            let mut map = match serde_json::to_value(pin).expect("a pin serializes") {
                serde_json::Value::Object(map) => map,
                _ => unreachable!("a pin serializes to an object"),
            };
            map.remove("deterministic");
            map
        };
        let (a, b) = (fields(self), fields(mine));
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        let show = |v: Option<&serde_json::Value>| v.map_or("none".to_string(), |v| v.to_string());
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| {
                format!(
                    "{k}: checkpoint {}, this worker {}",
                    show(a.get(k)),
                    show(b.get(k))
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(k: u32, deterministic: Option<bool>) -> Pin {
        Pin::Server(ServerPin {
            kind: "llamacpp".into(),
            served_model: "tiny".into(),
            k,
            terminal_tokens: vec![2],
            sampler: "llama.cpp /completion v2".into(),
            deterministic,
        })
    }

    #[test]
    fn pins_are_the_json_workers_have_always_written() {
        let toy = Pin::Toy {
            model: "toy:pivot".into(),
        };
        let json = json!({"kind": "toy", "model": "toy:pivot"});
        assert_eq!(serde_json::to_value(&toy).unwrap(), json);
        assert_eq!(serde_json::from_value::<Pin>(json).unwrap(), toy);
        let old = json!({"k": 98, "kind": "llamacpp", "sampler": "llama.cpp /completion v2",
            "served_model": "tiny", "terminal_tokens": [2]});
        let read = serde_json::from_value::<Pin>(old.clone()).unwrap();
        assert_eq!(read, server(98, None));
        assert_eq!(serde_json::to_value(&read).unwrap(), old);
        let mut new = old;
        new["deterministic"] = json!(false);
        assert_eq!(
            serde_json::from_value::<Pin>(new.clone()).unwrap(),
            server(98, Some(false))
        );
        assert_eq!(serde_json::to_value(server(98, Some(false))).unwrap(), new);
        assert!(serde_json::from_value::<Pin>(json!({"kind": "vllm"})).is_err());
    }

    #[test]
    fn determinism_is_known_for_toys_and_probed_servers() {
        let toy = Pin::Toy { model: "t".into() };
        assert_eq!(toy.deterministic(), Some(true));
        assert_eq!(server(1, Some(false)).deterministic(), Some(false));
        assert_eq!(server(1, None).deterministic(), None);
    }

    #[test]
    fn differences_name_each_field_but_not_the_servers_noise() {
        assert!(
            server(64, None)
                .differences(&server(64, Some(true)))
                .is_empty()
        );
        assert!(
            server(64, Some(false))
                .differences(&server(64, Some(true)))
                .is_empty()
        );
        assert_eq!(
            server(64, None).differences(&server(20, Some(true))),
            vec!["k: checkpoint 64, this worker 20"]
        );
        let toy = |m: &str| Pin::Toy { model: m.into() };
        assert_eq!(
            toy("toy:pivot").differences(&toy("toy:tiny")),
            vec![r#"model: checkpoint "toy:pivot", this worker "toy:tiny""#]
        );
        let mixed = toy("toy:pivot").differences(&server(20, None));
        assert!(
            mixed.contains(&r#"kind: checkpoint "toy", this worker "llamacpp""#.to_string()),
            "{mixed:?}"
        );
        assert!(
            mixed.contains(&r#"model: checkpoint "toy:pivot", this worker none"#.to_string()),
            "{mixed:?}"
        );
    }
}
