//! Builders with defaults of the values tests make over and over: job specifications, results
//! and batch submissions. Each setter is named after the field it sets.

use powerfleet_fleet::producer::{BatchLine, Submission};
use powerfleet_fleet::request::{ModelPolicy, RequestLimits, SubmitRequest};
use powerfleet_jobs::{
    BatchId, CorrelationId, GradeRecord, Grading, JobId, JobResult, JobSpec, JobStatus, Prompt,
    now_ms,
};
use powerfleet_sampler::{ChainStats, Method, SamplerConfig, TokenId};

/// Setter methods on `self.$target`, one per field: `val` takes the field's type, `into`
/// anything that converts into it, `some` the value of an `Option` field, `some_into` anything
/// that converts into that value, `opt` a value or an `Option`.
macro_rules! setters {
    ($target:ident; $($kind:ident $field:ident: $ty:ty),* $(,)?) => {
        $(setters!(@one $target $kind $field $ty);)*
    };
    (@one $target:ident val $field:ident $ty:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "`.")]
        pub fn $field(mut self, value: $ty) -> Self {
            self.$target.$field = value;
            self
        }
    };
    (@one $target:ident into $field:ident $ty:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "`.")]
        pub fn $field(mut self, value: impl Into<$ty>) -> Self {
            self.$target.$field = value.into();
            self
        }
    };
    (@one $target:ident some $field:ident $ty:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "` to `Some(value)`.")]
        pub fn $field(mut self, value: $ty) -> Self {
            self.$target.$field = Some(value);
            self
        }
    };
    (@one $target:ident some_into $field:ident $ty:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "` to `Some(value)`.")]
        pub fn $field(mut self, value: impl Into<$ty>) -> Self {
            self.$target.$field = Some(value.into());
            self
        }
    };
    (@one $target:ident opt $field:ident $ty:ty) => {
        #[doc = concat!("Sets `", stringify!($field), "` (a value, or an `Option`).")]
        pub fn $field(mut self, value: impl Into<Option<$ty>>) -> Self {
            self.$target.$field = value.into();
            self
        }
    };
}

/// A [`JobSpec`] under construction; see [`spec`].
#[derive(Clone, Debug)]
pub struct JobSpecBuilder {
    spec: JobSpec,
}

/// A job specification with a fresh job id and correlation id, no batch or problem, on
/// `toy:tiny` with an empty token prompt, method `power` at its defaults, seed 0, stream 0,
/// submitted now.
pub fn spec() -> JobSpecBuilder {
    JobSpecBuilder {
        spec: JobSpec {
            submitted_at_ms: now_ms(),
            ..JobSpec::new(
                "toy:tiny",
                Prompt::Tokens(vec![]),
                SamplerConfig::new(Method::Power),
            )
        },
    }
}

impl JobSpecBuilder {
    setters! { spec;
        val job_id: JobId,
        val correlation_id: CorrelationId,
        opt batch_id: BatchId,
        some_into problem_id: String,
        into model: String,
        val prompt: Prompt,
        val config: SamplerConfig,
        val seed: u64,
        val stream: u64,
        val submitted_at_ms: u64,
        val fallback_single_sample: bool,
        val chat: bool,
        some grading: Grading,
    }

    /// Sets the prompt to `text`.
    pub fn text_prompt(self, text: impl Into<String>) -> Self {
        self.prompt(Prompt::Text(text.into()))
    }

    /// Changes the specification in place, for what no setter covers.
    pub fn with(mut self, change: impl FnOnce(&mut JobSpec)) -> Self {
        change(&mut self.spec);
        self
    }

    /// The specification.
    pub fn build(self) -> JobSpec {
        self.spec
    }
}

/// A [`JobResult`] under construction; see [`result_for`].
#[derive(Clone, Debug)]
pub struct JobResultBuilder {
    result: JobResult,
}

/// The result of `spec` as a worker starts it ([`JobResult::for_spec`]): completed after one
/// attempt, finished now, with no completion, statistics or error yet.
pub fn result_for(spec: &JobSpec) -> JobResultBuilder {
    JobResultBuilder {
        result: JobResult::for_spec(spec, JobStatus::Completed, 1, None),
    }
}

/// [`result_for`] a default [`spec`].
pub fn result() -> JobResultBuilder {
    result_for(&spec().build())
}

impl JobResultBuilder {
    setters! { result;
        val job_id: JobId,
        val correlation_id: CorrelationId,
        opt batch_id: BatchId,
        some_into problem_id: String,
        into model: String,
        val method: Method,
        val seed: u64,
        val stream: u64,
        val status: JobStatus,
        val tokens: Vec<TokenId>,
        some_into text: String,
        some log_p: f64,
        val ends_with_eos: bool,
        val stats: ChainStats,
        val attempts: u32,
        some_into error: String,
        val submitted_at_ms: u64,
        some started_at_ms: u64,
        val finished_at_ms: u64,
        some_into exactness: powerfleet_jobs::Exactness,
        some_into fallback: String,
        some pin: powerfleet_jobs::Pin,
        some_into text_error: String,
        some grading: Grading,
        some grade: GradeRecord,
    }

    /// A chain that ended at EOS with tokens [0, 2], `text` and log p `log_p`, after 10
    /// proposals with 4 acceptances and 20 tokens generated in 11 model calls; submitted 10 ms
    /// and started 5 ms ago.
    pub fn finished_at_eos(self, text: impl Into<String>, log_p: f64) -> Self {
        self.tokens(vec![0, 2])
            .text(text)
            .log_p(log_p)
            .ends_with_eos(true)
            .stats(ChainStats {
                proposals: 10,
                acceptances: 4,
                blocks: vec![],
                tokens_generated: 20,
                model_calls: 11,
                smc: None,
                lookahead: None,
            })
            .submitted_at_ms(now_ms() - 10)
            .started_at_ms(now_ms() - 5)
    }

    /// Changes the result in place, for what no setter covers.
    pub fn with(mut self, change: impl FnOnce(&mut JobResult)) -> Self {
        change(&mut self.result);
        self
    }

    /// The result.
    pub fn build(self) -> JobResult {
        self.result
    }
}

/// A batch submission under construction; see [`batch`].
#[derive(Clone, Debug)]
pub struct BatchBuilder {
    request: SubmitRequest,
    /// Whether the problems are the generated ones of [`BatchBuilder::problems`] (which
    /// [`BatchBuilder::problem`] replaces) rather than given one by one.
    generated: bool,
}

/// A `power` configuration of `n_mcmc` steps per block, blocks of 2 tokens and exactly
/// `max_new_tokens` tokens (EOS does not end the chain): long, predictable jobs for the tests
/// that kill, stop or move things mid-batch.
pub fn long_config(n_mcmc: u32, max_new_tokens: u32) -> SamplerConfig {
    SamplerConfig {
        n_mcmc,
        block_size: 2,
        max_new_tokens,
        finish_on_eos: false,
        ..SamplerConfig::new(Method::Power)
    }
}

/// A batch on `model`: one problem `p0` with an empty token prompt, method `power` at its
/// defaults, seed 0, one chain.
pub fn batch(model: &str) -> BatchBuilder {
    BatchBuilder {
        request: SubmitRequest {
            model: model.to_string(),
            ..SubmitRequest::default()
        },
        generated: true,
    }
    .problems(1)
}

impl BatchBuilder {
    /// The base sampler configuration.
    pub fn config(mut self, config: SamplerConfig) -> Self {
        self.request.config = Some(config);
        self
    }

    /// The methods every problem runs with (default: the configuration's).
    pub fn methods(mut self, methods: &[Method]) -> Self {
        self.request.methods = Some(methods.to_vec());
        self
    }

    /// `n` problems `p0`, `p1`, … with empty token prompts, in place of any others.
    pub fn problems(mut self, n: usize) -> Self {
        let lines = (0..n)
            .map(|i| BatchLine {
                id: Some(format!("p{i}")),
                prompt: None,
                prompt_tokens: Some(vec![]),
                messages: None,
            })
            .collect();
        self.request.problems = Some(lines);
        self.generated = true;
        self
    }

    /// Adds the problem `id` with `prompt`; the first one replaces the generated problems.
    pub fn problem(mut self, id: &str, prompt: Prompt) -> Self {
        let line = BatchLine::from(powerfleet_fleet::producer::SubmittedPrompt {
            id: Some(id.to_string()),
            prompt,
        });
        match (&mut self.request.problems, self.generated) {
            (Some(lines), false) => lines.push(line),
            _ => self.request.problems = Some(vec![line]),
        }
        self.generated = false;
        self
    }

    /// Seeds `0..n` per problem and method.
    pub fn seeds(mut self, n: u64) -> Self {
        self.request.seeds = Some((0..n).collect());
        self
    }

    /// The one seed `seed` per problem and method.
    pub fn seed(mut self, seed: u64) -> Self {
        self.request.seeds = Some(vec![seed]);
        self
    }

    /// Chains per (problem, method, seed).
    pub fn chains(mut self, chains: u64) -> Self {
        self.request.chains = Some(chains);
        self
    }

    /// Whether MCMC jobs may run as one sample where the backend cannot run MCMC.
    pub fn fallback_single_sample(mut self, fallback: bool) -> Self {
        self.request.fallback_single_sample = fallback;
        self
    }

    /// Whether text prompts go through the model's chat template.
    pub fn chat(mut self, chat: bool) -> Self {
        self.request.chat = chat;
        self
    }

    /// The submission's label; panics if it is not a valid one.
    pub fn label(mut self, label: &str) -> Self {
        self.request.label = Some(label.parse().expect("a valid label"));
        self
    }

    /// The request this batch is submitted as.
    pub fn request(self) -> SubmitRequest {
        self.request
    }

    /// The submission, made from the request as the operator's CLI makes it
    /// ([`RequestLimits::operator`], [`ModelPolicy::operator`]); panics if the request is refused.
    pub fn build(self) -> Submission {
        self.request
            .into_submission(&RequestLimits::operator(), &ModelPolicy::operator())
            .unwrap_or_else(|e| panic!("the batch is refused: {e}"))
    }
}
