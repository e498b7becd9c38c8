//! Exact log p and log q from a server's raw top-K log-probabilities.
//!
//! When the server samples from the top K tokens of the raw distribution at temperature τ, and
//! reports, for each generated position, the raw (temperature 1, full vocabulary) log-probabilities
//! of those same K tokens, then for the sampled token t:
//!
//! - log p(t) is its raw log-probability;
//! - log q(t) = log p(t)/τ − log Σ_{j in top K} exp(log p(j)/τ), the tempered softmax over the K.
//!
//! Both are exact: no approximation enters as long as the list is the set sampled from.
//!
//! A log-probability of [`CLAMPED_NEG_INF`] or below stands for −∞: vLLM's completions API
//! replaces −∞ by −9999.0, as OpenAI does (`max(logprob, -9999.0)` in
//! `_create_completion_logprobs`, `vllm/entrypoints/openai/completion/serving.py` in vLLM 0.33,
//! `serving_completion.py` before). Such a token
//! has probability 0 under p: in the top-K list it adds nothing to the normalizer (exp(−9999/τ)
//! is 0 in f64), and as the sampled token it cannot have been drawn from p's top K, so the answer
//! is refused.

use powerfleet_sampler::TokenId;

/// Log-probabilities at or below this stand for −∞ (vLLM's clamp, see the module docs).
pub const CLAMPED_NEG_INF: f64 = -9999.0;

/// Why the recipe refuses a position: its list cannot be the raw top K the token was sampled
/// from.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum RecipeError {
    /// The sampled token is not in the list.
    #[error(
        "the sampled token {sampled} is not among the {listed} top log-probabilities; the server did not sample from the top-K it reported (is top_k applied and are log-probabilities raw?)"
    )]
    NotListed {
        /// The sampled token.
        sampled: TokenId,
        /// How many entries the list has.
        listed: usize,
    },
    /// An entry is not a raw log-probability (not finite, or above 0).
    #[error("token {token} has log-probability {log_p}; raw log-probabilities are finite and <= 0")]
    NotRaw {
        /// The entry's token.
        token: TokenId,
        /// Its value.
        log_p: f64,
    },
    /// The sampled token has the server's stand-in for −∞.
    #[error(
        "the sampled token {sampled} has log-probability {log_p}, the server's stand-in for -inf: it is impossible under p, so the server did not sample from the top K of p it reported"
    )]
    Impossible {
        /// The sampled token.
        sampled: TokenId,
        /// Its value ([`CLAMPED_NEG_INF`] or below).
        log_p: f64,
    },
}

/// Computes (log p, log q) of `sampled` from the raw top-K list at one position.
pub fn exact_log_p_q(
    top: &[(TokenId, f64)],
    sampled: TokenId,
    temperature: f64,
) -> Result<(f64, f64), RecipeError> {
    let log_p = top
        .iter()
        .find(|(t, _)| *t == sampled)
        .map(|&(_, lp)| lp)
        .ok_or(RecipeError::NotListed {
            sampled,
            listed: top.len(),
        })?;
    if let Some(&(token, log_p)) = top.iter().find(|(_, lp)| !(lp.is_finite() && *lp <= 1e-6)) {
        return Err(RecipeError::NotRaw { token, log_p });
    }
    if log_p <= CLAMPED_NEG_INF {
        return Err(RecipeError::Impossible { sampled, log_p });
    }
    let max = top
        .iter()
        .map(|&(_, lp)| lp / temperature)
        .fold(f64::NEG_INFINITY, f64::max);
    let log_z = max
        + top
            .iter()
            .map(|&(_, lp)| (lp / temperature - max).exp())
            .sum::<f64>()
            .ln();
    Ok((log_p, log_p / temperature - log_z))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_q_is_the_tempered_softmax_over_the_top_k() {
        let top = [(3, 0.5f64.ln()), (7, 0.3f64.ln()), (1, 0.1f64.ln())];
        let (lp, lq) = exact_log_p_q(&top, 7, 0.5).unwrap();
        assert!((lp - 0.3f64.ln()).abs() < 1e-12);
        let z = 0.25 + 0.09 + 0.01;
        assert!((lq - (0.09f64 / z).ln()).abs() < 1e-12);
        // At temperature 1 over the full vocabulary, q = p.
        let full = [(0, 0.6f64.ln()), (1, 0.4f64.ln())];
        let (lp, lq) = exact_log_p_q(&full, 1, 1.0).unwrap();
        assert!((lp - lq).abs() < 1e-12);
    }

    #[test]
    fn a_sampled_token_outside_the_list_is_refused() {
        let err = exact_log_p_q(&[(3, -0.1)], 4, 1.0).unwrap_err().to_string();
        assert!(err.contains("not among the 1 top"), "{err}");
        let err = exact_log_p_q(&[(3, f64::NAN), (4, -1.0)], 4, 1.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("finite"), "{err}");
    }

    #[test]
    fn clamped_minus_infinity_is_probability_zero() {
        // As a top-K entry it adds nothing to the normalizer.
        let top = [(3, 0.75f64.ln()), (7, 0.25f64.ln()), (9, CLAMPED_NEG_INF)];
        let (lp, lq) = exact_log_p_q(&top, 7, 0.5).unwrap();
        assert_eq!(lp, 0.25f64.ln());
        let z = 0.75f64.powi(2) + 0.25f64.powi(2);
        assert!((lq - (0.0625f64 / z).ln()).abs() < 1e-12);
        // As the sampled token it is refused.
        let err = exact_log_p_q(&top, 9, 0.5).unwrap_err().to_string();
        assert!(err.contains("impossible under p"), "{err}");
    }
}
