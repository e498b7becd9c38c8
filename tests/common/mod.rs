//! What the end-to-end tests share that must be compiled into each test binary: the path of the
//! `powerfleet` binary, which only an integration test of this package can name. Everything
//! else comes from `powerfleet-testkit`.

pub use powerfleet_testkit::*;

/// The `powerfleet` binary under test, for [`Fleet::new`] and direct runs.
pub const BIN: &str = env!("CARGO_BIN_EXE_powerfleet");

/// A batch of `n_problems` × methods × seeds power-sampling jobs on a toy model.
#[allow(dead_code)]
pub fn batch(
    model: &str,
    config: powerfleet_sampler::SamplerConfig,
    methods: &[powerfleet_sampler::Method],
    n_problems: usize,
    seeds: u64,
) -> powerfleet_fleet::producer::Submission {
    powerfleet_fleet::producer::Submission {
        model: model.to_string(),
        config,
        methods: methods.to_vec(),
        problems: (0..n_problems)
            .map(|i| powerfleet_fleet::producer::Problem {
                id: Some(format!("p{i}")),
                prompt: powerfleet_jobs::Prompt::Tokens(vec![]),
            })
            .collect(),
        seeds: (0..seeds).collect(),
        chains: 1,
        correlation_id: None,
        batch: true,
        submission_key: None,
        fallback_single_sample: false,
        chat: false,
        bench: None,
    }
}
