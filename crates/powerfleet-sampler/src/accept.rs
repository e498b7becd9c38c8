//! The Metropolis-Hastings acceptance ratio for a regenerated suffix (derivation: docs/algorithm.md).

use crate::config::{Ratio, ValidConfig};

/// How to decide on a proposal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Accept or reject without a random draw (α = ∞).
    Always(bool),
    /// Accept with probability min(1, exp(log A)).
    LogRatio(f64),
}

/// One side of a proposal: a completion's per-token log p and log q from the cut to its end, and
/// the whole completion's length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Suffix<'a> {
    /// Per-token log p under the base model, from the cut on.
    pub log_p: &'a [f64],
    /// Per-token log q under the proposal, from the cut on.
    pub log_q: &'a [f64],
    /// The length of the whole completion, L.
    pub len: usize,
}

impl<'a> Suffix<'a> {
    /// The suffix with these log-probabilities of a completion of `len` tokens.
    pub fn new(log_p: &'a [f64], log_q: &'a [f64], len: usize) -> Self {
        Suffix { log_p, log_q, len }
    }
}

/// Decides on replacing the current suffix (from the cut on) with the proposed one.
///
/// The completions' lengths are L (current) and L' (proposed): the cut point is uniform among L
/// positions forward, among L' backward.
///
/// Exact ratio, whole suffixes:
/// log A = α·(Σ log p' − Σ log p) + (Σ log q − Σ log q') + log(L / L').
/// With α = ∞ the proposal is accepted iff its log p is strictly higher.
pub fn decide(config: &ValidConfig, current: Suffix<'_>, proposal: Suffix<'_>) -> Decision {
    decide_at(config.alpha().get(), config.ratio(), current, proposal)
}

/// [`decide`] with the exponent given: power-smc's moves target an annealed α_k.
pub fn decide_at(alpha: f64, ratio: Ratio, current: Suffix<'_>, proposal: Suffix<'_>) -> Decision {
    let Suffix {
        log_p: cur_log_p,
        log_q: cur_log_q,
        len: cur_len,
    } = current;
    let Suffix {
        log_p: prop_log_p,
        log_q: prop_log_q,
        len: prop_len,
    } = proposal;
    let (n_cur, n_prop, correction) = match ratio {
        Ratio::Exact => (
            cur_log_p.len(),
            prop_log_p.len(),
            (cur_len as f64).ln() - (prop_len as f64).ln(),
        ),
        // The reference compares suffixes cut to the shorter one and has no cut-point term.
        Ratio::Reference => {
            let m = cur_log_p.len().min(prop_log_p.len());
            (m, m, 0.0)
        }
    };
    let d_log_p: f64 = sum(&prop_log_p[..n_prop]) - sum(&cur_log_p[..n_cur]);
    if alpha.is_infinite() {
        return Decision::Always(d_log_p > 0.0);
    }
    let d_log_q = sum(&cur_log_q[..n_cur]) - sum(&prop_log_q[..n_prop]);
    Decision::LogRatio(alpha * d_log_p + d_log_q + correction)
}

fn sum(values: &[f64]) -> f64 {
    values.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Alpha, Method, SamplerConfig};

    fn config(alpha: Alpha, ratio: Ratio) -> ValidConfig {
        SamplerConfig {
            alpha: Some(alpha),
            ratio,
            ..SamplerConfig::new(Method::Power)
        }
        .validate()
        .unwrap()
    }

    fn log_ratio(d: Decision) -> f64 {
        match d {
            Decision::LogRatio(v) => v,
            Decision::Always(_) => panic!("expected a ratio, got {d:?}"),
        }
    }

    /// The log acceptance ratio at α = 2 of one case: the current suffix is the last 3 tokens of a
    /// 5-token completion; the proposal is 1 token (EOS), so L' = 3.
    fn one_token_proposal(ratio: Ratio) -> f64 {
        let cfg = config(Alpha::new(2.0).unwrap(), ratio);
        let cur_p = [-1.0, -2.0, -0.5];
        let cur_q = [-0.7, -1.5, -0.2];
        let prop_p = [-0.3];
        let prop_q = [-0.1];
        log_ratio(decide(
            &cfg,
            Suffix::new(&cur_p, &cur_q, 5),
            Suffix::new(&prop_p, &prop_q, 3),
        ))
    }

    #[test]
    fn exact_ratio_uses_whole_suffixes_and_the_cut_point_correction() {
        let got = one_token_proposal(Ratio::Exact);
        let want = 2.0 * (-0.3 - (-3.5)) + (-2.4 - (-0.1)) + (5.0f64 / 3.0).ln();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn reference_ratio_cuts_to_the_shorter_suffix_without_correction() {
        let got = one_token_proposal(Ratio::Reference);
        let want = 2.0 * (-0.3 - (-1.0)) + (-0.7 - (-0.1));
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    #[test]
    fn infinite_alpha_accepts_iff_log_p_is_strictly_higher() {
        let cfg = config(Alpha::INFINITE, Ratio::Exact);
        let q = [-9.0];
        assert_eq!(
            decide(
                &cfg,
                Suffix::new(&[-1.0], &q, 3),
                Suffix::new(&[-0.5], &q, 3)
            ),
            Decision::Always(true)
        );
        assert_eq!(
            decide(
                &cfg,
                Suffix::new(&[-1.0], &q, 3),
                Suffix::new(&[-1.0], &q, 3)
            ),
            Decision::Always(false)
        );
        assert_eq!(
            decide(
                &cfg,
                Suffix::new(&[-0.5], &q, 3),
                Suffix::new(&[-0.25, -0.5], &[-1.0, -1.0], 4),
            ),
            Decision::Always(false)
        );
    }

    #[test]
    fn ratio_is_antisymmetric_so_detailed_balance_holds() {
        // log A(x -> x') = -log A(x' -> x) for the exact ratio, with the same cut.
        let cfg = config(Alpha::new(3.0).unwrap(), Ratio::Exact);
        let (a_p, a_q) = ([-0.2, -1.1, -0.4], [-0.1, -0.9, -0.6]);
        let (b_p, b_q) = ([-0.8], [-0.3]);
        let (a, b) = (Suffix::new(&a_p, &a_q, 4), Suffix::new(&b_p, &b_q, 2));
        let fwd = log_ratio(decide(&cfg, a, b));
        let back = log_ratio(decide(&cfg, b, a));
        assert!((fwd + back).abs() < 1e-12);
    }
}
