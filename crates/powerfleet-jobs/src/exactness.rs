//! [`Exactness`]: where a result's log-probabilities came from and how exact they are.
//!
//! Stored with every result as one line of text (`JobResult.exactness`), which stays the wire
//! form: [`Exactness`] writes exactly that text and reads back every text it writes; a text it
//! does not know (written by another version) is kept as [`Exactness::Other`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a result's numbers came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exactness {
    /// An in-process toy model: every log p and log q exact.
    Toy,
    /// An inference server: log p raw at temperature 1 over the full vocabulary, log q of the
    /// top-`top_k` proposal, both read as `source` describes.
    Server {
        /// The K of the top-K proposal.
        top_k: u32,
        /// The server's endpoint and log-probability mode.
        source: String,
    },
    /// A hosted chat API: one sample, no log-probabilities.
    Hosted {
        /// The API's provider.
        provider: String,
        /// The provider's model name.
        model: String,
    },
    /// A description this build does not parse, kept as written.
    Other(String),
}

const TOY: &str = "exact: in-process toy model";
const SERVER_HEAD: &str = "exact: log p raw at temperature 1; log q of the top-";
const SERVER_MID: &str = " proposal (";
const HOSTED_HEAD: &str = "single sample from a hosted chat API (";
const HOSTED_TAIL: &str = "); no log-probabilities";

impl Exactness {
    /// Reads the text [`Exactness`]'s `Display` writes; any other text is [`Exactness::Other`].
    pub fn parse(text: &str) -> Exactness {
        Self::known(text).unwrap_or_else(|| Exactness::Other(text.to_string()))
    }

    fn known(text: &str) -> Option<Exactness> {
        if text == TOY {
            return Some(Exactness::Toy);
        }
        if let Some(rest) = text.strip_prefix(SERVER_HEAD) {
            let (k, source) = rest.split_once(SERVER_MID)?;
            let source = source.strip_suffix(')')?;
            let top_k: u32 = k.parse().ok()?;
            if top_k.to_string() != k {
                return None;
            }
            return Some(Exactness::Server {
                top_k,
                source: source.to_string(),
            });
        }
        let inner = text.strip_prefix(HOSTED_HEAD)?.strip_suffix(HOSTED_TAIL)?;
        let (provider, model) = inner.split_once(' ')?;
        Some(Exactness::Hosted {
            provider: provider.to_string(),
            model: model.to_string(),
        })
    }
}

impl fmt::Display for Exactness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exactness::Toy => f.write_str(TOY),
            Exactness::Server { top_k, source } => {
                write!(f, "{SERVER_HEAD}{top_k}{SERVER_MID}{source})")
            }
            Exactness::Hosted { provider, model } => {
                write!(f, "{HOSTED_HEAD}{provider} {model}{HOSTED_TAIL}")
            }
            Exactness::Other(text) => f.write_str(text),
        }
    }
}

impl Serialize for Exactness {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Exactness {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Exactness, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Exactness::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts results have carried since the field exists, one per kind of backend.
    const STORED: [&str; 3] = [
        "exact: in-process toy model",
        "exact: log p raw at temperature 1; log q of the top-20 proposal (vLLM /v1/completions in raw-logprobs mode)",
        "single sample from a hosted chat API (OpenAi gpt-4o-mini); no log-probabilities",
    ];

    #[test]
    fn stored_texts_read_as_their_kind_and_write_back_unchanged() {
        let read: Vec<Exactness> = STORED.iter().map(|t| Exactness::parse(t)).collect();
        assert_eq!(read[0], Exactness::Toy);
        assert_eq!(
            read[1],
            Exactness::Server {
                top_k: 20,
                source: "vLLM /v1/completions in raw-logprobs mode".into()
            }
        );
        assert_eq!(
            read[2],
            Exactness::Hosted {
                provider: "OpenAi".into(),
                model: "gpt-4o-mini".into()
            }
        );
        for (text, e) in STORED.iter().zip(&read) {
            assert_eq!(e.to_string(), *text);
            let json = serde_json::to_string(e).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(&serde_json::from_str::<Exactness>(&json).unwrap(), e);
        }
    }

    #[test]
    fn an_unknown_text_is_kept_as_written() {
        for text in [
            "",
            "exact: log p raw at temperature 1; log q of the top-x proposal (y)",
            "exact: log p raw at temperature 1; log q of the top-07 proposal (y)",
            "something a later version writes",
        ] {
            let e = Exactness::parse(text);
            assert_eq!(e, Exactness::Other(text.into()), "{text}");
            assert_eq!(e.to_string(), text);
        }
    }
}
