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

use powerfleet_sampler::TokenId;

/// Computes (log p, log q) of `sampled` from the raw top-K list at one position.
pub fn exact_log_p_q(
    top: &[(TokenId, f64)],
    sampled: TokenId,
    temperature: f64,
) -> Result<(f64, f64), String> {
    let log_p = top
        .iter()
        .find(|(t, _)| *t == sampled)
        .map(|&(_, lp)| lp)
        .ok_or_else(|| {
            format!(
                "the sampled token {sampled} is not among the {} top log-probabilities; the server did not sample from the top-K it reported (is top_k applied and are log-probabilities raw?)",
                top.len()
            )
        })?;
    if let Some((t, lp)) = top.iter().find(|(_, lp)| !(lp.is_finite() && *lp <= 1e-6)) {
        return Err(format!(
            "token {t} has log-probability {lp}; raw log-probabilities are finite and <= 0"
        ));
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
        let err = exact_log_p_q(&[(3, -0.1)], 4, 1.0).unwrap_err();
        assert!(err.contains("not among the 1 top"), "{err}");
        let err = exact_log_p_q(&[(3, f64::NAN), (4, -1.0)], 4, 1.0).unwrap_err();
        assert!(err.contains("finite"), "{err}");
    }
}
