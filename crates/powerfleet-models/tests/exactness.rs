//! Statistical proof that the sampler targets p^α: on toy models small enough to enumerate, the
//! final states of many independent chains land within the total-variation tolerance that the
//! sample size allows of the exact distribution. Seeds are fixed, so every run is identical.

use powerfleet_models::ToyModel;
use powerfleet_models::exact::{Completions, Histogram, enumerate, tv_tolerance};
use powerfleet_sampler::{Alpha, Chain, Method, Ratio, SamplerConfig, TokenId, ValidConfig, run};

use crate::support::{exact_law, model};

const N_CHAINS: u64 = 20_000;
/// MH steps in the single block: enough that the chains' distance from stationarity is far below
/// the tolerance (on eos-lengths at α = 4, TV to p^α falls from 0.45 at 10 steps to 0.076 at 60
/// and to sampling noise from about 200 on).
const N_MCMC: u32 = 400;
/// The tolerance holds with probability 1 − DELTA for exact independent samples.
const DELTA: f64 = 1e-6;

/// Final completions of `n` chains (streams 0..n of `seed`), on two threads.
fn sample(
    model: &ToyModel,
    config: &ValidConfig,
    prompt: &[TokenId],
    n: u64,
    seed: u64,
) -> Vec<Vec<TokenId>> {
    let half = n / 2;
    let run_range = |range: std::ops::Range<u64>| {
        range
            .map(|stream| {
                let mut chain = Chain::new(config.clone(), prompt, seed, stream);
                run(&mut chain, model).unwrap().tokens
            })
            .collect::<Vec<_>>()
    };
    std::thread::scope(|s| {
        let first = s.spawn(|| run_range(0..half));
        let second = run_range(half..n);
        let mut all = first.join().unwrap();
        all.extend(second);
        all
    })
}

fn one_block(alpha: f64, n_mcmc: u32, max_new_tokens: u32, ratio: Ratio) -> ValidConfig {
    SamplerConfig {
        alpha: Some(Alpha::new(alpha).unwrap()),
        n_mcmc,
        block_size: max_new_tokens,
        max_new_tokens,
        ratio,
        ..SamplerConfig::new(Method::Power)
    }
    .validate()
    .unwrap()
}

struct Measured {
    tv: f64,
    tolerance: f64,
}

fn measure(
    model: &ToyModel,
    config: &ValidConfig,
    prompt: &[TokenId],
    seed: u64,
    exact: &[f64],
    completions: &Completions,
) -> Measured {
    let samples = sample(model, config, prompt, N_CHAINS, seed);
    let hist = Histogram::new(completions, samples.iter().map(Vec::as_slice));
    assert_eq!(hist.outside, 0, "every sample is a valid completion");
    Measured {
        tv: hist.total_variation(exact),
        tolerance: tv_tolerance(exact, N_CHAINS, DELTA),
    }
}

#[test]
fn power_sampling_matches_exact_p_alpha_when_eos_varies_lengths() {
    for (name, alpha, t, prompt) in [
        ("eos-lengths", 4.0, 4, vec![]),
        ("eos-lengths", 2.0, 5, vec![1]),
        ("tiny", 3.0, 5, vec![]),
    ] {
        let m = model(name);
        let completions = enumerate(&m, &prompt, t).unwrap();
        let lengths: std::collections::BTreeSet<usize> =
            completions.entries.iter().map(|c| c.tokens.len()).collect();
        assert!(
            lengths.len() >= 3,
            "{name}: completions end at several lengths"
        );
        let exact = completions.power(alpha);
        let config = one_block(alpha, N_MCMC, t, Ratio::Exact);
        let got = measure(&m, &config, &prompt, 11, &exact, &completions);
        eprintln!(
            "{name} alpha={alpha} T={t}: TV {:.4} tolerance {:.4}",
            got.tv, got.tolerance
        );
        assert!(
            got.tv < got.tolerance,
            "{name} α={alpha}: TV {} exceeds tolerance {}",
            got.tv,
            got.tolerance
        );
    }
}

#[test]
fn reference_ratio_is_measurably_biased_where_ours_is_not() {
    let (alpha, t) = (4.0, 4);
    let (m, completions, exact) = exact_law("eos-lengths", &[], alpha, t);
    let ours = measure(
        &m,
        &one_block(alpha, N_MCMC, t, Ratio::Exact),
        &[],
        5,
        &exact,
        &completions,
    );
    let reference = measure(
        &m,
        &one_block(alpha, N_MCMC, t, Ratio::Reference),
        &[],
        5,
        &exact,
        &completions,
    );
    eprintln!(
        "exact TV {:.4}, reference TV {:.4}, tolerance {:.4}",
        ours.tv, reference.tv, ours.tolerance
    );
    assert!(ours.tv < ours.tolerance);
    assert!(
        reference.tv > 3.0 * reference.tolerance,
        "the reference ratio should be clearly biased: TV {} vs tolerance {}",
        reference.tv,
        reference.tolerance
    );
}

#[test]
fn low_temp_is_misled_by_the_pivot_and_power_is_not() {
    let (alpha, t) = (4.0, 4);
    let (m, completions, exact) = exact_law("pivot", &[], alpha, t);
    let tolerance = tv_tolerance(&exact, N_CHAINS, DELTA);

    let power = measure(
        &m,
        &one_block(alpha, N_MCMC, t, Ratio::Exact),
        &[],
        3,
        &exact,
        &completions,
    );
    assert!(
        power.tv < tolerance,
        "power TV {} vs tolerance {tolerance}",
        power.tv
    );

    let low_temp = SamplerConfig {
        alpha: Some(Alpha::new(alpha).unwrap()),
        max_new_tokens: t,
        block_size: t,
        ..SamplerConfig::new(Method::LowTemp)
    }
    .validate()
    .unwrap();
    let low = measure(&m, &low_temp, &[], 3, &exact, &completions);
    // Low-temp samples its own exact distribution (temperature-1/α proposal) ...
    let q = completions.proposal(&m, &[], low_temp.temperature(), None);
    let samples = sample(&m, &low_temp, &[], N_CHAINS, 3);
    let hist = Histogram::new(&completions, samples.iter().map(Vec::as_slice));
    assert!(hist.total_variation(&q) < tv_tolerance(&q, N_CHAINS, DELTA));
    // ... which is far from p^α: the exact gap, and the measured one, are many tolerances wide.
    let exact_gap = 0.5
        * q.iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>();
    eprintln!(
        "pivot: power TV {:.4}, low-temp TV {:.4} (exact gap {exact_gap:.4}), tolerance {tolerance:.4}",
        power.tv, low.tv
    );
    assert!(exact_gap > 0.5);
    assert!(
        low.tv > 10.0 * tolerance,
        "low-temp TV {} vs tolerance {tolerance}",
        low.tv
    );
}

#[test]
fn max_swap_climbs_to_the_most_likely_completion() {
    let m = model("pivot");
    let t = 4;
    let completions = enumerate(&m, &[], t).unwrap();
    let mode = completions.power(f64::INFINITY);
    let config = SamplerConfig {
        n_mcmc: 100,
        block_size: t,
        max_new_tokens: t,
        ..SamplerConfig::new(Method::MaxSwap)
    }
    .validate()
    .unwrap();
    let n = 2_000;
    let samples = sample(&m, &config, &[], n, 9);
    let hist = Histogram::new(&completions, samples.iter().map(Vec::as_slice));
    // "B b <eos>" is the unique mode; the proposal at temperature 0.25 reaches it from any state.
    assert_eq!(
        m.detokenize(&completions.entries[mode.iter().position(|&p| p == 1.0).unwrap()].tokens),
        "B b <eos>"
    );
    assert!(
        hist.total_variation(&mode) < tv_tolerance(&mode, n, DELTA),
        "{hist:?}"
    );
}
