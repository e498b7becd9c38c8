//! Model references for inference servers.
//!
//! - `llamacpp+http://HOST:PORT[,http://HOST2:PORT]?k=64` — llama.cpp's `llama-server`;
//! - `vllm+http://HOST:PORT[,...]?model=NAME&k=20` — vLLM's OpenAI-compatible server;
//! - `openai+…`, `anthropic+…`, `gemini+…` — hosted chat APIs, which cannot run MCMC.
//!
//! Options: `k` (top-K of the proposal and of the log-probabilities when the job sets no top-k;
//! default 64), `timeout_s` (per request, default 300), `max_in_flight` (per server, default 16),
//! `model` (the served model's name; required for vLLM).

use std::time::Duration;

/// Which server speaks at the URLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerKind {
    /// llama.cpp `llama-server` (`/completion`, `/tokenize`, `/detokenize`).
    LlamaCpp,
    /// vLLM (`/v1/completions`, `/tokenize`, `/detokenize`).
    Vllm,
}

impl ServerKind {
    /// The scheme prefix in references.
    pub fn prefix(self) -> &'static str {
        match self {
            ServerKind::LlamaCpp => "llamacpp",
            ServerKind::Vllm => "vllm",
        }
    }
}

/// A parsed reference to one or more inference servers.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpReference {
    /// The server type.
    pub kind: ServerKind,
    /// Base URLs (`http://host:port`, no trailing slash).
    pub servers: Vec<String>,
    /// The served model's name (vLLM's `model` field).
    pub model: Option<String>,
    /// Default top-K for proposals and log-probabilities.
    pub k: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Requests in flight per server.
    pub max_in_flight: usize,
}

/// What a reference names.
#[derive(Clone, Debug, PartialEq)]
pub enum Reference {
    /// Inference servers that continue token prefixes with log-probabilities.
    Http(HttpReference),
    /// A hosted chat API: single samples only.
    Hosted(crate::hosted::HostedReference),
}

/// Why hosted chat APIs cannot serve MCMC.
pub const HOSTED_CHAT_REFUSAL: &str = "hosted chat APIs (OpenAI chat, Anthropic, Gemini) cannot continue a completion from a token prefix and do not return the full-vocabulary log-probabilities Metropolis-Hastings needs; run power sampling against an inference server you control (vLLM or llama.cpp's llama-server)";

/// Whether `reference` names an inference-server backend (rather than a toy model).
pub fn is_http_reference(reference: &str) -> bool {
    ["llamacpp+", "vllm+", "openai+", "anthropic+", "gemini+"]
        .iter()
        .any(|p| reference.starts_with(p))
}

/// Parses a reference.
pub fn parse(reference: &str) -> Result<Reference, String> {
    let (scheme, rest) = reference.split_once('+').ok_or_else(|| {
        format!("model reference {reference:?} must look like llamacpp+http://HOST:PORT or vllm+http://HOST:PORT?model=NAME")
    })?;
    let kind = match scheme {
        "llamacpp" => ServerKind::LlamaCpp,
        "vllm" => ServerKind::Vllm,
        "openai" | "anthropic" | "gemini" => {
            return crate::hosted::parse_hosted(reference).map(Reference::Hosted);
        }
        other => {
            return Err(format!(
                "model reference scheme {other:?} is not known; use llamacpp+http://... or vllm+http://..."
            ));
        }
    };
    let (urls, query) = match rest.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (rest, None),
    };
    let mut servers = Vec::new();
    for url in urls.split(',').filter(|u| !u.is_empty()) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "server URL {url:?} must start with http:// or https://"
            ));
        }
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        servers.push(base.to_string());
    }
    if servers.is_empty() {
        return Err(format!("model reference {reference:?} names no server URL"));
    }
    let mut r = HttpReference {
        kind,
        servers,
        model: None,
        k: 64,
        timeout: Duration::from_secs(300),
        max_in_flight: 16,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("option {pair:?} in {reference:?} must be KEY=VALUE"))?;
        let number = |what: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    format!(
                        "{key} in {reference:?} must be a whole number >= 1 ({what}), got {value:?}"
                    )
                })
        };
        match key {
            "model" => r.model = Some(value.to_string()),
            "k" => r.k = number("top-K of proposals and log-probabilities")? as u32,
            "timeout_s" => r.timeout = Duration::from_secs(number("seconds per request")?),
            "max_in_flight" => r.max_in_flight = number("requests per server")? as usize,
            other => {
                return Err(format!(
                    "unknown option {other:?} in {reference:?}; known: model, k, timeout_s, max_in_flight"
                ));
            }
        }
    }
    if kind == ServerKind::Vllm && r.model.is_none() {
        return Err(format!(
            "{reference:?}: vLLM references need ?model=NAME (the name the server was started with)"
        ));
    }
    Ok(Reference::Http(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_servers_and_options() {
        let r = parse("vllm+http://gpu1:8000/v1,http://gpu2:8000/?model=Qwen/Qwen2.5-Math-7B&k=20&max_in_flight=4").unwrap();
        let Reference::Http(h) = r else { panic!() };
        assert_eq!(h.kind, ServerKind::Vllm);
        assert_eq!(h.servers, vec!["http://gpu1:8000", "http://gpu2:8000"]);
        assert_eq!(h.model.as_deref(), Some("Qwen/Qwen2.5-Math-7B"));
        assert_eq!((h.k, h.max_in_flight), (20, 4));
        let Reference::Http(l) = parse("llamacpp+http://127.0.0.1:8080").unwrap() else {
            panic!()
        };
        assert_eq!((l.kind, l.k), (ServerKind::LlamaCpp, 64));
        assert!(matches!(
            parse("openai+https://api.openai.com/v1?model=gpt-4o").unwrap(),
            Reference::Hosted(h) if h.model == "gpt-4o"
        ));
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (r, needle) in [
            ("vllm+http://h:1", "need ?model=NAME"),
            ("llamacpp+ftp://h", "must start with http:// or https://"),
            ("llamacpp+http://h:1?k=0", "k in"),
            ("llamacpp+http://h:1?color=red", "unknown option"),
            ("tgi+http://h:1", "not known"),
            ("llamacpp+", "names no server"),
        ] {
            let err = parse(r).unwrap_err();
            assert!(err.contains(needle), "{r}: {err}");
        }
        assert!(is_http_reference("vllm+http://x"));
        assert!(!is_http_reference("toy:pivot"));
    }
}
