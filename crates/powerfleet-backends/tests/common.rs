//! What the fake servers and requests of several test modules share.

use powerfleet_sampler::OwnedRequest;
use serde_json::{Value, json};

/// The log normalizer of top-K log-probabilities `lps` at `temperature`: ln Σ exp(lp / T).
pub fn log_z(lps: impl IntoIterator<Item = f64>, temperature: f64) -> f64 {
    lps.into_iter()
        .map(|lp| (lp / temperature).exp())
        .sum::<f64>()
        .ln()
}

/// A request after the prompt [1, 2, 3] at temperature 0.5.
pub fn request(max_tokens: u32, top_k: Option<u32>, seed: u64) -> OwnedRequest {
    OwnedRequest {
        prefix: vec![1, 2, 3],
        prompt_len: 3,
        max_tokens,
        temperature: 0.5,
        top_k,
        seed,
        candidates: 0,
    }
}

/// SGLang's `output_token_logprobs` and `output_top_logprobs` for the generated `ids`, every
/// position with the same `top` list cut to `k`, each raw log-probability reported as `lp` of it.
pub fn sglang_logprobs(
    ids: &[u32],
    top: &[(u32, f64)],
    k: usize,
    lp: impl Fn(f64) -> f64,
) -> (Vec<Value>, Vec<Value>) {
    let raw = |id: u32| top.iter().find(|(t, _)| *t == id).unwrap().1;
    let sampled = ids
        .iter()
        .map(|&id| json!([lp(raw(id)), id, null]))
        .collect();
    let tops = ids
        .iter()
        .map(|_| {
            json!(
                top.iter()
                    .take(k)
                    .map(|&(id, raw)| json!([lp(raw), id, null]))
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    (sampled, tops)
}
