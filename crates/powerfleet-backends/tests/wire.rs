//! Parsing of vLLM completions responses (fixtures in vLLM's OpenAI-compatible format with
//! `return_tokens_as_token_ids`) and SGLang `/generate` answers (fixtures in the format of
//! `_handle_batch_output` in SGLang's `tokenizer_manager.py`: `output_ids`, `meta_info` with
//! `[logprob, token_id, null]` triples and a `finish_reason` object) into exact log p and log q;
//! and, in `conversations`, every request `HttpModel` sends each server kind and what it makes
//! of the answers, compared in full with `fixtures/conversation_*.json`.

use powerfleet_backends::wire::{
    AnswerError, RawGeneration, candidates_of, parse_llamacpp, parse_sglang, parse_vllm,
};
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
fn candidates_are_the_first_positions_raw_list_sorted_ties_by_id_without_zeros() {
    // vLLM: a one-token answer to a candidate request; the list is a map (no order), with a
    // tie at -1.2 and token 3 at the stand-in for -inf.
    let raw = parse_vllm(&fixture("vllm_candidates.json"), &[]).unwrap();
    assert_eq!(
        candidates_of(&raw, 8).unwrap(),
        vec![(64, -0.6), (65, -1.2), (70, -1.2)]
    );
    assert_eq!(
        candidates_of(&raw, 2).unwrap(),
        vec![(64, -0.6), (65, -1.2)]
    );
    // The sampled token's log q follows the recipe over the whole list, as before.
    let g = raw.into_generation(0.5).unwrap();
    assert!((g.log_q[0] - (-1.2 / 0.5 - log_z(&[-0.6, -1.2, -1.2], 0.5))).abs() < 1e-12);
    // SGLang: the list of the first generated position, ties by id.
    let raw = parse_sglang(&fixture("sglang_candidates.json"), &[]).unwrap();
    assert_eq!(
        candidates_of(&raw, 3).unwrap(),
        vec![(284, -0.3), (25, -1.6), (28, -1.6)]
    );
    // llama.cpp: `completion_probabilities[0].top_logprobs`.
    let answer = serde_json::json!({"content": "a", "tokens": [9], "truncated": false,
        "stop_type": "limit", "completion_probabilities": [{"id": 9, "logprob": -2.0,
        "top_logprobs": [{"id": 4, "logprob": -0.2}, {"id": 9, "logprob": -2.0},
            {"id": 1, "logprob": -2.0}, {"id": 7, "logprob": -3.0}]}]});
    let raw = parse_llamacpp(&answer, &[]).unwrap();
    assert_eq!(
        candidates_of(&raw, 3).unwrap(),
        vec![(4, -0.2), (1, -2.0), (9, -2.0)]
    );
}

#[test]
fn candidate_lists_that_cannot_be_the_top_k_are_unusable() {
    let raw = |top: Vec<(u32, f64)>| RawGeneration {
        tokens: vec![top.first().map_or(0, |t| t.0)],
        top: vec![top],
        eos: false,
    };
    for (list, says) in [
        (vec![], "no token"),
        (vec![(3, -9999.0)], "no token"),
        (vec![(3, -0.1), (3, -0.5)], "twice"),
        (vec![(3, 0.5)], "raw log-probabilities"),
        (vec![(3, f64::NAN)], "raw log-probabilities"),
    ] {
        let err = candidates_of(&raw(list.clone()), 4).unwrap_err();
        assert!(!err.is_permanent(), "{list:?}: {err}");
        assert!(err.to_string().contains(says), "{list:?}: {err}");
    }
    let none = RawGeneration {
        tokens: vec![],
        top: vec![],
        eos: false,
    };
    assert!(candidates_of(&none, 4).is_err());
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

// ------------------------------------------------------------------------- conversations
//
// What `HttpModel` sends each server kind and what it makes of the answers, from the start-up
// probe to a generation, tokenize, detokenize and chat templates, against one recording fake
// per kind; and every per-kind fact (names, default K, fixes, context rules, temperature
// limits, the pinned sampler recipe). Each is compared with `fixtures/conversation_<kind>.json`
// in full: requests in order with their bodies, and every result. A deliberate change rewrites
// the fixture with `POWERFLEET_BLESS=1`, and the diff shows what changed.

mod conversations {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::http::{Method, StatusCode, Uri};
    use axum::response::IntoResponse;
    use powerfleet_backends::{BackendError, HttpModel, ModelRef, ServerKind, parse};
    use powerfleet_jobs::ChatMessage;
    use powerfleet_sampler::OwnedRequest;
    use serde_json::{Map, Value, json};

    /// Raw log-probabilities at every position: token 5, then 6, then EOS (2).
    const TOP: [(u32, f64); 3] = [(5, -0.1), (6, -2.5), (2, -4.5)];
    /// The prefix of the generations; their answers stop at EOS (2) after it.
    const PREFIX: [u32; 3] = [1, 2, 3];
    const CONTEXT: u32 = 256;

    fn log_z(temperature: f64, k: usize) -> f64 {
        crate::common::log_z(TOP.iter().take(k).map(|&(_, lp)| lp), temperature)
    }

    /// Token ids of a text, alike for every kind.
    fn tokens_of(text: &str) -> Vec<u32> {
        match text {
            "</s>" => vec![2],
            "The" => vec![791],
            "hi" => vec![1, 104, 105],
            "[user] hi</s>[assistant] " => vec![1, 62, 75, 76],
            _ => (1..=40).collect(),
        }
    }

    /// The generated ids for a request of `n` tokens after `prompt`: 5s, ending at EOS (2)
    /// after [`PREFIX`].
    fn generated(prompt: &Value, n: usize) -> (Vec<u32>, bool) {
        let mut ids = vec![5u32; n];
        let eos = *prompt == json!(PREFIX);
        if eos {
            ids[n - 1] = 2;
        }
        (ids, eos)
    }

    fn raw_lp(id: u32) -> f64 {
        TOP.iter().find(|(t, _)| *t == id).unwrap().1
    }

    fn llamacpp(method: &Method, path: &str, body: &Value) -> Option<Value> {
        Some(match (method.as_str(), path) {
            ("GET", "/props") => json!({"default_generation_settings": {"n_ctx": CONTEXT},
                "model_alias": "tiny", "model_path": "/models/tiny.gguf", "eos_token": "</s>"}),
            ("POST", "/tokenize") => {
                json!({"tokens": tokens_of(body["content"].as_str().unwrap())})
            }
            ("POST", "/detokenize") => json!({"content": "aa"}),
            ("POST", "/apply-template") => json!({"prompt": "[user] hi</s>[assistant] "}),
            ("POST", "/completion") => {
                let n = body["n_predict"].as_u64().unwrap() as usize;
                let k = (body["n_probs"].as_u64().unwrap() as usize).min(TOP.len());
                let t = body["temperature"].as_f64().unwrap();
                let post = body["post_sampling_probs"] == true;
                let (ids, eos) = generated(&body["prompt"], n);
                let entries: Vec<Value> = ids
                    .iter()
                    .map(|&id| {
                        let list: Vec<Value> = TOP
                            .iter()
                            .take(k)
                            .map(|&(c, lp)| {
                                if post {
                                    json!({"id": c, "token": "x", "prob": (lp / t - log_z(t, k)).exp()})
                                } else {
                                    json!({"id": c, "token": "x", "logprob": lp})
                                }
                            })
                            .collect();
                        if post {
                            json!({"id": id, "prob": 0.9, "top_probs": list})
                        } else {
                            json!({"id": id, "logprob": raw_lp(id), "top_logprobs": list})
                        }
                    })
                    .collect();
                let mut settings = Map::new();
                for (key, value) in body.as_object().unwrap() {
                    if !["prompt", "cache_prompt", "return_tokens", "n_cmpl"]
                        .contains(&key.as_str())
                    {
                        settings.insert(key.clone(), value.clone());
                    }
                }
                settings.insert("speculative.types".into(), json!("none"));
                if body["ignore_eos"] == true {
                    settings.insert(
                        "logit_bias".into(),
                        json!([{"bias": null, "token": 2}, {"bias": null, "token": 32000}]),
                    );
                }
                let mut answer = json!({"content": "a", "tokens": ids, "truncated": false,
                    "stop_type": if eos { "eos" } else { "limit" }, "generation_settings": settings});
                if k > 0 {
                    answer["completion_probabilities"] = json!(entries);
                }
                answer
            }
            _ => return None,
        })
    }

    fn vllm(method: &Method, path: &str, body: &Value) -> Option<Value> {
        Some(match (method.as_str(), path) {
            ("GET", "/v1/models") => json!({"object": "list", "data": [{"id": "m",
                "object": "model", "owned_by": "vllm", "max_model_len": CONTEXT}]}),
            ("POST", "/tokenize") => {
                let tokens = match body.get("messages") {
                    Some(_) => vec![151644, 872, 198],
                    None => tokens_of(body["prompt"].as_str().unwrap()),
                };
                json!({"count": tokens.len(), "max_model_len": CONTEXT, "tokens": tokens})
            }
            ("POST", "/detokenize") => json!({"prompt": "aa"}),
            ("POST", "/v1/completions") => {
                let n = body["max_tokens"].as_u64().unwrap() as usize;
                let k = (body["logprobs"].as_u64().unwrap() as usize).min(TOP.len());
                let (ids, eos) = generated(&body["prompt"], n);
                let top: Vec<Value> = ids
                    .iter()
                    .map(|_| {
                        let mut map = Map::new();
                        for &(id, lp) in TOP.iter().take(k) {
                            map.insert(format!("token_id:{id}"), json!(lp));
                        }
                        Value::Object(map)
                    })
                    .collect();
                json!({"id": "cmpl-1", "object": "text_completion", "model": "m",
                    "choices": [{"index": 0, "text": "a",
                        "logprobs": {"tokens": ids.iter().map(|i| format!("token_id:{i}")).collect::<Vec<_>>(),
                            "top_logprobs": top},
                        "finish_reason": if eos { "stop" } else { "length" }, "stop_reason": null}]})
            }
            _ => return None,
        })
    }

    /// SGLang; `renamed` serves `/model_info` and `/server_info` in place of `/get_model_info`
    /// and `/get_server_info`.
    fn sglang(method: &Method, path: &str, body: &Value, renamed: bool) -> Option<Value> {
        let (model_info, server_info) = if renamed {
            ("/model_info", "/server_info")
        } else {
            ("/get_model_info", "/get_server_info")
        };
        Some(match (method.as_str(), path) {
            ("GET", "/v1/models") => json!({"object": "list", "data": [{"id": "qwen",
                "object": "model", "owned_by": "sglang", "max_model_len": CONTEXT}]}),
            ("GET", p) if p == model_info => json!({"model_path": "qwen", "eos_token_ids": [2],
                "preferred_sampling_params": "{\"temperature\": 0.7}"}),
            ("GET", p) if p == server_info => json!({"speculative_algorithm": null}),
            ("POST", "/tokenize") => {
                let tokens = tokens_of(body["prompt"].as_str().unwrap());
                json!({"tokens": tokens, "count": tokens.len(), "max_model_len": CONTEXT})
            }
            ("POST", "/detokenize") => json!({"text": "aa"}),
            ("POST", "/generate") => {
                let n = body["sampling_params"]["max_new_tokens"].as_u64().unwrap() as usize;
                let k = (body["top_logprobs_num"].as_u64().unwrap() as usize).min(TOP.len());
                let (ids, eos) = generated(&body["input_ids"], n);
                let (sampled, top) = crate::common::sglang_logprobs(&ids, &TOP, k, |lp| lp);
                let finish = if eos {
                    json!({"type": "stop", "matched": 2})
                } else {
                    json!({"type": "length", "length": n})
                };
                json!({"text": "a", "output_ids": ids, "meta_info": {"finish_reason": finish,
                    "output_token_logprobs": sampled, "output_top_logprobs": top}})
            }
            _ => return None,
        })
    }

    /// The determinism probe's prompt names the time; the fixture names no time.
    fn timeless(mut body: Value) -> Value {
        for key in ["content", "prompt"] {
            if let Some(text) = body.get(key).and_then(Value::as_str)
                && let Some(rest) = text.strip_prefix("Probe ")
                && let Some((_, tail)) = rest.split_once(": ")
            {
                body[key] = json!(format!("Probe <ms>: {tail}"));
            }
        }
        body
    }

    /// A fake server of `kind` recording every request as `[method, path, body]`; 404 for a
    /// path the server does not know.
    async fn fake(kind: ServerKind, renamed: bool) -> (String, Arc<Mutex<Vec<Value>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let app = Router::new().fallback(move |method: Method, uri: Uri, bytes: Bytes| {
            let seen = seen.clone();
            async move {
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                };
                let answer = match kind {
                    ServerKind::LlamaCpp => llamacpp(&method, uri.path(), &body),
                    ServerKind::Vllm => vllm(&method, uri.path(), &body),
                    ServerKind::Sglang => sglang(&method, uri.path(), &body, renamed),
                };
                seen.lock()
                    .unwrap()
                    .push(json!([method.as_str(), uri.path(), timeless(body)]));
                match answer {
                    Some(answer) => axum::Json(answer).into_response(),
                    None => StatusCode::NOT_FOUND.into_response(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), log)
    }

    fn outcome<T: serde::Serialize>(result: Result<T, BackendError>) -> Value {
        match result {
            Ok(v) => json!({"ok": v}),
            Err(e) => {
                let class = match e {
                    BackendError::Unavailable(_) => "unavailable",
                    BackendError::Transient(_) => "transient",
                    BackendError::Rejected(_) => "rejected",
                };
                json!({class: e.to_string()})
            }
        }
    }

    fn request(top_k: Option<u32>) -> OwnedRequest {
        assert_eq!(PREFIX, [1, 2, 3], "the prompt of every request");
        crate::common::request(3, top_k, 0xDEAD_BEEF_CAFE_F00D)
    }

    /// Everything per kind that no request shows.
    fn facts(kind: ServerKind) -> Value {
        let proposal: Vec<Value> = [1e-7, 0.005, 0.01, 0.5, 2.0, 2.5, 0.0]
            .iter()
            .map(|&t| match kind.check_proposal(t) {
                Ok(()) => json!([t, "ok"]),
                Err(e) => json!([t, e.to_string()]),
            })
            .collect();
        let dialect = kind.dialect();
        let fits = |context, prompt, new| dialect.fits(context, prompt, new);
        let max = dialect.max_total_tokens(CONTEXT);
        json!({
            "name": kind.name(),
            "prefix": kind.prefix(),
            "wire_form": serde_json::to_value(kind).unwrap(),
            "default_k": kind.default_k(),
            "sampler_recipe": dialect.facts().sampler_recipe,
            "determinism_fix": dialect.facts().determinism_fix,
            "raw_logprobs_fix": dialect.facts().raw_logprobs_fix,
            "context_setting": dialect.facts().context_setting,
            "max_total_tokens_of_256": max,
            "fits_256": [fits(CONTEXT, 6, max - 6), fits(CONTEXT, 6, max - 5),
                fits(0, 0, 0), fits(1, 0, 0), fits(1, 1, 0)],
            "proposal": proposal,
        })
    }

    async fn conversation(kind: ServerKind, renamed: bool, options: &str) -> Value {
        let (url, log) = fake(kind, renamed).await;
        let reference = format!("{}+{url}{options}", kind.prefix());
        let m = match parse(&reference).unwrap() {
            ModelRef::Http(h) => HttpModel::new(h),
            other => panic!("{other:?}"),
        };
        let mut results = Map::new();
        let info = m.probe().await.unwrap();
        results.insert("probe".into(), json!(*info));
        results.insert("pin".into(), json!(m.pin(&info)));
        results.insert(
            "exactness".into(),
            json!([m.exactness(None), m.exactness(Some(7))]),
        );
        let max = kind.dialect().max_total_tokens(CONTEXT);
        results.insert(
            "fits".into(),
            json!([
                outcome(m.check_fits(&info, 100, max - 100)),
                outcome(m.check_fits(&info, 100, max - 99)),
            ]),
        );
        for (name, top_k) in [("generate", None), ("generate_top_2", Some(2))] {
            let g = m.generate(&request(top_k), 7).await.map(
                |g| json!({"tokens": g.tokens, "log_p": g.log_p, "log_q": g.log_q, "eos": g.eos}),
            );
            results.insert(name.into(), outcome(g));
        }
        // A power-lookahead candidate request: 2 candidates with a top-1 proposal; the body
        // asks for top-K 2, and the answer lists the 2 likeliest tokens.
        let candidate = OwnedRequest {
            prefix: vec![1, 2, 3, 4],
            max_tokens: 1,
            candidates: 2,
            ..request(Some(1))
        };
        let g = m.generate(&candidate, 7).await.map(
            |g| json!({"tokens": g.tokens, "log_p": g.log_p, "log_q": g.log_q, "candidates": g.candidates}),
        );
        results.insert("candidates_2".into(), outcome(g));
        results.insert("tokenize".into(), outcome(m.tokenize("hi").await));
        results.insert("detokenize".into(), outcome(m.detokenize(&[5, 5]).await));
        results.insert("tokenize_chat".into(), outcome(m.tokenize_chat("hi").await));
        let messages = [
            ChatMessage {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            ChatMessage {
                role: "user".into(),
                content: "hi".into(),
            },
        ];
        results.insert(
            "tokenize_messages".into(),
            outcome(m.tokenize_messages(&messages).await),
        );
        let requests = log.lock().unwrap().clone();
        json!({"reference": reference.replace(&url, "http://SERVER"), "facts": facts(kind),
            "requests": requests, "results": results})
    }

    fn check(fixture: &str, got: Value) {
        let path = format!(
            "{}/tests/fixtures/conversation_{fixture}.json",
            env!("CARGO_MANIFEST_DIR"),
        );
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        if std::env::var_os("POWERFLEET_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}; write it with POWERFLEET_BLESS=1"));
        assert!(
            text == expected,
            "the {fixture} conversation differs from {path}; got:\n{text}"
        );
    }

    #[tokio::test]
    async fn llamacpp_gets_the_requests_it_always_got() {
        let got = conversation(ServerKind::LlamaCpp, false, "?k=3&eos=7").await;
        check("llamacpp", got);
    }

    #[tokio::test]
    async fn vllm_gets_the_requests_it_always_got() {
        let got = conversation(ServerKind::Vllm, false, "/v1?model=m&k=3&eos=2").await;
        check("vllm", got);
    }

    #[tokio::test]
    async fn sglang_gets_the_requests_it_always_got() {
        let got = conversation(ServerKind::Sglang, false, "?k=3").await;
        check("sglang", got);
    }

    #[tokio::test]
    async fn sglang_with_renamed_info_endpoints_gets_the_requests_it_always_got() {
        let got = conversation(ServerKind::Sglang, true, "?model=qwen&k=3&eos=9").await;
        check("sglang_renamed_info", got);
    }
}
