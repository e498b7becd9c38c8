//! `powerfleet bench frontier`: every power-sampling method family on one cost frontier. On the
//! exactness check's toy models, the TV distance to the exact p^α against the tokens generated
//! per final sample (every request's tokens: MH proposals, particles, moves, lookahead candidate
//! requests and rollouts), for MH at n_mcmc 1..150, Power-SMC at N 2..256, Power-SMC with
//! resample-move and with an annealed α (blocks of one token, so that they act), and lookahead
//! over K, M and H; on the built-in suite, accuracy against the same cost; and, given a
//! llama-server, wall time per job with 8 slots beside one plain sample. It judges the goals of
//! docs/performance.md from the same run, and draws the figure (`--plot-dir`). Every point is
//! measured, in one run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_datasets::suite::{SUITE_ALPHA, SUITE_MAX_TOKENS, builtin_suite};
use powerfleet_fleet::ModelRegistry;
use powerfleet_fleet::driver::{self, Called, RetryPolicy, Stop};
use powerfleet_jobs::Prompt;
use powerfleet_models::exact::{Histogram, enumerate, tv_tolerance};
use powerfleet_models::{ToyModel, builtin};
use powerfleet_report::{FrontierPanel, FrontierPlot, FrontierSeries};
use powerfleet_sampler::{
    Alpha, AlphaSchedule, Chain, ChainOutput, Method, SamplerConfig, ValidConfig, run,
};
use rayon::prelude::*;
use tokio_util::sync::CancellationToken;

/// Arguments of `powerfleet bench frontier`.
#[derive(Args, Debug)]
pub struct FrontierBenchArgs {
    /// Independent runs per point on each toy model (and per problem of the suite).
    #[arg(long, default_value_t = 2000)]
    pub runs: u64,
    /// Write the figure here as frontier.png and frontier.svg.
    #[arg(long)]
    pub plot_dir: Option<PathBuf>,
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

/// A family of settings: one line of the figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Family {
    Mh,
    Smc,
    SmcMove,
    SmcAnnealed,
    Lookahead,
    Plain,
}

impl Family {
    /// The families measured on the toy models and the suite, in table order.
    const SEARCHED: [Family; 5] = [
        Family::Mh,
        Family::Smc,
        Family::SmcMove,
        Family::SmcAnnealed,
        Family::Lookahead,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::Mh => "MH",
            Family::Smc => "SMC",
            Family::SmcMove => "SMC + resample-move",
            Family::SmcAnnealed => "SMC, annealed α",
            Family::Lookahead => "lookahead",
            Family::Plain => "plain decoding",
        }
    }

    fn method(self) -> Method {
        match self {
            Family::Mh => Method::Power,
            Family::Smc | Family::SmcMove | Family::SmcAnnealed => Method::PowerSmc,
            Family::Lookahead => Method::PowerLookahead,
            Family::Plain => Method::Standard,
        }
    }

    /// 0 for the method's own colour in the figure.
    fn variant(self) -> usize {
        match self {
            Family::SmcMove => 1,
            Family::SmcAnnealed => 2,
            _ => 0,
        }
    }

    /// Whether its settings need blocks of one token on the toy models to differ from plain SMC
    /// (moves follow a resampling, and annealing spreads α over blocks).
    fn blocks_of_one(self) -> bool {
        matches!(self, Family::SmcMove | Family::SmcAnnealed)
    }
}

/// One setting: its family, its label and its config, with `alpha`, `block_size` and
/// `max_new_tokens` filled in by `make`.
struct Point {
    family: Family,
    label: String,
    config: SamplerConfig,
}

const MH_STEPS: [u32; 9] = [1, 2, 5, 10, 20, 40, 60, 100, 150];
const SMC_PARTICLES: [u32; 8] = [2, 4, 8, 16, 32, 64, 128, 256];
const MOVE_PARTICLES: [u32; 6] = [2, 4, 8, 16, 32, 64];
const MOVE_STEPS: [u32; 2] = [1, 4];
const ANNEALED_PARTICLES: [u32; 5] = [4, 8, 16, 64, 256];
/// Lookahead (K, M, H): K 64 is every token of the toy models; H `None` the whole budget.
const LOOKAHEAD: [(u32, u32, Option<u32>); 16] = [
    (2, 1, None),
    (2, 4, None),
    (4, 1, None),
    (4, 2, None),
    (4, 4, None),
    (4, 8, None),
    (4, 2, Some(2)),
    (64, 1, None),
    (64, 2, None),
    (64, 4, None),
    (64, 8, None),
    (64, 16, None),
    (64, 2, Some(1)),
    (64, 8, Some(1)),
    (64, 2, Some(2)),
    (64, 8, Some(2)),
];

fn lookahead_label(k: u32, m: u32, h: Option<u32>) -> String {
    let k = if k == 64 {
        "all".to_string()
    } else {
        k.to_string()
    };
    match h {
        None => format!("power-lookahead K {k} M {m}"),
        Some(h) => format!("power-lookahead K {k} M {m} H {h}"),
    }
}

fn points() -> Vec<Point> {
    let mut all = Vec::new();
    let mut push = |family, label: String, config| {
        all.push(Point {
            family,
            label,
            config,
        })
    };
    for n in MH_STEPS {
        push(
            Family::Mh,
            format!("power n_mcmc {n}"),
            SamplerConfig {
                n_mcmc: n,
                ..SamplerConfig::new(Method::Power)
            },
        );
    }
    let smc = |n: u32| SamplerConfig {
        particles: Some(n),
        ..SamplerConfig::new(Method::PowerSmc)
    };
    for n in SMC_PARTICLES {
        push(Family::Smc, format!("power-smc N {n}"), smc(n));
    }
    for r in MOVE_STEPS {
        for n in MOVE_PARTICLES {
            push(
                Family::SmcMove,
                format!("power-smc N {n} R {r}"),
                SamplerConfig {
                    rejuvenation_steps: Some(r),
                    ..smc(n)
                },
            );
        }
    }
    for schedule in [AlphaSchedule::Linear, AlphaSchedule::Geometric] {
        for n in ANNEALED_PARTICLES {
            push(
                Family::SmcAnnealed,
                format!("power-smc N {n} {}", schedule.as_str()),
                SamplerConfig {
                    alpha_schedule: Some(schedule),
                    ..smc(n)
                },
            );
        }
    }
    for (k, m, h) in LOOKAHEAD {
        push(
            Family::Lookahead,
            lookahead_label(k, m, h),
            SamplerConfig {
                lookahead_candidates: Some(k),
                lookahead_rollouts: Some(m),
                lookahead_horizon: h,
                lookahead_jackknife: Some(true),
                ..SamplerConfig::new(Method::PowerLookahead)
            },
        );
    }
    all
}

/// The settings measured on llama-server, by label: plain decoding, MH at 20 steps (the goal's
/// reference) and a few cheaper, and SMC and lookahead settings around 3x a plain sample's time.
const SERVER_POINTS: [&str; 16] = [
    "power n_mcmc 1",
    "power n_mcmc 5",
    "power n_mcmc 20",
    "power-smc N 2",
    "power-smc N 4",
    "power-smc N 8",
    "power-smc N 16",
    "power-smc N 32",
    "power-smc N 8 R 1",
    "power-smc N 16 R 1",
    "power-smc N 8 linear",
    "power-smc N 8 geometric",
    "power-lookahead K 2 M 1",
    "power-lookahead K 2 M 4",
    "power-lookahead K 4 M 2",
    "power-lookahead K 4 M 2 H 2",
];

/// The label of the MH setting goal (b) measures against.
const MH_REFERENCE: &str = "power n_mcmc 20";

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

/// Tokens generated per final sample: every request's tokens (`ChainStats::tokens_generated`
/// counts MH proposals, SMC particles and moves, lookahead candidate requests and rollouts).
fn tokens_per_sample(outs: &[ChainOutput]) -> f64 {
    let generated: u64 = outs.iter().map(|o| o.stats.tokens_generated).sum();
    generated as f64 / outs.len().max(1) as f64
}

/// What one setting measured on the toy models and the suite.
struct Measured {
    family: Family,
    label: String,
    /// Per toy model: tokens per final sample and TV to p^α.
    toy: Vec<(f64, f64)>,
    /// Tokens per final sample and accuracy on the suite.
    suite: (f64, f64),
}

/// What one setting measured on llama-server: tokens and ms per job, or why it was not run.
struct ServerMeasured {
    family: Family,
    label: String,
    outcome: Result<(f64, f64), String>,
}

const TOY_MODELS: [(&str, f64, u32); 2] = [("eos-lengths", 4.0, 4), ("pivot", 4.0, 3)];

/// Runs the benchmark, prints its tables and goal verdicts, and draws the figure.
pub fn run_bench(args: FrontierBenchArgs) -> Result<()> {
    anyhow::ensure!(args.runs >= 10, "--runs must be >= 10");
    let points = points();
    eprintln!(
        "benchmark: {} runs per point and model, {} points, on {} toy models and the suite",
        args.runs,
        points.len(),
        TOY_MODELS.len()
    );
    let mut noise = Vec::new();
    let enumerated: Vec<_> = TOY_MODELS
        .iter()
        .map(|&(name, alpha, t)| {
            let m = builtin::load(name).expect("a built-in model")?;
            let completions = enumerate(&m, &[], t)?;
            let exact = completions.power(alpha);
            noise.push(tv_tolerance(&exact, args.runs, 1e-6));
            Ok::<_, anyhow::Error>((m, completions, exact, alpha, t))
        })
        .collect::<Result<_>>()?;
    let suite = builtin_suite();
    let suite_models: Vec<(ToyModel, Vec<u32>)> = suite
        .iter()
        .map(|item| {
            let m = item.model()?;
            let prompt = m.tokenize(&item.problem.question)?;
            Ok::<_, anyhow::Error>((m, prompt))
        })
        .collect::<Result<_>>()?;

    let started = Instant::now();
    let mut measured = Vec::new();
    for (i, point) in points.iter().enumerate() {
        let mut toy = Vec::new();
        for (m, completions, exact, alpha, t) in &enumerated {
            let block = if point.family.blocks_of_one() { 1 } else { *t };
            let outs = outputs(m, &make(&point.config, *alpha, block, *t), &[], args.runs);
            let hist = Histogram::new(completions, outs.iter().map(|o| o.tokens.as_slice()));
            toy.push((tokens_per_sample(&outs), hist.total_variation(exact)));
        }
        let config = make(&point.config, SUITE_ALPHA, 2, SUITE_MAX_TOKENS);
        let (mut right, mut all) = (0u64, Vec::new());
        for (item, (m, prompt)) in suite.iter().zip(&suite_models) {
            let outs = outputs(m, &config, prompt, args.runs);
            right += outs
                .iter()
                .filter(|o| item.is_correct(&m.detokenize(&o.tokens)))
                .count() as u64;
            all.extend(outs);
        }
        let suite_point = (tokens_per_sample(&all), right as f64 / all.len() as f64);
        eprintln!(
            "[{}/{}] {}: {:.0} s",
            i + 1,
            points.len(),
            point.label,
            started.elapsed().as_secs_f64()
        );
        measured.push(Measured {
            family: point.family,
            label: point.label.clone(),
            toy,
            suite: suite_point,
        });
    }

    println!(
        "## TV to p^α and suite accuracy against tokens generated per final sample \
         ({} runs per point and model)\n",
        args.runs
    );
    println!(
        "Toy models: one block per job, but for resample-move and annealing (blocks of one token). \
         Suite: blocks of 2 tokens.\n"
    );
    println!(
        "| family | configuration | eos-lengths tokens | eos-lengths TV | pivot tokens | pivot TV | suite tokens | suite accuracy |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for m in &measured {
        println!(
            "| {} | {} | {:.1} | {:.4} | {:.1} | {:.4} | {:.1} | {:.4} |",
            m.family.name(),
            m.label,
            m.toy[0].0,
            m.toy[0].1,
            m.toy[1].0,
            m.toy[1].1,
            m.suite.0,
            m.suite.1
        );
    }
    println!(
        "\nSampling noise (TV that {} exact samples stay below with probability 1 - 1e-6): eos-lengths {:.4}, pivot {:.4}.",
        args.runs, noise[0], noise[1]
    );

    let goal_a = |families: &[Family]| -> Vec<Vec<BudgetVerdict>> {
        (0..TOY_MODELS.len())
            .map(|model| {
                let families: Vec<(Family, Vec<(f64, f64)>)> = families
                    .iter()
                    .map(|&f| (f, family_points(&measured, f, |m| m.toy[model])))
                    .collect();
                best_per_budget(&families, &BUDGETS)
            })
            .collect()
    };
    print_goal_a(&goal_a(&Family::SEARCHED));
    let smc_only = goal_a(&Family::SEARCHED[..4]);
    let (met, total) = smc_only
        .iter()
        .flatten()
        .fold((0, 0), |(m, t), v| (m + usize::from(v.met()), t + 1));
    println!(
        "Without lookahead (the SMC families against MH): {met} of {total} budgets met{}.",
        smc_only
            .iter()
            .zip(TOY_MODELS)
            .flat_map(|(vs, (model, _, _))| vs.iter().filter(|v| !v.met()).map(move |v| (model, v)))
            .map(|(model, v)| format!("; not at {} tokens on {model}", v.budget))
            .collect::<String>()
    );

    let server = crate::block_on(server_frontier(&args)).context("llama-server part")?;
    if let Some(server) = &server {
        print_server(server, &measured, &args);
        print_goal_b(server, &measured);
    }
    if let Some(dir) = &args.plot_dir {
        let written = powerfleet_report::write_frontier_figure(
            &figure(&measured, server.as_deref(), &noise, &args),
            dir,
            "frontier",
        )?;
        for path in written {
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// The token budgets per final sample of goal (a).
const BUDGETS: [f64; 8] = [10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 70.0, 100.0];

/// The (tokens, value) points of `family` by `of`.
fn family_points(
    measured: &[Measured],
    family: Family,
    of: impl Fn(&Measured) -> (f64, f64),
) -> Vec<(f64, f64)> {
    measured
        .iter()
        .filter(|m| m.family == family)
        .map(of)
        .collect()
}

/// The frontier of `points` (cost, value): sorted by cost, the points whose value beats every
/// cheaper point's (lower is better unless `higher_is_better`).
pub(crate) fn frontier(points: &[(f64, f64)], higher_is_better: bool) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(c, v)| c.is_finite() && *c > 0.0 && v.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let better = |a: f64, b: f64| if higher_is_better { a > b } else { a < b };
    let mut kept: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if kept.last().is_none_or(|last| better(p.1, last.1)) {
            kept.push(p);
        }
    }
    kept
}

/// The value of `frontier` (as [`frontier`] returns it) at `budget`: linear in log cost between
/// its points, its last value past its costliest point, and `None` below its cheapest (the family
/// cannot run within that budget).
pub(crate) fn at_budget(frontier: &[(f64, f64)], budget: f64) -> Option<f64> {
    let first = frontier.first()?;
    if budget < first.0 {
        return None;
    }
    for pair in frontier.windows(2) {
        let ((c0, v0), (c1, v1)) = (pair[0], pair[1]);
        if budget == c1 {
            return Some(v1);
        }
        if budget < c1 {
            let t = (budget.ln() - c0.ln()) / (c1.ln() - c0.ln());
            return Some(v0 + t * (v1 - v0));
        }
    }
    frontier.last().map(|p| p.1)
}

/// Goal (a) at one budget: MH's TV and the best other family with its TV.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BudgetVerdict {
    pub(crate) budget: f64,
    pub(crate) mh: Option<f64>,
    pub(crate) best: Option<(Family, f64)>,
}

impl BudgetVerdict {
    /// The best other family's TV is no worse than MH's (or MH cannot run at this budget).
    pub(crate) fn met(&self) -> bool {
        match (self.best, self.mh) {
            (Some((_, best)), Some(mh)) => best <= mh,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Per budget, MH's TV and the family other than MH with the lowest TV, each read off its
/// frontier by [`at_budget`].
pub(crate) fn best_per_budget(
    families: &[(Family, Vec<(f64, f64)>)],
    budgets: &[f64],
) -> Vec<BudgetVerdict> {
    let frontiers: Vec<(Family, Vec<(f64, f64)>)> = families
        .iter()
        .map(|(f, points)| (*f, frontier(points, false)))
        .collect();
    budgets
        .iter()
        .map(|&budget| {
            let mh = frontiers
                .iter()
                .find(|(f, _)| *f == Family::Mh)
                .and_then(|(_, fr)| at_budget(fr, budget));
            let best = frontiers
                .iter()
                .filter(|(f, _)| *f != Family::Mh)
                .filter_map(|(f, fr)| at_budget(fr, budget).map(|tv| (*f, tv)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            BudgetVerdict { budget, mh, best }
        })
        .collect()
}

fn print_goal_a(goal: &[Vec<BudgetVerdict>]) {
    println!(
        "\n## Goal (a): at every budget from 10 to 100 tokens per final sample, the best family's TV is no worse than MH's\n"
    );
    println!(
        "Each family's frontier (its settings that no cheaper setting beats) is interpolated \
         linearly in log tokens; a family is absent below its cheapest setting.\n"
    );
    println!("| toy model | tokens per sample | MH TV | best other family | its TV | met |");
    println!("|---|---:|---:|---|---:|---|");
    let mut met = 0;
    let mut total = 0;
    for (verdicts, (model, _, _)) in goal.iter().zip(TOY_MODELS) {
        for v in verdicts {
            total += 1;
            met += usize::from(v.met());
            let (family, tv) = match v.best {
                Some((f, tv)) => (f.name(), format!("{tv:.4}")),
                None => ("none", "-".to_string()),
            };
            println!(
                "| {model} | {} | {} | {family} | {tv} | {} |",
                v.budget,
                v.mh.map_or("-".to_string(), |t| format!("{t:.4}")),
                if v.met() { "yes" } else { "no" }
            );
        }
    }
    println!(
        "\ngoal (a): {} ({met} of {total} budgets)",
        if met == total { "met" } else { "not met" }
    );
}

/// Wall time per job on a llama-server of its own with 8 slots: MH steps one request at a time,
/// a block's SMC particles (and moves) and a token's lookahead rollouts in flight together.
/// `None` without a llama-server.
async fn server_frontier(args: &FrontierBenchArgs) -> Result<Option<Vec<ServerMeasured>>> {
    let Some((mut child, url)) = args.llama.start(8).await? else {
        println!("\n{}", crate::bench::openai::LlamaArgs::skipped());
        return Ok(None);
    };
    let result = server_points(args, &url).await;
    let _ = child.kill();
    let _ = child.wait();
    result.map(Some)
}

async fn server_points(args: &FrontierBenchArgs, url: &str) -> Result<Vec<ServerMeasured>> {
    // As many requests in flight as the server has slots: the rest wait in the client.
    let registry = ModelRegistry::new(&[format!("tiny=llamacpp+{url}?k=98&max_in_flight=8")])
        .map_err(anyhow::Error::msg)?;
    let backend = registry.resolve("tiny")?;
    let prompt = backend
        .tokenize(&Prompt::Text("hello".into()), false)
        .await?;
    let mut settings: Vec<Point> = vec![Point {
        family: Family::Plain,
        label: "standard (one sample)".into(),
        config: SamplerConfig::new(Method::Standard),
    }];
    settings.extend(
        points()
            .into_iter()
            .filter(|p| SERVER_POINTS.contains(&p.label.as_str())),
    );
    eprintln!(
        "benchmark: llama-server at {url} (8 slots), {} jobs per point, {} tokens in blocks of {}",
        args.server_jobs, args.server_max_new_tokens, args.server_block_size
    );
    let never = CancellationToken::new();
    let policy = RetryPolicy {
        attempts: 3,
        backoff: Duration::from_millis(100),
    };
    // One job untimed first: the backend's start-up probe and the server's first requests.
    let warm_up = make(
        &SamplerConfig::new(Method::Standard),
        4.0,
        args.server_block_size,
        args.server_max_new_tokens,
    );
    server_jobs(1, &backend, &warm_up, &prompt, policy, &never)
        .await
        .map_err(|(JobError::Refused(e) | JobError::Other(e))| anyhow::anyhow!("warm-up: {e}"))?;
    let total = settings.len();
    let mut measured = Vec::new();
    for (i, point) in settings.into_iter().enumerate() {
        let config = SamplerConfig {
            finish_on_eos: false,
            ..point.config
        };
        let config = make(
            &config,
            4.0,
            args.server_block_size,
            args.server_max_new_tokens,
        );
        let outcome =
            server_jobs(args.server_jobs, &backend, &config, &prompt, policy, &never).await;
        let outcome = match outcome {
            Ok(outs) => Ok(outs),
            // A request the backend refuses (a lookahead candidate list it cannot give) is a
            // row of its own, never dropped.
            Err(JobError::Refused(e)) if point.family == Family::Lookahead => {
                Err(format!("not supported by this backend ({e})"))
            }
            Err(JobError::Refused(e) | JobError::Other(e)) => {
                anyhow::bail!("{}: {e}", point.label)
            }
        };
        eprintln!("[server {}/{total}] {}", i + 1, point.label);
        measured.push(ServerMeasured {
            family: point.family,
            label: point.label,
            outcome,
        });
    }
    Ok(measured)
}

enum JobError {
    /// The backend refused a request: retrying will not help.
    Refused(String),
    Other(String),
}

/// Runs `jobs` jobs of `config` one after the other; tokens generated and wall ms per job.
async fn server_jobs(
    jobs: u64,
    backend: &powerfleet_fleet::Backend,
    config: &ValidConfig,
    prompt: &[u32],
    policy: RetryPolicy,
    never: &CancellationToken,
) -> Result<(f64, f64), JobError> {
    backend
        .prepare(config, prompt.len())
        .await
        .map_err(|e| JobError::Refused(e.to_string()))?;
    let terminal = backend.terminal_tokens();
    let started = Instant::now();
    let mut outs = Vec::new();
    for stream in 0..jobs {
        let mut chain = Chain::new(config.clone(), prompt, 3, stream);
        chain.set_terminal_tokens(&terminal);
        loop {
            match driver::run_block(&mut chain, backend, stream, policy, never, |_| {}).await {
                Called::Done(Stop::Finished) => break,
                Called::Done(Stop::BlockDone) => {}
                Called::Interrupted => unreachable!("never interrupted"),
                Called::Failed(e) => return Err(JobError::Refused(e)),
                Called::Waiting(e) => return Err(JobError::Other(format!("job {stream}: {e}"))),
            }
        }
        outs.push(chain.output().expect("finished"));
    }
    let per_job = started.elapsed().as_secs_f64() * 1e3 / jobs as f64;
    Ok((tokens_per_sample(&outs), per_job))
}

/// The toy models' TV of the setting `label`, the proxy for its TV on the server.
fn toy_tv<'a>(measured: &'a [Measured], label: &str) -> Option<&'a [(f64, f64)]> {
    measured
        .iter()
        .find(|m| m.label == label)
        .map(|m| m.toy.as_slice())
}

fn print_server(server: &[ServerMeasured], measured: &[Measured], args: &FrontierBenchArgs) {
    println!(
        "\n## Wall time per job on llama-server ({} tokens, blocks of {}, 8 slots, {} jobs one at a time)\n",
        args.server_max_new_tokens, args.server_block_size, args.server_jobs
    );
    println!(
        "| family | configuration | tokens per job | ms per job | vs plain | toy TV eos-lengths | toy TV pivot |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let plain = plain_ms(server);
    for s in server {
        let tv = |i: usize| {
            toy_tv(measured, &s.label).map_or("-".to_string(), |t| format!("{:.4}", t[i].1))
        };
        match &s.outcome {
            Ok((tokens, ms)) => println!(
                "| {} | {} | {tokens:.0} | {ms:.0} | {} | {} | {} |",
                s.family.name(),
                s.label,
                plain.map_or("-".to_string(), |p| format!("{:.2}x", ms / p)),
                tv(0),
                tv(1)
            ),
            Err(why) => println!(
                "| {} | {} | {why} | | | {} | {} |",
                s.family.name(),
                s.label,
                tv(0),
                tv(1)
            ),
        }
    }
}

fn plain_ms(server: &[ServerMeasured]) -> Option<f64> {
    server
        .iter()
        .find(|s| s.family == Family::Plain)
        .and_then(|s| s.outcome.as_ref().ok().map(|o| o.1))
}

/// Goal (b) on one toy model: the fastest SMC or lookahead setting measured on the server whose
/// toy TV reaches MH-at-20-steps', as (label, ms per job).
fn goal_b_fastest<'a>(
    server: &'a [ServerMeasured],
    measured: &[Measured],
    model: usize,
) -> Option<(&'a str, f64)> {
    let reference = toy_tv(measured, MH_REFERENCE)?[model].1;
    server
        .iter()
        .filter(|s| !matches!(s.family, Family::Mh | Family::Plain))
        .filter_map(|s| {
            let ms = s.outcome.as_ref().ok()?.1;
            let tv = toy_tv(measured, &s.label)?[model].1;
            (tv <= reference).then_some((s.label.as_str(), ms))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

fn print_goal_b(server: &[ServerMeasured], measured: &[Measured]) {
    println!(
        "\n## Goal (b): an SMC or lookahead setting reaching MH-at-20-steps' TV within 3x one plain sample's wall time per job\n"
    );
    println!(
        "TV on llama-server is not computed (the tiny model's vocabulary is too large to enumerate): \
         each setting's TV is its TV on the toy model, as a proxy.\n"
    );
    let Some(plain) = plain_ms(server) else {
        println!("goal (b): not judged (plain decoding was not measured)");
        return;
    };
    let mut all = true;
    for (model, (name, _, _)) in TOY_MODELS.iter().enumerate() {
        let reference = toy_tv(measured, MH_REFERENCE).map(|t| t[model].1);
        match goal_b_fastest(server, measured, model) {
            Some((label, ms)) => {
                let met = ms <= 3.0 * plain;
                all &= met;
                println!(
                    "- {name}: MH at 20 steps TV {:.4}; fastest setting reaching it: {label}, {ms:.0} ms per job = {:.2}x plain decoding ({plain:.0} ms): {}",
                    reference.unwrap_or(f64::NAN),
                    ms / plain,
                    if met { "met" } else { "not met" }
                );
            }
            None => {
                all = false;
                println!(
                    "- {name}: no SMC or lookahead setting measured on the server reaches MH at 20 steps' TV {:.4}: not met",
                    reference.unwrap_or(f64::NAN)
                );
            }
        }
    }
    println!("\ngoal (b): {}", if all { "met" } else { "not met" });
}

/// The figure: TV against tokens per toy model, suite accuracy, and wall time when measured.
fn figure(
    measured: &[Measured],
    server: Option<&[ServerMeasured]>,
    noise: &[f64],
    args: &FrontierBenchArgs,
) -> FrontierPlot {
    let series = |of: &dyn Fn(&Measured) -> (f64, f64), higher: bool| {
        Family::SEARCHED
            .iter()
            .map(|&f| {
                let points = family_points(measured, f, of);
                FrontierSeries {
                    name: f.name().to_string(),
                    method: f.method(),
                    variant: f.variant(),
                    line: frontier(&points, higher),
                    points,
                }
            })
            .collect::<Vec<_>>()
    };
    let x_label = "tokens generated per final sample (log)".to_string();
    let mut panels = Vec::new();
    for (i, (name, alpha, t)) in TOY_MODELS.iter().enumerate() {
        panels.push(FrontierPanel {
            title: format!("TV to p^α on toy:{name}"),
            subtitle: format!("α = {alpha}, {t} tokens, {} runs per setting", args.runs),
            x_label: x_label.clone(),
            y_label: "total variation to p^α (log)".into(),
            log_y: true,
            level: Some((noise[i], "sampling noise".into())),
            series: series(&|m| m.toy[i], false),
            empty: "no settings".into(),
            notes: Vec::new(),
        });
    }
    panels.push(FrontierPanel {
        title: "Accuracy on the built-in suite".into(),
        subtitle: format!(
            "α = {SUITE_ALPHA}, {SUITE_MAX_TOKENS} tokens in blocks of 2, {} runs per problem",
            args.runs
        ),
        x_label: x_label.clone(),
        y_label: "accuracy".into(),
        log_y: false,
        level: None,
        series: series(&|m| m.suite, true),
        empty: "no settings".into(),
        notes: Vec::new(),
    });
    if let Some(server) = server {
        let families = [Family::Plain]
            .into_iter()
            .chain(Family::SEARCHED)
            .filter_map(|f| {
                let mut points: Vec<(f64, f64)> = server
                    .iter()
                    .filter(|s| s.family == f)
                    .filter_map(|s| s.outcome.as_ref().ok().copied())
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                (!points.is_empty()).then(|| FrontierSeries {
                    name: f.name().to_string(),
                    method: f.method(),
                    variant: f.variant(),
                    line: points.clone(),
                    points,
                })
            })
            .collect();
        let notes = server
            .iter()
            .filter(|s| s.outcome.is_err())
            .map(|s| format!("{}: not supported by this backend", s.label))
            .collect();
        panels.push(FrontierPanel {
            notes,
            title: "Wall time per job on llama-server".into(),
            subtitle: format!(
                "tiny GGUF, 8 slots, {} tokens in blocks of {}",
                args.server_max_new_tokens, args.server_block_size
            ),
            x_label: "tokens generated per job (log)".into(),
            y_label: "ms per job (log)".into(),
            log_y: true,
            level: None,
            series: families,
            empty: "nothing measured".into(),
        });
    }
    FrontierPlot { panels }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_setting_is_a_measured_setting() {
        let labels: Vec<String> = points().into_iter().map(|p| p.label).collect();
        for label in SERVER_POINTS {
            assert!(labels.iter().any(|l| l == label), "{label}");
        }
        assert!(SERVER_POINTS.contains(&MH_REFERENCE));
    }

    #[test]
    fn a_frontier_keeps_what_no_cheaper_point_beats() {
        let points = [
            (40.0, 0.3),
            (10.0, 0.5),
            (20.0, 0.6),
            (80.0, 0.1),
            (30.0, 0.2),
        ];
        assert_eq!(
            frontier(&points, false),
            vec![(10.0, 0.5), (30.0, 0.2), (80.0, 0.1)]
        );
        assert_eq!(frontier(&points, true), vec![(10.0, 0.5), (20.0, 0.6)]);
    }

    #[test]
    fn a_frontier_is_read_linearly_in_log_tokens() {
        let fr = [(10.0, 0.5), (100.0, 0.1)];
        assert_eq!(at_budget(&fr, 5.0), None);
        assert_eq!(at_budget(&fr, 10.0), Some(0.5));
        // 10^1.5 is halfway on a log axis.
        let mid = at_budget(&fr, 10f64.powf(1.5)).unwrap();
        assert!((mid - 0.3).abs() < 1e-12, "{mid}");
        assert_eq!(at_budget(&fr, 100.0), Some(0.1));
        assert_eq!(at_budget(&fr, 1000.0), Some(0.1));
        assert_eq!(at_budget(&[], 10.0), None);
    }

    #[test]
    fn the_best_family_per_budget_is_judged_against_mh() {
        let families = vec![
            (Family::Mh, vec![(5.0, 0.6), (20.0, 0.3), (80.0, 0.1)]),
            // Better than MH up to 40 tokens, worse beyond.
            (Family::Smc, vec![(10.0, 0.4), (40.0, 0.2), (160.0, 0.15)]),
            // Starts at 15 tokens; below SMC at 20.
            (Family::Lookahead, vec![(15.0, 0.35), (20.0, 0.1)]),
            (Family::SmcMove, vec![]),
        ];
        let verdicts = best_per_budget(&families, &[10.0, 20.0, 80.0, 4.0]);
        // 10 tokens: MH halfway (log) between 5 and 20 is 0.45; SMC 0.4 is the only other one.
        assert_eq!(verdicts[0].best, Some((Family::Smc, 0.4)));
        assert!((verdicts[0].mh.unwrap() - 0.45).abs() < 1e-12);
        assert!(verdicts[0].met());
        // 20 tokens: lookahead 0.1 beats SMC (0.3) and MH (0.3).
        assert_eq!(verdicts[1].best, Some((Family::Lookahead, 0.1)));
        assert!(verdicts[1].met());
        // 80 tokens: lookahead stays at its last 0.1, level with MH: no worse, so met.
        assert_eq!(verdicts[2].best, Some((Family::Lookahead, 0.1)));
        assert_eq!(verdicts[2].mh, Some(0.1));
        assert!(verdicts[2].met());
        // 4 tokens: nothing runs that cheaply.
        assert_eq!(verdicts[3].best, None);
        assert_eq!(verdicts[3].mh, None);
        assert!(!verdicts[3].met());

        // Without lookahead, SMC at 80 tokens (halfway in log between 40 and 160: 0.175) loses.
        let verdicts = best_per_budget(&families[..2], &[80.0]);
        let (family, tv) = verdicts[0].best.unwrap();
        assert_eq!(family, Family::Smc);
        assert!((tv - 0.175).abs() < 1e-12, "{tv}");
        assert!(!verdicts[0].met());
    }
}
