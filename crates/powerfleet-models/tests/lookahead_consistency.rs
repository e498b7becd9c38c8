//! Statistical proof that power-lookahead approaches p^α as its rollouts M grow: on enumerable toy
//! models, with every token a candidate (K = vocabulary) and rollouts to the end of the
//! completion, the law of its completions comes within the sampling noise plus a bias bound of
//! the exact p^α; the jackknife lowers the distance at few rollouts; and one candidate is greedy
//! decoding on p. Seeds are fixed, so every run is identical.
//!
//! The bound. At a prefix h the chain draws the next token from P̂ = Σ_j N_j / Σ_j D_j, with, for
//! rollout index j, D_j = Σ_c p(c)^α w_cj and N_j(φ) = Σ_c p(c)^α w_cj φ(c) (w_cj the weight of
//! candidate c's j-th rollout; 1 for a candidate whose ζ is 1). The pairs are i.i.d. over j, so
//! P̂(φ) is a self-normalized importance estimate with M samples of the test function
//! N_j / D_j, bounded by 1 when φ is, and weight D_j, whose target is E[N] / E[D], the exact
//! next-token law of p^α. Hence (Agapiou, Papaspiliopoulos, Sanz-Alonso, Stuart 2017, Theorem
//! 2.1) the law of the chosen token is within TV 6 ρ(h) / M of it, with
//! ρ(h) = E[D²] / E[D]² = 1 + Σ_c p(c)^{2α} Var(w_c) / (Σ_c p(c)^α ζ(c))², computed here by
//! enumerating each candidate's futures. Two autoregressive laws are within TV of the sum over
//! steps of the expected per-step TV under either one's prefixes, so the completions' law is
//! within B(M) = Σ_h π(h) · min(1, 6 ρ(h) / M) of p^α, π(h) the exact probability under p^α of a
//! completion that starts with h. The bound holds for the plain ratio estimate; the jackknifed one
//! is checked against the same bound, which it is expected to beat, not proven to.

use std::collections::HashMap;

use powerfleet_models::ToyModel;
use powerfleet_models::exact::{Completions, enumerate, tv_tolerance};
use powerfleet_sampler::{Alpha, Method, SamplerConfig, TokenId, ValidConfig};

use crate::support::{exact_law, model, outputs, tv_of};

/// Independent runs per measurement.
const RUNS: u64 = 8_000;
/// The tolerance holds with probability 1 − DELTA for exact independent samples.
const DELTA: f64 = 1e-6;
/// The rollouts M of the sweep.
const SWEEP: [u32; 4] = [1, 4, 16, 64];

/// Rollouts from the base model (proposal temperature 1), as in the paper: their weights
/// p^(α−1) vary far more than at the default temperature 1/α, so the estimate's bias shows.
const TAU: f64 = 1.0;

fn lookahead(alpha: f64, candidates: u32, rollouts: u32, jackknife: bool, t: u32) -> ValidConfig {
    SamplerConfig {
        alpha: Some(Alpha::new(alpha).unwrap()),
        proposal_temp: Some(TAU),
        block_size: t,
        max_new_tokens: t,
        lookahead_candidates: Some(candidates),
        lookahead_rollouts: Some(rollouts),
        lookahead_jackknife: Some(jackknife),
        ..SamplerConfig::new(Method::PowerLookahead)
    }
    .validate()
    .unwrap()
}

/// For every prefix h of a completion (shorter than `t`, not ended), π(h) and ρ(h), at proposal
/// temperature [`TAU`].
fn prefixes(
    m: &ToyModel,
    prompt: &[TokenId],
    alpha: f64,
    t: u32,
    completions: &Completions,
    exact: &[f64],
) -> Vec<(f64, f64)> {
    let mut mass: HashMap<&[TokenId], f64> = HashMap::new();
    for (c, p) in completions.entries.iter().zip(exact) {
        for len in 0..c.tokens.len() {
            *mass.entry(&c.tokens[..len]).or_default() += p;
        }
    }
    mass.into_iter()
        .map(|(h, pi_h)| {
            let context: Vec<TokenId> = prompt.iter().chain(h).copied().collect();
            let mut z = 0.0;
            let mut variance = 0.0;
            for (c, &lp) in m.next_log_probs(&context, &[]).iter().enumerate() {
                if !lp.is_finite() {
                    continue;
                }
                let c = c as TokenId;
                let pa = (alpha * lp).exp();
                if c == m.eos() || h.len() + 1 == t as usize {
                    z += pa;
                    continue;
                }
                let after: Vec<TokenId> = context.iter().copied().chain([c]).collect();
                let futures = enumerate(m, &after, t - h.len() as u32 - 1).unwrap();
                let q = futures.proposal(m, &after, TAU, None);
                let (mut zeta, mut second) = (0.0, 0.0);
                for (y, qy) in futures.entries.iter().zip(&q) {
                    let w = (alpha * y.log_p).exp() / qy;
                    zeta += qy * w;
                    second += qy * w * w;
                }
                z += pa * zeta;
                variance += pa * pa * (second - zeta * zeta);
            }
            (pi_h, 1.0 + variance.max(0.0) / (z * z))
        })
        .collect()
}

/// B(M) = Σ_h π(h) · min(1, 6 ρ(h) / M).
fn bias_bound(prefixes: &[(f64, f64)], rollouts: u32) -> f64 {
    prefixes
        .iter()
        .map(|&(pi_h, rho)| pi_h * (6.0 * rho / f64::from(rollouts)).min(1.0))
        .sum()
}

/// The toy models of the tests: name, α, token budget T (the prompt is empty).
const CASES: [(&str, f64, u32); 3] = [("eos-lengths", 4.0, 4), ("pivot", 4.0, 3), ("tiny", 3.0, 5)];

#[test]
fn the_law_approaches_p_alpha_as_rollouts_grow() {
    for (name, alpha, t) in CASES {
        let (m, completions, exact) = exact_law(name, &[], alpha, t);
        let k = m.vocab().len() as u32;
        let prefixes = prefixes(&m, &[], alpha, t, &completions, &exact);
        let noise = tv_tolerance(&exact, RUNS, DELTA);
        let mut tvs = Vec::new();
        for rollouts in SWEEP {
            let outs = outputs(&m, &lookahead(alpha, k, rollouts, false, t), &[], RUNS, 11);
            let tv = tv_of(&outs, &completions, &exact);
            let bound = bias_bound(&prefixes, rollouts);
            eprintln!(
                "{name} α={alpha} T={t} M={rollouts}: TV {tv:.4}, noise {noise:.4} + bias bound {bound:.4}"
            );
            assert!(
                tv <= noise + bound,
                "{name} M={rollouts}: TV {tv} above noise + B(M) = {}",
                noise + bound
            );
            tvs.push(tv);
        }
        let last = *tvs.last().unwrap();
        if prefixes.iter().all(|&(_, rho)| (rho - 1.0).abs() < 1e-9) {
            // Every rollout of a candidate has the same weight (toy:pivot): exact at any M.
            assert!(tvs.iter().all(|&tv| tv < noise), "{name}: {tvs:?}");
        } else {
            assert!(
                tvs[0] > noise,
                "{name}: M = 1 is measurably off p^α: {tvs:?}"
            );
            assert!(last < tvs[0] / 2.0, "{name}: TV falls with M: {tvs:?}");
        }
        let jack = outputs(&m, &lookahead(alpha, k, 64, true, t), &[], RUNS, 11);
        let tv = tv_of(&jack, &completions, &exact);
        eprintln!("{name} M=64 jackknifed: TV {tv:.4}");
        assert!(tv <= noise + bias_bound(&prefixes, 64), "{name}: {tv}");
    }
}

#[test]
fn the_jackknife_lowers_the_distance_at_few_rollouts() {
    for (name, alpha, t) in CASES {
        if name == "pivot" {
            continue; // exact at any M: nothing to correct
        }
        let (m, completions, exact) = exact_law(name, &[], alpha, t);
        let k = m.vocab().len() as u32;
        for rollouts in [2, 4] {
            // The same seeds: both draw the same rollouts and uniforms, only the estimate differs.
            let plain = tv_of(
                &outputs(&m, &lookahead(alpha, k, rollouts, false, t), &[], RUNS, 13),
                &completions,
                &exact,
            );
            let jack_outs = outputs(&m, &lookahead(alpha, k, rollouts, true, t), &[], RUNS, 13);
            let jack = tv_of(&jack_outs, &completions, &exact);
            let clipped: u64 = jack_outs
                .iter()
                .map(|o| o.stats.lookahead.as_ref().unwrap().clipped)
                .sum();
            eprintln!(
                "{name} M={rollouts}: TV {plain:.4} plain, {jack:.4} jackknifed ({clipped} values clipped)"
            );
            assert!(jack < plain, "{name} M={rollouts}: {jack} vs {plain}");
        }
    }
}

#[test]
fn one_candidate_is_greedy_decoding_on_p() {
    for (name, alpha, t) in CASES {
        let m = model(name);
        for o in outputs(&m, &lookahead(alpha, 1, 2, true, t), &[], 200, 17) {
            for (i, &token) in o.tokens.iter().enumerate() {
                let lp = m.next_log_probs(&o.tokens[..i], &[]);
                let best = (0..lp.len())
                    .max_by(|&a, &b| lp[a].total_cmp(&lp[b]).then(b.cmp(&a)))
                    .unwrap();
                assert_eq!(token as usize, best, "{name}: {:?} at {i}", o.tokens);
                assert_eq!(o.token_log_p[i], lp[best]);
            }
            assert!(o.ends_with_eos || o.tokens.len() == t as usize);
        }
    }
}
