//! The exact distribution of a toy model's completions under p^α, by enumeration, and the
//! total-variation tools that compare samples with it.

use std::collections::HashMap;

use powerfleet_sampler::TokenId;

use crate::toy::ToyModel;

/// The most completions [`enumerate`] lists before giving up.
pub const MAX_COMPLETIONS: usize = 1_000_000;

/// One completion with its base-model probability.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// Token ids, EOS included when it ended the completion.
    pub tokens: Vec<TokenId>,
    /// log p under the base model (EOS included).
    pub log_p: f64,
}

/// Every completion of at most `max_new_tokens` tokens with p > 0: those ending at EOS, and those
/// that reach the limit without it.
#[derive(Clone, Debug, PartialEq)]
pub struct Completions {
    /// The completions, in depth-first order of token ids.
    pub entries: Vec<Completion>,
}

/// Too many completions to enumerate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{model} has more than {limit} completions of up to {max_new_tokens} tokens; lower max_new_tokens to enumerate it"
)]
pub struct TooManyCompletions {
    /// The model's name.
    pub model: String,
    /// The token budget asked for.
    pub max_new_tokens: u32,
    /// The limit that was passed.
    pub limit: usize,
}

/// Lists every completion of `model` after `prompt` up to `max_new_tokens` tokens.
pub fn enumerate(
    model: &ToyModel,
    prompt: &[TokenId],
    max_new_tokens: u32,
) -> Result<Completions, TooManyCompletions> {
    let mut entries = Vec::new();
    let mut stack = Vec::new();
    let too_many = || TooManyCompletions {
        model: model.name().to_string(),
        max_new_tokens,
        limit: MAX_COMPLETIONS,
    };
    walk(
        model,
        prompt,
        max_new_tokens as usize,
        &mut stack,
        0.0,
        &mut entries,
    )
    .map_err(|()| too_many())?;
    Ok(Completions { entries })
}

fn walk(
    model: &ToyModel,
    prompt: &[TokenId],
    limit: usize,
    stack: &mut Vec<TokenId>,
    log_p: f64,
    out: &mut Vec<Completion>,
) -> Result<(), ()> {
    let next: Vec<(TokenId, f64)> = model
        .next_log_probs(prompt, stack)
        .iter()
        .enumerate()
        .filter(|(_, lp)| lp.is_finite())
        .map(|(t, &lp)| (t as TokenId, lp))
        .collect();
    for (token, lp) in next {
        stack.push(token);
        let total = log_p + lp;
        if token == model.eos() || stack.len() == limit {
            if out.len() == MAX_COMPLETIONS {
                return Err(());
            }
            out.push(Completion {
                tokens: stack.clone(),
                log_p: total,
            });
        } else {
            walk(model, prompt, limit, stack, total, out)?;
        }
        stack.pop();
    }
    Ok(())
}

impl Completions {
    /// π(x) ∝ p(x)^α for each entry; for α = ∞, uniform over the most likely completions.
    pub fn power(&self, alpha: f64) -> Vec<f64> {
        if alpha.is_infinite() {
            let best = self
                .entries
                .iter()
                .map(|c| c.log_p)
                .fold(f64::NEG_INFINITY, f64::max);
            let is_best: Vec<bool> = self
                .entries
                .iter()
                .map(|c| c.log_p >= best - 1e-12)
                .collect();
            let n = is_best.iter().filter(|&&b| b).count() as f64;
            return is_best
                .iter()
                .map(|&b| if b { 1.0 / n } else { 0.0 })
                .collect();
        }
        normalize_log(self.entries.iter().map(|c| alpha * c.log_p).collect())
    }

    /// The probability of each entry when sampled in one request from the proposal.
    pub fn proposal(
        &self,
        model: &ToyModel,
        prompt: &[TokenId],
        temperature: f64,
        top_k: Option<u32>,
    ) -> Vec<f64> {
        self.entries
            .iter()
            .map(|c| {
                model
                    .proposal_log_prob(prompt, &c.tokens, temperature, top_k)
                    .exp()
            })
            .collect()
    }

    /// The entries' token sequences, keyed to their index.
    pub fn index(&self) -> HashMap<&[TokenId], usize> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, c)| (c.tokens.as_slice(), i))
            .collect()
    }
}

fn normalize_log(logs: Vec<f64>) -> Vec<f64> {
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
    let z: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / z).collect()
}

/// Counts of sampled completions, aligned with a [`Completions`] list.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Samples per entry.
    pub counts: Vec<u64>,
    /// Samples that are not in the list (a sampler bug if ever non-zero).
    pub outside: u64,
    /// All samples.
    pub total: u64,
}

impl Histogram {
    /// Tallies `samples` against `completions`.
    pub fn new<'a>(
        completions: &Completions,
        samples: impl IntoIterator<Item = &'a [TokenId]>,
    ) -> Histogram {
        let index = completions.index();
        let mut counts = vec![0; completions.entries.len()];
        let (mut outside, mut total) = (0, 0);
        for s in samples {
            total += 1;
            match index.get(s) {
                Some(&i) => counts[i] += 1,
                None => outside += 1,
            }
        }
        Histogram {
            counts,
            outside,
            total,
        }
    }

    /// Total variation distance between the empirical distribution and `exact`.
    pub fn total_variation(&self, exact: &[f64]) -> f64 {
        let n = self.total as f64;
        let inside: f64 = self
            .counts
            .iter()
            .zip(exact)
            .map(|(&c, &p)| (c as f64 / n - p).abs())
            .sum();
        0.5 * (inside + self.outside as f64 / n)
    }
}

/// The total-variation distance that `n` independent exact samples from `exact` stay below with
/// probability at least 1 − `delta`.
///
/// E[TV] ≤ ½ Σ √(pᵢ(1−pᵢ)/n) (Jensen on each |p̂ᵢ − pᵢ|), and TV moves by at most 1/n when one
/// sample changes, so McDiarmid's inequality adds √(ln(1/δ) / 2n).
pub fn tv_tolerance(exact: &[f64], n: u64, delta: f64) -> f64 {
    let n = n as f64;
    let mean_bound: f64 = 0.5
        * exact
            .iter()
            .map(|p| (p * (1.0 - p) / n).sqrt())
            .sum::<f64>();
    mean_bound + ((1.0 / delta).ln() / (2.0 * n)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ToyModel {
        ToyModel::from_json(
            "m",
            r#"{"vocab": ["a","b","<eos>"], "eos": 2, "default": [0.5, 0.4, 0.1],
                "contexts": [{"context": [0], "probs": [0.1, 0.8, 0.1]}, {"context": [0, 1], "probs": [0, 0.5, 0.5]}]}"#,
        )
        .unwrap()
    }

    #[test]
    fn enumeration_is_complete_and_sums_to_one() {
        let m = model();
        for t in 1..=6 {
            let c = enumerate(&m, &[], t).unwrap();
            let total: f64 = c.entries.iter().map(|e| e.log_p.exp()).sum();
            assert!((total - 1.0).abs() < 1e-12, "T={t}: {total}");
            for e in &c.entries {
                assert!(e.tokens.len() <= t as usize);
                let eos_at = e.tokens.iter().position(|&x| x == 2);
                assert!(eos_at.is_none_or(|i| i == e.tokens.len() - 1));
                assert!(eos_at.is_some() || e.tokens.len() == t as usize);
            }
        }
        // T = 1: "a", "b", "<eos>".
        let c = enumerate(&m, &[], 1).unwrap();
        assert_eq!(c.entries.len(), 3);
    }

    #[test]
    fn power_distribution_matches_hand_computation() {
        let m = model();
        let c = enumerate(&m, &[], 1).unwrap();
        let pi = c.power(2.0);
        let z = 0.25 + 0.16 + 0.01;
        assert!((pi[0] - 0.25 / z).abs() < 1e-12);
        assert!((pi[2] - 0.01 / z).abs() < 1e-12);
        let inf = c.power(f64::INFINITY);
        assert_eq!(inf, vec![1.0, 0.0, 0.0]);
        let q = c.proposal(&m, &[], 0.5, None);
        for (a, b) in q.iter().zip(&pi) {
            assert!(
                (a - b).abs() < 1e-12,
                "one-token proposal at T=1/α equals p^α"
            );
        }
    }

    #[test]
    fn histogram_and_tolerance() {
        let m = model();
        let c = enumerate(&m, &[], 1).unwrap();
        let samples: Vec<Vec<TokenId>> = vec![vec![0], vec![0], vec![1], vec![2, 2]];
        let h = Histogram::new(&c, samples.iter().map(Vec::as_slice));
        assert_eq!(h.counts, vec![2, 1, 0]);
        assert_eq!(h.outside, 1);
        let tv = h.total_variation(&[0.5, 0.5, 0.0]);
        assert!((tv - 0.5 * (0.0 + 0.25 + 0.0 + 0.25)).abs() < 1e-12);
        let tol_small = tv_tolerance(&[0.5, 0.5], 10_000, 1e-6);
        let tol_big = tv_tolerance(&[0.5, 0.5], 100, 1e-6);
        assert!(tol_small < tol_big / 5.0);
    }

    #[test]
    fn too_many_completions_is_an_error_not_a_hang() {
        let m = ToyModel::from_json(
            "wide",
            r#"{"vocab": ["a","b","c","d","e","f","g","h","i","<eos>"], "eos": 9, "default": [0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1,0.1]}"#,
        )
        .unwrap();
        let err = enumerate(&m, &[], 12).unwrap_err();
        assert!(err.to_string().contains("lower max_new_tokens"), "{err}");
    }
}
