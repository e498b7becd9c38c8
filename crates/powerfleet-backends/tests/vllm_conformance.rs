//! Conformance with vLLM's own code (the version pinned by `scripts/ensure-vllm.sh`).
//!
//! The request bodies powerfleet sends to `/v1/completions` go through vLLM's request
//! validation, `CompletionRequest.to_sampling_params` and the engine's `SamplingParams.verify`,
//! and must come out as exactly the proposal the exactness recipe assumes
//! (`scripts/vllm-conformance.py`). Responses built by vLLM's own response code must parse.
//!
//! Needs `POWERFLEET_VLLM_PYTHON`, the python of the venv `scripts/ensure-vllm.sh` prints; the
//! tests fail, never skip, without it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use powerfleet_backends::wire::{RawGeneration, effective_k, parse_vllm, vllm_body};
use powerfleet_sampler::{Chain, Generation, Method, Request, SamplerConfig, TokenId};
use serde_json::Value;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/vllm-conformance.py"
);

/// The venv python with vLLM, or a failure that says how to get it.
fn vllm_python() -> PathBuf {
    const HOW: &str = "run scripts/ensure-vllm.sh (a cached venv with vLLM's protocol package) \
         and export POWERFLEET_VLLM_PYTHON=$(scripts/ensure-vllm.sh | tail -n1)";
    let Some(path) = std::env::var_os("POWERFLEET_VLLM_PYTHON") else {
        panic!("POWERFLEET_VLLM_PYTHON is not set: {HOW}");
    };
    let path = PathBuf::from(path);
    if !is_executable(&path) {
        panic!(
            "POWERFLEET_VLLM_PYTHON={} is not an executable file: {HOW}",
            path.display()
        );
    }
    path
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        TempFile(std::env::temp_dir().join(format!(
            "powerfleet-vllm-conformance-{}-{name}",
            std::process::id()
        )))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn run_script(bodies: &Path, responses: Option<&Path>) -> Output {
    let mut cmd = Command::new(vllm_python());
    cmd.arg(SCRIPT).arg(bodies);
    if let Some(out) = responses {
        cmd.arg("--responses").arg(out);
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SCRIPT} with POWERFLEET_VLLM_PYTHON: {e}"));
    println!(
        "--- {SCRIPT} stdout:\n{}--- stderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A stand-in model: answers any request with a valid generation, ending some at EOS, so chains
/// run through every phase (extend, propose at every cut point, later blocks) and draw every seed
/// a real run would.
fn answer(request: &Request<'_>) -> Generation {
    let max = request.max_tokens as usize;
    let s = request.seed;
    let n = if s.is_multiple_of(3) {
        1 + (s as usize / 3) % max
    } else {
        max
    };
    let eos = n < max || s.is_multiple_of(7);
    Generation {
        tokens: (0..n).map(|i| (s % 50) as TokenId + i as TokenId).collect(),
        log_p: (0..n)
            .map(|i| -0.1 - ((s >> 8) % 10) as f64 * 0.2 - i as f64 * 0.01)
            .collect(),
        log_q: vec![-0.3; n],
        eos,
        // power-lookahead's candidate requests: distinct tokens, descending log p.
        candidates: (0..request.candidates.min(3))
            .map(|i| (100 + i, -0.5 - f64::from(i)))
            .collect(),
    }
}

/// Every `/v1/completions` body the chains of one configuration send, with backend top-K `k`.
/// Returns how many of their requests carry a seed >= 2^63.
fn chain_bodies(config: &SamplerConfig, k: u32, seeds: &[u64], bodies: &mut Vec<String>) -> usize {
    let mut big_seeds = 0;
    let valid = config.validate().expect("a valid sampler configuration");
    let prompt: Vec<TokenId> = vec![151644, 872, 198, 16, 10, 16, 28];
    for (stream, &seed) in seeds.iter().enumerate() {
        let mut chain = Chain::new(valid.clone(), &prompt, seed, stream as u64);
        while let Some(request) = chain.request() {
            let owned = request.to_owned();
            big_seeds += usize::from(owned.seed >= 1 << 63);
            let generation = answer(&request);
            bodies.push(vllm_body(&owned, effective_k(&owned, k), "m").to_string());
            chain
                .advance(generation)
                .expect("the stand-in answer is valid");
        }
    }
    big_seeds
}

/// Bodies from real chains of every method, several proposal temperatures (the methods' defaults
/// 1/α and 0.25 among them) and top-k settings, K in {1, 5, 20}, and many seeds. Seeds are drawn
/// by the chains as any u64, so about half are >= 2^63.
fn all_bodies() -> (Vec<String>, usize) {
    let chain_seeds: Vec<u64> = (0..6u64)
        .map(|i| i * 7919)
        .chain((0..6u64).map(|i| u64::MAX - i * 104_729))
        .collect();
    let mut bodies = Vec::new();
    let mut big_seeds = 0;
    for method in Method::ALL {
        for proposal_temp in [
            None,
            Some(0.25),
            Some(1.0 / 3.0),
            Some(0.5),
            Some(0.9),
            Some(2.0),
        ] {
            for k in [1, 5, 20] {
                // A job's own top_k, or none (the backend's K then, as for `standard`).
                for top_k in [Some(k), None] {
                    let mut config = SamplerConfig::new(method);
                    config.proposal_temp = proposal_temp;
                    config.top_k = top_k;
                    config.n_mcmc = 2;
                    config.block_size = 3;
                    config.max_new_tokens = 7;
                    if method.is_lookahead() {
                        // A candidate request asks for logprobs max(K, 4) (with K = 1: 4).
                        config.lookahead_candidates = Some(4);
                        config.lookahead_rollouts = Some(1);
                        config.lookahead_horizon = Some(2);
                    }
                    big_seeds += chain_bodies(&config, k, &chain_seeds, &mut bodies);
                }
            }
        }
    }
    let mut seen = HashSet::new();
    bodies.retain(|b| seen.insert(b.clone()));
    (bodies, big_seeds)
}

#[test]
fn powerfleet_request_bodies_pass_vllms_own_validation_unchanged() {
    let (bodies, big_seeds) = all_bodies();
    let values: Vec<Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert!(
        big_seeds > 0,
        "some chain draws a seed >= 2^63 (a request seed is any u64)"
    );
    for k in [1, 5, 20] {
        assert!(values.iter().any(|b| b["logprobs"] == k), "K = {k} covered");
    }
    assert!(
        values
            .iter()
            .any(|b| b["logprobs"] == 4 && b["top_k"] == 4 && b["max_tokens"] == 1),
        "power-lookahead's candidate requests (4 candidates beyond K = 1) covered"
    );
    println!(
        "{} distinct request bodies; {big_seeds} requests carried a seed >= 2^63",
        bodies.len()
    );

    let file = TempFile::new("bodies.jsonl");
    std::fs::write(&file.0, bodies.join("\n") + "\n").unwrap();
    let output = run_script(&file.0, None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "vLLM's own code refuses or changes powerfleet's request bodies (one line per body above)"
    );
    assert!(
        stdout.contains(&format!("{} bodies valid, 0 invalid", bodies.len())),
        "{stdout}"
    );
}

/// The model the responses stand for (Qwen2.5 Instruct): its tokenizer's EOS `<|im_end|>` and
/// the other EOS id of its `generation_config.json`, `<|endoftext|>`, which vLLM turns into a
/// stop token id.
const EOS: TokenId = 151645;
const SECONDARY_EOS: TokenId = 151643;

/// Parses a case's response with the terminal tokens `terminal`, or (`None`) the ones it lists.
fn parse(case: &Value, terminal: Option<&[TokenId]>) -> Result<RawGeneration, String> {
    let listed: Vec<TokenId> = case["terminal_token_ids"]
        .as_array()
        .expect("terminal_token_ids")
        .iter()
        .map(|t| t.as_u64().unwrap() as TokenId)
        .collect();
    assert_eq!(listed, vec![EOS, SECONDARY_EOS]);
    parse_vllm(&case["response"], terminal.unwrap_or(&listed)).map_err(|e| e.to_string())
}

#[test]
fn responses_built_by_vllms_own_code_parse() {
    // One valid body, only so the script runs; the responses do not depend on it.
    let bodies = TempFile::new("one-body.jsonl");
    let mut config = SamplerConfig::new(Method::Power);
    config.top_k = Some(5);
    let mut one = Vec::new();
    chain_bodies(&config, 5, &[1], &mut one);
    std::fs::write(&bodies.0, format!("{}\n", one[0])).unwrap();
    let responses = TempFile::new("responses.json");
    let output = run_script(&bodies.0, Some(&responses.0));
    assert!(output.status.success(), "the script failed (output above)");
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(&responses.0).unwrap())
        .expect("the script writes JSON");

    // (a) EOS: finish_reason "stop", stop_reason null; EOS is the last token, with its entry.
    let raw = parse(&cases["eos"], None).expect("an EOS stop parses");
    assert!(raw.eos);
    assert_eq!(raw.tokens, vec![19, 17, EOS]);
    assert_eq!(raw.top.len(), 3);
    assert!(raw.top.iter().all(|t| t.len() == 3), "K = 3 entries each");
    let g = raw.into_generation(0.5).unwrap();
    assert_eq!(g.log_p, vec![-0.21, -0.05, -0.9]);

    // (c) max_tokens reached: finish_reason "length".
    let raw = parse(&cases["length"], None).expect("a length stop parses");
    assert!(!raw.eos);
    assert_eq!(raw.tokens, vec![856, 284]);
    assert_eq!(raw.into_generation(1.0).unwrap().log_p, vec![-1.1, -0.3]);

    // (d) A top-K entry of -inf comes as vLLM's -9999.0 (`max(logprob, -9999.0)` in
    // `_create_completion_logprobs`). It parses, keeps -9999.0 as its log p, and adds nothing to
    // the normalizer of log q.
    let raw = parse(&cases["clamped"], None).expect("a clamped top-K entry parses");
    let clamped = cases["clamped"]["clamped_token_id"].as_u64().unwrap() as TokenId;
    assert!(
        raw.top[0].contains(&(clamped, -9999.0)),
        "log p of the clamped token is -9999: {:?}",
        raw.top[0]
    );
    let g = raw.into_generation(0.5).unwrap();
    assert_eq!(g.log_p, vec![-0.1, -0.02]);
    let log_z = (-0.1f64 / 0.5).exp() + (-2.4f64 / 0.5).exp();
    assert!((g.log_q[0] - (-0.1 / 0.5 - log_z.ln())).abs() < 1e-12);

    // (b) A stop on a secondary EOS id of the model's generation_config.json, which vLLM turns
    // into a stop token id: finish_reason "stop", stop_reason = that id. It is an EOS-like stop:
    // eos is true and the stop token is the last token, with its own log-probability.
    let stop_id = cases["secondary_eos"]["stop_token_id"].as_u64().unwrap() as TokenId;
    assert_eq!(stop_id, SECONDARY_EOS);
    for terminal in [None, Some(&[][..])] {
        let raw = parse(&cases["secondary_eos"], terminal).unwrap_or_else(|e| {
            panic!("a stop at secondary EOS {stop_id} must parse (terminal {terminal:?}): {e}")
        });
        assert!(raw.eos, "an integer stop_reason is a stop at EOS");
        assert_eq!(raw.tokens.last(), Some(&stop_id));
        assert_eq!(raw.tokens, vec![19, stop_id]);
        assert_eq!(raw.into_generation(0.5).unwrap().log_p, vec![-0.21, -0.4]);
    }
    // With terminal tokens that leave the stop id out, the stop is refused, with the fix.
    let err = parse(&cases["secondary_eos"], Some(&[EOS])).unwrap_err();
    assert!(err.contains(&stop_id.to_string()), "{err}");
}
