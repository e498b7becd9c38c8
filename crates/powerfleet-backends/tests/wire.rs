//! Parsing of vLLM completions responses (fixtures in vLLM's OpenAI-compatible format with
//! `return_tokens_as_token_ids`) and SGLang `/generate` answers (fixtures in the format of
//! `_handle_batch_output` in SGLang's `tokenizer_manager.py`: `output_ids`, `meta_info` with
//! `[logprob, token_id, null]` triples and a `finish_reason` object) into exact log p and log q.

use powerfleet_backends::wire::{AnswerError, parse_sglang, parse_vllm};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn log_z(top: &[f64], temperature: f64) -> f64 {
    let tempered: Vec<f64> = top.iter().map(|l| l / temperature).collect();
    let m = tempered.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + tempered.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

#[test]
fn eos_stop_gives_tokens_with_eos_and_exact_log_p_q() {
    let raw = parse_vllm(&fixture("vllm_eos.json"), &[151643]).unwrap();
    assert_eq!(raw.tokens, vec![19, 17, 151643]);
    assert!(raw.eos);
    let g = raw.into_generation(0.25).unwrap();
    assert_eq!(g.log_p, vec![-0.21, -0.05, -0.9]);
    // The EOS token was not the most likely at its position: log q follows the tempered top-K.
    assert!((g.log_q[2] - (-0.9 / 0.25 - log_z(&[-0.8, -0.9, -2.5], 0.25))).abs() < 1e-12);
    assert!(
        g.log_q.iter().zip(&g.log_p).take(2).all(|(q, p)| q > p),
        "sharpened proposal favours the likely tokens"
    );
    // An unknown terminal set trusts the server's stop.
    assert!(parse_vllm(&fixture("vllm_eos.json"), &[]).unwrap().eos);
}

#[test]
fn length_stop_is_not_eos() {
    let raw = parse_vllm(&fixture("vllm_length.json"), &[151643]).unwrap();
    assert_eq!(raw.tokens, vec![856, 284]);
    assert!(!raw.eos);
    // Token 856 was sampled though 220 was likelier: allowed, it is in the top K.
    let g = raw.into_generation(1.0).unwrap();
    assert_eq!(g.log_p[0], -1.1);
}

#[test]
fn a_secondary_eos_id_ends_the_completion_as_eos_does() {
    // Llama 3.1 Instruct: generation_config eos_token_id [128001, 128008, 128009]; vLLM stops at
    // 128008 (<|eom_id|>) with stop_reason 128008 and keeps it as the last token.
    let terminal = [128001, 128008, 128009];
    let raw = parse_vllm(&fixture("vllm_stop_token.json"), &terminal).unwrap();
    assert_eq!(raw.tokens, vec![19, 128008]);
    assert!(raw.eos);
    let g = raw.into_generation(0.5).unwrap();
    assert_eq!(g.log_p[1], -0.4);
    assert!((g.log_q[1] - (-0.4 / 0.5 - log_z(&[-1.3, -0.4, -2.9], 0.5))).abs() < 1e-12);
    // Without a known terminal set the stop token is trusted: vLLM only stops at token ids this
    // client never sends, i.e. the generation config's EOS ids.
    assert!(
        parse_vllm(&fixture("vllm_stop_token.json"), &[])
            .unwrap()
            .eos
    );
    // A terminal set that lacks it refuses the answer for good.
    let err = parse_vllm(&fixture("vllm_stop_token.json"), &[128009]).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("eos="), "{err}");
    // The stop token must be the last token.
    let mut body = fixture("vllm_stop_token.json");
    body["choices"][0]["stop_reason"] = 128009.into();
    let err = parse_vllm(&body, &terminal).unwrap_err();
    assert!(matches!(err, AnswerError::Unusable(_)), "{err}");
}

#[test]
fn clamped_minus_infinity_is_accepted_in_the_list_and_refused_when_sampled() {
    // vLLM writes -inf as -9999.0. As a top-K entry it has probability 0.
    let raw = parse_vllm(&fixture("vllm_clamped.json"), &[]).unwrap();
    let g = raw.into_generation(0.5).unwrap();
    assert_eq!(g.log_p, vec![-0.1, -0.7]);
    assert!((g.log_q[0] - (-0.1 / 0.5 - log_z(&[-0.1, -2.35], 0.5))).abs() < 1e-12);
    assert!((g.log_q[1] - 0.5f64.ln()).abs() < 1e-12, "{}", g.log_q[1]);
    // As the sampled token it is impossible under p.
    let raw = parse_vllm(&fixture("vllm_clamped_sampled.json"), &[]).unwrap();
    let err = raw.into_generation(1.0).unwrap_err().to_string();
    assert!(err.contains("impossible under p"), "{err}");
}

#[test]
fn stops_other_than_terminal_tokens_and_missing_logprobs_are_refused() {
    let err = parse_vllm(&fixture("vllm_stop_string.json"), &[]).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("not on a terminal token"), "{err}");
    let err = parse_vllm(&fixture("vllm_no_logprobs.json"), &[]).unwrap_err();
    assert!(!err.is_permanent(), "{err}");
    assert!(err.to_string().contains("no `logprobs`"), "{err}");
    // A stop at EOS must end with a terminal token.
    let err = parse_vllm(&fixture("vllm_eos.json"), &[2]).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("[2]"), "{err}");
}

#[test]
fn more_than_k_candidates_mean_the_sampled_token_was_outside_the_top_k() {
    // vLLM lists the sampled token besides the top K: three entries for K = 2.
    let raw = parse_vllm(&fixture("vllm_length.json"), &[]).unwrap();
    raw.check_top_k(3).unwrap();
    let err = raw.check_top_k(2).unwrap_err().to_string();
    assert!(err.contains("not among the top 2"), "{err}");
}

#[test]
fn sglang_stop_at_a_matched_eos_token() {
    let raw = parse_sglang(&fixture("sglang_stop.json"), &[151643, 151645]).unwrap();
    assert_eq!(raw.tokens, vec![19, 17, 151645]);
    assert!(raw.eos);
    assert_eq!(raw.top[2], vec![(13, -0.8), (151645, -0.9), (198, -2.5)]);
    let g = raw.into_generation(0.25).unwrap();
    assert_eq!(g.log_p, vec![-0.21, -0.05, -0.9]);
    assert!((g.log_q[2] - (-0.9 / 0.25 - log_z(&[-0.8, -0.9, -2.5], 0.25))).abs() < 1e-12);
    // The matched token must be a known terminal token.
    let err = parse_sglang(&fixture("sglang_stop.json"), &[151643]).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    // And the last of the output (no_stop_trim keeps it).
    let mut trimmed = fixture("sglang_stop.json");
    for key in ["output_token_logprobs", "output_top_logprobs"] {
        trimmed["meta_info"][key].as_array_mut().unwrap().pop();
    }
    trimmed["output_ids"].as_array_mut().unwrap().pop();
    let err = parse_sglang(&trimmed, &[]).unwrap_err();
    assert!(err.to_string().contains("no_stop_trim"), "{err}");
}

#[test]
fn sglang_length_stop_and_refusals() {
    let raw = parse_sglang(&fixture("sglang_length.json"), &[2]).unwrap();
    assert_eq!(raw.tokens, vec![856, 284]);
    assert!(!raw.eos);
    assert_eq!(raw.into_generation(1.0).unwrap().log_p, vec![-1.1, -0.3]);
    let err = parse_sglang(&fixture("sglang_stop_string.json"), &[]).unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(err.to_string().contains("stop string"), "{err}");
    // Inconsistent ids, missing top lists and aborts are unusable answers, not refusals.
    let mut bad = fixture("sglang_length.json");
    bad["output_ids"] = serde_json::json!([856, 285]);
    assert!(!parse_sglang(&bad, &[]).unwrap_err().is_permanent());
    let mut bad = fixture("sglang_length.json");
    bad["meta_info"]
        .as_object_mut()
        .unwrap()
        .remove("output_top_logprobs");
    let err = parse_sglang(&bad, &[]).unwrap_err();
    assert!(err.to_string().contains("top_logprobs_num"), "{err}");
    let mut bad = fixture("sglang_length.json");
    bad["meta_info"]["finish_reason"] =
        serde_json::json!({"type": "abort", "message": "Abort before prefill", "status_code": 500});
    let err = parse_sglang(&bad, &[]).unwrap_err();
    assert!(
        !err.is_permanent() && err.to_string().contains("aborted"),
        "{err}"
    );
}
