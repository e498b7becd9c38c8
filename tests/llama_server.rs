//! The llama.cpp backend against a real `llama-server` running a tiny random-weight model (both
//! made by scripts/test.sh): reported log p equals the server's own scoring, sampled tokens follow
//! the reported log q, chains resume across a worker crash with the tokens of a fault-free run,
//! chat prompts are the server's own chat template tokenized once, with one BOS, a benchmark run
//! on the server is graded and reported, and the start-up probe tells a server that answers one
//! request the same way every time from one that does not (which `worker
//! --require-deterministic` refuses, and results record).

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Fleet, PATIENCE, specs};
use powerfleet_backends::HttpModel;
use powerfleet_fleet::producer::{Submission, SubmittedPrompt, submit};
use powerfleet_jobs::{JobStatus, Pin, Prompt};
use powerfleet_models::exact::tv_tolerance;
use powerfleet_sampler::{Chain, Method, OwnedRequest, SamplerConfig};
use serde_json::{Value, json};

use common::llama::{EOS, LlamaServer, VOCAB};

/// The server's own log-probability of `next` after `prefix`: one teacher-forced position,
/// raw probabilities of the whole vocabulary.
async fn score(url: &str, prefix: &[u32], next: u32) -> f64 {
    let body = json!({"prompt": prefix, "n_predict": 1, "n_probs": VOCAB, "top_k": VOCAB, "temperature": 1.0,
        "samplers": ["top_k", "temperature"], "post_sampling_probs": false, "seed": 0});
    let answer: Value = common::post_json(&format!("{url}/completion"), None, &body).await;
    let top = answer["completion_probabilities"][0]["top_logprobs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(top.len(), VOCAB as usize, "the whole vocabulary is listed");
    top.iter()
        .find(|e| e["id"] == next)
        .map(|e| e["logprob"].as_f64().unwrap())
        .unwrap_or_else(|| panic!("token {next} missing from the scoring"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_log_p_equals_the_servers_own_scoring_eos_included() {
    let server = LlamaServer::start(4);
    let model = server.model(&format!("?k={VOCAB}"));
    let prompt = model.tokenize("hello").await.unwrap();
    assert_eq!(prompt[0], 1, "the server's tokenizer adds BOS");
    let mut saw_eos = false;
    for seed in 0..40u64 {
        let request = OwnedRequest {
            prefix: prompt.clone(),
            prompt_len: prompt.len(),
            max_tokens: 40,
            temperature: 0.7,
            top_k: None,
            seed,
            candidates: 0,
        };
        let g = model.generate(&request, seed).await.unwrap();
        assert_eq!(g.eos, g.tokens.last() == Some(&EOS));
        assert!(g.eos || g.tokens.len() == 40);
        saw_eos |= g.eos;
        for i in 0..g.tokens.len() {
            let prefix = [&prompt[..], &g.tokens[..i]].concat();
            let scored = score(&server.url, &prefix, g.tokens[i]).await;
            // Four slots batch concurrent requests differently from run to run: ~1e-3 nats at most.
            assert!(
                (scored - g.log_p[i]).abs() < 2e-3,
                "seed {seed} token {i}: reported {} scored {scored}",
                g.log_p[i]
            );
        }
        if saw_eos && seed >= 5 {
            break;
        }
    }
    assert!(
        saw_eos,
        "some generation ended at EOS, and its probability was checked too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_tokens_follow_the_reported_log_q() {
    let server = LlamaServer::start(4);
    let model = std::sync::Arc::new(server.model("?k=8"));
    let prefix = model.tokenize("hel").await.unwrap();
    let n = 3000u64;
    let mut tasks = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    for seed in 0..n {
        let (model, prefix, sem) = (model.clone(), prefix.clone(), sem.clone());
        tasks.spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let request = OwnedRequest {
                prefix: prefix.clone(),
                prompt_len: prefix.len(),
                max_tokens: 1,
                temperature: 0.6,
                top_k: None,
                seed,
                candidates: 0,
            };
            let g = model.generate(&request, seed).await.unwrap();
            (g.tokens[0], g.log_q[0])
        });
    }
    let mut counts = std::collections::BTreeMap::<u32, u64>::new();
    let mut q = std::collections::BTreeMap::<u32, f64>::new();
    while let Some(r) = tasks.join_next().await {
        let (t, lq) = r.unwrap();
        *counts.entry(t).or_default() += 1;
        q.insert(t, lq.exp());
    }
    assert!(
        counts.len() >= 3,
        "the top-8 proposal at temperature 0.6 is not degenerate: {counts:?}"
    );
    let probs: Vec<f64> = q.values().copied().collect();
    let covered: f64 = probs.iter().sum();
    let tv = 0.5
        * (q.iter()
            .map(|(t, p)| (counts[t] as f64 / n as f64 - p).abs())
            .sum::<f64>()
            + (1.0 - covered));
    let tolerance = tv_tolerance(&probs, n, 1e-6) + 2e-3;
    assert!(
        tv < tolerance,
        "sampling frequencies vs reported q: TV {tv} > {tolerance} ({counts:?} vs {q:?})"
    );
}

/// A batch of `chains` power-sampling chains of seed `seed` on the prompt "hello" of the model
/// registered as `tiny`, optionally formatted through the server's chat template.
fn hello_power_batch(config: SamplerConfig, seed: u64, chains: u64, chat: bool) -> Submission {
    common::batch("tiny")
        .config(config)
        .methods(&[Method::Power])
        .problem("hello", Prompt::Text("hello".into()))
        .seed(seed)
        .chains(chains)
        .chat(chat)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_resume_across_a_worker_crash_with_the_real_server() {
    // One slot: requests are served one at a time, so log-probabilities are reproducible and a
    // resumed chain must repeat the fault-free run exactly.
    let server = LlamaServer::start(1);
    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    let w = fleet.spawn_worker(&["--model", &registered]);
    fleet.spawn_worker(&["--model", &registered]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let config = SamplerConfig {
        n_mcmc: 6,
        block_size: 8,
        max_new_tokens: 96,
        finish_on_eos: false,
        ..SamplerConfig::new(Method::Power)
    };
    let submission = hello_power_batch(config, 3, 8, false);
    let receipt = submit(&queue, &submission).await.unwrap();
    let specs = specs(&queue, &receipt).await;
    // Let both workers checkpoint some blocks, then kill one mid-batch.
    fleet.wait_for_blocks(&receipt.job_ids, 2, 4).await;
    fleet.kill_worker(w);
    fleet.restart_worker(w);
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 8, PATIENCE)
        .await;
    assert!(
        results.iter().any(|r| r.attempts >= 2),
        "some job was resumed by another worker"
    );

    let model = server.model(&format!("?k={VOCAB}"));
    for spec in &specs {
        let r = results.iter().find(|r| r.job_id == spec.job_id).unwrap();
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        assert!(
            matches!(&r.exactness, Some(powerfleet_jobs::Exactness::Server { top_k, source })
                if *top_k == VOCAB && source.contains("llama.cpp")),
            "{:?}",
            r.exactness
        );
        assert_eq!(
            r.text.as_deref(),
            Some(
                model
                    .detokenize(powerfleet_sampler::text_tokens(&r.tokens, r.ends_with_eos))
                    .await
                    .unwrap()
                    .as_str()
            )
        );
        // The fault-free run: the same chain driven in-process against the same server.
        let prompt = model.tokenize("hello").await.unwrap();
        let mut chain = Chain::new(
            spec.config.validate().unwrap(),
            &prompt,
            spec.seed,
            spec.stream,
        );
        while let Some(request) = chain.request().map(|q| q.to_owned()) {
            let g = model.generate(&request, 0).await.unwrap();
            chain.advance(g).unwrap();
        }
        assert_eq!(
            r.tokens,
            chain.output().unwrap().tokens,
            "job {} differs from the fault-free run",
            spec.job_id
        );
    }
}

/// A chat template the tiny vocabulary can tokenize (printable ASCII, no newline). Like the
/// templates of Llama or Mistral models it writes the BOS text itself, which is what could double
/// BOS. The tiny model has no template of its own (llama-server then falls back to ChatML, whose
/// newlines the tiny vocabulary cannot tokenize).
const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";

async fn post_json(url: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert!(status.is_success(), "POST {url}: {status} {answer}");
    answer
}

fn ids(answer: &Value) -> Vec<u32> {
    answer["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_prompts_are_the_servers_template_tokenized_with_one_bos() {
    let server = LlamaServer::start_with(1, &["--chat-template", CHAT_TEMPLATE]);
    let model = server.model(&format!("?k={VOCAB}"));
    let chat = model.tokenize_chat("hello").await.unwrap();

    // The server's own rendering: it drops the BOS text the template wrote at the start, since
    // the tokenizer adds BOS itself.
    let rendered = post_json(
        &format!("{}/apply-template", server.url),
        json!({"messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    let text = rendered["prompt"].as_str().unwrap();
    assert_eq!(text, "[user] hello [assistant] ");
    let direct = post_json(
        &format!("{}/tokenize", server.url),
        json!({"content": text, "add_special": true}),
    )
    .await;
    assert_eq!(chat, ids(&direct), "the templated text, tokenized with BOS");
    assert_eq!(chat[0], 1, "BOS first");
    assert_eq!(
        chat.iter().filter(|&&t| t == 1).count(),
        1,
        "BOS exactly once: {chat:?}"
    );
    let plain = model.tokenize("hello").await.unwrap();
    assert_ne!(chat, plain);
    assert_eq!(plain, [1, 75, 72, 79, 79, 82]);
    assert_eq!(
        &chat[chat.len() - 12..],
        &model.tokenize("[assistant] ").await.unwrap()[1..],
        "the generation prompt ends the chat prompt"
    );

    // llama-server's own chat completions evaluate exactly this many prompt tokens.
    let completion = post_json(
        &format!("{}/v1/chat/completions", server.url),
        json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}),
    )
    .await;
    assert_eq!(
        completion["usage"]["prompt_tokens"].as_u64(),
        Some(chat.len() as u64),
        "{completion}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_template_llama_server_falls_back_to_chatml() {
    let server = LlamaServer::start(1);
    let rendered = post_json(
        &format!("{}/apply-template", server.url),
        json!({"messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(
        rendered["prompt"],
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    );
    // The tiny vocabulary has no newline token: tokenizing ChatML fails, as a server error.
    let err = server.model("").tokenize_chat("hello").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("/tokenize answered 500"), "{err}");
}

/// The chain a job of `spec` runs, driven in-process from `prompt` against `model`.
async fn replay(model: &HttpModel, spec: &powerfleet_jobs::JobSpec, prompt: &[u32]) -> Vec<u32> {
    let mut chain = Chain::new(
        spec.config.validate().unwrap(),
        prompt,
        spec.seed,
        spec.stream,
    );
    while let Some(request) = chain.request().map(|q| q.to_owned()) {
        let g = model.generate(&request, 0).await.unwrap();
        chain.advance(g).unwrap();
    }
    chain.output().unwrap().tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_job_runs_its_chain_from_the_templated_prompt() {
    // One slot: log-probabilities are reproducible, so the in-process replay must match exactly.
    let server = LlamaServer::start_with(1, &["--chat-template", CHAT_TEMPLATE]);
    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    fleet.spawn_worker(&["--model", &registered]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let config = SamplerConfig {
        n_mcmc: 3,
        block_size: 6,
        max_new_tokens: 24,
        finish_on_eos: false,
        ..SamplerConfig::new(Method::Power)
    };
    let submission = hello_power_batch(config, 5, 2, true);
    let receipt = submit(&queue, &submission).await.unwrap();
    let specs = specs(&queue, &receipt).await;
    assert!(specs.iter().all(|s| s.chat));
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 2, PATIENCE)
        .await;
    let model = server.model(&format!("?k={VOCAB}"));
    let chat_prompt = model.tokenize_chat("hello").await.unwrap();
    let plain_prompt = model.tokenize("hello").await.unwrap();
    for spec in &specs {
        let r = results.iter().find(|r| r.job_id == spec.job_id).unwrap();
        assert_eq!(r.status, JobStatus::Completed, "{r:?}\n{}", fleet.logs());
        assert_eq!(r.tokens.len(), 24);
        assert_eq!(
            r.tokens,
            replay(&model, spec, &chat_prompt).await,
            "job {} ran from the templated prompt",
            spec.job_id
        );
        assert_ne!(
            r.tokens,
            replay(&model, spec, &plain_prompt).await,
            "job {} did not run from the plain prompt",
            spec.job_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_chat_starts_from_the_templated_prompt() {
    let server = LlamaServer::start_with(1, &["--chat-template", CHAT_TEMPLATE]);
    let flags = [
        "--method",
        "power",
        "--n-mcmc",
        "2",
        "--block-size",
        "4",
        "--max-new-tokens",
        "8",
        "--continue-after-eos",
        "--seed",
        "7",
        "--format",
        "jsonl",
        "--threads",
        "1",
    ];
    let tokens = sampled_tokens(
        &server,
        &[&["--prompt", "hello", "--chat"], &flags[..]].concat(),
    );

    let model = server.model(&format!("?k={VOCAB}"));
    let config = SamplerConfig {
        n_mcmc: 2,
        block_size: 4,
        max_new_tokens: 8,
        finish_on_eos: false,
        ..SamplerConfig::new(Method::Power)
    };
    let mut chain = Chain::new(
        config.validate().unwrap(),
        &model.tokenize_chat("hello").await.unwrap(),
        7,
        0,
    );
    while let Some(request) = chain.request().map(|q| q.to_owned()) {
        let g = model.generate(&request, 0).await.unwrap();
        chain.advance(g).unwrap();
    }
    assert_eq!(tokens, chain.output().unwrap().tokens);

    let refused = Command::new(BIN)
        .args(["sample", "--model", "toy:tiny", "--chat", "--chains", "1"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("toy models have no chat template"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// A benchmark run against the real server: a dataset rendered with the MATH template and the
/// server's chat template, graded by the collector, and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_benchmark_run_on_the_real_server_is_graded_and_reported() {
    let server = LlamaServer::start_with(2, &["--chat-template", CHAT_TEMPLATE]);
    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    fleet.spawn_worker(&["--model", &registered, "--concurrency", "4"]);
    fleet.spawn_collector();
    let dataset = fleet.dir.path().join("math.jsonl");
    std::fs::write(
        &dataset,
        "{\"id\": \"p1\", \"question\": \"What is 1 + 1?\", \"answer\": \"2\"}\n\
         {\"id\": \"p2\", \"question\": \"What is 2 + 2?\", \"answer\": \"4\"}\n",
    )
    .unwrap();
    let cli = |args: &[&str]| common::stdout_of(&fleet.cli(args));
    let submit = [
        "submit",
        "--bench",
        dataset.to_str().unwrap(),
        "--model",
        "tiny",
        "--template",
        "math-cot",
        "--grader",
        r"regex:(\S)\s*$",
        "--chat",
    ];
    let receipt: powerfleet_fleet::producer::Receipt = serde_json::from_str(&cli(&[
        submit.as_slice(),
        &common::two_methods_two_seeds("8", "16"),
        &["--wait", "--format", "json"],
    ]
    .concat()))
    .unwrap();
    assert_eq!(receipt.job_ids.len(), 2 * 2 * 2);
    let batch = receipt.batch_id.unwrap().to_string();

    // Every job carries the MATH prompt of its problem and formats it through the chat template.
    let queue = fleet.queue().await;
    for spec in specs(&queue, &receipt).await {
        assert!(spec.chat);
        let Prompt::Text(prompt) = &spec.prompt else {
            panic!("a text prompt")
        };
        assert!(
            prompt.starts_with("Can you solve the following math problem? What is")
                && prompt.ends_with("put your final answer within \\boxed{}."),
            "{prompt}"
        );
        assert_eq!(spec.grading.as_ref().unwrap().template, "math-cot");
    }

    // Graded by the collector: the last non-blank character, against the reference.
    let results: Vec<powerfleet_jobs::JobResult> =
        cli(&["results", "--batch", &batch, "--format", "jsonl"])
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(results.len(), 8);
    for r in &results {
        assert_eq!(r.status, JobStatus::Completed, "{:?}", r.error);
        assert!(
            matches!(&r.exactness, Some(powerfleet_jobs::Exactness::Server { source, .. })
                if source.contains("llama")),
            "{:?}",
            r.exactness
        );
        let text = r.text.as_deref().expect("detokenized by the server");
        let last = text.trim_end().chars().last().map(String::from);
        let grade = r.grade.as_ref().expect("graded");
        assert_eq!(grade.extracted, last, "{text:?}");
        let reference = if r.problem_id.as_deref() == Some("p1") {
            "2"
        } else {
            "4"
        };
        assert_eq!(grade.correct, last.as_deref() == Some(reference));
    }

    let report: Vec<Value> = cli(&["report", &batch, "--format", "jsonl"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let methods: Vec<&Value> = report.iter().filter(|r| r["row"] == "method").collect();
    assert_eq!(methods.len(), 2);
    for m in methods {
        assert_eq!(m["graded"], 4, "{m}");
        assert_eq!(m["samples"], 2, "{m}");
        assert!(m["cost_multiplier"].as_f64().unwrap() >= 1.0, "{m}");
    }
}

/// Power sampling at small, checkpoint-rich settings: 8 blocks of 8 tokens, 4 steps each.
fn outage_config() -> SamplerConfig {
    SamplerConfig {
        n_mcmc: 4,
        block_size: 8,
        max_new_tokens: 64,
        finish_on_eos: false,
        ..SamplerConfig::new(Method::Power)
    }
}

/// The tokens of `spec`'s chain run in-process, uninterrupted, against `model`.
async fn uninterrupted(model: &HttpModel, spec: &powerfleet_jobs::JobSpec) -> Vec<u32> {
    let prompt = model.tokenize("hello").await.unwrap();
    replay(model, spec, &prompt).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_batch_loses_no_job_and_workers_wait_instead_of_failing() {
    // One slot: log-probabilities are reproducible, so every job must end with the tokens of a
    // run without the outage.
    let mut server = LlamaServer::start(1);
    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    let metrics_addrs = [common::free_addr(), common::free_addr()];
    let flags = ["--model", &registered, "--max-wait", "3s"];
    for addr in &metrics_addrs {
        fleet.spawn_worker(&[&flags[..], &["--metrics-listen", addr][..]].concat());
    }
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit(&queue, &hello_power_batch(outage_config(), 5, 12, false))
        .await
        .unwrap();
    let specs = specs(&queue, &receipt).await;
    fleet.wait_for_blocks(&receipt.job_ids, 1, 3).await;

    // The server goes away, as a restart of an inference server does, until every unfinished
    // job has waited for it in the queue, with the reason, and has been put back to wait twice
    // more since (a job a worker held on to, retrying, would not be), and the workers have left
    // jobs unclaimed. Counted in events, each job's waits, never in shares of the wall clock.
    server.stop();
    let keys = powerfleet_queue::Keys::new(&fleet.namespace);
    let redis = redis::Client::open(fleet.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let waits = async |id: powerfleet_jobs::JobId| -> u64 {
        let n: Option<u64> = redis::cmd("HGET")
            .arg(keys.job(id))
            .arg("waits")
            .query_async(&mut redis.clone())
            .await
            .unwrap();
        n.unwrap_or(0)
    };
    let unclaimed_waits = async || -> u64 {
        let mut n = 0;
        for addr in &metrics_addrs {
            n += common::metrics_text(addr)
                .await
                .lines()
                .filter(|l| {
                    l.starts_with("powerfleet_jobs_waiting_for_model_total")
                        && l.contains("when=\"unclaimed\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64;
        }
        n
    };
    // Per job: its waits when it was first seen waiting since the stop.
    let mut first_seen_waiting = std::collections::HashMap::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut behind = Vec::new();
        for id in &receipt.job_ids {
            let s = queue.job_state(*id).await.unwrap().unwrap();
            // A job may complete from answers it had before the server stopped (its tokens are
            // checked against an uninterrupted run below); none fails, dies or is cancelled.
            assert!(
                !s.status.is_final() || s.status == JobStatus::Completed,
                "a job ended without completing while its server was down: {s:?}\n{}",
                fleet.logs()
            );
            if s.status.is_final() {
                continue;
            }
            let now = waits(*id).await;
            if s.waiting
                .as_deref()
                .is_some_and(|w| w.starts_with("waiting for model tiny"))
            {
                first_seen_waiting.entry(*id).or_insert(now);
            }
            if first_seen_waiting
                .get(id)
                .is_none_or(|&first| now < first + 2)
            {
                behind.push((s.job_id, s.status, now, first_seen_waiting.get(id).copied()));
            }
        }
        let unclaimed = unclaimed_waits().await;
        if behind.is_empty() && unclaimed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {PATIENCE:?} of outage, jobs that have not waited (job, status, waits, waits \
             when first seen waiting): {behind:?}; jobs left unclaimed: {unclaimed}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    server.restart();
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 12, PATIENCE)
        .await;
    let model = server.model(&format!("?k={VOCAB}"));
    for spec in &specs {
        let r = results.iter().find(|r| r.job_id == spec.job_id).unwrap();
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        assert_eq!(
            r.attempts, 1,
            "waiting for the server is not a delivery: {r:?}"
        );
        assert_eq!(
            r.tokens,
            uninterrupted(&model, spec).await,
            "job {} differs from a run without the outage",
            spec.job_id
        );
    }
    // Stored once each (the collector trims the results stream during a test this long, so the
    // store is where to count).
    let ids: std::collections::HashSet<_> = results.iter().map(|r| r.job_id).collect();
    assert_eq!(
        (results.len(), ids.len()),
        (12, 12),
        "each job finished once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_past_the_patience_fails_its_jobs_with_the_reason_keeping_checkpoints_until_then()
 {
    let mut server = LlamaServer::start(1);
    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    fleet.spawn_worker(&[
        "--model",
        &registered,
        "--model-patience",
        "8s",
        "--max-wait",
        "1s",
    ]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit(&queue, &hello_power_batch(outage_config(), 9, 2, false))
        .await
        .unwrap();
    fleet.wait_for_blocks(&receipt.job_ids[..1], 1, 1).await;
    server.stop();
    // Within the patience the job waits and its checkpoint stays in Redis: both read at once,
    // as soon as the job is seen waiting.
    let mut redis = redis::Client::open(fleet.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = powerfleet_queue::Keys::new(&fleet.namespace);
    let job = receipt.job_ids[0];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, waiting, checkpoint): (String, Option<String>, Option<Vec<u8>>) =
            redis::pipe()
                .atomic()
                .cmd("HGET")
                .arg(keys.job(job))
                .arg("status")
                .cmd("HGET")
                .arg(keys.job(job))
                .arg("waiting")
                .cmd("GET")
                .arg(keys.checkpoint(job))
                .query_async(&mut redis)
                .await
                .unwrap();
        if waiting.is_some() {
            assert_eq!(status, "queued", "a waiting job is queued");
            assert!(
                checkpoint.is_some(),
                "the checkpoint is kept while the job waits"
            );
            break;
        }
        assert!(
            status != "failed" && Instant::now() < deadline,
            "job {job} was never seen waiting for the server (status {status})\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 2, PATIENCE)
        .await;
    for r in &results {
        assert_eq!(r.status, JobStatus::Failed, "{r:?}");
        let error = r.error.as_deref().unwrap_or_default();
        assert!(
            error.contains("longer than the worker's --model-patience of 8 s")
                && error.contains("127.0.0.1"),
            "the error names the patience and the server's failure: {error}"
        );
        assert_eq!(r.attempts, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_the_server_cannot_take_fail_alone_and_healthy_jobs_complete() {
    // The tiny vocabulary is printable ASCII: llama-server answers /tokenize of other text with
    // a 500 ("unordered_map::at"), the same for every try. Its context is 256 tokens.
    let server = LlamaServer::start(1);
    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    fleet.spawn_worker(&["--model", &registered, "--concurrency", "4"]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let config = SamplerConfig {
        n_mcmc: 2,
        block_size: 8,
        max_new_tokens: 16,
        ..SamplerConfig::new(Method::Power)
    };
    let mut problems = Vec::new();
    for i in 0..8 {
        problems.push(SubmittedPrompt {
            id: Some(format!("ok{i}")),
            prompt: Prompt::Text(format!("hello {i}")),
        });
    }
    for i in 0..6 {
        problems.push(SubmittedPrompt {
            id: Some(format!("bad{i}")),
            prompt: Prompt::Text(format!("h\u{e9}llo\n{i}")),
        });
    }
    problems.push(SubmittedPrompt {
        id: Some("long".into()),
        prompt: Prompt::Text("a ".repeat(200)),
    });
    let submission = Submission {
        problems,
        ..hello_power_batch(config, 1, 1, false)
    };
    let receipt = submit(&queue, &submission).await.unwrap();
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 15, PATIENCE)
        .await;
    for r in &results {
        let id = r.problem_id.as_deref().unwrap();
        let error = r.error.as_deref().unwrap_or_default();
        if id.starts_with("ok") {
            assert_eq!(r.status, JobStatus::Completed, "{id}: {error}");
        } else if id.starts_with("bad") {
            assert_eq!(r.status, JobStatus::Failed, "{id}");
            assert!(
                error.contains("tokenizing the prompt") && error.contains("500"),
                "the server's own message: {error}"
            );
            assert_eq!(
                r.error_code,
                Some(powerfleet_jobs::ErrorCode::RequestRefused),
                "{id}"
            );
        } else {
            assert_eq!(r.status, JobStatus::Failed, "{id}");
            assert!(
                error.contains("exceeds the server's context") && error.contains("256"),
                "both numbers: {error}"
            );
            // The request's own fault, said as a code and never retried.
            assert_eq!(
                r.error_code,
                Some(powerfleet_jobs::ErrorCode::ContextLengthExceeded),
                "{id}"
            );
            assert_eq!(r.attempts, 1, "{id}");
        }
    }
    assert!(
        !fleet.logs().contains("circuit open"),
        "errors about one request never open the circuit\n{}",
        fleet.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_leave_out_the_eos_as_the_servers_own_completion_text_does() {
    let server = LlamaServer::start(2);
    let model = server.model("");
    // llama-server's own completions that ended at EOS: its text leaves the EOS's text out, and
    // powerfleet's text of the same tokens is that text.
    let mut compared = 0;
    for seed in 0..40 {
        let answer = post_json(
            &format!("{}/completion", server.url),
            // EOS is made likely (it is rare in the random-weight model).
            json!({"prompt": "hello", "n_predict": 16, "seed": seed, "temperature": 1.0,
                "top_k": VOCAB, "samplers": ["top_k", "temperature"], "return_tokens": true,
                "logit_bias": [[EOS, 8.0]]}),
        )
        .await;
        if answer["stop_type"] != "eos" {
            continue;
        }
        let mut tokens = ids(&answer);
        if tokens.last() != Some(&EOS) {
            tokens.push(EOS);
        }
        // llama-server leaves the text of control tokens out of its content wherever they are;
        // powerfleet leaves out only the terminal one, so completions that sampled another
        // control token (<unk>, <s>: ids 0 and 1) are not compared.
        if tokens.iter().any(|&t| t < EOS) {
            continue;
        }
        let ours = model
            .detokenize(powerfleet_sampler::text_tokens(&tokens, true))
            .await
            .unwrap();
        assert_eq!(ours, answer["content"].as_str().unwrap(), "seed {seed}");
        compared += 1;
    }
    assert!(compared > 0, "no completion of 40 ended at EOS");

    // The fleet's results: every completion that ended at a terminal token has the text without
    // it. Token 90, frequent in this model, is made terminal by the reference (`eos=`).
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&["--model", &format!("tiny={}&eos=90", server.reference())]);
    fleet.spawn_collector();
    let config = SamplerConfig {
        max_new_tokens: 16,
        ..SamplerConfig::new(Method::Standard)
    };
    let submission = common::batch("tiny")
        .config(config)
        .methods(&[Method::Standard])
        .problem("hello", Prompt::Text("hello".into()))
        .seed(3)
        .chains(24)
        .build();
    let receipt = submit(&fleet.queue().await, &submission).await.unwrap();
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 24, PATIENCE)
        .await;
    let mut ended = 0;
    for r in &results {
        assert_eq!(r.status, JobStatus::Completed, "{:?}", r.error);
        let text = r.text.as_deref().expect("detokenized by the server");
        let expected = model
            .detokenize(powerfleet_sampler::text_tokens(&r.tokens, r.ends_with_eos))
            .await
            .unwrap();
        assert_eq!(text, expected);
        if r.ends_with_eos {
            let whole = model.detokenize(&r.tokens).await.unwrap();
            assert_ne!(text, whole, "the terminal token's text is left out");
            ended += 1;
        }
    }
    assert!(ended > 0, "no fleet completion of 24 ended at EOS");
}

/// An OpenAI completion whose prompt plus `max_tokens` (or plus the default budget, when it
/// gives none) does not fit the server's 256-token context is the request's own fault: 400
/// `context_length_exceeded` in OpenAI's shape, never a 5xx that clients retry. Where no
/// registration knows the context (a server reference rather than a name), the job fails at the
/// worker, once and unretried; a worker's registration carries the context of its names once
/// its start-up probe has learned it, before any job, and then a request certain not to fit
/// creates no job, and one without `max_tokens` gets a budget that fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_request_past_the_context_gets_400_context_length_exceeded() {
    const TOKEN: &str = "context-test-token";
    let server = LlamaServer::start(1);
    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    fleet.spawn_worker(&["--model", &registered, "--heartbeat", "200ms"]);
    fleet.spawn_collector();
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = common::Serve::start(
        &fleet,
        "serve",
        &[
            "--listen",
            &listen,
            "--model",
            "tiny",
            "--allow-model-references",
        ],
        Some(TOKEN),
    );
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    let queue = fleet.queue().await;
    let context = async || {
        let live = queue.live_workers().await.unwrap();
        (
            powerfleet_queue::served(&live, "tiny"),
            powerfleet_queue::context_tokens(&live, "tiny"),
        )
    };
    let deadline = Instant::now() + PATIENCE;
    while !context().await.0 {
        assert!(Instant::now() < deadline, "the worker never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The worker's start-up probe learned the context (256 - 1 for llama-server), before any job.
    let deadline = Instant::now() + PATIENCE;
    while context().await.1.is_none() {
        assert!(
            Instant::now() < deadline,
            "the context never reached the registration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(context().await.1, Some(255));
    let post = async |body: Value| {
        let correlation = powerfleet_jobs::CorrelationId::generate();
        let response = reqwest::Client::new()
            .post(format!("{base}/v1/completions"))
            .bearer_auth(TOKEN)
            .header("x-powerfleet-correlation-id", correlation.as_str())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        let tally = queue
            .tally(powerfleet_queue::TallyOf::Correlation(&correlation))
            .await
            .unwrap();
        (status, answer, tally)
    };
    let standard = json!({"method": "standard", "block_size": 8});
    let long = "a ".repeat(200);
    let past_the_context = |answer: &Value, param: &str| {
        let error = &answer["error"];
        assert_eq!(error["type"], "invalid_request_error", "{answer}");
        assert_eq!(error["code"], "context_length_exceeded", "{answer}");
        assert_eq!(error["param"], param, "{answer}");
        assert!(
            error["message"].as_str().unwrap().contains("25"),
            "{answer}"
        );
    };

    // 1. No registration knows a reference's context: the worker fails the one job, unretried.
    let (status, answer, tally) = post(
        json!({"model": server.reference(), "prompt": long, "max_tokens": 100, "power_sampling": standard}),
    )
    .await;
    assert_eq!(status, 400, "{answer}\n{}", serve.log());
    past_the_context(&answer, "prompt");
    let tally = tally.expect("the request's jobs");
    assert_eq!(
        (tally.total, tally.by_status.get("failed")),
        (1, Some(&1)),
        "{tally:?}"
    );

    // A prompt the server refuses (outside the tiny vocabulary) is the request's fault too.
    let (status, answer, _) = post(
        json!({"model": "tiny", "prompt": "h\u{e9}llo", "max_tokens": 8, "power_sampling": standard}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "request_refused", "{answer}");
    assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");

    // 2. The registration knows the name's context: a request certain not to fit creates no job.
    let (status, answer, tally) = post(
        json!({"model": "tiny", "prompt": "hello", "max_tokens": 300, "power_sampling": standard}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    past_the_context(&answer, "max_tokens");
    assert!(
        tally.as_ref().is_none_or(|t| t.total == 0),
        "no job: {tally:?}"
    );

    // 3. Without max_tokens the budget is what fits beside the prompt.
    let (status, answer, _) =
        post(json!({"model": "tiny", "prompt": "hello", "power_sampling": standard})).await;
    assert_eq!(status, 200, "{answer}\n{}", serve.log());
    let budget = answer["powerfleet"]["config"]["max_new_tokens"]
        .as_u64()
        .unwrap();
    let prompt = answer["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(budget + prompt <= 255 && budget >= 200, "{answer}");
}

/// llama-server's own defaults for what its numbers depend on: flash attention where it can
/// (on, on CPU) and an f16 KV cache; with several slots, the settings of the report of 6e-3
/// nats between two answers to one request.
const LLAMA_DEFAULTS: [&str; 6] = ["-fa", "auto", "-ctk", "f16", "-ctv", "f16"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_tells_a_deterministic_server_from_one_whose_answers_move() {
    // The defaults with four slots: answers move by ~1e-2 nats.
    let defaults = LlamaServer::start_with(4, &LLAMA_DEFAULTS);
    let model = defaults.model(&format!("?k={VOCAB}"));
    let info = model.probe().await.unwrap();
    let [seen] = &info.nondeterministic[..] else {
        panic!("the one server is not deterministic: {info:?}")
    };
    assert_eq!(seen.server, defaults.url);
    assert!(seen.seen.max_log_prob_delta > 1e-4, "{seen}");
    assert_eq!(model.pin(&info).deterministic, Some(false));

    // Flash attention off and an f32 KV cache, even with one slot, shrink the noise (~1e-5) but
    // leave it: a prompt evaluated in one batch and the same prompt found in the cache (its last
    // token evaluated alone) give other numbers.
    let quieter = LlamaServer::start_with(1, &["-ub", "512"]);
    let model = quieter.model(&format!("?k={VOCAB}"));
    let info = model.probe().await.unwrap();
    let [seen] = &info.nondeterministic[..] else {
        panic!("one slot with 512-token micro-batches is not deterministic: {info:?}")
    };
    assert!(
        seen.seen.max_log_prob_delta > 0.0 && seen.seen.max_log_prob_delta < 1e-3,
        "{seen}"
    );

    // One slot and one-token micro-batches (docs/llama-server.md): every token is computed
    // the same way, and every answer is bit for bit the first.
    let fixed = LlamaServer::start(1);
    let model = fixed.model(&format!("?k={VOCAB}"));
    let info = model.probe().await.unwrap();
    assert!(info.deterministic(), "{:?}", info.nondeterministic);
    assert_eq!(model.pin(&info).deterministic, Some(true));
    // Even with flash attention and an f16 KV cache.
    let fixed = LlamaServer::start_with(1, &LLAMA_DEFAULTS);
    let model = fixed.model(&format!("?k={VOCAB}"));
    let info = model.probe().await.unwrap();
    assert!(info.deterministic(), "{:?}", info.nondeterministic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_requires_determinism_refuses_a_server_that_is_not() {
    let server = LlamaServer::start_with(4, &LLAMA_DEFAULTS);
    let fleet = Fleet::new(BIN, false);
    let log = fleet.dir.path().join("refusing-worker.log");
    let mut worker = Command::new(BIN)
        .args(["worker", "--redis", &fleet.redis_url()])
        .args(["--namespace", &fleet.namespace, "--require-deterministic"])
        .args(["--model", &format!("tiny={}", server.reference())])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = worker.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!(
                "the worker did not stop: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{stderr}");
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("an error line: {stderr}"));
    for needle in [
        "the worker does not start",
        "--require-deterministic: model tiny is not deterministic",
        &server.url,
        "answers to the same request differed from the first",
        "-np 1 -ub 1",
    ] {
        assert!(error.contains(needle), "{needle:?} in {error}");
    }
    assert!(
        !stderr.contains("worker started"),
        "it never took a job: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_record_whether_their_server_answered_deterministically() {
    let steady = LlamaServer::start(1);
    let moving = LlamaServer::start_with(4, &LLAMA_DEFAULTS);
    let mut fleet = Fleet::new(BIN, false);
    let steady_model = format!("steady={}", steady.reference());
    // Jobs it leaves to others come back after 1 s at most.
    let max_wait = ["--max-wait", "1s"];
    fleet.spawn_worker(
        &[
            &["--require-deterministic", "--model", &steady_model][..],
            &max_wait,
        ]
        .concat(),
    );
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let config = SamplerConfig {
        n_mcmc: 1,
        block_size: 4,
        max_new_tokens: 8,
        ..SamplerConfig::new(Method::Power)
    };
    let hello = |model: &str| {
        common::batch(model)
            .config(config.clone())
            .methods(&[Method::Power])
            .problem("hello", Prompt::Text("hello".into()))
            .build()
    };
    // A job naming the other server's reference itself: the worker that requires determinism
    // probes the server when it claims the job, and leaves the job to another worker.
    let direct = submit(&queue, &hello(&moving.reference())).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = queue.job_state(direct.job_ids[0]).await.unwrap().unwrap();
        if state
            .waiting
            .is_some_and(|w| w.contains("this worker runs with --require-deterministic"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never waited: {}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fleet.spawn_worker(&["--model", &format!("moving={}", moving.reference())]);
    let named = [
        ("steady", hello("steady"), true),
        ("moving", hello("moving"), false),
    ];
    for (model, submission, deterministic) in named {
        let receipt = submit(&queue, &submission).await.unwrap();
        let results = fleet
            .wait_for_results(receipt.batch_id.unwrap(), 1, PATIENCE)
            .await;
        let r = &results[0];
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
        let Some(Pin::Server(pin)) = &r.pin else {
            panic!("a server's pin: {:?}", r.pin)
        };
        assert_eq!(pin.deterministic, Some(deterministic), "{model}: {pin:?}");
    }
    // The worker without the requirement ran the waiting job.
    let results = fleet
        .wait_for_results(direct.batch_id.unwrap(), 1, PATIENCE)
        .await;
    let r = &results[0];
    assert_eq!(r.status, JobStatus::Completed, "{r:?}");
    assert_eq!(r.pin.as_ref().and_then(Pin::deterministic), Some(false));
    // Without --require-deterministic the worker ran the jobs, and said what it saw.
    let logs = fleet.worker_logs();
    assert!(
        logs.contains("the server is not deterministic") && logs.contains(&moving.url),
        "{logs}"
    );
    assert!(
        logs.contains("the model's servers are deterministic"),
        "{logs}"
    );
}

/// The raw distribution of the next token after `prefix` over the whole vocabulary, as the
/// server reports it (n_probs = the vocabulary), sorted by log p descending, ties by id.
async fn full_distribution(url: &str, prefix: &[u32]) -> Vec<(u32, f64)> {
    let body = json!({"prompt": prefix, "n_predict": 1, "n_probs": VOCAB, "top_k": VOCAB, "temperature": 1.0,
        "samplers": ["top_k", "temperature"], "post_sampling_probs": false, "seed": 0});
    let answer: Value = common::post_json(&format!("{url}/completion"), None, &body).await;
    let mut all: Vec<(u32, f64)> = answer["completion_probabilities"][0]["top_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_u64().unwrap() as u32,
                e["logprob"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(all.len(), VOCAB as usize, "the whole vocabulary is listed");
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidates_are_the_top_k_of_the_full_vocabulary_distribution() {
    // One slot with one-token micro-batches: the logits are the same whatever the request; the
    // server's softmax over them differs by a few f32 roundings (~1e-7) between a list of 8 and
    // one of the vocabulary, far below the gaps between these tokens.
    let server = LlamaServer::start(1);
    // The reference's K (8) is below some candidate counts and above others; the proposal's
    // top-k and temperature do not change the list.
    let model = server.model("?k=8");
    let prompt = model.tokenize("hello").await.unwrap();
    let mut prefixes = vec![prompt.clone()];
    for extra in [&[75u32][..], &[75, 72, 79]] {
        prefixes.push([&prompt[..], extra].concat());
    }
    for prefix in &prefixes {
        let full = full_distribution(&server.url, prefix).await;
        for (candidates, top_k, temperature) in [
            (1, None, 1.0),
            (5, Some(2), 0.25),
            (8, None, 0.5),
            (20, None, 2.0),
            (64, Some(3), 1.0),
        ] {
            let request = OwnedRequest {
                prefix: prefix.clone(),
                prompt_len: prompt.len(),
                max_tokens: 1,
                temperature,
                top_k,
                seed: 11,
                candidates,
            };
            let g = model.generate(&request, 0).await.unwrap();
            let expected = &full[..candidates as usize];
            let ids: Vec<u32> = g.candidates.iter().map(|c| c.0).collect();
            let want: Vec<u32> = expected.iter().map(|c| c.0).collect();
            assert_eq!(ids, want, "prefix {prefix:?}, K {candidates}");
            for (got, want) in g.candidates.iter().zip(expected) {
                assert!(
                    (got.1 - want.1).abs() < 1e-5,
                    "prefix {prefix:?}, K {candidates}: token {} has {} in the list, {} in the full distribution",
                    got.0,
                    got.1,
                    want.1
                );
            }
            // The sampled token is still reported with its exact numbers.
            assert_eq!(g.tokens.len(), 1);
            let sampled = full.iter().find(|c| c.0 == g.tokens[0]).unwrap();
            assert!((g.log_p[0] - sampled.1).abs() < 1e-5);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_lookahead_runs_on_the_real_server_in_the_fleet_and_in_sample() {
    // One slot: log-probabilities are reproducible, so in-process replays must match exactly.
    let server = LlamaServer::start(1);
    let config = SamplerConfig {
        block_size: 3,
        max_new_tokens: 6,
        lookahead_candidates: Some(4),
        lookahead_rollouts: Some(2),
        lookahead_horizon: Some(3),
        ..SamplerConfig::new(Method::PowerLookahead)
    };
    let model = server.model(&format!("?k={VOCAB}"));
    let prompt = model.tokenize("hello").await.unwrap();
    // The chain as a driver that knows the server's terminal token runs it in-process.
    let replay = |seed: u64, stream: u64| {
        let (model, prompt, config) = (&model, &prompt, &config);
        async move {
            let mut chain = Chain::new(config.validate().unwrap(), prompt, seed, stream);
            chain.set_terminal_tokens(&[EOS]);
            while let Some(request) = chain.request().map(|q| q.to_owned()) {
                let g = model.generate(&request, 0).await.unwrap();
                chain.advance(g).unwrap();
            }
            chain.output().unwrap()
        }
    };

    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    fleet.spawn_worker(&["--model", &registered]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let submission = common::batch("tiny")
        .config(config.clone())
        .methods(&[Method::PowerLookahead])
        .problem("hello", Prompt::Text("hello".into()))
        .seed(5)
        .chains(2)
        .build();
    let receipt = submit(&queue, &submission).await.unwrap();
    let specs = specs(&queue, &receipt).await;
    let results = fleet
        .wait_for_results(receipt.batch_id.unwrap(), 2, PATIENCE)
        .await;
    for spec in &specs {
        let r = results.iter().find(|r| r.job_id == spec.job_id).unwrap();
        assert_eq!(r.status, JobStatus::Completed, "{r:?}\n{}", fleet.logs());
        let expected = replay(spec.seed, spec.stream).await;
        assert_eq!(r.tokens, expected.tokens, "job {}", spec.job_id);
        assert_eq!(r.stats.lookahead, expected.stats.lookahead);
        assert!(r.stats.lookahead.as_ref().unwrap().rollouts > 0);
    }

    let tokens = sampled_tokens(
        &server,
        &[
            "--prompt",
            "hello",
            "--method",
            "power-lookahead",
            "--lookahead-candidates",
            "4",
            "--lookahead-rollouts",
            "2",
            "--lookahead-horizon",
            "3",
            "--block-size",
            "3",
            "--max-new-tokens",
            "6",
            "--seed",
            "7",
            "--format",
            "jsonl",
            "--threads",
            "1",
            "--chains",
            "1",
        ],
    );
    assert_eq!(tokens, replay(7, 0).await.tokens);
}

/// The tokens of the one chain `powerfleet sample --model SERVER ARGS` prints as JSONL, with a
/// clean environment; the command must succeed.
fn sampled_tokens(server: &LlamaServer, args: &[&str]) -> Vec<u32> {
    let output = Command::new(BIN)
        .args(["sample", "--model", &server.reference()])
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let record: Value = serde_json::from_slice(&output.stdout).unwrap();
    serde_json::from_value(record["tokens"].clone()).unwrap()
}

/// `/readyz` of the worker at `addr`: the status code and the JSON body (status 0 while nothing
/// answers yet).
async fn readyz(addr: &str) -> (u16, Value) {
    match reqwest::get(format!("http://{addr}/readyz")).await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            (status, answer.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// A worker started while the inference server of one of its models is down is not ready, and
/// `/readyz` names that model and why, until the server answers; then it is. Meanwhile it runs
/// its other model's jobs, and the down model's jobs wait rather than fail, and run once it is
/// up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_server_is_down_at_start_is_unready_naming_the_model_until_it_answers() {
    const SECRET: &str = "readyz-secret-3e9a";
    // A port where the server will run, free until it does.
    let mut server = LlamaServer::start(1);
    server.stop();
    let mut fleet = Fleet::new(BIN, false);
    let ops = common::free_addr();
    let down = format!(
        "b=llamacpp+http://user:{SECRET}@127.0.0.1:{}?k={VOCAB}",
        server.port
    );
    fleet.spawn_worker(&[
        "--model",
        "a=toy:pivot",
        "--model",
        &down,
        "--max-wait",
        "2s",
        "--metrics-listen",
        &ops,
    ]);
    fleet.spawn_collector();
    // Unready from the first answer on; once the probe has failed, the reason is the server's.
    let deadline = Instant::now() + Duration::from_secs(120);
    let last = loop {
        let (status, body) = readyz(&ops).await;
        if status != 0 {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["ready"], false, "{body}");
            assert_eq!(body["models"]["a"], "ok", "{body}");
            assert_ne!(body["models"]["b"], "ok", "{body}");
            if body["models"]["b"]
                .as_str()
                .is_some_and(|b| b.starts_with("its inference servers do not answer"))
            {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never said that the servers of model b do not answer: {body}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let body = last.to_string();
    assert!(
        body.contains(&format!("user:***@127.0.0.1:{}", server.port)),
        "the reason names the server: {body}"
    );
    assert!(!body.contains(SECRET), "{body}");

    // Its other model's jobs run; the down model's wait for it, none failing.
    let queue = fleet.queue().await;
    let toy = submit(
        &queue,
        &common::batch("a")
            .config(common::short_power_config())
            .problems(2)
            .seeds(2)
            .build(),
    )
    .await
    .unwrap();
    let config = SamplerConfig {
        n_mcmc: 2,
        block_size: 4,
        max_new_tokens: 8,
        ..SamplerConfig::new(Method::Power)
    };
    let waiting = submit(
        &queue,
        &common::batch("b")
            .config(config)
            .methods(&[Method::Power])
            .problem("hello", Prompt::Text("hello".into()))
            .seeds(3)
            .build(),
    )
    .await
    .unwrap();
    let results = fleet
        .wait_for_results(toy.batch_id.unwrap(), 4, Duration::from_secs(120))
        .await;
    assert!(results.iter().all(|r| r.status == JobStatus::Completed));
    fleet
        .wait_until(
            "a job of model b waits for its server",
            Duration::from_secs(120),
            || async {
                let mut any_waiting = false;
                for id in &waiting.job_ids {
                    let s = queue.job_state(*id).await.unwrap().unwrap();
                    assert!(!s.status.is_final(), "a job of model b ended: {s:?}");
                    any_waiting |= s
                        .waiting
                        .as_deref()
                        .is_some_and(|w| w.starts_with("waiting for model b"));
                }
                any_waiting
            },
        )
        .await;
    assert_eq!(readyz(&ops).await.0, 503);

    // The server comes up on its port: the worker is ready, and the waiting jobs run.
    server.restart();
    fleet
        .wait_until(
            "/readyz answers 200 once the server is up",
            Duration::from_secs(120),
            || async { readyz(&ops).await.0 == 200 },
        )
        .await;
    let (_, body) = readyz(&ops).await;
    assert_eq!(body["models"], json!({"a": "ok", "b": "ok"}), "{body}");
    let results = fleet
        .wait_for_results(waiting.batch_id.unwrap(), 3, Duration::from_secs(300))
        .await;
    for r in &results {
        assert_eq!(r.status, JobStatus::Completed, "{r:?}");
    }
    assert!(!fleet.worker_logs().contains(SECRET));
}
