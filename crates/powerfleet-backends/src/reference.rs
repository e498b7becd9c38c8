//! Model references for inference servers.
//!
//! - `llamacpp+http://HOST:PORT[,http://HOST2:PORT]?k=64` — llama.cpp's `llama-server`;
//! - `vllm+http://HOST:PORT[,...]?model=NAME&k=20` — vLLM's OpenAI-compatible server;
//! - `sglang+http://HOST:PORT[,...][?model=NAME&k=64]` — SGLang's native `/generate` API;
//! - `openai+…`, `anthropic+…`, `gemini+…` — hosted chat APIs, which cannot run MCMC.
//!
//! Options: `k` (top-K of the proposal and of the log-probabilities when the job sets no top-k;
//! default per server kind, see [`ServerKind::default_k`]), `timeout_s` (per request, default
//! 300), `max_in_flight` (per server, default 16), `model` (the served model's name; required for
//! vLLM, checked against the server when given), `eos` (`eos=ID,ID,...`: token ids that end a
//! generation, added to those the start-up probe learns from the server).

use std::time::Duration;

use powerfleet_sampler::TokenId;

pub use crate::dialect::ServerKind;
use crate::dialect::either;
pub use crate::dialect::sglang::SGLANG_MIN_TEMPERATURE;
pub use crate::dialect::vllm::{VLLM_MAX_TEMPERATURE, VLLM_MIN_TEMPERATURE};
pub use crate::error::ReferenceError;
pub use crate::redact::{redact_reference, redact_url};

/// How long one request to an inference server (or a hosted API) may take, unless the model
/// reference's `timeout_s` says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A proposal temperature a server kind does not sample at exactly
/// ([`ServerKind::check_proposal`]); the message names the server's limits.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum ProposalError {
    /// Not a finite number > 0.
    #[error("the proposal temperature must be a finite number > 0, got {temperature}")]
    NotPositive {
        /// The temperature asked for.
        temperature: f64,
    },
    /// Below [`VLLM_MIN_TEMPERATURE`], which vLLM raises it to.
    #[error(
        "vLLM raises temperatures below {min} to {min} (greedy below 1e-5), so it cannot sample the proposal at temperature {temperature}; use a proposal temperature in [{min}, {max}] (--proposal-temp, or a smaller alpha), or a llama.cpp or SGLang server",
        min = VLLM_MIN_TEMPERATURE,
        max = VLLM_MAX_TEMPERATURE
    )]
    BelowVllmMin {
        /// The temperature asked for.
        temperature: f64,
    },
    /// Above [`VLLM_MAX_TEMPERATURE`], which vLLM refuses.
    #[error(
        "vLLM refuses temperatures above {max}, so it cannot sample the proposal at temperature {temperature}; use a proposal temperature in [{min}, {max}], or a llama.cpp or SGLang server",
        min = VLLM_MIN_TEMPERATURE,
        max = VLLM_MAX_TEMPERATURE
    )]
    AboveVllmMax {
        /// The temperature asked for.
        temperature: f64,
    },
    /// Below [`SGLANG_MIN_TEMPERATURE`], where SGLang samples greedily.
    #[error(
        "SGLang samples greedily below temperature {min}, so it cannot sample the proposal at temperature {temperature}; use a larger proposal temperature",
        min = SGLANG_MIN_TEMPERATURE
    )]
    BelowSglangMin {
        /// The temperature asked for.
        temperature: f64,
    },
}

/// A parsed reference to one or more inference servers. Its `Debug` shows the servers redacted.
#[derive(Clone, PartialEq)]
pub struct HttpReference {
    /// The server type.
    pub kind: ServerKind,
    /// Base URLs (`http://host:port`, no trailing slash), credentials included: show them only
    /// through [`redact_url`].
    pub servers: Vec<String>,
    /// The served model's name (vLLM's `model` field; for SGLang, checked against the server).
    pub model: Option<String>,
    /// Default top-K for proposals and log-probabilities (`k=`, else
    /// [`ServerKind::default_k`]).
    pub k: u32,
    /// Token ids that end a generation, given by the operator (`eos=ID,ID`), sorted and without
    /// duplicates. The start-up probe adds those the server reports.
    pub eos: Vec<TokenId>,
    /// Per-request timeout ([`DEFAULT_REQUEST_TIMEOUT`] unless `timeout_s` says otherwise).
    pub timeout: Duration,
    /// Requests in flight per server.
    pub max_in_flight: usize,
}

impl std::fmt::Debug for HttpReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let servers: Vec<String> = self.servers.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("HttpReference")
            .field("kind", &self.kind)
            .field("servers", &servers)
            .field("model", &self.model)
            .field("k", &self.k)
            .field("eos", &self.eos)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// A parsed model reference (`llamacpp+http://…`, `openai+…`): the inference server or hosted
/// chat API it names.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelRef {
    /// Inference servers that continue token prefixes with log-probabilities.
    Http(HttpReference),
    /// A hosted chat API: single samples only.
    Hosted(crate::hosted::HostedReference),
}

/// Why hosted chat APIs cannot serve the methods that need log-probabilities
/// (`Method::needs_log_probs`: MCMC, SMC and lookahead).
pub const HOSTED_CHAT_REFUSAL: &str = "hosted chat APIs (OpenAI chat, Anthropic, Gemini) cannot continue a completion from a token prefix and do not return the full-vocabulary log-probabilities that power sampling needs (the Metropolis-Hastings ratios of power and max-swap, the weights of power-smc, the candidates of power-lookahead); run power sampling against an inference server you control (vLLM, SGLang or llama.cpp's llama-server)";

/// Whether `reference` names a model reached over the network: an inference server or a hosted
/// chat API (rather than a toy model).
pub fn is_remote_reference(reference: &str) -> bool {
    powerfleet_jobs::is_remote_reference(reference)
}

/// Parses a reference.
pub fn parse(reference: &str) -> Result<ModelRef, ReferenceError> {
    // The reference as messages show it.
    let shown = redact_reference(reference);
    let (scheme, rest) = reference.split_once('+').ok_or_else(|| {
        let examples = ServerKind::ALL.map(|k| k.dialect().facts().reference_example.to_string());
        ReferenceError(format!(
            "model reference {shown:?} must look like {}",
            either(&examples)
        ))
    })?;
    if let "openai" | "anthropic" | "gemini" = scheme {
        return crate::hosted::parse_hosted(reference).map(ModelRef::Hosted);
    }
    let kind = ServerKind::ALL
        .into_iter()
        .find(|k| k.prefix() == scheme)
        .ok_or_else(|| {
            let schemes = ServerKind::ALL.map(|k| format!("{}+http://...", k.prefix()));
            ReferenceError(format!(
                "model reference scheme {scheme:?} is not known; use {}",
                either(&schemes)
            ))
        })?;
    let (urls, query) = match rest.split_once('?') {
        Some((u, q)) => (u, Some(q)),
        None => (rest, None),
    };
    let mut servers = Vec::new();
    for url in urls.split(',').filter(|u| !u.is_empty()) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ReferenceError(format!(
                "server URL {:?} must start with http:// or https://",
                redact_url(url)
            )));
        }
        let base = url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        servers.push(base.to_string());
    }
    if servers.is_empty() {
        return Err(ReferenceError(format!(
            "model reference {shown:?} names no server URL"
        )));
    }
    let mut r = HttpReference {
        kind,
        servers,
        model: None,
        k: kind.default_k(),
        eos: Vec::new(),
        timeout: DEFAULT_REQUEST_TIMEOUT,
        max_in_flight: 16,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            ReferenceError(format!("option {pair:?} in {shown:?} must be KEY=VALUE"))
        })?;
        let number = |what: &str| {
            value
                .parse::<u64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    ReferenceError(format!(
                        "{key} in {shown:?} must be a whole number >= 1 ({what}), got {value:?}"
                    ))
                })
        };
        match key {
            "model" => r.model = Some(value.to_string()),
            "k" => r.k = number("top-K of proposals and log-probabilities")? as u32,
            "timeout_s" => r.timeout = Duration::from_secs(number("seconds per request")?),
            "max_in_flight" => r.max_in_flight = number("requests per server")? as usize,
            "eos" => {
                for id in value.split(',') {
                    let id = id.trim().parse::<TokenId>().map_err(|_| {
                        ReferenceError(format!(
                            "eos in {shown:?} must be comma-separated token ids (eos=2,32000), got {value:?}"
                        ))
                    })?;
                    r.eos.push(id);
                }
                r.eos.sort_unstable();
                r.eos.dedup();
            }
            other => {
                return Err(ReferenceError(format!(
                    "unknown option {other:?} in {shown:?}; known: model, k, eos, timeout_s, max_in_flight"
                )));
            }
        }
    }
    if kind.dialect().facts().requires_model && r.model.is_none() {
        return Err(ReferenceError(format!(
            "{shown:?}: {} references need ?model=NAME (the name the server was started with)",
            kind.name()
        )));
    }
    Ok(ModelRef::Http(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_with_servers_and_options() {
        let r = parse("vllm+http://gpu1:8000/v1,http://gpu2:8000/?model=Qwen/Qwen2.5-Math-7B&k=20&max_in_flight=4").unwrap();
        let ModelRef::Http(h) = r else { panic!() };
        assert_eq!(h.kind, ServerKind::Vllm);
        assert_eq!(h.servers, vec!["http://gpu1:8000", "http://gpu2:8000"]);
        assert_eq!(h.model.as_deref(), Some("Qwen/Qwen2.5-Math-7B"));
        assert_eq!((h.k, h.max_in_flight), (20, 4));
        let ModelRef::Http(l) = parse("llamacpp+http://127.0.0.1:8080").unwrap() else {
            panic!()
        };
        assert_eq!((l.kind, l.k), (ServerKind::LlamaCpp, 64));
        assert!(l.eos.is_empty());
        let ModelRef::Http(s) =
            parse("sglang+http://10.0.0.5:30000?eos=151645,151643,151645").unwrap()
        else {
            panic!()
        };
        assert_eq!((s.kind, s.k, s.model), (ServerKind::Sglang, 64, None));
        assert_eq!(s.eos, vec![151643, 151645]);
        assert!(is_remote_reference("sglang+http://x"));
        assert!(matches!(
            parse("openai+https://api.openai.com/v1?model=gpt-4o").unwrap(),
            ModelRef::Hosted(h) if h.model == "gpt-4o"
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
            ("llamacpp+http://h:1?eos=2,x", "comma-separated token ids"),
        ] {
            let err = parse(r).unwrap_err().to_string();
            assert!(err.contains(needle), "{r}: {err}");
        }
        assert!(is_remote_reference("vllm+http://x"));
        assert!(!is_remote_reference("toy:pivot"));
    }

    #[test]
    fn reference_errors_name_every_server_kind() {
        for (r, message) in [
            (
                "llamacpp:http://h:1",
                "model reference \"llamacpp:http://h:1\" must look like llamacpp+http://HOST:PORT, vllm+http://HOST:PORT?model=NAME or sglang+http://HOST:PORT",
            ),
            (
                "tgi+http://h:1",
                "model reference scheme \"tgi\" is not known; use llamacpp+http://..., vllm+http://... or sglang+http://...",
            ),
            (
                "vllm+http://h:1?k=2",
                "\"vllm+http://h:1?k=2\": vLLM references need ?model=NAME (the name the server was started with)",
            ),
        ] {
            assert_eq!(parse(r).unwrap_err().to_string(), message, "{r}");
        }
    }

    #[test]
    fn server_urls_are_shown_without_credentials() {
        for (url, shown) in [
            ("http://user:SECRET@h:8080", "http://user:***@h:8080"),
            ("https://u:p@ss/w?rd@h/v1", "https://u:***@h/v1"),
            ("http://SECRET@h:8080", "http://***@h:8080"),
            ("http://h:8080", "http://h:8080"),
            (
                "http://h:1/x?password=SECRET&k=2",
                "http://h:1/x?password=***&k=2",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert_eq!(
            redact_reference("llamacpp+http://a:SECRET@h1:1,http://b:SECRET@h2:2/?k=2"),
            "llamacpp+http://a:***@h1:1,http://b:***@h2:2/?k=2"
        );
        // Credentials stay in the parsed servers (requests need them), but no message, nor the
        // Debug output, shows them.
        let ModelRef::Http(h) = parse("llamacpp+http://user:SECRET@h:1?k=5").unwrap() else {
            panic!()
        };
        assert_eq!(h.servers, vec!["http://user:SECRET@h:1"]);
        assert!(!format!("{h:?}").contains("SECRET"), "{h:?}");
        for bad in [
            "llamacpp+http://user:SECRET@h:1?color=red",
            "llamacpp+http://user:SECRET@h:1?k=0",
            "llamacpp+http://user:SECRET@h:1?eos=x",
            "llamacpp+http://user:SECRET@h:1?k",
            "llamacpp+http://user:SECRET@h:1,ftp://user:SECRET@h:2",
            "vllm+http://user:SECRET@h:1",
            "tgi+http://user:SECRET@h:1",
            "openai+http://user:SECRET@h:1?color=red",
            "anthropic+ftp://user:SECRET@h:1?model=m",
            "gemini+https://user:SECRET@h:1",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(!err.contains("SECRET"), "{bad}: {err}");
            assert!(
                err.contains("user:***@h:") || bad.starts_with("tgi"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_default_k_fits_each_servers_default_logprob_limit() {
        for (reference, k) in [
            ("llamacpp+http://h:1", 64),
            ("vllm+http://h:1?model=m", 20),
            ("sglang+http://h:1", 64),
            ("vllm+http://h:1?model=m&k=64", 64),
        ] {
            let ModelRef::Http(h) = parse(reference).unwrap() else {
                panic!()
            };
            assert_eq!(h.k, k, "{reference}");
        }
    }

    #[test]
    fn proposal_temperatures_are_checked_against_each_servers_limits() {
        use ServerKind::*;
        for (kind, t, ok) in [
            (LlamaCpp, 0.001, true),
            (LlamaCpp, 10.0, true),
            (LlamaCpp, 0.0, false),
            (LlamaCpp, f64::NAN, false),
            (Vllm, 0.01, true),
            (Vllm, 0.25, true),
            (Vllm, 2.0, true),
            (Vllm, 0.005, false),
            (Vllm, 2.5, false),
            (Sglang, 1e-6, true),
            (Sglang, 5.0, true),
            (Sglang, 1e-7, false),
            (Sglang, -1.0, false),
        ] {
            assert_eq!(kind.check_proposal(t).is_ok(), ok, "{kind:?} at {t}");
        }
        let err = Vllm.check_proposal(0.005).unwrap_err().to_string();
        assert!(err.contains("0.01") && err.contains("0.005"), "{err}");
        let err = Vllm.check_proposal(4.0).unwrap_err().to_string();
        assert!(err.contains("above 2"), "{err}");
    }

    #[test]
    fn every_server_kind_parses_from_its_prefix_and_is_remote() {
        for kind in ServerKind::ALL {
            let reference = format!("{}+http://h:1?model=m", kind.prefix());
            assert!(
                is_remote_reference(&reference),
                "{reference}: add the scheme to powerfleet_jobs::route::REMOTE_SCHEMES"
            );
            let ModelRef::Http(h) = parse(&reference).unwrap() else {
                panic!("{reference}")
            };
            assert_eq!(h.kind, kind);
            assert_eq!(h.k, kind.default_k());
        }
    }

    #[test]
    fn server_kinds_serialize_as_their_prefix() {
        for kind in [ServerKind::LlamaCpp, ServerKind::Vllm, ServerKind::Sglang] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.prefix()));
            assert_eq!(serde_json::from_str::<ServerKind>(&json).unwrap(), kind);
        }
    }
}
