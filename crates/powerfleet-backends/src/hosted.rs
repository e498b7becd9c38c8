//! Hosted chat APIs (OpenAI-compatible chat completions, Anthropic messages, Gemini): one sample
//! at a temperature, for the single-sample methods. They cannot run MCMC (see
//! [`crate::HOSTED_CHAT_REFUSAL`]) and return no log-probabilities.
//!
//! References: `openai+https://api.openai.com/v1?model=gpt-4o-mini`, `anthropic+https://api.anthropic.com?model=...`,
//! `gemini+https://generativelanguage.googleapis.com?model=...`; the API key is read from the
//! environment variable named by `key_env` (default `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`,
//! `GEMINI_API_KEY`) and never appears in messages.

use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{BackendError, ReferenceError, classify_status, error_chain};
use crate::redact::{redact_reference, redact_url};

/// Which hosted API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI chat completions, or any server that speaks the same API.
    OpenAi,
    /// Anthropic messages.
    Anthropic,
    /// Google Gemini generateContent.
    Gemini,
}

/// A parsed hosted-API reference. Its `Debug` shows the base URL redacted.
#[derive(Clone, PartialEq)]
pub struct HostedReference {
    /// The API.
    pub provider: Provider,
    /// Base URL without a trailing slash, credentials included: show it only through
    /// [`redact_url`].
    pub base: String,
    /// Model name.
    pub model: String,
    /// Environment variable holding the API key.
    pub key_env: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for HostedReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedReference")
            .field("provider", &self.provider)
            .field("base", &redact_url(&self.base))
            .field("model", &self.model)
            .field("key_env", &self.key_env)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Parses `PROVIDER+URL?model=NAME[&key_env=VAR][&timeout_s=N]`.
pub fn parse_hosted(raw: &str) -> Result<HostedReference, ReferenceError> {
    // The reference as messages show it.
    let reference = redact_reference(raw);
    let (scheme, rest) = raw
        .split_once('+')
        .ok_or_else(|| ReferenceError(format!("{reference:?} is not a hosted-API reference")))?;
    let (provider, default_env) = match scheme {
        "openai" => (Provider::OpenAi, "OPENAI_API_KEY"),
        "anthropic" => (Provider::Anthropic, "ANTHROPIC_API_KEY"),
        "gemini" => (Provider::Gemini, "GEMINI_API_KEY"),
        other => {
            return Err(ReferenceError(format!(
                "{other:?} is not a hosted API; use openai, anthropic or gemini"
            )));
        }
    };
    let (url, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ReferenceError(format!(
            "{reference:?}: the URL must start with https:// (or http:// for a local compatible server)"
        )));
    }
    let mut r = HostedReference {
        provider,
        base: url.trim_end_matches('/').to_string(),
        model: String::new(),
        key_env: default_env.to_string(),
        timeout: crate::reference::DEFAULT_REQUEST_TIMEOUT,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("model", v)) => r.model = v.to_string(),
            Some(("key_env", v)) => r.key_env = v.to_string(),
            Some(("timeout_s", v)) => {
                r.timeout = Duration::from_secs(v.parse().map_err(|_| {
                    ReferenceError(format!(
                        "timeout_s must be a whole number of seconds, got {v:?}"
                    ))
                })?)
            }
            _ => {
                return Err(ReferenceError(format!(
                    "unknown option {:?} in {reference:?}; known: model, key_env, timeout_s",
                    redact_url(pair)
                )));
            }
        }
    }
    if r.model.is_empty() {
        return Err(ReferenceError(format!("{reference:?} needs ?model=NAME")));
    }
    Ok(r)
}

/// A client of one hosted model.
#[derive(Debug)]
pub struct HostedModel {
    reference: HostedReference,
    client: reqwest::Client,
}

impl HostedModel {
    /// A client (no request is made yet).
    pub fn new(reference: HostedReference) -> HostedModel {
        powerfleet_common::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(reference.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client with timeouts builds");
        HostedModel { reference, client }
    }

    /// The parsed reference.
    pub fn reference(&self) -> &HostedReference {
        &self.reference
    }

    /// Recorded with every result: what these numbers are.
    pub fn exactness(&self) -> powerfleet_jobs::Exactness {
        powerfleet_jobs::Exactness::Hosted {
            provider: format!("{:?}", self.reference.provider),
            model: self.reference.model.clone(),
        }
    }

    /// One completion of `prompt` at `temperature`, at most `max_tokens` tokens.
    pub async fn sample(
        &self,
        prompt: &str,
        temperature: f64,
        max_tokens: u32,
        seed: u64,
    ) -> Result<String, BackendError> {
        let key = std::env::var(&self.reference.key_env).map_err(|_| {
            BackendError::Rejected(format!(
                "the API key variable {} is not set on this worker",
                self.reference.key_env
            ))
        })?;
        let r = &self.reference;
        let url = match r.provider {
            Provider::OpenAi => format!("{}/chat/completions", r.base),
            Provider::Anthropic => format!("{}/v1/messages", r.base),
            Provider::Gemini => format!("{}/v1beta/models/{}:generateContent", r.base, r.model),
        };
        let request = match r.provider {
            Provider::OpenAi => self
                .client
                .post(&url)
                .bearer_auth(&key)
                .json(&json!({"model": r.model, "messages": [{"role": "user", "content": prompt}],
                    "temperature": temperature, "max_tokens": max_tokens, "seed": seed})),
            Provider::Anthropic => self
                .client
                .post(&url)
                .header("x-api-key", &key)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": r.model, "max_tokens": max_tokens, "temperature": temperature.min(1.0),
                    "messages": [{"role": "user", "content": prompt}]})),
            Provider::Gemini => self
                .client
                .post(&url)
                .header("x-goog-api-key", &key)
                .json(&json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                    "generationConfig": {"temperature": temperature, "maxOutputTokens": max_tokens, "seed": seed}})),
        };
        // Messages name the URL redacted, never as reqwest quotes it.
        let shown = redact_url(&url);
        let response = request.send().await.map_err(|e| {
            BackendError::Unavailable(format!(
                "{:?} request to {shown} failed: {}",
                r.provider,
                error_chain(&e.without_url())
            ))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            BackendError::Unavailable(format!(
                "{:?} request to {shown}: reading the answer failed: {}",
                r.provider,
                error_chain(&e.without_url())
            ))
        })?;
        let scrubbed = if key.is_empty() {
            text.clone()
        } else {
            text.replace(&key, "***")
        };
        if !status.is_success() {
            return Err(classify_status(
                status,
                format!(
                    "{:?} answered {status}: {}",
                    r.provider,
                    first_chars(&scrubbed)
                ),
            ));
        }
        let body: Value = serde_json::from_str(&text).map_err(|e| {
            BackendError::Transient(format!("{:?} answered malformed JSON: {e}", r.provider))
        })?;
        let content = match r.provider {
            Provider::OpenAi => body.pointer("/choices/0/message/content"),
            Provider::Anthropic => body.pointer("/content/0/text"),
            Provider::Gemini => body.pointer("/candidates/0/content/parts/0/text"),
        };
        content
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                BackendError::Transient(format!(
                    "{:?} answered without a completion: {}",
                    r.provider,
                    first_chars(&scrubbed)
                ))
            })
    }
}

fn first_chars(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_references_parse() {
        let r =
            parse_hosted("openai+http://gateway:8000/v1?model=gpt-4o-mini&key_env=MY_KEY").unwrap();
        assert_eq!(
            (
                r.provider,
                r.base.as_str(),
                r.model.as_str(),
                r.key_env.as_str()
            ),
            (
                Provider::OpenAi,
                "http://gateway:8000/v1",
                "gpt-4o-mini",
                "MY_KEY"
            )
        );
        assert_eq!(
            parse_hosted("gemini+https://g.example?model=m")
                .unwrap()
                .key_env,
            "GEMINI_API_KEY"
        );
        assert!(
            parse_hosted("anthropic+https://a.example")
                .unwrap_err()
                .to_string()
                .contains("needs ?model=NAME")
        );
        assert!(
            parse_hosted("openai+ftp://x?model=m")
                .unwrap_err()
                .to_string()
                .contains("must start with https://")
        );
    }

    #[tokio::test]
    async fn credentials_in_the_base_url_never_appear_in_messages() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        // Any variable that is set serves as the key here.
        let reference = parse_hosted(&format!(
            "openai+http://user:SECRET@{closed}/v1?model=m&key_env=PATH"
        ))
        .unwrap();
        assert!(
            !format!("{reference:?}").contains("SECRET"),
            "{reference:?}"
        );
        let err = HostedModel::new(reference)
            .sample("hi", 1.0, 5, 1)
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(
            err.message().starts_with(&format!(
                "OpenAi request to http://user:***@{closed}/v1/chat/completions failed: "
            )),
            "{err}"
        );
        assert!(!err.message().contains("SECRET"), "{err}");
    }
}
