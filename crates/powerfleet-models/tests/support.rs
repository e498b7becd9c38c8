//! What the statistical tests share: the toy models, the exact law they are measured against,
//! many independent runs, and the distance of their completions from the exact law.

use powerfleet_models::exact::{Completions, Histogram, enumerate};
use powerfleet_models::{ToyModel, builtin};
use powerfleet_sampler::{Chain, ChainOutput, TokenId, ValidConfig, run};

/// The built-in toy model `name`.
pub fn model(name: &str) -> ToyModel {
    builtin::load(name).unwrap().unwrap()
}

/// The toy model `name`, its completions of at most `t` tokens after `prompt`, and their exact
/// probabilities under p^α.
pub fn exact_law(
    name: &str,
    prompt: &[TokenId],
    alpha: f64,
    t: u32,
) -> (ToyModel, Completions, Vec<f64>) {
    let m = model(name);
    let completions = enumerate(&m, prompt, t).unwrap();
    let exact = completions.power(alpha);
    (m, completions, exact)
}

/// The outputs of `n` runs (streams 0..n of `seed`), on two threads.
pub fn outputs(
    model: &ToyModel,
    config: &ValidConfig,
    prompt: &[TokenId],
    n: u64,
    seed: u64,
) -> Vec<ChainOutput> {
    let run_range = |range: std::ops::Range<u64>| {
        range
            .map(|stream| {
                let mut chain = Chain::new(config.clone(), prompt, seed, stream);
                run(&mut chain, model).unwrap()
            })
            .collect::<Vec<_>>()
    };
    std::thread::scope(|s| {
        let first = s.spawn(|| run_range(0..n / 2));
        let mut all = first.join().unwrap();
        all.extend(run_range(n / 2..n));
        all
    })
}

/// The total variation between the completions of `outs` and the law `exact` over
/// `completions`; every completion must be one of them.
pub fn tv_of(outs: &[ChainOutput], completions: &Completions, exact: &[f64]) -> f64 {
    let hist = Histogram::new(completions, outs.iter().map(|o| o.tokens.as_slice()));
    assert_eq!(hist.outside, 0, "every completion is a valid one");
    hist.total_variation(exact)
}
