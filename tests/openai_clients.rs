//! The OpenAI-compatible endpoints driven by the clients people use: the official `openai` Python
//! SDK (toy models and the real llama-server) and lm-evaluation-harness's `local-completions`
//! model (a generation task of its own over a local JSONL file, several requests in flight).
//!
//! Needs `POWERFLEET_EVAL_PYTHON`, the python of the venv `scripts/ensure-eval-clients.sh`
//! prints; the llama-server test also needs what `tests/llama_server.rs` needs.

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use common::{BIN, Fleet, Serve, stdout_of};
use serde_json::Value;

const TOKEN: &str = "sdk-test-token";

/// The python of the eval-clients venv; fails with how to get it when it is missing.
fn python() -> PathBuf {
    const HOW: &str = "run scripts/test.sh, which installs the clients, or run scripts/ensure-eval-clients.sh \
         and export POWERFLEET_EVAL_PYTHON=$(scripts/ensure-eval-clients.sh | tail -n1)";
    let Some(path) = std::env::var_os("POWERFLEET_EVAL_PYTHON") else {
        panic!("POWERFLEET_EVAL_PYTHON is not set: {HOW}");
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "POWERFLEET_EVAL_PYTHON={} is not a file: {HOW}",
        path.display()
    );
    path
}

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `serve` on a free port of `fleet`, with `extra` flags; its base URL.
async fn serve(fleet: &Fleet, extra: &[&str]) -> (Serve, String) {
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["--listen", listen.as_str()];
    args.extend(extra);
    let mut serve = Serve::start(fleet, "serve", &args, Some(TOKEN));
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    (serve, base)
}

/// Runs the SDK driver with `args`; its JSON.
fn sdk(args: &[&str], serve: &Serve) -> Value {
    let out = Command::new(python())
        .arg(script("openai-sdk-check.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openai-sdk-check.py {args:?} failed:\n{}\nserve:\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The stored result of job `id`, from the job API.
async fn stored(base: &str, id: &str) -> Value {
    let view: Value = common::get_json(&format!("{base}/v1/jobs/{id}"), Some(TOKEN)).await;
    assert_eq!(view["status"], "completed", "{view}");
    view["result"].clone()
}

/// Checks that every choice of a recorded response is its job's stored result: the tokens (up
/// to a stop string's cut), and the text. `chat` reads the text from the message.
async fn check_choices(base: &str, recorded: &Value, chat: bool) {
    let response = &recorded["response"];
    let correlation = recorded["correlation_id"].as_str().unwrap();
    assert_eq!(response["powerfleet"]["correlation_id"], correlation);
    let choices = response["choices"].as_array().unwrap();
    assert!(!choices.is_empty());
    for (i, choice) in choices.iter().enumerate() {
        let id = response["powerfleet"]["job_ids"][i].as_str().unwrap();
        let result = stored(base, id).await;
        assert_eq!(result["correlation_id"], correlation);
        let tokens = result["tokens"].as_array().unwrap();
        let kept = result["stop"]["tokens"]
            .as_u64()
            .map_or(tokens.len(), |n| n as usize);
        assert_eq!(
            choice["token_ids"].as_array().unwrap(),
            &tokens[..kept],
            "choice {i} of {response}"
        );
        let text = result["text"].as_str().unwrap();
        let answer = result["stop"]["text_bytes"]
            .as_u64()
            .map_or(text, |n| &text[..n as usize]);
        let got = if chat {
            &choice["message"]["content"]
        } else {
            &choice["text"]
        };
        assert_eq!(got, answer, "choice {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_gets_the_jobs_own_tokens_and_its_own_error_classes_on_toy_models() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    let (serve, base) = serve(&fleet, &[]).await;
    let out = sdk(&[&base, TOKEN, "toy"], &serve);
    for case in ["text", "tokens", "stop"] {
        check_choices(&base, &out[case], false).await;
    }
    assert_eq!(
        out["text"]["response"]["choices"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        out["tokens"]["response"]["choices"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let stop = &out["stop"]["response"]["choices"][0];
    assert_eq!(stop["text"], "ok ");
    assert_eq!(stop["finish_reason"], "stop");
    let logprobs = &out["text"]["response"]["choices"][0]["logprobs"];
    assert_eq!(
        logprobs["token_logprobs"].as_array().unwrap().len(),
        logprobs["tokens"].as_array().unwrap().len()
    );
    // Streaming: the whole answer in one chunk.
    assert_eq!(out["stream"]["chunks"], 1);
    assert!(!out["stream"]["text"].as_str().unwrap().is_empty());
    assert!(
        out["models"]
            .as_array()
            .unwrap()
            .contains(&Value::from("toy:suite-double"))
    );
    // Errors arrive as the SDK's own classes, with the server's message and field.
    let errors = &out["errors"];
    assert_eq!(errors["temperature"]["class"], "BadRequestError");
    assert_eq!(errors["temperature"]["body"]["param"], "temperature");
    assert_eq!(errors["echo"]["class"], "BadRequestError");
    assert_eq!(errors["echo"]["body"]["param"], "echo");
    assert_eq!(errors["chat_on_toy"]["class"], "UnprocessableEntityError");
    assert_eq!(errors["auth"]["class"], "AuthenticationError");
    assert_eq!(errors["auth"]["status"], 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_chats_and_completes_with_the_real_llama_server() {
    // A chat template of the test's own: the tiny model's file has none.
    const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}";
    let server = common::llama::LlamaServer::start_with(1, &["--chat-template", CHAT_TEMPLATE]);
    let mut fleet = Fleet::new(BIN, false);
    let registered = format!("tiny={}", server.reference());
    fleet.spawn_worker(&["--model", &registered]);
    fleet.spawn_collector();
    let (serve, base) = serve(&fleet, &["--model", "tiny"]).await;
    let out = sdk(&[&base, TOKEN, "chat", "tiny"], &serve);
    check_choices(&base, &out["chat"], true).await;
    check_choices(&base, &out["text"], false).await;
    let chat = &out["chat"]["response"];
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(chat["choices"].as_array().unwrap().len(), 2);
    let content = chat["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(
        content.len(),
        chat["choices"][0]["token_ids"].as_array().unwrap().len()
    );
    assert!(
        content
            .iter()
            .all(|t| t["logprob"].as_f64().unwrap() <= 0.0)
    );
    // The prompt went through the chat template: the system and user messages and the opening
    // of the assistant's turn are more tokens than "hello" alone.
    let text_prompt = out["text"]["response"]["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();
    let chat_prompt = chat["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        chat_prompt > text_prompt + 4,
        "{chat_prompt} vs {text_prompt}"
    );
}

/// The lm-eval task: "double N ?" on toy:suite-double, answers extracted with the suite's pattern
/// and compared exactly. Each question comes once with every answer the model can give as its
/// reference, so exactly one record per question is right: a score of 2/9 under any sampler.
const RECORDS: &[(&str, &str, &str)] = &[
    ("d3-5", "double 3 ?", "5"),
    ("d3-6", "double 3 ?", "6"),
    ("d3-7", "double 3 ?", "7"),
    ("d3-9", "double 3 ?", "9"),
    ("d3-12", "double 3 ?", "12"),
    ("d4-6", "double 4 ?", "6"),
    ("d4-7", "double 4 ?", "7"),
    ("d4-8", "double 4 ?", "8"),
    ("d4-9", "double 4 ?", "9"),
];

fn task_yaml(data: &std::path::Path) -> String {
    format!(
        r#"task: pf_double
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\n\n"]
  temperature: 1.0
  do_sample: true
  max_gen_toks: 16
filter_list:
  - name: answer
    filter:
      - function: regex
        regex_pattern: "{pattern}"
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"#,
        data = data.display(),
        pattern = powerfleet_datasets::SUITE_ANSWER_PATTERN.replace('\\', "\\\\"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lm_eval_scores_the_same_samples_as_powerfleet_report() {
    let mut fleet = Fleet::new(BIN, false);
    fleet.spawn_worker(&[]);
    fleet.spawn_worker(&[]);
    fleet.spawn_collector();
    let (serve, base) = serve(&fleet, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("double.jsonl");
    let jsonl: String = RECORDS
        .iter()
        .map(|(id, q, a)| {
            format!(
                "{}\n",
                serde_json::json!({"id": id, "question": q, "answer": a})
            )
        })
        .collect();
    std::fs::write(&data, jsonl).unwrap();
    let tasks = dir.path().join("tasks");
    std::fs::create_dir(&tasks).unwrap();
    std::fs::write(tasks.join("pf_double.yaml"), task_yaml(&data)).unwrap();
    let output = dir.path().join("out");
    let lm_eval = Command::new(python())
        .args(["-m", "lm_eval", "--model", "local-completions", "--model_args"])
        .arg(format!(
            "base_url={base}/v1/completions,model=toy:suite-double,tokenizer_backend=None,tokenized_requests=False,num_concurrent=4,max_retries=1,seed=1234"
        ))
        .args(["--tasks", "pf_double", "--include_path"])
        .arg(&tasks)
        .arg("--output_path")
        .arg(&output)
        .arg("--log_samples")
        .env("OPENAI_API_KEY", TOKEN)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path().join("hf"))
        .output()
        .unwrap();
    assert!(
        lm_eval.status.success(),
        "lm_eval failed:\n{}\n{}\nserve:\n{}",
        String::from_utf8_lossy(&lm_eval.stdout),
        String::from_utf8_lossy(&lm_eval.stderr),
        serve.log()
    );
    // lm-eval's score and the completions it saw.
    let files: Vec<PathBuf> = walk(&output);
    let results_file = files
        .iter()
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("results") && name.ends_with(".json")
        })
        .expect("lm-eval wrote its results");
    let results: Value = serde_json::from_slice(&std::fs::read(results_file).unwrap()).unwrap();
    let score = results["results"]["pf_double"]["exact_match,answer"]
        .as_f64()
        .unwrap_or_else(|| panic!("{results}"));
    let samples_file = files
        .iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("samples_pf_double")
        })
        .expect("lm-eval logged its samples");
    let mut lm_texts: Vec<(String, String)> = std::fs::read_to_string(samples_file)
        .unwrap()
        .lines()
        .map(|l| {
            let s: Value = serde_json::from_str(l).unwrap();
            (
                s["doc"]["id"].as_str().unwrap().to_string(),
                s["resps"][0][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    lm_texts.sort();

    // The same records as a benchmark run of powerfleet's own, with the seed lm-eval sends and
    // the budget it asks for: the same samples, graded by the collector.
    let submitted = fleet.cli(&[
        "submit",
        "--model",
        "toy:suite-double",
        "--bench",
        data.to_str().unwrap(),
        "--template",
        "plain",
        "--grader",
        &format!("regex:{}", powerfleet_datasets::SUITE_ANSWER_PATTERN),
        "--seed",
        "1234",
        "--max-new-tokens",
        "16",
        "--wait",
        "--format",
        "json",
    ]);
    let receipt = stdout_of(&submitted);
    assert!(submitted.status.success(), "{receipt}");
    let batch = receipt
        .lines()
        .find_map(|l| {
            serde_json::from_str::<Value>(l).ok()?["batch_id"]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_else(|| panic!("no batch id in {receipt}"));
    let rows: Vec<Value> = stdout_of(&fleet.cli(&["report", &batch, "--format", "jsonl"]))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let method = rows.iter().find(|r| r["row"] == "method").unwrap();
    let accuracy = method["accuracy"].as_f64().unwrap();
    assert_eq!(
        score, accuracy,
        "lm-eval {score} vs powerfleet report {accuracy}"
    );
    assert_eq!(
        score,
        2.0 / 9.0,
        "one right record per question: {lm_texts:?}"
    );

    let store = fleet.store().await;
    let mut ours: Vec<(String, String)> = store
        .jobs_by_batch(batch.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.problem_id.unwrap(), r.text.unwrap()))
        .collect();
    ours.sort();
    assert_eq!(
        lm_texts, ours,
        "lm-eval saw the texts of powerfleet's own run"
    );
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
