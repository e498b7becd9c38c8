//! `powerfleet bench sample`: sampling throughput on a toy model, one thread against all cores.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_models::resolve_toy;
use powerfleet_sampler::{ChainOutput, Method, SamplerConfig};

use crate::sample::run_chains;

/// Arguments of `powerfleet bench sample`.
#[derive(Args, Debug)]
pub struct SampleBenchArgs {
    /// Model to sample from.
    #[arg(long, default_value = "toy:eos-lengths")]
    pub model: String,
    /// Chains per measurement.
    #[arg(long, default_value_t = 100_000)]
    pub chains: u64,
    /// MCMC steps per block.
    #[arg(long, default_value_t = 10)]
    pub n_mcmc: u32,
    /// Block length in tokens.
    #[arg(long, default_value_t = 4)]
    pub block_size: u32,
    /// Token budget per completion.
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: u32,
}

pub(super) fn sample(args: SampleBenchArgs) -> Result<()> {
    let model = resolve_toy(&args.model).context("--model")?;
    let config = SamplerConfig {
        n_mcmc: args.n_mcmc,
        block_size: args.block_size,
        max_new_tokens: args.max_new_tokens,
        ..SamplerConfig::new(Method::Power)
    }
    .validate()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "benchmark: {} chains of power sampling on {} (n_mcmc {}, block_size {}, max_new_tokens {}), 1 thread then {cores}",
        args.chains, args.model, args.n_mcmc, args.block_size, args.max_new_tokens
    );
    run_chains(
        &model,
        &config,
        &[],
        1,
        args.chains / 10 + 1,
        Some(1),
        false,
    )?;
    println!("| threads | seconds | proposals/s | tokens/s | speed-up |");
    println!("|---:|---:|---:|---:|---:|");
    let mut base = None;
    for threads in [1, cores] {
        let start = Instant::now();
        let outputs = run_chains(&model, &config, &[], 7, args.chains, Some(threads), true)?;
        let seconds = start.elapsed().as_secs_f64();
        let sum = |f: fn(&ChainOutput) -> u64| outputs.iter().map(f).sum::<u64>();
        let base = *base.get_or_insert(seconds);
        println!(
            "| {threads} | {seconds:.3} | {:.0} | {:.0} | {:.2}x |",
            sum(|o| o.stats.proposals) as f64 / seconds,
            sum(|o| o.stats.tokens_generated) as f64 / seconds,
            base / seconds
        );
    }
    Ok(())
}
