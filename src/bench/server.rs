//! `powerfleet bench server`: the fleet against an inference server beside the server's own
//! capacity, and the cost multiplier at the paper's settings scaled down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_fleet::producer::{self};
use powerfleet_jobs::Prompt;
use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use powerfleet_sampler::{Method, SamplerConfig};
use tokio_util::sync::CancellationToken;

use super::{queue_on, spawn_worker, submission};

/// Arguments of `powerfleet bench server`.
#[derive(Args, Debug)]
pub struct ServerBenchArgs {
    /// The server, e.g. llamacpp+http://127.0.0.1:8080?k=64.
    #[arg(long)]
    pub model: String,
    /// Prompt text, tokenized by the server.
    #[arg(long, default_value = "hello")]
    pub prompt: String,
    /// Concurrency levels to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub concurrency: Vec<usize>,
    /// Seconds of plain load per level.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Chains per concurrency slot in the fleet run.
    #[arg(long, default_value_t = 3)]
    pub chains_per_slot: u64,
    /// Token budget of a chain (the paper's 3072 scaled down); 16 blocks as in the paper.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: u32,
}

pub(super) async fn server(args: ServerBenchArgs) -> Result<()> {
    use powerfleet_backends::{HttpModel, ModelRef};
    let reference = match powerfleet_backends::parse(&args.model).map_err(anyhow::Error::msg)? {
        ModelRef::Http(h) => h,
        ModelRef::Hosted(h) => {
            anyhow::bail!(
                "{:?} {}: {}",
                h.provider,
                h.model,
                powerfleet_backends::HOSTED_CHAT_REFUSAL
            )
        }
    };
    anyhow::ensure!(
        args.max_new_tokens >= 16,
        "--max-new-tokens must be >= 16 (16 blocks)"
    );
    let model = Arc::new(HttpModel::new(reference));
    let prompt = model
        .tokenize(&args.prompt)
        .await
        .context("tokenizing --prompt")?;
    // The paper's settings (α = 4, 10 MCMC steps, 16 blocks), scaled down in length.
    let config = SamplerConfig {
        n_mcmc: 10,
        block_size: args.max_new_tokens / 16,
        max_new_tokens: args.max_new_tokens,
        finish_on_eos: true,
        ..SamplerConfig::new(Method::Power)
    };
    let valid = config.validate()?;
    let redis = LocalRedis::start(LocalRedisOptions::default())?;
    eprintln!(
        "benchmark: {} ({}), private redis-server on port {}",
        args.model,
        model.exactness(None),
        redis.port()
    );
    println!(
        "| concurrency | server alone: tokens/s | fleet: tokens/s | fleet / server | fleet cost multiplier |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for &c in &args.concurrency {
        anyhow::ensure!(c >= 1, "--concurrency levels must be >= 1");
        // Plain load: c clients sending block-sized requests with the chain's settings.
        let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
        let mut clients = tokio::task::JoinSet::new();
        for client in 0..c {
            let (model, prompt) = (model.clone(), prompt.clone());
            let (temperature, block) = (valid.temperature(), valid.block_size());
            clients.spawn(async move {
                let mut tokens = 0u64;
                let mut seed = client as u64 * 1_000_000;
                while Instant::now() < deadline {
                    seed += 1;
                    let request = powerfleet_sampler::OwnedRequest {
                        prefix: prompt.clone(),
                        prompt_len: prompt.len(),
                        max_tokens: block,
                        temperature,
                        top_k: None,
                        seed,
                        candidates: 0,
                    };
                    if let Ok(g) = model.generate(&request, client as u64).await {
                        tokens += g.tokens.len() as u64;
                    }
                }
                tokens
            });
        }
        let start = Instant::now();
        let mut plain = 0u64;
        while let Some(t) = clients.join_next().await {
            plain += t?;
        }
        let plain_rate = plain as f64 / start.elapsed().as_secs_f64();

        // The fleet: one worker with c chains in flight, through Redis.
        let ns = format!("bench-server-{c}");
        let queue = queue_on(&redis.url(), &ns).await?;
        let jobs = c as u64 * args.chains_per_slot;
        let sub = submission(
            &args.model,
            config.clone(),
            jobs,
            Prompt::Tokens(prompt.clone()),
        );
        let stop = CancellationToken::new();
        let worker = spawn_worker(&queue, format!("bench-{c}"), c, &stop);
        let start = Instant::now();
        producer::submit(&queue, &sub).await?;
        let mut generated = 0u64;
        let mut final_tokens = 0u64;
        let mut seen = 0u64;
        while seen < jobs {
            for d in queue.read_results("bench", 100, 200).await? {
                let r = d.result.map_err(anyhow::Error::msg)?;
                anyhow::ensure!(
                    r.status == powerfleet_jobs::JobStatus::Completed,
                    "a benchmark job ended {}: {:?}",
                    r.status,
                    r.error
                );
                generated += r.stats.tokens_generated;
                final_tokens += r.tokens.len() as u64;
                seen += 1;
            }
        }
        let fleet_rate = generated as f64 / start.elapsed().as_secs_f64();
        stop.cancel();
        worker.await?;
        println!(
            "| {c} | {plain_rate:.0} | {fleet_rate:.0} | {:.2} | {:.2} |",
            fleet_rate / plain_rate,
            generated as f64 / final_tokens.max(1) as f64
        );
    }
    Ok(())
}
