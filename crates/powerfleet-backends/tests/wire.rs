//! Parsing of vLLM completions responses (fixtures in vLLM's OpenAI-compatible format with
//! `return_tokens_as_token_ids`) into exact log p and log q.

use powerfleet_backends::wire::parse_vllm;
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn eos_stop_gives_tokens_with_eos_and_exact_log_p_q() {
    let raw = parse_vllm(&fixture("vllm_eos.json"), Some(151643)).unwrap();
    assert_eq!(raw.tokens, vec![19, 17, 151643]);
    assert!(raw.eos);
    let g = raw.into_generation(0.25).unwrap();
    assert_eq!(g.log_p, vec![-0.21, -0.05, -0.9]);
    // The EOS token was not the most likely at its position: log q follows the tempered top-K.
    let tempered: Vec<f64> = [-0.8f64, -0.9, -2.5].iter().map(|l| l / 0.25).collect();
    let m = tempered.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_z = m + tempered.iter().map(|t| (t - m).exp()).sum::<f64>().ln();
    assert!((g.log_q[2] - (-0.9 / 0.25 - log_z)).abs() < 1e-12);
    assert!(
        g.log_q.iter().zip(&g.log_p).take(2).all(|(q, p)| q > p),
        "sharpened proposal favours the likely tokens"
    );
}

#[test]
fn length_stop_is_not_eos() {
    let raw = parse_vllm(&fixture("vllm_length.json"), Some(151643)).unwrap();
    assert_eq!(raw.tokens, vec![856, 284]);
    assert!(!raw.eos);
    // Token 856 was sampled though 220 was likelier: allowed, it is in the top K.
    let g = raw.into_generation(1.0).unwrap();
    assert_eq!(g.log_p[0], -1.1);
}

#[test]
fn stops_other_than_eos_and_missing_logprobs_are_refused() {
    let err = parse_vllm(&fixture("vllm_stop_string.json"), None).unwrap_err();
    assert!(err.contains("not on EOS"), "{err}");
    let err = parse_vllm(&fixture("vllm_no_logprobs.json"), None).unwrap_err();
    assert!(err.contains("no `logprobs`"), "{err}");
    // A stop at EOS must end with the EOS token.
    let err = parse_vllm(&fixture("vllm_eos.json"), Some(2)).unwrap_err();
    assert!(err.contains("not EOS 2"), "{err}");
}
