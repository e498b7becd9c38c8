//! How the OpenAI-compatible endpoints sample: the server's per-model defaults, with a
//! request's `power_sampling` laid over them, the most chains per prompt, and the slots of the
//! completions served at once.

use std::collections::BTreeMap;
use std::time::Duration;

use powerfleet_sampler::{Method, SamplerConfig};
use serde_json::Value;

use super::OpenAiError;
use crate::request::{RequestError, quote};

/// Default most chains (`n`) per prompt.
pub const DEFAULT_MAX_N: u32 = 64;
/// Default most completions served at once (read, submitted, waited for or answered); more get
/// 503 with `Retry-After`.
pub const DEFAULT_MAX_WAITING: usize = 64;
/// Default longest wait for a completion's jobs, after which they are cancelled.
pub const DEFAULT_COMPLETION_TIMEOUT: Duration = Duration::from_secs(3600);

/// How the OpenAI-compatible endpoints sample: per-model defaults and limits.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAiSettings {
    /// The sampler of a model that `defaults` does not name: method `power` with every option
    /// at its default, unless `serve --openai-defaults '*=...'` sets another.
    pub default: SamplerConfig,
    /// Per model name, the sampler an unmodified client gets.
    pub defaults: BTreeMap<String, SamplerConfig>,
    /// Most chains (`n`) per prompt.
    pub max_n: u32,
    /// How long the request body may take to arrive (the completion itself may take up to the
    /// server's completion timeout).
    pub body_timeout: Duration,
    /// The slots of completions served at once (`serve --openai-max-waiting`).
    pub slots: Slots,
}

impl Default for OpenAiSettings {
    fn default() -> Self {
        OpenAiSettings {
            default: SamplerConfig::new(Method::Power),
            defaults: BTreeMap::new(),
            max_n: DEFAULT_MAX_N,
            body_timeout: Duration::from_secs(30),
            slots: Slots::new(DEFAULT_MAX_WAITING),
        }
    }
}

/// The slots of the completions a server handles at once: a request takes one before it reads
/// its body and gives it back once answered, so what all completions hold together is at most
/// this many times what one holds. Clones share the slots.
#[derive(Clone, Debug)]
pub struct Slots {
    semaphore: std::sync::Arc<tokio::sync::Semaphore>,
    capacity: usize,
}

impl Slots {
    /// `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Slots {
        let capacity = capacity.max(1);
        Slots {
            semaphore: std::sync::Arc::new(tokio::sync::Semaphore::new(capacity)),
            capacity,
        }
    }

    /// How many completions may be served at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A slot, or `None` when every slot is taken.
    pub(super) fn try_take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }
}

impl PartialEq for Slots {
    fn eq(&self, other: &Slots) -> bool {
        self.capacity == other.capacity
    }
}

impl OpenAiSettings {
    /// Settings from the values of `serve --openai-defaults MODEL=JSON` (`*` for every model),
    /// each JSON a job configuration such as `{"method": "power", "alpha": 4, "n_mcmc": 10}`.
    pub fn from_flags(entries: &[String], max_n: u32) -> Result<OpenAiSettings, RequestError> {
        let mut settings = OpenAiSettings {
            max_n,
            ..OpenAiSettings::default()
        };
        for entry in entries {
            let Some((model, config)) = entry.split_once('=') else {
                return Err(RequestError::BadRequest(format!(
                    "--openai-defaults must be MODEL=JSON (or *=JSON for every model), such as toy:pivot={{\"method\":\"power\",\"alpha\":4}}; got {}",
                    quote(entry)
                )));
            };
            let config: SamplerConfig = serde_json::from_str(config).map_err(|e| {
                RequestError::BadRequest(format!(
                    "--openai-defaults {model}: not a job configuration ({e}); give JSON such as {{\"method\":\"power\",\"alpha\":4,\"n_mcmc\":10}}"
                ))
            })?;
            config
                .validate()
                .map_err(|e| RequestError::BadRequest(format!("--openai-defaults {model}: {e}")))?;
            if model == "*" {
                settings.default = config;
            } else {
                settings.defaults.insert(model.to_string(), config);
            }
        }
        Ok(settings)
    }

    /// The sampler for `model`, with `overlay` (the request's `power_sampling`) laid over the
    /// model's defaults field by field. An overlay that names another method starts from that
    /// method's own defaults instead, so that no option of the model's method carries over.
    pub fn config_for(
        &self,
        model: &str,
        overlay: Option<&serde_json::Map<String, Value>>,
    ) -> Result<SamplerConfig, OpenAiError> {
        let base = self.defaults.get(model).unwrap_or(&self.default);
        let Some(overlay) = overlay else {
            return Ok(base.clone());
        };
        let mut merged = match serde_json::to_value(base) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("a sampler configuration serializes as an object"),
        };
        if let Some(method) = overlay.get("method")
            && Some(method) != merged.get("method")
        {
            merged = serde_json::Map::from_iter([("method".to_string(), method.clone())]);
        }
        for (key, value) in overlay {
            merged.insert(key.clone(), value.clone());
        }
        let config: SamplerConfig = serde_json::from_value(Value::Object(merged))
            .map_err(|e| OpenAiError::invalid("power_sampling", format!("power_sampling: {e}")))?;
        config
            .validate()
            .map_err(|e| OpenAiError::invalid("power_sampling", format!("power_sampling: {e}")))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn overlay(json: Value) -> serde_json::Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn power_sampling_is_laid_over_the_models_defaults_field_by_field() {
        let settings = OpenAiSettings::from_flags(
            &[
                r#"qwen={"method":"power","alpha":2,"n_mcmc":5}"#.to_string(),
                r#"*={"method":"low-temp","alpha":3}"#.to_string(),
            ],
            8,
        )
        .unwrap();
        let qwen = settings.config_for("qwen", None).unwrap();
        assert_eq!((qwen.method, qwen.n_mcmc), (Method::Power, 5));
        let other = settings.config_for("toy:pivot", None).unwrap();
        assert_eq!(other.method, Method::LowTemp);
        // One field changes; the model's others stay.
        let c = settings
            .config_for("qwen", Some(&overlay(json!({"n_mcmc": 3}))))
            .unwrap();
        assert_eq!((c.n_mcmc, c.alpha), (3, qwen.alpha));
        // Another method starts from its own defaults: the model's alpha does not carry over.
        let c = settings
            .config_for("qwen", Some(&overlay(json!({"method": "standard"}))))
            .unwrap();
        assert_eq!(c, SamplerConfig::new(Method::Standard));
        for bad in [
            json!({"alpha": -1}),
            json!({"n_mcmcs": 3}),
            json!({"n_mcmc": "x"}),
        ] {
            let e = settings
                .config_for("qwen", Some(&overlay(bad)))
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some("power_sampling"));
            assert!(e.message.starts_with("power_sampling: "), "{}", e.message);
        }
    }

    #[test]
    fn server_defaults_that_do_not_parse_name_the_flag_and_the_model() {
        for (flag, needle) in [
            ("qwen", "must be MODEL=JSON"),
            ("qwen={", "--openai-defaults qwen: not a job configuration"),
            (
                r#"qwen={"method":"power","n_mcmc":0}"#,
                "--openai-defaults qwen: ",
            ),
        ] {
            let e = OpenAiSettings::from_flags(&[flag.to_string()], 8).unwrap_err();
            assert!(e.to_string().contains(needle), "{flag}: {e}");
        }
    }
}
