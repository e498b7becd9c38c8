//! Prompts stored once per submission and referenced by its jobs: a [`PromptRef`] names a prompt
//! by the SHA-256 of its JSON, which the queue keeps once under a content-addressed key, so a
//! prompt sent with many seeds, methods or chains is held once, not once per job and result.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Prompt;

/// A reference to a stored prompt: the SHA-256 of its JSON (`{"text": ...}`, `{"tokens": ...}`
/// or `{"messages": ...}`) in lowercase hex, and its size as [`Prompt::byte_len`] counts it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawRef", deny_unknown_fields)]
pub struct PromptRef {
    /// SHA-256 of the prompt's JSON, 64 lowercase hex digits.
    pub sha256: String,
    /// The prompt's bytes: its text, 4 per token id, or its messages' roles and contents.
    pub bytes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRef {
    sha256: String,
    bytes: u64,
}

impl TryFrom<RawRef> for PromptRef {
    type Error = String;
    fn try_from(raw: RawRef) -> Result<Self, String> {
        let hex = raw.sha256.len() == 64
            && raw
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(format!(
                "stored prompt sha256 must be 64 lowercase hex digits, got {:?}",
                raw.sha256.chars().take(80).collect::<String>()
            ));
        }
        Ok(PromptRef {
            sha256: raw.sha256,
            bytes: raw.bytes,
        })
    }
}

/// A prompt in the form it is stored: its reference and the JSON the reference hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPrompt {
    /// What the jobs carry.
    pub reference: PromptRef,
    /// What the store keeps: the prompt as JSON.
    pub json: String,
}

impl StoredPrompt {
    /// The stored form of `prompt` (a reference is stored as it is: it never names another).
    pub fn of(prompt: &Prompt) -> StoredPrompt {
        let json = serde_json::to_string(prompt).expect("a prompt serializes");
        StoredPrompt {
            reference: PromptRef {
                sha256: sha256_hex(json.as_bytes()),
                bytes: prompt.byte_len() as u64,
            },
            json,
        }
    }
}

/// Why a stored prompt cannot stand for its reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nothing is stored under the reference: it expired with the retention, or was evicted.
    #[error(
        "the job's prompt (stored as sha256 {sha256}) is gone from Redis: it expired after the retention (--retention-secs) or was evicted (run Redis with maxmemory-policy noeviction); submit the job again"
    )]
    Missing {
        /// The reference's hash.
        sha256: String,
    },
    /// What is stored does not hash to the reference, or is no prompt.
    #[error("the prompt stored as sha256 {sha256} is not the one the job references: {detail}")]
    Corrupt {
        /// The reference's hash.
        sha256: String,
        /// What is wrong with it.
        detail: String,
    },
}

impl PromptRef {
    /// The prompt stored as `json` (`None`: nothing was stored), checked against the reference:
    /// its hash must match and it must be a prompt, never another reference.
    pub fn resolve(&self, json: Option<&[u8]>) -> Result<Prompt, ResolveError> {
        let corrupt = |detail: String| ResolveError::Corrupt {
            sha256: self.sha256.clone(),
            detail,
        };
        let Some(json) = json else {
            return Err(ResolveError::Missing {
                sha256: self.sha256.clone(),
            });
        };
        let actual = sha256_hex(json);
        if actual != self.sha256 {
            return Err(corrupt(format!("its content hashes to {actual}")));
        }
        match serde_json::from_slice::<Prompt>(json) {
            Ok(Prompt::Stored(_)) => Err(corrupt("it is itself a reference".into())),
            Ok(prompt) => Ok(prompt),
            Err(e) => Err(corrupt(format!("it is not a prompt ({e})"))),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_prompt_resolves_to_itself_and_nothing_else() {
        let prompt = Prompt::Text("what is 2+2?".into());
        let stored = StoredPrompt::of(&prompt);
        assert_eq!(stored.json, r#"{"text":"what is 2+2?"}"#);
        assert_eq!(stored.reference.bytes, 12);
        assert_eq!(
            stored.reference.resolve(Some(stored.json.as_bytes())),
            Ok(prompt.clone())
        );
        // Same content, same address; another kind of prompt, another address.
        assert_eq!(
            StoredPrompt::of(&prompt.clone()).reference,
            stored.reference
        );
        let tokens = StoredPrompt::of(&Prompt::Tokens(vec![1, 2]));
        assert_ne!(tokens.reference, stored.reference);
        let e = stored
            .reference
            .resolve(Some(tokens.json.as_bytes()))
            .unwrap_err();
        assert!(matches!(e, ResolveError::Corrupt { .. }), "{e}");
        let e = stored.reference.resolve(None).unwrap_err().to_string();
        assert!(
            e.contains("gone from Redis") && e.contains("submit the job again"),
            "{e}"
        );
        let nested = StoredPrompt::of(&Prompt::Stored(stored.reference.clone()));
        assert!(matches!(
            nested.reference.resolve(Some(nested.json.as_bytes())),
            Err(ResolveError::Corrupt { .. })
        ));
    }

    #[test]
    fn a_reference_travels_as_the_prompt_of_a_spec_and_its_hash_is_checked() {
        let stored = StoredPrompt::of(&Prompt::Text("x".into()));
        let json = serde_json::to_string(&Prompt::Stored(stored.reference.clone())).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"stored":{{"sha256":"{}","bytes":1}}}}"#,
                stored.reference.sha256
            )
        );
        assert_eq!(
            serde_json::from_str::<Prompt>(&json).unwrap(),
            Prompt::Stored(stored.reference)
        );
        for bad in [
            r#"{"stored":{"sha256":"}{x","bytes":1}}"#,
            r#"{"stored":{"sha256":"ab","bytes":1,"more":2}}"#,
        ] {
            assert!(serde_json::from_str::<Prompt>(bad).is_err(), "{bad}");
        }
    }
}
