//! A submission expanded into its jobs, problems x methods x seeds x chains, every one checked
//! (configs per method, models, prompts against toy vocabularies, graded runs) before anything
//! is enqueued.

use std::collections::BTreeMap;

use powerfleet_jobs::{
    BatchId, CorrelationId, JobId, JobSpec, Prompt, ReferenceAnswer, StoredPrompt, now_ms,
};
use powerfleet_models::resolve_toy;
use powerfleet_sampler::Method;

use super::{MAX_JOBS_PER_SUBMISSION, Submission};

/// A submission that fails validation: its jobs cannot be built ([`Submission::jobs`]) or its
/// submission key is malformed. The message names the field, method or problem and what is
/// allowed. [`submit`] returns it as [`SubmitError::Invalid`], the request path's own checks as
/// [`crate::request::RequestError::Invalid`]; the API answers either with 422.
///
/// [`submit`]: super::submit
/// [`SubmitError::Invalid`]: super::SubmitError::Invalid
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSubmission(pub String);

/// The jobs of a submission as they are enqueued: each job's specification references its
/// prompt, and each distinct prompt is stored once ([`Submission::stored_jobs`]).
#[derive(Clone, Debug)]
pub struct StoredJobs {
    /// The jobs, each with a [`Prompt::Stored`] prompt.
    pub specs: Vec<JobSpec>,
    /// The distinct prompts they reference.
    pub prompts: Vec<StoredPrompt>,
}

impl Submission {
    /// Builds and checks every job, each with its prompt inline; nothing touches the queue.
    pub fn jobs(
        &self,
        correlation_id: &CorrelationId,
        batch_id: Option<BatchId>,
    ) -> Result<Vec<JobSpec>, InvalidSubmission> {
        self.build_jobs(correlation_id, batch_id, false)
            .map(|jobs| jobs.specs)
            .map_err(InvalidSubmission)
    }

    /// Builds and checks every job as [`submit`] enqueues it: prompts by reference, each
    /// distinct prompt once. Nothing is copied per job but the reference.
    ///
    /// [`submit`]: super::submit
    pub fn stored_jobs(
        &self,
        correlation_id: &CorrelationId,
        batch_id: Option<BatchId>,
    ) -> Result<StoredJobs, InvalidSubmission> {
        self.build_jobs(correlation_id, batch_id, true)
            .map_err(InvalidSubmission)
    }

    fn build_jobs(
        &self,
        correlation_id: &CorrelationId,
        batch_id: Option<BatchId>,
        by_reference: bool,
    ) -> Result<StoredJobs, String> {
        if self.methods.is_empty() {
            return Err(format!(
                "methods must name at least one of {}",
                Method::names()
            ));
        }
        if self.seeds.is_empty() {
            return Err("seeds must be >= 1, got 0".into());
        }
        if self.chains == 0 {
            return Err("chains must be >= 1, got 0".into());
        }
        let total = self
            .graded_run
            .as_ref()
            .map_or(self.problems.len(), |b| b.problems.len()) as u128
            * self.methods.len() as u128
            * self.seeds.len() as u128
            * u128::from(self.chains);
        if total > MAX_JOBS_PER_SUBMISSION as u128 {
            return Err(format!(
                "this submission makes {total} jobs; at most {MAX_JOBS_PER_SUBMISSION} are accepted at once, split it"
            ));
        }
        // Per-method configuration, checked once each.
        let mut configs = BTreeMap::new();
        for &method in &self.methods {
            let config = self.config.for_method(method, &self.methods);
            let valid = config
                .validate()
                .map_err(|e| format!("method {method}: {e}"))?;
            // A server that does not honour the proposal temperature exactly would make log q
            // wrong; refuse it here when the submission names the server (registered names are
            // checked by the worker).
            if let Ok(powerfleet_backends::ModelRef::Http(h)) =
                powerfleet_backends::parse(&self.model)
            {
                h.kind.check_proposal(valid.temperature()).map_err(|e| {
                    format!(
                        "method {method}: proposal temperature on {}: {e}",
                        h.kind.prefix()
                    )
                })?;
            }
            configs.insert(method.as_str(), config);
        }
        let problem_count = self
            .graded_run
            .as_ref()
            .map_or(self.problems.len(), |b| b.problems.len());
        if self.graded_run.is_some() && !self.problems.is_empty() {
            return Err("give a benchmark or prompts, not both".into());
        }
        if let Some(run) = &self.graded_run {
            run.check()?;
        }
        // Every model of the submission, checked once; toy models check prompts here, others at
        // the worker.
        let mut toys = BTreeMap::new();
        let models = std::iter::once(self.model.as_str()).chain(
            self.graded_run
                .iter()
                .flat_map(|b| b.problems.iter().filter_map(|p| p.model.as_deref())),
        );
        for model in models {
            if toys.contains_key(model) {
                continue;
            }
            toys.insert(model.to_string(), self.check_model(model)?);
        }
        let ids = self.problems.iter().filter_map(|p| p.id.as_deref()).chain(
            self.graded_run
                .iter()
                .flat_map(|b| b.problems.iter().map(|p| p.problem.id.as_str())),
        );
        if let Some(bad) = std::iter::once(self.model.as_str())
            .chain(ids)
            .find(|t| t.chars().any(char::is_control))
        {
            return Err(format!(
                "model and problem ids must not contain control characters, got {bad:?}"
            ));
        }
        let now = now_ms();
        let mut jobs = Vec::with_capacity(total as usize);
        let mut stored: BTreeMap<String, StoredPrompt> = BTreeMap::new();
        // The prompt a job carries: a reference to the one stored copy, or the prompt itself.
        let mut place = |prompt: Prompt| -> Prompt {
            if !by_reference {
                return prompt;
            }
            let s = StoredPrompt::of(&prompt);
            let reference = s.reference.clone();
            stored.entry(reference.sha256.clone()).or_insert(s);
            Prompt::Stored(reference)
        };
        for p_idx in 0..problem_count {
            let (id, model) = match &self.graded_run {
                Some(run) => {
                    let p = &run.problems[p_idx];
                    (
                        Some(p.problem.id.clone()),
                        p.model.as_deref().unwrap_or(&self.model),
                    )
                }
                None => (self.problems[p_idx].id.clone(), self.model.as_str()),
            };
            let where_ = id.as_ref().map_or(format!("prompt {}", p_idx + 1), |id| {
                format!("problem {id}")
            });
            // A problem's own prompt is checked and placed once, whatever the seed.
            let own = match &self.graded_run {
                Some(_) => None,
                None => {
                    let prompt = &self.problems[p_idx].prompt;
                    self.check_prompt(toys[model].as_ref(), prompt)
                        .map_err(|e| format!("{where_}: {e}"))?;
                    Some(place(prompt.clone()))
                }
            };
            for &seed in &self.seeds {
                let (prompt, grading) = match (&self.graded_run, &own) {
                    (Some(run), _) => {
                        let (prompt, grading) = run.render(&run.problems[p_idx], seed);
                        // Prompts that do not depend on the seed are checked once.
                        if seed == self.seeds[0]
                            || matches!(grading.reference, ReferenceAnswer::Choice { .. })
                        {
                            self.check_prompt(toys[model].as_ref(), &prompt)
                                .map_err(|e| format!("{where_}: {e}"))?;
                        }
                        (place(prompt), Some(grading))
                    }
                    (None, Some(own)) => (own.clone(), None),
                    (None, None) => unreachable!("a prompt's problem has its own prompt"),
                };
                for &method in &self.methods {
                    for stream in 0..self.chains {
                        jobs.push(JobSpec {
                            job_id: JobId::new(),
                            correlation_id: correlation_id.clone(),
                            batch_id,
                            problem_id: id.clone(),
                            model: model.to_string(),
                            prompt: prompt.clone(),
                            config: configs[method.as_str()].clone(),
                            seed,
                            stream,
                            submitted_at_ms: now,
                            fallback_single_sample: self.fallback_single_sample,
                            stop: self.stop.clone(),
                            chat: self.chat,
                            grading: grading.clone(),
                            label: self.label.clone(),
                        });
                    }
                }
            }
        }
        if let Some(big) = jobs.iter().find(|j| {
            serde_json::to_vec(j).map_or(0, |v| v.len()) > powerfleet_queue::MAX_ENTRY_BYTES / 2
        }) {
            return Err(format!(
                "the job for problem {} is larger than {} bytes; shorten its prompt",
                big.problem_id.as_deref().unwrap_or("1"),
                powerfleet_queue::MAX_ENTRY_BYTES / 2
            ));
        }
        Ok(StoredJobs {
            specs: jobs,
            prompts: stored.into_values().collect(),
        })
    }
}

impl Submission {
    /// Checks a model reference; returns the toy model it names, if it is one.
    fn check_model(&self, model: &str) -> Result<Option<powerfleet_models::ToyModel>, String> {
        if model.trim().is_empty() {
            return Err("model must name a model reference such as toy:pivot".into());
        }
        if powerfleet_backends::is_remote_reference(model) {
            match powerfleet_backends::parse(model) {
                Err(e) => return Err(format!("model: {e}")),
                Ok(powerfleet_backends::ModelRef::Hosted(h)) => {
                    if let Some(m) = self.methods.iter().find(|m| m.needs_log_probs())
                        && !self.fallback_single_sample
                    {
                        return Err(format!(
                            "model: method {m} on {:?} {}: {}; submit with --fallback-single-sample to run one sample at the proposal temperature instead (recorded in each result)",
                            h.provider,
                            h.model,
                            powerfleet_backends::HOSTED_CHAT_REFUSAL
                        ));
                    }
                    if self
                        .problems
                        .iter()
                        .any(|p| !matches!(p.prompt, Prompt::Text(_)))
                    {
                        return Err(
                            "model: hosted chat APIs take text prompts, not token ids or messages"
                                .to_string(),
                        );
                    }
                }
                Ok(powerfleet_backends::ModelRef::Http(_)) => {}
            }
        }
        if !model.starts_with("toy:") {
            return Ok(None);
        }
        if self.chat {
            return Err(format!(
                "chat: model {model} is a toy model, which has no chat template; submit without --chat"
            ));
        }
        let base = model.split('?').next().unwrap_or(model);
        resolve_toy(base)
            .map(Some)
            .map_err(|e| format!("model: {e}"))
    }

    /// Checks a prompt against its toy model (other models check it at the worker).
    fn check_prompt(
        &self,
        toy: Option<&powerfleet_models::ToyModel>,
        prompt: &Prompt,
    ) -> Result<(), String> {
        if self.chat && matches!(prompt, Prompt::Tokens(_)) {
            return Err(
                "chat formats text prompts through the model's template; give a text prompt, not token ids"
                    .into(),
            );
        }
        let Some(model) = toy else {
            return Ok(());
        };
        match prompt {
            Prompt::Text(t) => model.tokenize(t).map(|_| ()).map_err(|e| e.to_string()),
            Prompt::Tokens(ids) => model.check_tokens(ids).map_err(|e| e.to_string()),
            Prompt::Messages(_) => Err(format!(
                "messages: model {} is a toy model, which has no chat template; give a text prompt or token ids",
                model.name()
            )),
            Prompt::Stored(_) => Err(
                "a submission gives its prompts as text, token ids or messages, not as stored references"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::tests::submission;

    #[test]
    fn jobs_are_problems_times_methods_times_seeds() {
        let s = submission();
        let corr = CorrelationId::generate();
        let jobs = s.jobs(&corr, Some(BatchId::new())).unwrap();
        assert_eq!(jobs.len(), 2 * 3 * 2);
        let max_swap = jobs.iter().find(|j| j.method() == Method::MaxSwap).unwrap();
        assert!(max_swap.validate().unwrap().alpha().is_infinite());
        let ids: std::collections::HashSet<_> = jobs.iter().map(|j| j.job_id).collect();
        assert_eq!(ids.len(), jobs.len());
    }

    #[test]
    fn proposal_temperatures_a_vllm_server_would_clamp_are_refused_at_submission() {
        let mut s = submission();
        s.methods = vec![Method::Power];
        s.problems.truncate(1);
        s.model = "vllm+http://127.0.0.1:9?model=m".into();
        let corr = CorrelationId::generate();
        s.config.proposal_temp = Some(0.001);
        let err = s.jobs(&corr, None).unwrap_err().to_string();
        assert!(
            err.contains("method power: proposal temperature on vllm"),
            "{err}"
        );
        s.config.proposal_temp = Some(0.25);
        assert!(s.jobs(&corr, None).is_ok());
        s.model = "llamacpp+http://127.0.0.1:9".into();
        s.config.proposal_temp = Some(0.001);
        assert!(
            s.jobs(&corr, None).is_ok(),
            "llama.cpp honours any temperature > 0"
        );
    }

    #[test]
    fn invalid_submissions_name_the_problem() {
        let corr = CorrelationId::generate();
        let mut s = submission();
        s.problems[1].prompt = Prompt::Tokens(vec![42]);
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("problem b: token id 42")
        );
        let mut s = submission();
        s.problems[0].prompt = Prompt::Text("A zz".into());
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("problem a: unknown token \"zz\"")
        );
        let mut s = submission();
        s.config.n_mcmc = 0;
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("method power: n_mcmc must be >= 1")
        );
        let mut s = submission();
        s.model = "toy:nope".into();
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .starts_with("model: ")
        );
        let mut s = submission();
        s.model = "anthropic+https://api.anthropic.com?model=claude".into();
        s.problems.truncate(1);
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("cannot continue a completion from a token prefix")
        );
        s.fallback_single_sample = true;
        let jobs = s
            .jobs(&corr, None)
            .expect("with the fallback, MCMC jobs run as one sample");
        assert!(jobs.iter().all(|j| j.fallback_single_sample));
        s.methods = vec![Method::Standard];
        s.fallback_single_sample = false;
        assert!(
            s.jobs(&corr, None).is_ok(),
            "single-sample methods need no fallback"
        );
        s.problems[0].prompt = Prompt::Tokens(vec![1]);
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("text prompts")
        );
        let mut s = submission();
        s.model = "vllm+http://gpu:8000".into();
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("need ?model=NAME")
        );
        let mut s = submission();
        s.model = "llamacpp+http://gpu:8080".into();
        assert!(
            s.jobs(&corr, None).is_ok(),
            "server prompts are checked by the worker"
        );
        let mut s = submission();
        s.chains = 100_000;
        assert!(
            s.jobs(&corr, None)
                .unwrap_err()
                .to_string()
                .contains("split it")
        );
    }
}
