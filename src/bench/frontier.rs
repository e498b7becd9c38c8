//! `powerfleet bench frontier`: MH power sampling and Power-SMC on one cost frontier. On the
//! exactness check's toy models, the TV distance to the exact p^α against the tokens generated
//! per final token, for MH at n_mcmc 1..60 and SMC at N 2..256; on the built-in suite, accuracy
//! against the same cost; and, given a llama-server, wall time per job for both (a block's
//! particle requests in flight at once). Every point is measured, in one run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_datasets::suite::{SUITE_ALPHA, SUITE_MAX_TOKENS, builtin_suite};
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::driver::{self, Called, RetryPolicy, Stop};
use powerfleet_jobs::Prompt;
use powerfleet_models::exact::{Histogram, enumerate, tv_tolerance};
use powerfleet_models::{ToyModel, builtin};
use powerfleet_sampler::{Alpha, Chain, ChainOutput, Method, SamplerConfig, ValidConfig, run};
use rayon::prelude::*;
use tokio_util::sync::CancellationToken;

/// Arguments of `powerfleet bench frontier`.
#[derive(Args, Debug)]
pub struct FrontierBenchArgs {
    /// Independent runs per point on the toy models.
    #[arg(long, default_value_t = 2000)]
    pub runs: u64,
    /// Also measure wall time per job on llama-server.
    #[command(flatten)]
    pub llama: crate::bench::openai::LlamaArgs,
    /// Jobs per point on llama-server.
    #[arg(long, default_value_t = 4)]
    pub server_jobs: u64,
    /// Token budget of a job on llama-server.
    #[arg(long, default_value_t = 32)]
    pub server_max_new_tokens: u32,
    /// Block length on llama-server.
    #[arg(long, default_value_t = 8)]
    pub server_block_size: u32,
}

const MH_STEPS: [u32; 7] = [1, 2, 5, 10, 20, 40, 60];
const SMC_PARTICLES: [u32; 8] = [2, 4, 8, 16, 32, 64, 128, 256];

/// One configuration of the frontier: its label and its config with `alpha`, `block_size` and
/// `max_new_tokens` filled in by `make`.
fn points() -> Vec<(String, SamplerConfig)> {
    let mut all = Vec::new();
    for n in MH_STEPS {
        all.push((
            format!("power n_mcmc {n}"),
            SamplerConfig {
                n_mcmc: n,
                ..SamplerConfig::new(Method::Power)
            },
        ));
    }
    for n in SMC_PARTICLES {
        all.push((
            format!("power-smc N {n}"),
            SamplerConfig {
                particles: Some(n),
                ..SamplerConfig::new(Method::PowerSmc)
            },
        ));
    }
    all
}

fn make(base: &SamplerConfig, alpha: f64, block_size: u32, max_new_tokens: u32) -> ValidConfig {
    SamplerConfig {
        alpha: Some(Alpha::new(alpha).expect("a valid alpha")),
        block_size,
        max_new_tokens,
        ..base.clone()
    }
    .validate()
    .expect("a valid frontier configuration")
}

fn outputs(model: &ToyModel, config: &ValidConfig, prompt: &[u32], runs: u64) -> Vec<ChainOutput> {
    (0..runs)
        .into_par_iter()
        .map(|stream| {
            let mut chain = Chain::new(config.clone(), prompt, 17, stream);
            run(&mut chain, model).expect("toy models always answer")
        })
        .collect()
}

fn cost(outs: &[ChainOutput]) -> f64 {
    let generated: u64 = outs.iter().map(|o| o.stats.tokens_generated).sum();
    let kept: u64 = outs.iter().map(|o| o.tokens.len() as u64).sum();
    generated as f64 / kept.max(1) as f64
}

/// Runs the benchmark and prints its tables.
pub fn run_bench(args: FrontierBenchArgs) -> Result<()> {
    anyhow::ensure!(args.runs >= 10, "--runs must be >= 10");
    let models = [("eos-lengths", 4.0, 4u32), ("pivot", 4.0, 3u32)];
    eprintln!(
        "benchmark: {} runs per point, {} points per model",
        args.runs,
        points().len()
    );
    println!("## TV to p^α against cost (toy models, one block per job)\n");
    println!("| configuration | eos-lengths cost x | eos-lengths TV | pivot cost x | pivot TV |");
    println!("|---|---:|---:|---:|---:|");
    let mut noise = Vec::new();
    let enumerated: Vec<_> = models
        .iter()
        .map(|&(name, alpha, t)| {
            let m = builtin::load(name).expect("a built-in model")?;
            let completions = enumerate(&m, &[], t)?;
            let exact = completions.power(alpha);
            noise.push(tv_tolerance(&exact, args.runs, 1e-6));
            Ok::<_, anyhow::Error>((m, completions, exact, alpha, t))
        })
        .collect::<Result<_>>()?;
    for (label, base) in points() {
        let mut row = format!("| {label} |");
        for (m, completions, exact, alpha, t) in &enumerated {
            let outs = outputs(m, &make(&base, *alpha, *t, *t), &[], args.runs);
            let hist = Histogram::new(completions, outs.iter().map(|o| o.tokens.as_slice()));
            row.push_str(&format!(
                " {:.2} | {:.4} |",
                cost(&outs),
                hist.total_variation(exact)
            ));
        }
        println!("{row}");
    }
    println!(
        "\nSampling noise (TV that {} exact samples stay below with probability 1 - 1e-6): eos-lengths {:.4}, pivot {:.4}.",
        args.runs, noise[0], noise[1]
    );

    println!("\n## Accuracy on the built-in suite against cost (blocks of 2 tokens)\n");
    println!("| configuration | cost x | accuracy |");
    println!("|---|---:|---:|");
    let suite = builtin_suite();
    let suite_models: Vec<(ToyModel, Vec<u32>)> = suite
        .iter()
        .map(|item| {
            let m = item.model()?;
            let prompt = m.tokenize(&item.problem.question)?;
            Ok::<_, anyhow::Error>((m, prompt))
        })
        .collect::<Result<_>>()?;
    for (label, base) in points() {
        let config = make(&base, SUITE_ALPHA, 2, SUITE_MAX_TOKENS);
        let (mut right, mut total, mut all) = (0u64, 0u64, Vec::new());
        for (item, (m, prompt)) in suite.iter().zip(&suite_models) {
            let outs = outputs(m, &config, prompt, args.runs);
            for o in &outs {
                total += 1;
                right += u64::from(item.is_correct(&m.detokenize(&o.tokens)));
            }
            all.extend(outs);
        }
        println!(
            "| {label} | {:.2} | {:.4} |",
            cost(&all),
            right as f64 / total as f64
        );
    }

    crate::block_on(server_frontier(&args)).context("llama-server part")
}

/// Wall time per job on a llama-server of its own with 8 slots: MH steps one request at a time,
/// SMC particles of a block in flight together.
async fn server_frontier(args: &FrontierBenchArgs) -> Result<()> {
    let Some((mut child, url)) = args.llama.start(8).await? else {
        println!("\n{}", crate::bench::openai::LlamaArgs::skipped());
        return Ok(());
    };
    // As many requests in flight as the server has slots: the rest wait in the client.
    let registry = ModelRegistry::new(&[format!("tiny=llamacpp+{url}?k=98&max_in_flight=8")])
        .map_err(anyhow::Error::msg)?;
    let backend = registry.resolve("tiny")?;
    let prompt = backend
        .tokenize(&Prompt::Text("hello".into()), false)
        .await?;
    eprintln!(
        "benchmark: llama-server at {url} (8 slots), {} jobs per point, {} tokens in blocks of {}",
        args.server_jobs, args.server_max_new_tokens, args.server_block_size
    );
    println!(
        "\n## Wall time per job on llama-server ({} tokens, blocks of {}, 8 slots, jobs one at a time)\n",
        args.server_max_new_tokens, args.server_block_size
    );
    println!("| configuration | cost x | ms per job | ms per final token |");
    println!("|---|---:|---:|---:|");
    let never = CancellationToken::new();
    let policy = RetryPolicy {
        attempts: 3,
        backoff: Duration::from_millis(100),
    };
    let server_points: Vec<(String, SamplerConfig)> = points()
        .into_iter()
        .filter(|(label, _)| {
            [
                "power n_mcmc 1",
                "power n_mcmc 5",
                "power n_mcmc 10",
                "power-smc N 2",
                "power-smc N 8",
                "power-smc N 32",
            ]
            .contains(&label.as_str())
        })
        .collect();
    for (label, base) in server_points {
        let config = SamplerConfig {
            finish_on_eos: false,
            ..base
        };
        let config = make(
            &config,
            4.0,
            args.server_block_size,
            args.server_max_new_tokens,
        );
        backend.prepare(&config, prompt.len()).await?;
        let started = Instant::now();
        let mut outs = Vec::new();
        for stream in 0..args.server_jobs {
            let mut chain = Chain::new(config.clone(), &prompt, 3, stream);
            loop {
                match driver::run_block(&mut chain, &backend, stream, policy, &never, |_| {}).await
                {
                    Called::Done(Stop::Finished) => break,
                    Called::Done(Stop::BlockDone) => {}
                    Called::Interrupted => unreachable!("never interrupted"),
                    Called::Failed(e) | Called::Waiting(e) => {
                        anyhow::bail!("{label}: job {stream}: {e}")
                    }
                }
            }
            outs.push(chain.output().expect("finished"));
        }
        let per_job = started.elapsed().as_secs_f64() * 1e3 / args.server_jobs as f64;
        let kept: u64 = outs.iter().map(|o| o.tokens.len() as u64).sum();
        println!(
            "| {label} | {:.2} | {per_job:.0} | {:.1} |",
            cost(&outs),
            per_job * args.server_jobs as f64 / kept.max(1) as f64
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
