//! The worker's model registry: resolves a job's model reference to a loaded model.
//!
//! References: `toy:NAME` (built-in) or `toy:PATH`, optionally with `?delay_ms=N` to simulate an
//! inference server's latency per request; or a NAME registered with `--model NAME=REFERENCE`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerfleet_backends::{BackendError, HostedModel, HttpModel, ReferenceError, ServerKind};
use powerfleet_jobs::{Pin, Prompt};
use powerfleet_models::{ResolveError, ToyModel, resolve_toy};
use powerfleet_sampler::{Generation, LanguageModel, OwnedRequest, TokenId, ValidConfig};

/// Why a toy job with `chat` fails.
pub const TOY_CHAT_REFUSAL: &str = "toy models have no chat template; submit without chat";

/// A loaded model: the one async seam every chain driver talks to. Toy models and inference
/// servers answer the same calls (generate, tokenize, detokenize), and every error says whether
/// the server is unavailable (wait), the request failed (retry), or it was refused (fail).
#[derive(Clone, Debug)]
pub enum Backend {
    /// An in-process toy model, with a simulated latency per request.
    Toy {
        /// The model.
        model: Arc<ToyModel>,
        /// Sleep per request.
        latency: Duration,
    },
    /// Inference servers over HTTP (llama.cpp, vLLM, SGLang).
    Http {
        /// The client of the reference's servers.
        model: Arc<HttpModel>,
    },
    /// A hosted chat API: single samples only, no log-probabilities.
    Hosted {
        /// The client.
        model: Arc<HostedModel>,
    },
    /// Fault injection around another model: each request fails as an outage with probability
    /// `fail_rate`, independently of the others. A failed request samples nothing, so the tokens
    /// a chain ends with do not depend on the faults.
    Faulty {
        /// The model that answers the requests that do not fail.
        inner: Arc<Backend>,
        /// Probability that a request fails.
        fail_rate: f64,
        /// Requests so far: each draw depends on the request's seed and this count.
        calls: Arc<AtomicU64>,
    },
}

impl Backend {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Toy { .. } => "toy",
            Backend::Http { model } => model.reference().kind.prefix(),
            Backend::Hosted { .. } => "hosted",
            Backend::Faulty { inner, .. } => inner.label(),
        }
    }

    /// A short description of the backend's exactness mode, recorded with results.
    pub fn exactness(&self, top_k: Option<u32>) -> powerfleet_jobs::Exactness {
        match self {
            Backend::Toy { .. } => powerfleet_jobs::Exactness::Toy,
            Backend::Http { model } => model.exactness(top_k),
            Backend::Hosted { model } => model.exactness(),
            Backend::Faulty { inner, .. } => inner.exactness(top_k),
        }
    }

    /// While the model cannot be reached at all (every server's circuit open), how long until
    /// it may be tried again. Workers leave its jobs in the queue meanwhile.
    pub fn unavailable_for(&self) -> Option<Duration> {
        match self {
            Backend::Http { model } => model.unavailable_for(),
            Backend::Faulty { inner, .. } => inner.unavailable_for(),
            Backend::Toy { .. } | Backend::Hosted { .. } => None,
        }
    }

    /// Gets the model ready for a chain with `config` after a prompt of `prompt_len` tokens, and
    /// returns its pin: what the chain's stored log q depends on besides the chain's own
    /// configuration. Servers are probed (once per worker); a job whose proposal temperature the
    /// server does not honour exactly, or that cannot fit its context, is refused.
    pub async fn prepare(
        &self,
        config: &ValidConfig,
        prompt_len: usize,
    ) -> Result<Pin, BackendError> {
        match self {
            Backend::Toy { model, .. } => Ok(Pin::Toy {
                model: model.name().to_string(),
            }),
            Backend::Http { model } => {
                let kind = model.reference().kind;
                kind.check_proposal(config.temperature())
                    .map_err(|e| BackendError::Rejected(e.to_string()))?;
                let info = model.probe().await?;
                model.check_fits(&info, prompt_len, config.max_new_tokens())?;
                Ok(Pin::Server(model.pin(&info)))
            }
            Backend::Hosted { .. } => Err(BackendError::Rejected(
                "hosted chat APIs run no chains".to_string(),
            )),
            Backend::Faulty { inner, .. } => Box::pin(inner.prepare(config, prompt_len)).await,
        }
    }

    /// The most tokens a prompt and its completion may hold together, once the probe of the
    /// model's servers has learned their context (`Dialect::max_total_tokens`); `None` before,
    /// and for models without one.
    pub fn context_tokens(&self) -> Option<u32> {
        match self {
            Backend::Http { model } => model.probed().and_then(|info| {
                info.context_len
                    .map(|ctx| info.kind.dialect().max_total_tokens(ctx))
            }),
            Backend::Faulty { inner, .. } => inner.context_tokens(),
            Backend::Toy { .. } | Backend::Hosted { .. } => None,
        }
    }

    /// Whether a chain with `config` after a prompt of `prompt_len` tokens is known not to fit
    /// the server's context (the probe has learned it): what made [`Backend::prepare`] refuse
    /// such a job, as a fact rather than read from its message. `false` when the context is
    /// unknown or the model has none.
    pub fn exceeds_context(&self, config: &ValidConfig, prompt_len: usize) -> bool {
        match self {
            Backend::Http { model } => model.probed().is_some_and(|info| {
                model
                    .check_fits(&info, prompt_len, config.max_new_tokens())
                    .is_err()
            }),
            Backend::Faulty { inner, .. } => inner.exceeds_context(config, prompt_len),
            Backend::Toy { .. } | Backend::Hosted { .. } => false,
        }
    }

    /// The prompt's token ids: text is tokenized once, by the model's own tokenizer. With
    /// `chat`, an inference server first formats the text through its chat template as one user
    /// message.
    pub async fn tokenize(
        &self,
        prompt: &Prompt,
        chat: bool,
    ) -> Result<Vec<TokenId>, BackendError> {
        match (self, prompt) {
            (Backend::Faulty { inner, .. }, _) => Box::pin(inner.tokenize(prompt, chat)).await,
            // The worker resolves a stored prompt when it claims the job, before this.
            (_, Prompt::Stored(r)) => Err(BackendError::Rejected(format!(
                "the prompt stored as sha256 {} was not resolved before tokenizing",
                r.sha256
            ))),
            (Backend::Toy { .. }, _) if chat => {
                Err(BackendError::Rejected(TOY_CHAT_REFUSAL.to_string()))
            }
            (Backend::Toy { .. }, Prompt::Messages(_)) => {
                Err(BackendError::Rejected(TOY_CHAT_REFUSAL.to_string()))
            }
            (Backend::Http { model }, Prompt::Messages(messages)) => model
                .tokenize_messages(messages)
                .await
                .map_err(|e| prefixed("formatting the messages through the server's chat template", e)),
            (Backend::Toy { model, .. }, Prompt::Text(text)) => model
                .tokenize(text)
                .map_err(|e| BackendError::Rejected(e.to_string())),
            (Backend::Toy { model, .. }, Prompt::Tokens(ids)) => {
                model
                    .check_tokens(ids)
                    .map_err(|e| BackendError::Rejected(e.to_string()))?;
                Ok(ids.clone())
            }
            (Backend::Http { model }, Prompt::Text(text)) => {
                let (what, answer) = if chat {
                    (
                        "formatting the prompt through the server's chat template",
                        model.tokenize_chat(text).await,
                    )
                } else {
                    ("tokenizing the prompt", model.tokenize(text).await)
                };
                answer.map_err(|e| prefixed(what, e))
            }
            (Backend::Http { .. }, Prompt::Tokens(_)) if chat => Err(BackendError::Rejected(
                "chat formats a text prompt through the chat template; token-id prompts cannot be formatted"
                    .to_string(),
            )),
            (Backend::Http { .. }, Prompt::Tokens(ids)) => Ok(ids.clone()),
            (Backend::Hosted { .. }, _) => Err(BackendError::Rejected(
                "hosted chat APIs run no chains".to_string(),
            )),
        }
    }

    /// Samples a continuation of `request.prefix` with exact log p and log q per token.
    /// `affinity` keeps one chain on one server while that server is healthy.
    pub async fn generate(
        &self,
        request: &OwnedRequest,
        affinity: u64,
    ) -> Result<Generation, BackendError> {
        match self {
            Backend::Toy { model, latency } => {
                if !latency.is_zero() {
                    tokio::time::sleep(*latency).await;
                }
                match model.generate(&request.as_request()) {
                    Ok(g) => Ok(g),
                    Err(never) => match never {},
                }
            }
            Backend::Http { model } => model.generate(request, affinity).await,
            Backend::Hosted { .. } => Err(BackendError::Rejected(
                "hosted chat APIs run no chains".to_string(),
            )),
            Backend::Faulty {
                inner,
                fail_rate,
                calls,
            } => {
                let call = calls.fetch_add(1, Ordering::Relaxed);
                if chaos_draw(request.seed, call) < *fail_rate {
                    return Err(BackendError::Unavailable(format!(
                        "simulated transient failure of {} (fail_rate={fail_rate})",
                        inner.label()
                    )));
                }
                Box::pin(inner.generate(request, affinity)).await
            }
        }
    }

    /// The text of `tokens`, by the model's own tokenizer.
    pub async fn detokenize(&self, tokens: &[TokenId]) -> Result<String, BackendError> {
        match self {
            Backend::Toy { model, .. } => Ok(model.detokenize(tokens)),
            Backend::Http { model } => model
                .detokenize(tokens)
                .await
                .map_err(|e| prefixed("detokenizing the completion", e)),
            Backend::Hosted { .. } => Err(BackendError::Rejected(
                "hosted chat APIs return text, not token ids".to_string(),
            )),
            Backend::Faulty { inner, .. } => Box::pin(inner.detokenize(tokens)).await,
        }
    }

    /// The tokens that end a completion, which power-lookahead chains must be given
    /// ([`Chain::set_terminal_tokens`](powerfleet_sampler::Chain::set_terminal_tokens)): a toy
    /// model's EOS; an inference server's as its probe learned them (the pin's
    /// `terminal_tokens`), so call it after [`Backend::prepare`]. Empty for hosted chat APIs,
    /// which run no chains.
    pub fn terminal_tokens(&self) -> Vec<TokenId> {
        match self {
            Backend::Toy { model, .. } => LanguageModel::terminal_tokens(model.as_ref()),
            Backend::Http { model } => model
                .probed()
                .map(|info| info.terminal_tokens.clone())
                .unwrap_or_default(),
            Backend::Faulty { inner, .. } => inner.terminal_tokens(),
            Backend::Hosted { .. } => Vec::new(),
        }
    }

    /// The server kind behind the model, if it is an inference server.
    pub fn server_kind(&self) -> Option<ServerKind> {
        match self {
            Backend::Http { model } => Some(model.reference().kind),
            Backend::Faulty { inner, .. } => inner.server_kind(),
            Backend::Toy { .. } | Backend::Hosted { .. } => None,
        }
    }
}

/// `e` with `what` in front of its message, of the same kind.
fn prefixed(what: &str, e: BackendError) -> BackendError {
    match e {
        BackendError::Unavailable(m) => BackendError::Unavailable(format!("{what}: {m}")),
        BackendError::Transient(m) => BackendError::Transient(format!("{what}: {m}")),
        BackendError::Rejected(m) => BackendError::Rejected(format!("{what}: {m}")),
    }
}

/// A uniform draw in [0, 1) from (seed, call): splitmix64.
fn chaos_draw(seed: u64, call: u64) -> f64 {
    let mut z = seed ^ call.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    powerfleet_sampler::rng::unit_interval(z)
}

/// Why a `--model NAME=REFERENCE` entry is refused ([`ModelRegistry::new`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Not `NAME=REFERENCE`.
    #[error("--model must be NAME=REFERENCE (for example small=toy:pivot), got {0:?}")]
    NotAPair(String),
    /// `NAME=` or `=REFERENCE`.
    #[error("--model must be NAME=REFERENCE with both parts non-empty, got {0:?}")]
    EmptyPart(String),
}

/// Why a model reference does not load ([`load`], [`ModelRegistry::resolve`]).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An inference-server or hosted-API reference that does not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A toy model that does not resolve.
    #[error(transparent)]
    Toy(#[from] ResolveError),
    /// A toy reference's `delay_ms` that is not a whole number.
    #[error(
        "delay_ms in model reference {reference:?} must be a whole number of milliseconds, got {value:?}"
    )]
    DelayMs {
        /// The reference.
        reference: String,
        /// The value given.
        value: String,
    },
    /// A toy reference's `fail_rate` that is not a probability.
    #[error(
        "fail_rate in model reference {reference:?} must be a probability between 0 and 1, got {value:?}"
    )]
    FailRate {
        /// The reference.
        reference: String,
        /// The value given.
        value: String,
    },
    /// A toy reference's option other than `delay_ms` and `fail_rate`.
    #[error(
        "model reference {reference:?} has an unknown option {option:?}; toy models take delay_ms=N and fail_rate=P"
    )]
    UnknownOption {
        /// The reference.
        reference: String,
        /// The option as given.
        option: String,
    },
    /// A `--model NAME=REFERENCE` whose reference does not load.
    #[error("--model {name}=...: {source}")]
    Mapping {
        /// The name.
        name: String,
        /// Why its reference does not load.
        source: Box<ModelError>,
    },
    /// A reference that does not load, with the names the registry knows.
    #[error("{source} (registered names: {names})")]
    Unregistered {
        /// Why it does not load as a reference.
        source: Box<ModelError>,
        /// The registered names, sorted, comma-separated.
        names: String,
    },
}

/// Why a worker that requires deterministic servers does not start
/// ([`ModelRegistry::require_deterministic`]).
#[derive(Debug, thiserror::Error)]
pub enum DeterminismError {
    /// Some server of the model answered the same request differently from one time to the next.
    #[error(
        "--require-deterministic: model {name} is not deterministic: {servers}; {fix}, or run the worker without --require-deterministic"
    )]
    Nondeterministic {
        /// The registered name.
        name: String,
        /// Each server that is not, with what differed.
        servers: String,
        /// The server settings that make it deterministic.
        fix: &'static str,
    },
    /// The start-up probe refused the model's servers, so whether they are deterministic is
    /// unknown.
    #[error("--require-deterministic: model {name} cannot be checked: {source}")]
    Probe {
        /// The registered name.
        name: String,
        /// Why the probe refused.
        source: BackendError,
    },
    /// A hosted chat API, whose answers cannot be checked.
    #[error(
        "--require-deterministic: model {name} is a hosted chat API ({reference}), whose answers cannot be checked for determinism; map it on a worker without --require-deterministic"
    )]
    Hosted {
        /// The registered name.
        name: String,
        /// Its reference as logs show it.
        reference: String,
    },
    /// The reference does not load.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Names registered on the command line, and a cache of loaded models.
#[derive(Debug, Default)]
pub struct ModelRegistry {
    names: HashMap<String, String>,
    cache: Mutex<HashMap<String, Backend>>,
    /// The names mapped to inference servers that have not answered the start-up probe yet,
    /// with why ([`ModelRegistry::check_servers`]).
    unprobed: Mutex<BTreeMap<String, String>>,
}

/// Why a name mapped to inference servers is not ready before anything has been learned of
/// them.
const NOT_PROBED_YET: &str = "its inference servers have not been probed yet";

impl ModelRegistry {
    /// A registry from `NAME=REFERENCE` pairs.
    pub fn new(entries: &[String]) -> Result<ModelRegistry, RegistryError> {
        let mut names = HashMap::new();
        for entry in entries {
            let (name, reference) = entry
                .split_once('=')
                .ok_or_else(|| RegistryError::NotAPair(entry.clone()))?;
            if name.is_empty() || reference.is_empty() {
                return Err(RegistryError::EmptyPart(entry.clone()));
            }
            names.insert(name.to_string(), reference.to_string());
        }
        Ok(ModelRegistry {
            names,
            cache: Mutex::new(HashMap::new()),
            unprobed: Mutex::new(BTreeMap::new()),
        })
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names.keys().cloned().collect();
        names.sort();
        names
    }

    /// The registered names with their references as logs may show them, and the context of
    /// those whose servers have been probed, sorted by name.
    pub fn served(&self) -> Vec<powerfleet_queue::ServedModel> {
        let mut served: Vec<_> = self
            .names
            .iter()
            .map(|(name, reference)| powerfleet_queue::ServedModel {
                name: name.clone(),
                reference: powerfleet_backends::reference::redact_reference(reference),
                context_tokens: self
                    .cache
                    .lock()
                    .expect("model cache")
                    .get(reference)
                    .and_then(Backend::context_tokens),
            })
            .collect();
        served.sort_by(|a, b| a.name.cmp(&b.name));
        served
    }

    /// Loads every registered reference once, so a mapping that cannot work (a toy model that
    /// does not resolve, a reference that does not parse) stops the worker at start with the
    /// reason, instead of failing every job it takes. Inference servers are not contacted here:
    /// one that is down is waited for, like any outage; until their probe
    /// ([`ModelRegistry::check_servers`]) has succeeded, their names are not ready.
    pub fn check(&self) -> Result<(), ModelError> {
        for name in self.names() {
            let reference = &self.names[&name];
            let backend = load(reference).map_err(|e| ModelError::Mapping {
                name: name.clone(),
                source: Box::new(e),
            })?;
            if let Some(model) = server_model(&backend) {
                self.mark_if_unprobed(&name, &model);
            }
            self.cache
                .lock()
                .expect("model cache")
                .insert(reference.clone(), backend);
        }
        Ok(())
    }

    /// Probes the inference servers of every name mapped to them ([`HttpModel::probe`]) until
    /// each has answered, so that a worker whose server is down says so on `/readyz` from the
    /// start ([`ModelRegistry::readiness`]), not only once its jobs have opened the server's
    /// circuit. A name whose probe fails is probed again after
    /// [`Backoff::START_UP`](crate::backoff::Backoff::START_UP), until it answers or `stop`
    /// fires. Jobs are not held meanwhile: they wait for the model as for any outage (the
    /// worker's patience). What the probe learns is cached for the jobs (and the context for
    /// the worker's registration).
    pub async fn check_servers(&self, stop: &tokio_util::sync::CancellationToken) {
        let mut checks = Vec::new();
        for name in self.names() {
            let Some(model) = self.resolve(&name).ok().as_ref().and_then(server_model) else {
                continue;
            };
            self.mark_if_unprobed(&name, &model);
            checks.push(self.check_server(name, model, stop));
        }
        futures_util::future::join_all(checks).await;
    }

    /// Marks `name` not ready ([`NOT_PROBED_YET`]) while `model`'s servers have not answered
    /// the start-up probe, keeping a reason a failed probe already recorded.
    fn mark_if_unprobed(&self, name: &str, model: &HttpModel) {
        if model.probed().is_none() {
            self.unprobed
                .lock()
                .expect("probe states")
                .entry(name.to_string())
                .or_insert_with(|| NOT_PROBED_YET.to_string());
        }
    }

    /// [`ModelRegistry::check_servers`] for one name.
    async fn check_server(
        &self,
        name: String,
        model: Arc<HttpModel>,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        let mut failures = 0u32;
        loop {
            let probed = tokio::select! {
                _ = stop.cancelled() => return,
                probed = model.probe_for_readiness() => probed,
            };
            let why = match probed {
                Ok(_) => {
                    self.unprobed.lock().expect("probe states").remove(&name);
                    if failures > 0 {
                        tracing::info!(model = %name, "the model's inference servers answer: ready for it");
                    }
                    return;
                }
                Err(BackendError::Unavailable(e)) => format!(
                    "its inference servers do not answer the start-up probe; its jobs wait for them: {e}"
                ),
                Err(BackendError::Transient(e)) => {
                    format!("its inference servers answer the start-up probe badly: {e}")
                }
                Err(BackendError::Rejected(e)) => {
                    format!("the start-up probe refuses its inference servers: {e}")
                }
            };
            failures += 1;
            let delay = crate::backoff::Backoff::START_UP.delay(failures);
            tracing::warn!(
                model = %name,
                reason = %why,
                retry_in_ms = delay.as_millis() as u64,
                "the model is not ready"
            );
            self.unprobed
                .lock()
                .expect("probe states")
                .insert(name.clone(), why);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// For `worker --require-deterministic`: probes the servers of every registered name now
    /// (`HttpModel::probe`, which repeats one request and compares the answers bit for bit) and
    /// refuses the first name whose servers are not all deterministic, naming them and the
    /// settings that fix them. A name whose servers are down is waited for (they are probed
    /// again after [`Backoff::START_UP`](crate::backoff::Backoff::START_UP)) until `stop` fires,
    /// which ends the check without an error. Toy models are deterministic; hosted chat APIs cannot be checked and are
    /// refused.
    pub async fn require_deterministic(
        &self,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), DeterminismError> {
        for name in self.names() {
            let mut backend = self.resolve(&name)?;
            while let Backend::Faulty { inner, .. } = backend {
                backend = (*inner).clone();
            }
            let model = match backend {
                Backend::Toy { .. } => continue,
                Backend::Hosted { .. } => {
                    return Err(DeterminismError::Hosted {
                        reference: powerfleet_backends::reference::redact_reference(
                            &self.names[&name],
                        ),
                        name,
                    });
                }
                Backend::Http { model } => model,
                Backend::Faulty { .. } => unreachable!("unwrapped above"),
            };
            let mut attempt = 0;
            let info = loop {
                match model.probe().await {
                    Ok(info) => break info,
                    Err(source) if !source.is_transient() => {
                        return Err(DeterminismError::Probe { name, source });
                    }
                    Err(e) => {
                        attempt += 1;
                        let delay = crate::backoff::Backoff::START_UP.delay(attempt);
                        tracing::warn!(
                            model = %name,
                            error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "waiting for the model's servers to check that they are deterministic (--require-deterministic)"
                        );
                        tokio::select! {
                            _ = stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            };
            if !info.deterministic() {
                let servers: Vec<String> = info
                    .nondeterministic
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                return Err(DeterminismError::Nondeterministic {
                    name,
                    servers: servers.join("; "),
                    fix: info.kind.dialect().facts().determinism_fix,
                });
            }
            tracing::info!(model = %name, "the model's servers are deterministic");
        }
        Ok(())
    }

    /// Each registered name with why it is not ready (its inference servers not probed yet, or
    /// not answering the probe; every server of it down), `None` when it is: what a worker's
    /// `/readyz` reports.
    pub fn readiness(&self) -> Vec<(String, Option<String>)> {
        let unprobed = self.unprobed.lock().expect("probe states").clone();
        self.names()
            .into_iter()
            .map(|name| {
                let why = match self.resolve(&name) {
                    Err(e) => Some(e.to_string()),
                    Ok(backend) => unprobed.get(&name).cloned().or_else(|| {
                        backend.unavailable_for().map(|d| {
                            format!(
                                "every server is down (its circuit opened after repeated failures); next try in {} s, jobs wait meanwhile",
                                d.as_secs().max(1)
                            )
                        })
                    }),
                };
                (name, why)
            })
            .collect()
    }

    /// Resolves a job's model reference (a registered name, or a reference).
    pub fn resolve(&self, reference: &str) -> Result<Backend, ModelError> {
        let target = self.names.get(reference).map_or(reference, String::as_str);
        if let Some(b) = self.cache.lock().expect("model cache").get(target) {
            return Ok(b.clone());
        }
        let backend = load(target).map_err(|e| {
            if self.names.is_empty() {
                e
            } else {
                let mut known: Vec<&str> = self.names.keys().map(String::as_str).collect();
                known.sort();
                ModelError::Unregistered {
                    source: Box::new(e),
                    names: known.join(", "),
                }
            }
        })?;
        // Two resolves at once (the start-up probe and a job) may both have loaded it: the first
        // one cached is the one every caller shares, so its server is probed once.
        Ok(self
            .cache
            .lock()
            .expect("model cache")
            .entry(target.to_string())
            .or_insert(backend)
            .clone())
    }
}

/// The inference-server client behind `backend`, if it is one (through fault injection).
fn server_model(backend: &Backend) -> Option<Arc<HttpModel>> {
    match backend {
        Backend::Http { model } => Some(model.clone()),
        Backend::Faulty { inner, .. } => server_model(inner),
        Backend::Toy { .. } | Backend::Hosted { .. } => None,
    }
}

/// Loads a reference without the registry.
pub fn load(reference: &str) -> Result<Backend, ModelError> {
    if powerfleet_backends::is_remote_reference(reference) {
        return match powerfleet_backends::parse(reference)? {
            powerfleet_backends::ModelRef::Http(h) => Ok(Backend::Http {
                model: Arc::new(HttpModel::new(h)),
            }),
            powerfleet_backends::ModelRef::Hosted(h) => Ok(Backend::Hosted {
                model: Arc::new(HostedModel::new(h)),
            }),
        };
    }
    let (base, query) = match reference.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (reference, None),
    };
    let mut latency = Duration::ZERO;
    let mut fail_rate = 0.0;
    if let Some(query) = query {
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("delay_ms", v)) => {
                    let ms: u64 = v.parse().map_err(|_| ModelError::DelayMs {
                        reference: reference.to_string(),
                        value: v.to_string(),
                    })?;
                    latency = Duration::from_millis(ms);
                }
                Some(("fail_rate", v)) => {
                    fail_rate = v
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| ModelError::FailRate {
                            reference: reference.to_string(),
                            value: v.to_string(),
                        })?;
                }
                _ => {
                    return Err(ModelError::UnknownOption {
                        reference: reference.to_string(),
                        option: pair.to_string(),
                    });
                }
            }
        }
    }
    let model = resolve_toy(base)?;
    let toy = Backend::Toy {
        model: Arc::new(model),
        latency,
    };
    Ok(if fail_rate > 0.0 {
        Backend::Faulty {
            inner: Arc::new(toy),
            fail_rate,
            calls: Arc::new(AtomicU64::new(0)),
        }
    } else {
        toy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requiring_determinism_passes_toys_refuses_hosted_apis_and_waits_for_servers() {
        let stop = tokio_util::sync::CancellationToken::new();
        let toys =
            ModelRegistry::new(&["a=toy:tiny".into(), "b=toy:pivot?fail_rate=0.5".into()]).unwrap();
        toys.require_deterministic(&stop).await.unwrap();
        let hosted = ModelRegistry::new(&[
            "t=toy:tiny".into(),
            "chat=openai+https://api.example.com/v1?model=gpt&key_env=NO_SUCH_KEY".into(),
        ])
        .unwrap();
        let err = hosted
            .require_deterministic(&stop)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model chat is a hosted chat API")
                && err.contains("cannot be checked for determinism"),
            "{err}"
        );
        // A server that is down is waited for until the worker is stopped, which is no error.
        let down = ModelRegistry::new(&["down=llamacpp+http://127.0.0.1:9".into()]).unwrap();
        let waiting = down.require_deterministic(&stop);
        let stopper = async {
            tokio::task::yield_now().await;
            stop.cancel();
        };
        let (checked, ()) = tokio::join!(waiting, stopper);
        checked.unwrap();
    }

    #[tokio::test]
    async fn readiness_names_the_model_whose_every_server_is_down() {
        // Nothing listens on port 9: every request fails as an unavailable server.
        let reg = ModelRegistry::new(&[
            "down=llamacpp+http://127.0.0.1:9".to_string(),
            "toy=toy:tiny".to_string(),
        ])
        .unwrap();
        // Before the servers are probed (`check` marks them) or any request failed, nothing is
        // known to be down.
        assert_eq!(
            reg.readiness(),
            vec![("down".to_string(), None), ("toy".to_string(), None)],
            "nothing is known to be down before a request fails"
        );
        let down = reg.resolve("down").unwrap();
        let request = OwnedRequest {
            prefix: vec![1],
            prompt_len: 1,
            max_tokens: 1,
            temperature: 1.0,
            top_k: None,
            seed: 0,
            candidates: 0,
        };
        for _ in 0..50 {
            if down.unavailable_for().is_some() {
                break;
            }
            let _ = down.generate(&request, 0).await;
        }
        let readiness = reg.readiness();
        let (name, why) = &readiness[0];
        assert_eq!(name, "down");
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains("every server is down")),
            "{readiness:?}"
        );
        assert_eq!(readiness[1], ("toy".to_string(), None));
    }

    #[tokio::test]
    async fn a_model_whose_servers_do_not_answer_the_start_up_probe_is_not_ready() {
        // Nothing listens on port 9: the probe fails as an unavailable server.
        let reg = ModelRegistry::new(&[
            "down=llamacpp+http://user:planted-secret@127.0.0.1:9".to_string(),
            "toy=toy:tiny".to_string(),
        ])
        .unwrap();
        reg.check().unwrap();
        let readiness = reg.readiness();
        assert_eq!(
            readiness,
            vec![
                ("down".to_string(), Some(NOT_PROBED_YET.to_string())),
                ("toy".to_string(), None)
            ],
            "a name mapped to servers is not ready until they answer the probe"
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let probed_once = async {
            while reg.readiness()[0].1.as_deref() == Some(NOT_PROBED_YET) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
        };
        tokio::join!(reg.check_servers(&stop), probed_once);
        let readiness = reg.readiness();
        let (name, why) = &readiness[0];
        assert_eq!(name, "down");
        let why = why.as_deref().unwrap_or_default();
        assert!(
            why.starts_with("its inference servers do not answer the start-up probe")
                && why.contains("http://user:***@127.0.0.1:9"),
            "{readiness:?}"
        );
        assert!(!why.contains("planted-secret"), "{why}");
        assert_eq!(readiness[1], ("toy".to_string(), None));
    }

    #[test]
    fn a_mapping_that_cannot_work_is_refused_by_check() {
        let reg = ModelRegistry::new(&["qwen=toy:pivto".to_string()]).unwrap();
        let err = reg.check().unwrap_err().to_string();
        assert!(err.starts_with("--model qwen=...: "), "{err}");
        assert!(err.contains("pivto"), "{err}");
    }

    /// The start-up probe and the first jobs resolve a name at once: they must share one client,
    /// or each would probe the server (and the extra probe's requests would count as work).
    #[test]
    fn concurrent_resolves_of_a_name_share_one_server_client() {
        for _ in 0..64 {
            let reg = ModelRegistry::new(&["m=llamacpp+http://127.0.0.1:9".to_string()]).unwrap();
            let start = std::sync::Barrier::new(4);
            let models: Vec<Arc<HttpModel>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..4)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            server_model(&reg.resolve("m").unwrap()).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let cached = server_model(&reg.resolve("m").unwrap()).unwrap();
            for model in &models {
                assert!(
                    Arc::ptr_eq(model, &cached),
                    "a resolve kept a client of its own"
                );
            }
        }
    }

    #[test]
    fn registered_names_and_latency_options_resolve() {
        let reg = ModelRegistry::new(&["small=toy:pivot?delay_ms=3".to_string()]).unwrap();
        match reg.resolve("small").unwrap() {
            Backend::Toy { model, latency } => {
                assert_eq!(model.name(), "toy:pivot");
                assert_eq!(latency, Duration::from_millis(3));
            }
            other => panic!("{other:?}"),
        }
        assert!(reg.resolve("toy:tiny").is_ok());
        let err = reg.resolve("big").unwrap_err().to_string();
        assert!(err.contains("registered names: small"), "{err}");
        assert!(
            load("toy:tiny?delay=1")
                .unwrap_err()
                .to_string()
                .contains("unknown option")
        );
        assert!(
            load("toy:tiny?delay_ms=x")
                .unwrap_err()
                .to_string()
                .contains("whole number")
        );
        assert!(
            ModelRegistry::new(&["nonsense".into()])
                .unwrap_err()
                .to_string()
                .contains("NAME=REFERENCE")
        );
    }
}
