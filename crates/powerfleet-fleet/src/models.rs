//! The worker's model registry: resolves a job's model reference to a loaded model.
//!
//! References: `toy:NAME` (built-in) or `toy:PATH`, optionally with `?delay_ms=N` to simulate an
//! inference server's latency per request; or a NAME registered with `--model NAME=REFERENCE`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use powerfleet_models::{ToyModel, resolve_toy};

/// A loaded model.
#[derive(Clone, Debug)]
pub enum Backend {
    /// An in-process toy model, with a simulated latency per request.
    Toy {
        /// The model.
        model: Arc<ToyModel>,
        /// Sleep per request.
        latency: Duration,
        /// Probability that a request fails as a transient error (for resilience tests); a
        /// request's attempts fail independently, deterministically given its seed.
        fail_rate: f64,
    },
    /// Inference servers over HTTP (llama.cpp, vLLM).
    Http {
        /// The client of the reference's servers.
        model: Arc<powerfleet_backends::HttpModel>,
    },
    /// A hosted chat API: single samples only, no log-probabilities.
    Hosted {
        /// The client.
        model: Arc<powerfleet_backends::HostedModel>,
    },
}

impl Backend {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Toy { .. } => "toy",
            Backend::Http { model } => match model.reference().kind {
                powerfleet_backends::ServerKind::LlamaCpp => "llamacpp",
                powerfleet_backends::ServerKind::Vllm => "vllm",
            },
            Backend::Hosted { .. } => "hosted",
        }
    }

    /// A short description of the backend's exactness mode, recorded with results.
    pub fn exactness(&self, top_k: Option<u32>) -> String {
        match self {
            Backend::Toy { .. } => "exact: in-process toy model".to_string(),
            Backend::Http { model } => model.exactness(top_k),
            Backend::Hosted { model } => model.exactness(),
        }
    }
}

/// Names registered on the command line, and a cache of loaded models.
#[derive(Debug, Default)]
pub struct ModelRegistry {
    names: HashMap<String, String>,
    cache: Mutex<HashMap<String, Backend>>,
}

impl ModelRegistry {
    /// A registry from `NAME=REFERENCE` pairs.
    pub fn new(entries: &[String]) -> Result<ModelRegistry, String> {
        let mut names = HashMap::new();
        for entry in entries {
            let (name, reference) = entry.split_once('=').ok_or_else(|| {
                format!(
                    "--model must be NAME=REFERENCE (for example small=toy:pivot), got {entry:?}"
                )
            })?;
            if name.is_empty() || reference.is_empty() {
                return Err(format!(
                    "--model must be NAME=REFERENCE with both parts non-empty, got {entry:?}"
                ));
            }
            names.insert(name.to_string(), reference.to_string());
        }
        Ok(ModelRegistry {
            names,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Resolves a job's model reference (a registered name, or a reference).
    pub fn resolve(&self, reference: &str) -> Result<Backend, String> {
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
                format!("{e} (registered names: {})", known.join(", "))
            }
        })?;
        self.cache
            .lock()
            .expect("model cache")
            .insert(target.to_string(), backend.clone());
        Ok(backend)
    }
}

/// Loads a reference without the registry.
pub fn load(reference: &str) -> Result<Backend, String> {
    if powerfleet_backends::is_http_reference(reference) {
        return match powerfleet_backends::parse(reference)? {
            powerfleet_backends::Reference::Http(h) => Ok(Backend::Http {
                model: Arc::new(powerfleet_backends::HttpModel::new(h)),
            }),
            powerfleet_backends::Reference::Hosted(h) => Ok(Backend::Hosted {
                model: Arc::new(powerfleet_backends::HostedModel::new(h)),
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
                    let ms: u64 = v.parse().map_err(|_| {
                        format!("delay_ms in model reference {reference:?} must be a whole number of milliseconds, got {v:?}")
                    })?;
                    latency = Duration::from_millis(ms);
                }
                Some(("fail_rate", v)) => {
                    fail_rate = v
                        .parse::<f64>()
                        .ok()
                        .filter(|p| (0.0..=1.0).contains(p))
                        .ok_or_else(|| {
                            format!("fail_rate in model reference {reference:?} must be a probability between 0 and 1, got {v:?}")
                        })?;
                }
                _ => {
                    return Err(format!(
                        "model reference {reference:?} has an unknown option {pair:?}; toy models take delay_ms=N and fail_rate=P"
                    ));
                }
            }
        }
    }
    let model = resolve_toy(base).map_err(|e| e.to_string())?;
    Ok(Backend::Toy {
        model: Arc::new(model),
        latency,
        fail_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_and_latency_options_resolve() {
        let reg = ModelRegistry::new(&["small=toy:pivot?delay_ms=3".to_string()]).unwrap();
        match reg.resolve("small").unwrap() {
            Backend::Toy { model, latency, .. } => {
                assert_eq!(model.name(), "toy:pivot");
                assert_eq!(latency, Duration::from_millis(3));
            }
            other => panic!("{other:?}"),
        }
        assert!(reg.resolve("toy:tiny").is_ok());
        let err = reg.resolve("big").unwrap_err();
        assert!(err.contains("registered names: small"), "{err}");
        assert!(
            load("toy:tiny?delay=1")
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            load("toy:tiny?delay_ms=x")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            ModelRegistry::new(&["nonsense".into()])
                .unwrap_err()
                .contains("NAME=REFERENCE")
        );
    }
}
