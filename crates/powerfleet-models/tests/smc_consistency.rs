//! Statistical proof that Power-SMC is consistent for p^α: on the enumerable toy models, the law
//! of the returned particle approaches the exact p^α as the particles N grow, within the sampling
//! noise plus the bias bound of self-normalized importance sampling; N = 1 is exactly low-temp
//! sampling; and the weighted set's estimate of each completion's probability converges too.
//! Seeds are fixed, so every run is identical.
//!
//! The bound. With one block (no intermediate resampling), the returned particle is drawn from the
//! self-normalized importance-sampling estimate π^N = Σ W_i δ_{x_i}, x_i ~ q i.i.d., so for every
//! |φ| <= 1, E[φ(returned)] = E[π^N(φ)], and (Agapiou, Papaspiliopoulos, Sanz-Alonso, Stuart 2017,
//! Theorem 2.1) |E[π^N(φ)] − π(φ)| <= 12 ρ / N with ρ = E_q[w²] / E_q[w]² = Σ_x π(x)² / q(x).
//! Hence TV(law_N, π) <= 6 ρ / N, and ρ is computed exactly here by enumeration.

use powerfleet_models::exact::{enumerate, tv_tolerance};
use powerfleet_sampler::{Alpha, AlphaSchedule, Method, SamplerConfig, ValidConfig};

use crate::support::{exact_law, model, outputs, tv_of};

/// Independent SMC runs per measurement.
const RUNS: u64 = 4_000;
/// The tolerance holds with probability 1 − DELTA for exact independent samples.
const DELTA: f64 = 1e-6;

fn smc(alpha: f64, particles: u32, block_size: u32, max_new_tokens: u32) -> ValidConfig {
    SamplerConfig {
        alpha: Some(Alpha::new(alpha).unwrap()),
        block_size,
        max_new_tokens,
        particles: Some(particles),
        ..SamplerConfig::new(Method::PowerSmc)
    }
    .validate()
    .unwrap()
}

/// power-smc with blocks of `block_size` tokens that resamples whenever the weights are not
/// all equal (ESS threshold 1), `moves` Metropolis-Hastings moves per particle after each
/// resampling, and α annealed by `schedule` over all blocks.
fn resample_move(
    alpha: f64,
    particles: u32,
    (block_size, max_new_tokens): (u32, u32),
    moves: u32,
    schedule: AlphaSchedule,
) -> ValidConfig {
    SamplerConfig {
        alpha: Some(Alpha::new(alpha).unwrap()),
        block_size,
        max_new_tokens,
        particles: Some(particles),
        ess_threshold: Some(1.0),
        rejuvenation_steps: Some(moves),
        alpha_schedule: Some(schedule),
        ..SamplerConfig::new(Method::PowerSmc)
    }
    .validate()
    .unwrap()
}

/// ρ = Σ π(x)² / q(x): the second moment of the normalized importance weight.
fn rho(pi: &[f64], q: &[f64]) -> f64 {
    pi.iter().zip(q).map(|(p, q)| p * p / q).sum()
}

#[test]
fn one_particle_is_exactly_low_temp_sampling() {
    let m = model("eos-lengths");
    let (alpha, t) = (4.0, 4);
    let completions = enumerate(&m, &[], t).unwrap();
    let low_temp = completions.proposal(&m, &[], 1.0 / alpha, None);
    // Blocks of one token: resampling one particle changes nothing.
    let outs = outputs(&m, &smc(alpha, 1, 1, t), &[], RUNS * 5, 3);
    let tv = tv_of(&outs, &completions, &low_temp);
    let tolerance = tv_tolerance(&low_temp, RUNS * 5, DELTA);
    eprintln!("N=1: TV to low-temp {tv:.4}, tolerance {tolerance:.4}");
    assert!(
        tv < tolerance,
        "TV {tv} to the low-temp law exceeds {tolerance}"
    );
    assert!(
        outs.iter()
            .all(|o| o.stats.smc.as_ref().unwrap().resamples == 0)
    );
}

#[test]
fn the_returned_particle_approaches_p_alpha_as_particles_grow() {
    for (name, alpha, t, prompt) in [
        ("eos-lengths", 4.0, 4, vec![]),
        ("pivot", 4.0, 3, vec![]),
        ("tiny", 3.0, 5, vec![]),
    ] {
        let (m, completions, exact) = exact_law(name, &prompt, alpha, t);
        let q = completions.proposal(&m, &prompt, 1.0 / alpha, None);
        let rho = rho(&exact, &q);
        let noise = tv_tolerance(&exact, RUNS, DELTA);
        let mut tvs = Vec::new();
        for n in [1, 4, 16, 64, 256] {
            let outs = outputs(&m, &smc(alpha, n, t, t), &prompt, RUNS, 5);
            let tv = tv_of(&outs, &completions, &exact);
            let bound = noise + 6.0 * rho / f64::from(n);
            eprintln!(
                "{name} α={alpha} N={n}: TV {tv:.4}, noise {noise:.4} + bias bound {:.4}",
                6.0 * rho / f64::from(n)
            );
            assert!(
                tv <= bound,
                "{name} N={n}: TV {tv} above noise + 6ρ/N = {bound}"
            );
            tvs.push(tv);
        }
        // Far from p^α with one particle (low-temp is not p^α on these models), within the noise
        // plus the bound at 256.
        assert!(tvs[0] > 2.0 * noise, "{name}: N=1 is not p^alpha: {tvs:?}");
        assert!(tvs[4] < tvs[0] / 2.0, "{name}: TV falls with N: {tvs:?}");
    }
}

#[test]
fn resampling_between_blocks_keeps_the_particles_consistent() {
    // Blocks of one token: the particles are resampled whenever the ESS falls below N/2.
    let (alpha, t) = (4.0, 4);
    let (m, completions, exact) = exact_law("eos-lengths", &[], alpha, t);
    let noise = tv_tolerance(&exact, RUNS, DELTA);
    let few = tv_of(
        &outputs(&m, &smc(alpha, 2, 1, t), &[], RUNS, 7),
        &completions,
        &exact,
    );
    let outs = outputs(&m, &smc(alpha, 256, 1, t), &[], RUNS, 7);
    let many = tv_of(&outs, &completions, &exact);
    eprintln!("blocks of 1 token: TV {few:.4} at N=2, {many:.4} at N=256, noise {noise:.4}");
    let resampled = outs
        .iter()
        .filter(|o| o.stats.smc.as_ref().unwrap().resamples > 0)
        .count();
    assert!(resampled > 0, "the particles were resampled in some runs");
    assert!(many < noise * 1.5, "TV {many} at N=256");
    assert!(few > many, "{few} vs {many}");
}

#[test]
fn the_weighted_sets_estimate_of_each_completion_converges() {
    let (alpha, t) = (4.0, 4);
    let (m, completions, exact) = exact_law("eos-lengths", &[], alpha, t);
    let index = completions.index();
    let runs = 500;
    let outs = outputs(&m, &smc(alpha, 256, t, t), &[], runs, 9);
    let mut mean = vec![0.0; exact.len()];
    for o in &outs {
        for wc in &o.stats.smc.as_ref().unwrap().weighted {
            mean[index[wc.tokens.as_slice()]] += wc.weight / runs as f64;
        }
    }
    let tv = 0.5
        * mean
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .sum::<f64>();
    let q = completions.proposal(&m, &[], 1.0 / alpha, None);
    // Each run's estimate is within TV 1 of π; the mean of `runs` of them, by McDiarmid, within
    // √(ln(1/δ) / 2runs) of its expectation, itself within 6ρ/N of π.
    let bound = 6.0 * rho(&exact, &q) / 256.0 + ((1.0 / DELTA).ln() / (2.0 * runs as f64)).sqrt();
    eprintln!("weighted sets: TV {tv:.4}, bound {bound:.4}");
    assert!(tv < bound, "TV {tv} of the mean weighted set above {bound}");
    // log Ẑ estimates log Σ p^α (over completions of at most T tokens).
    let z: f64 = completions
        .entries
        .iter()
        .map(|c| (alpha * c.log_p).exp())
        .sum();
    let mean_log_z: f64 = outs
        .iter()
        .map(|o| o.stats.smc.as_ref().unwrap().log_z)
        .sum::<f64>()
        / runs as f64;
    assert!(
        (mean_log_z - z.ln()).abs() < 0.05,
        "log Ẑ {mean_log_z} vs log Z {}",
        z.ln()
    );
}

#[test]
fn resample_move_approaches_p_alpha_as_particles_grow() {
    // Blocks of one token with resampling at every boundary where the weights differ, so the
    // moves run at every boundary. Every N on eos-lengths; a spread of N on the others.
    let cases: [(&str, f64, u32, &[u32]); 3] = [
        ("eos-lengths", 4.0, 4, &[1, 4, 16, 64, 256]),
        ("pivot", 4.0, 3, &[1, 16, 256]),
        ("tiny", 3.0, 5, &[1, 16, 256]),
    ];
    for (name, alpha, t, particles) in cases {
        let (m, completions, exact) = exact_law(name, &[], alpha, t);
        let q = completions.proposal(&m, &[], 1.0 / alpha, None);
        let rho = rho(&exact, &q);
        let runs = RUNS / 4;
        let noise = tv_tolerance(&exact, runs, DELTA);
        for moves in [1, 4] {
            let mut tvs = Vec::new();
            for &n in particles {
                let config = resample_move(alpha, n, (1, t), moves, AlphaSchedule::None);
                let outs = outputs(&m, &config, &[], runs, 11);
                let tv = tv_of(&outs, &completions, &exact);
                let bound = noise + 6.0 * rho / f64::from(n);
                let moved: u64 = outs
                    .iter()
                    .map(|o| o.stats.smc.as_ref().unwrap().moves)
                    .sum();
                eprintln!(
                    "{name}: resample-move R={moves} N={n}: TV {tv:.4}, noise {noise:.4}, moves {moved}"
                );
                assert!(
                    tv <= bound,
                    "{name} R={moves} N={n}: TV {tv} above noise + 6ρ/N = {bound}"
                );
                assert_eq!(
                    moved > 0,
                    n > 1,
                    "{name} R={moves} N={n}: moves run after resamplings"
                );
                tvs.push(tv);
            }
            let last = tvs.len() - 1;
            assert!(
                tvs[0] > 2.0 * noise,
                "{name} R={moves}: N=1 is not p^alpha: {tvs:?}"
            );
            assert!(
                tvs[last] < noise,
                "{name} R={moves}: TV at N=256 within the noise: {tvs:?}"
            );
            assert!(
                tvs[last] < tvs[1] && tvs[1] < tvs[0],
                "{name} R={moves}: TV falls with N: {tvs:?}"
            );
        }
    }
}

#[test]
fn resample_move_is_closer_to_p_alpha_than_plain_smc_with_few_particles() {
    // Four particles, blocks of one token, resampled at every boundary: plain SMC's bias adds
    // up over the blocks; moves that leave each block's target invariant undo most of it.
    let (alpha, t) = (4.0, 4);
    let (m, completions, exact) = exact_law("eos-lengths", &[], alpha, t);
    let runs = RUNS * 2;
    let noise = tv_tolerance(&exact, runs, DELTA);
    let tv = |moves| {
        let config = resample_move(alpha, 4, (1, t), moves, AlphaSchedule::None);
        tv_of(&outputs(&m, &config, &[], runs, 13), &completions, &exact)
    };
    let (plain, moved) = (tv(0), tv(16));
    eprintln!(
        "N=4, blocks of 1 token: TV {plain:.4} plain, {moved:.4} with 16 moves, noise {noise:.4}"
    );
    // Each empirical TV is within `noise` of its law's TV: a gap above 2 noise is real.
    assert!(
        plain - moved > 2.0 * noise,
        "resample-move TV {moved} is not clearly below plain SMC's {plain} (noise {noise})"
    );
}

#[test]
fn annealed_smc_is_consistent_and_its_log_z_still_estimates_log_sum_p_alpha() {
    for (name, alpha, t) in [("eos-lengths", 4.0, 4), ("pivot", 4.0, 3), ("tiny", 3.0, 5)] {
        let (m, completions, exact) = exact_law(name, &[], alpha, t);
        let q = completions.proposal(&m, &[], 1.0 / alpha, None);
        let rho = rho(&exact, &q);
        let runs = RUNS / 4;
        let noise = tv_tolerance(&exact, runs, DELTA);
        let log_z = completions
            .entries
            .iter()
            .map(|c| (alpha * c.log_p).exp())
            .sum::<f64>()
            .ln();
        for schedule in [AlphaSchedule::Linear, AlphaSchedule::Geometric] {
            {
                let moves = 2;
                let config = resample_move(alpha, 256, (1, t), moves, schedule);
                let outs = outputs(&m, &config, &[], runs, 17);
                let tv = tv_of(&outs, &completions, &exact);
                let mean_log_z = outs
                    .iter()
                    .map(|o| o.stats.smc.as_ref().unwrap().log_z)
                    .sum::<f64>()
                    / runs as f64;
                let bound = noise + 6.0 * rho / 256.0;
                eprintln!(
                    "{name}: {} R={moves} N=256: TV {tv:.4}, noise {noise:.4}, log Ẑ {mean_log_z:.4} vs {log_z:.4}",
                    schedule.as_str()
                );
                assert!(tv <= bound, "{schedule:?} R={moves}: TV {tv} above {bound}");
                assert!(
                    tv < noise,
                    "{schedule:?} R={moves}: TV {tv} within the noise {noise}"
                );
                assert!(
                    (mean_log_z - log_z).abs() < 0.05,
                    "{schedule:?} R={moves}: log Ẑ {mean_log_z} vs log Z {log_z}"
                );
            }
        }
    }
}
