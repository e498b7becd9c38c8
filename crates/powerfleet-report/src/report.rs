//! The report of a benchmark batch, computed from its stored job results: per method accuracy
//! over all scheduled samples beside accuracy over graded ones, missing samples, pass@k, majority
//! vote, acceptance, cost and latency; per problem which methods solved it and which have missing
//! samples. [`DEFINITIONS`] says what each number means; the report carries it.

use std::collections::{BTreeMap, BTreeSet};

use powerfleet_grade::{
    majority_vote, math_equal, mean_and_stderr, normalize, pass_at_k, percentile,
};
use powerfleet_jobs::{GradeRecord, JobResult, JobStatus};
use powerfleet_sampler::{Method, SamplerConfig};
use serde::{Deserialize, Serialize};

use powerfleet_grade::reference_display;

/// Prices for the money column, in US dollars per million generated tokens.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices {
    /// Per model reference, as submitted.
    pub per_model: BTreeMap<String, f64>,
    /// For every other model.
    pub default: Option<f64>,
}

/// A `--price` / `price=` entry that does not parse ([`Prices::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// The value is not a number >= 0.
    #[error("price must be USD per million tokens (a number >= 0) or MODEL=USD, got {entry:?}")]
    NotAPrice {
        /// The entry as given.
        entry: String,
    },
    /// `=USD` with nothing before the `=`.
    #[error("price {entry:?} names no model before '='")]
    NoModel {
        /// The entry as given.
        entry: String,
    },
}

impl Prices {
    /// Parses `USD` (every model) or `MODEL=USD` entries.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Prices, PriceError> {
        let mut prices = Prices::default();
        for entry in entries {
            let (model, value) = match entry.rsplit_once('=') {
                Some((m, v)) => (Some(m.trim()), v),
                None => (None, entry),
            };
            let usd: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| PriceError::NotAPrice {
                    entry: entry.to_string(),
                })?;
            match model {
                Some(m) if !m.is_empty() => {
                    prices.per_model.insert(m.to_string(), usd);
                }
                Some(_) => {
                    return Err(PriceError::NoModel {
                        entry: entry.to_string(),
                    });
                }
                None => prices.default = Some(usd),
            }
        }
        Ok(prices)
    }

    /// The price for a job: given for its model, else the default, else the one it was submitted
    /// with.
    fn for_job(&self, job: &JobResult) -> Option<f64> {
        self.per_model
            .get(&job.model)
            .copied()
            .or(self.default)
            .or_else(|| job.grading.as_ref().and_then(|b| b.price_per_mtok))
    }
}

/// What the report's statistics mean, keyed by field name; the report carries them in
/// [`Report::definitions`] and the rendered tables in their legend ([`definition`]).
pub const DEFINITIONS: [(&str, &str); 17] = [
    (
        "scheduled",
        "samples of a benchmark method (one per problem, seed and chain): every stored job of the method, whatever its status (completed, failed, cancelled or dead)",
    ),
    ("graded", "scheduled samples that completed and were graded"),
    (
        "missing",
        "scheduled samples that are not graded (failed, cancelled, dead, or completed but not gradable); accuracy, pass@k and majority vote count them as wrong",
    ),
    (
        "accuracy",
        "correct over all scheduled samples, a missing sample counting as wrong: the mean over runs (seed, chain) of each run's share, with its standard error across runs",
    ),
    (
        "accuracy_graded",
        "correct over graded samples only, missing samples left out: the mean over runs (seed, chain) with a graded sample of each run's share, with its standard error; biased when failures are not random",
    ),
    (
        "samples",
        "the n of pass@k: the fewest scheduled samples of any of the method's problems",
    ),
    (
        "pass_at_k",
        "the unbiased pass@k estimator 1 - C(n - c, k) / C(n, k) per problem, n = its scheduled samples, c = its correct ones (a missing sample counts as incorrect), averaged over problems; pass_at_k[k - 1] for k = 1..=samples",
    ),
    (
        "majority_accuracy",
        "share of problems whose most common graded answer is right; a problem without a graded answer counts as wrong",
    ),
    (
        "problems_with_missing",
        "problems with at least one missing sample; per problem, methods_with_missing names the methods",
    ),
    (
        "acceptance_rate",
        "MCMC acceptances / proposals pooled over all jobs, whatever their status (the number of the batch summary and `powerfleet status`)",
    ),
    (
        "mean_job_acceptance_rate",
        "the mean over jobs that proposed anything of each job's acceptances / proposals (every job weighs the same)",
    ),
    (
        "mean_ess",
        "power-smc: the effective sample size as a share of the particles, averaged over every block boundary of its jobs",
    ),
    (
        "acceptance_by_block",
        "MCMC acceptances / proposals per block index, pooled over jobs",
    ),
    (
        "cost_multiplier",
        "tokens generated by completed jobs per final token of completed jobs",
    ),
    (
        "trace_chars",
        "mean characters of the reasoning trace (<think>...</think> or the job's markers) of completed graded samples, 0 without a trace",
    ),
    (
        "answer_chars",
        "mean characters after the reasoning trace (the graded part) of completed graded samples, 0 when the trace never closes",
    ),
    (
        "solved_by",
        "per problem: the methods with at least one correct sample",
    ),
];

/// The definition of a report field from [`DEFINITIONS`]; empty for a field without one.
pub fn definition(field: &str) -> &'static str {
    DEFINITIONS
        .iter()
        .find(|(k, _)| *k == field)
        .map_or("", |(_, v)| v)
}

/// A batch's report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The batch (or correlation id, or `label=NAME`) the report is about.
    pub id: String,
    /// The label every result of the report was submitted with, if they share one.
    #[serde(default)]
    pub label: Option<String>,
    /// Models of its jobs.
    pub models: Vec<String>,
    /// Jobs the batch scheduled, from its stored submission record (summed over the batches of
    /// a correlation id); `None` when none was stored (batches submitted before records were
    /// kept).
    #[serde(default)]
    pub scheduled: Option<u64>,
    /// Jobs whose results are stored (equal to `jobs`).
    #[serde(default)]
    pub stored: u64,
    /// Jobs of the batch not finished yet (queued or running), when Redis could be asked.
    #[serde(default)]
    pub running: Option<u64>,
    /// Whether every scheduled job has its result stored: false while jobs are unfinished or
    /// missing. Without a known `scheduled`, judged from what is stored (true).
    #[serde(default = "yes")]
    pub complete: bool,
    /// Stored jobs.
    pub jobs: u64,
    /// Of which completed.
    pub completed: u64,
    /// Of which did not complete (failed, cancelled or dead).
    pub not_completed: u64,
    /// Completed jobs with a grade.
    pub graded: u64,
    /// Samples of benchmark methods that are not graded (see [`DEFINITIONS`]), over all methods.
    pub missing: u64,
    /// Distinct problems.
    pub problems: u64,
    /// Problems with a missing sample under any method.
    pub problems_with_missing: u64,
    /// First submission to last finish, seconds.
    pub wall_time_s: Option<f64>,
    /// Money spent on generated tokens, when a price is known for every job.
    pub cost_usd: Option<f64>,
    /// Per method and configuration, methods in the sampler's order (`Method::ALL`).
    pub methods: Vec<MethodReport>,
    /// Per problem.
    pub per_problem: Vec<ProblemReport>,
    /// What the statistics mean, keyed by field name ([`DEFINITIONS`]).
    #[serde(default)]
    pub definitions: BTreeMap<String, String>,
}

/// One method's row. Accuracy, pass@k and majority vote are defined for benchmark methods (those
/// whose jobs carry a reference); for others they are empty and the sample counts are 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodReport {
    /// The row's name: the method, followed by its `setting` when the method ran with more than
    /// one configuration (`power n_mcmc=2`). Written as `method` in JSON, as it always was; the
    /// method itself is [`MethodReport::method`].
    #[serde(rename = "method")]
    pub row: String,
    /// The configuration of the row's jobs as validated (every setting resolved); `None` for
    /// results stored before configurations were recorded.
    #[serde(default)]
    pub config: Option<SamplerConfig>,
    /// The settings that tell this row apart from the method's other rows (`n_mcmc=2`); empty
    /// when the method has one row.
    #[serde(default)]
    pub setting: String,
    /// Stored jobs.
    pub jobs: u64,
    /// Completed jobs.
    pub completed: u64,
    /// Scheduled samples: every stored job of a benchmark method, whatever its status.
    pub scheduled: u64,
    /// Completed jobs with a grade.
    pub graded: u64,
    /// Scheduled samples that are not graded: `scheduled - graded`.
    pub missing: u64,
    /// Problems with a scheduled sample.
    pub problems: u64,
    /// Of which with a missing sample.
    pub problems_with_missing: u64,
    /// The `n` of pass@k: the fewest scheduled samples of any problem.
    pub samples: u64,
    /// Correct over all scheduled samples (missing ones count as wrong): the mean over runs
    /// (seed, chain) of the share of the run's scheduled samples that are correct.
    pub accuracy: Option<f64>,
    /// Standard error of `accuracy` across runs (needs two runs).
    pub accuracy_stderr: Option<f64>,
    /// Correct over graded samples only: the mean over runs of the share of the run's graded
    /// samples that are correct (runs without a graded sample left out).
    pub accuracy_graded: Option<f64>,
    /// Standard error of `accuracy_graded` across runs (needs two runs).
    pub accuracy_graded_stderr: Option<f64>,
    /// `pass_at_k[k - 1]`: the unbiased pass@k with n = scheduled and c = correct samples per
    /// problem (missing ones count as incorrect), averaged over problems, k = 1..=samples.
    pub pass_at_k: Vec<f64>,
    /// Fraction of problems whose most common graded answer is right; a problem without a
    /// graded answer counts as wrong.
    pub majority_accuracy: Option<f64>,
    /// MCMC proposals of all jobs.
    pub proposals: u64,
    /// Accepted proposals of all jobs.
    pub acceptances: u64,
    /// `acceptances / proposals`, pooled over all jobs (as the batch summary gives it).
    pub acceptance_rate: Option<f64>,
    /// Mean over jobs that proposed anything of their own `acceptances / proposals`.
    pub mean_job_acceptance_rate: Option<f64>,
    /// power-smc: the mean over its jobs' block boundaries of the ESS as a share of the
    /// particles (what the acceptance rate is to MCMC).
    #[serde(default)]
    pub mean_ess: Option<f64>,
    /// Acceptances over proposals of all jobs, per block index.
    pub acceptance_by_block: Vec<Option<f64>>,
    /// Tokens generated by the model, all jobs.
    pub tokens_generated: u64,
    /// Final completion tokens, completed jobs.
    pub final_tokens: u64,
    /// Tokens generated per final token, completed jobs.
    pub cost_multiplier: Option<f64>,
    /// Mean characters of the reasoning trace (`<think>...</think>` or the job's markers),
    /// completed graded jobs with text; 0 for a completion without a trace.
    #[serde(default)]
    pub trace_chars: Option<f64>,
    /// Mean characters of what follows the trace (the part that is graded), same jobs.
    #[serde(default)]
    pub answer_chars: Option<f64>,
    /// Money spent, when every job has a price.
    pub cost_usd: Option<f64>,
    /// Model requests.
    pub model_calls: u64,
    /// Median submission-to-finish latency.
    pub latency_p50_ms: Option<u64>,
    /// 95th percentile latency.
    pub latency_p95_ms: Option<u64>,
    /// First submission to last finish of this method's jobs, seconds.
    pub wall_time_s: Option<f64>,
    /// Jobs finished per second of wall time.
    pub jobs_per_s: Option<f64>,
    /// Tokens generated per second of wall time.
    pub tokens_per_s: Option<f64>,
}

impl MethodReport {
    /// The method of the row's jobs: from their configuration, or for results stored before
    /// configurations were recorded, from the row's name; `None` for a method this build does
    /// not know (stored by another version).
    pub fn method(&self) -> Option<Method> {
        match &self.config {
            Some(config) => Some(config.method),
            None => self.row.split(' ').next()?.parse().ok(),
        }
    }
}

/// One problem's row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProblemReport {
    /// Its id.
    pub problem_id: String,
    /// Its reference answer, as a user reads it.
    pub reference: Option<String>,
    /// Per benchmark method with a scheduled sample of it, in the report's method order.
    pub methods: Vec<ProblemMethod>,
    /// The methods with at least one correct sample.
    pub solved_by: Vec<String>,
    /// The methods with at least one missing sample.
    pub methods_with_missing: Vec<String>,
}

/// One problem under one method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProblemMethod {
    /// The method.
    pub method: String,
    /// Scheduled samples: the `n` of its pass@k.
    pub scheduled: u64,
    /// Graded samples.
    pub graded: u64,
    /// Correct samples: the `c` of its pass@k.
    pub correct: u64,
    /// Scheduled samples that are not graded.
    pub missing: u64,
    /// The most common graded answer.
    pub majority_answer: Option<String>,
    /// Whether it is right (false without a graded answer).
    pub majority_correct: bool,
}

fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

/// The method order of reports: the sampler's methods first, in their usual order.
fn method_rank(method: &str) -> (usize, String) {
    (
        method
            .parse::<Method>()
            .map_or(Method::ALL.len(), Method::rank),
        method.to_string(),
    )
}

/// Builds the report of `id` from its stored results. Completed benchmark results stored without
/// a grade (by a collector of an older version, say) are graded here the way the collector
/// grades.
pub fn build(id: &str, results: &[JobResult], prices: &Prices) -> Report {
    let missing: Vec<(usize, GradeRecord)> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.grade.is_none())
        .filter_map(|(i, r)| Some((i, powerfleet_grade::grade_result(r)?.ok()?)))
        .collect();
    let mut regraded: Vec<JobResult>;
    let results = if missing.is_empty() {
        results
    } else {
        regraded = results.to_vec();
        for (i, grade) in missing {
            regraded[i].grade = Some(grade);
        }
        &regraded[..]
    };
    // One row per method and configuration: two settings of one method are never pooled.
    let mut by_method: BTreeMap<((usize, String), String), Vec<&JobResult>> = BTreeMap::new();
    for r in results {
        let config = r
            .config
            .as_ref()
            .map(|c| serde_json::to_string(c).expect("a configuration serializes"))
            .unwrap_or_default();
        by_method
            .entry((method_rank(r.method.as_str()), config))
            .or_default()
            .push(r);
    }
    let settings = row_settings(by_method.iter().map(|((m, _), jobs)| (&m.1, jobs[0])));
    let problem_key = |r: &JobResult| r.problem_id.clone().unwrap_or_else(|| "-".to_string());
    // One row per problem, with the reference of its first result.
    let mut per_problem: BTreeMap<String, ProblemReport> = BTreeMap::new();
    for r in results {
        per_problem
            .entry(problem_key(r))
            .or_insert_with_key(|p| ProblemReport {
                problem_id: p.clone(),
                reference: r.grading.as_ref().map(|g| reference_display(&g.reference)),
                methods: Vec::new(),
                solved_by: Vec::new(),
                methods_with_missing: Vec::new(),
            });
    }
    let problem_count = per_problem.len() as u64;

    let mut methods = Vec::new();
    for ((((_, method), _), jobs), setting) in by_method.iter().zip(settings) {
        let config = jobs[0].config.clone();
        let method = &if setting.is_empty() {
            method.clone()
        } else {
            format!("{method} {setting}")
        };
        let completed: Vec<&JobResult> = jobs
            .iter()
            .copied()
            .filter(|r| r.status == JobStatus::Completed)
            .collect();
        // A benchmark method's every stored job is a scheduled sample, whatever its status (a
        // failed job carries its reference too); a method without references has no samples.
        let benchmark = jobs
            .iter()
            .any(|r| r.grading.is_some() || r.grade.is_some());
        let scheduled: &[&JobResult] = if benchmark { jobs } else { &[] };

        // Per problem and per run (seed, chain): scheduled, graded and correct samples.
        let mut problems: BTreeMap<String, Vec<&JobResult>> = BTreeMap::new();
        let mut runs: BTreeMap<(u64, u64), Tally> = BTreeMap::new();
        for r in scheduled {
            problems.entry(problem_key(r)).or_default().push(r);
            runs.entry((r.seed, r.stream)).or_default().add(r);
        }
        let total = scheduled.iter().fold(Tally::default(), |mut t, r| {
            t.add(r);
            t
        });
        let share = |of: fn(&Tally) -> u64| {
            let shares: Vec<f64> = runs
                .values()
                .filter(|t| of(t) > 0)
                .map(|t| t.correct as f64 / of(t) as f64)
                .collect();
            if shares.is_empty() {
                return (None, None);
            }
            let (mean, se) = mean_and_stderr(&shares);
            (Some(mean), se.is_finite().then_some(se))
        };
        let (accuracy, accuracy_stderr) = share(|t| t.scheduled);
        let (accuracy_graded, accuracy_graded_stderr) = share(|t| t.graded);

        let tallies: BTreeMap<&String, Tally> = problems
            .iter()
            .map(|(p, v)| {
                let mut t = Tally::default();
                v.iter().for_each(|r| t.add(r));
                (p, t)
            })
            .collect();
        let n = tallies.values().map(|t| t.scheduled).min().unwrap_or(0);
        let pass = (1..=n)
            .map(|k| {
                tallies
                    .values()
                    .map(|t| pass_at_k(t.scheduled, t.correct, k))
                    .sum::<f64>()
                    / tallies.len() as f64
            })
            .collect();
        let mut majority_right = 0u64;
        for (p, v) in &problems {
            let t = tallies[p];
            let graded: Vec<&JobResult> = v.iter().copied().filter(|r| is_graded(r)).collect();
            let (winner, right) = majority(&graded);
            majority_right += u64::from(right);
            if let Some(pr) = per_problem.get_mut(p) {
                pr.methods.push(ProblemMethod {
                    method: method.clone(),
                    scheduled: t.scheduled,
                    graded: t.graded,
                    correct: t.correct,
                    missing: t.missing(),
                    majority_answer: winner,
                    majority_correct: right,
                });
                if t.correct > 0 {
                    pr.solved_by.push(method.clone());
                }
                if t.missing() > 0 {
                    pr.methods_with_missing.push(method.clone());
                }
            }
        }

        let (proposals, acceptances) = jobs.iter().fold((0u64, 0u64), |(p, a), r| {
            (p + r.stats.proposals, a + r.stats.acceptances)
        });
        let job_rates: Vec<f64> = jobs
            .iter()
            .filter_map(|r| r.stats.acceptance_rate())
            .collect();
        let blocks = jobs.iter().map(|r| r.stats.blocks.len()).max().unwrap_or(0);
        let acceptance_by_block = (0..blocks)
            .map(|b| {
                let (p, a) = jobs
                    .iter()
                    .filter_map(|r| r.stats.blocks.get(b))
                    .fold((0u64, 0u64), |(p, a), s| {
                        (p + u64::from(s.proposals), a + u64::from(s.acceptances))
                    });
                ratio(a as f64, p as f64)
            })
            .collect();
        let tokens_generated: u64 = jobs.iter().map(|r| r.stats.tokens_generated).sum();
        let completed_generated: u64 = completed.iter().map(|r| r.stats.tokens_generated).sum();
        let final_tokens: u64 = completed.iter().map(|r| r.tokens.len() as u64).sum();
        let cost_usd = jobs
            .iter()
            .map(|r| {
                prices
                    .for_job(r)
                    .map(|p| p * r.stats.tokens_generated as f64 / 1e6)
            })
            .sum::<Option<f64>>()
            .filter(|_| !jobs.is_empty());
        let (trace_chars, answer_chars) = trace_and_answer_chars(&completed);
        let mut latencies: Vec<u64> = jobs.iter().map(|r| r.latency_ms()).collect();
        latencies.sort_unstable();
        let wall_time_s = wall_time(jobs.iter().copied());
        methods.push(MethodReport {
            row: method.clone(),
            config,
            setting,
            jobs: jobs.len() as u64,
            completed: completed.len() as u64,
            scheduled: total.scheduled,
            graded: jobs.iter().filter(|r| is_graded(r)).count() as u64,
            missing: total.missing(),
            problems: problems.len() as u64,
            problems_with_missing: tallies.values().filter(|t| t.missing() > 0).count() as u64,
            samples: n,
            accuracy,
            accuracy_stderr,
            accuracy_graded,
            accuracy_graded_stderr,
            pass_at_k: pass,
            majority_accuracy: ratio(majority_right as f64, problems.len() as f64),
            proposals,
            acceptances,
            acceptance_rate: ratio(acceptances as f64, proposals as f64),
            mean_job_acceptance_rate: ratio(job_rates.iter().sum(), job_rates.len() as f64),
            mean_ess: {
                let ess: Vec<f64> = jobs
                    .iter()
                    .filter_map(|r| r.stats.smc.as_ref())
                    .flat_map(|s| s.ess.iter().copied())
                    .collect();
                ratio(ess.iter().sum(), ess.len() as f64)
            },
            acceptance_by_block,
            tokens_generated,
            final_tokens,
            cost_multiplier: ratio(completed_generated as f64, final_tokens as f64),
            trace_chars,
            answer_chars,
            cost_usd,
            model_calls: jobs.iter().map(|r| r.stats.model_calls).sum(),
            latency_p50_ms: percentile(&latencies, 50),
            latency_p95_ms: percentile(&latencies, 95),
            wall_time_s,
            jobs_per_s: wall_time_s.and_then(|w| ratio(jobs.len() as f64, w)),
            tokens_per_s: wall_time_s.and_then(|w| ratio(tokens_generated as f64, w)),
        });
    }

    let completed = results
        .iter()
        .filter(|r| r.status == JobStatus::Completed)
        .count() as u64;
    let labels: BTreeSet<Option<&str>> = results
        .iter()
        .map(|r| r.label.as_ref().map(|l| l.as_str()))
        .collect();
    Report {
        id: id.to_string(),
        label: match labels.into_iter().collect::<Vec<_>>()[..] {
            [Some(label)] => Some(label.to_string()),
            _ => None,
        },
        models: results
            .iter()
            .map(|r| r.model.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
        scheduled: None,
        stored: results.len() as u64,
        running: None,
        complete: true,
        jobs: results.len() as u64,
        completed,
        not_completed: results.len() as u64 - completed,
        graded: results.iter().filter(|r| is_graded(r)).count() as u64,
        missing: methods.iter().map(|m| m.missing).sum(),
        problems: problem_count,
        problems_with_missing: per_problem
            .values()
            .filter(|p| !p.methods_with_missing.is_empty())
            .count() as u64,
        wall_time_s: wall_time(results.iter()),
        cost_usd: methods
            .iter()
            .map(|m| m.cost_usd)
            .sum::<Option<f64>>()
            .filter(|_| !methods.is_empty()),
        methods,
        per_problem: per_problem.into_values().collect(),
        definitions: DEFINITIONS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Per row (a method's name and one of its results, in row order): the settings of its
/// configuration that differ between the rows of its method, as `key=value` in alphabetical
/// order; empty for a method with one row.
fn row_settings<'a>(rows: impl Iterator<Item = (&'a String, &'a JobResult)>) -> Vec<String> {
    let rows: Vec<(&String, serde_json::Value)> = rows
        .map(|(m, r)| (m, serde_json::to_value(&r.config).unwrap_or_default()))
        .collect();
    rows.iter()
        .map(|(method, config)| {
            let siblings: Vec<&serde_json::Value> = rows
                .iter()
                .filter(|(m, _)| m == method)
                .map(|(_, c)| c)
                .collect();
            if siblings.len() < 2 {
                return String::new();
            }
            let Some(fields) = config.as_object() else {
                return "config=unrecorded".to_string();
            };
            fields
                .iter()
                .filter(|(k, v)| siblings.iter().any(|s| s.get(k.as_str()) != Some(*v)))
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn yes() -> bool {
    true
}

impl Report {
    /// Records how many jobs were scheduled (`None`: unknown) and, of those not stored, how many
    /// run now (`None`: Redis was not asked or not reachable), and whether the report is
    /// complete: every scheduled job stored.
    pub fn set_progress(&mut self, scheduled: Option<u64>, running: Option<u64>) {
        self.scheduled = scheduled;
        self.running = running;
        self.complete = scheduled.is_none_or(|s| self.stored >= s);
    }

    /// "partial: N of M stored, K still queued or running" while the report is not complete.
    pub fn partial_note(&self) -> Option<String> {
        if self.complete {
            return None;
        }
        let scheduled = self.scheduled?;
        Some(match self.running {
            Some(k) => format!(
                "partial: {} of {scheduled} stored, {k} still queued or running",
                self.stored
            ),
            None => format!("partial: {} of {scheduled} stored", self.stored),
        })
    }
}

/// Whether a result is a graded sample: completed, with a grade.
fn is_graded(r: &JobResult) -> bool {
    r.status == JobStatus::Completed && r.grade.is_some()
}

/// Scheduled, graded and correct samples of a problem or a run.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    scheduled: u64,
    graded: u64,
    correct: u64,
}

impl Tally {
    fn add(&mut self, r: &JobResult) {
        self.scheduled += 1;
        if is_graded(r) {
            self.graded += 1;
            self.correct += u64::from(r.grade.as_ref().is_some_and(|g| g.correct));
        }
    }

    fn missing(&self) -> u64 {
        self.scheduled - self.graded
    }
}

/// Mean characters of the reasoning trace and of the answer after it, over completed graded
/// results with text.
fn trace_and_answer_chars(completed: &[&JobResult]) -> (Option<f64>, Option<f64>) {
    let split: Vec<(usize, usize)> = completed
        .iter()
        .filter_map(|r| {
            let grading = r.grading.as_ref()?;
            let text = r.text.as_deref()?;
            let parts = powerfleet_grade::split_reasoning(text, grading.reasoning_markers.as_ref());
            Some((
                parts.trace.map_or(0, |t| t.chars().count()),
                parts.answer.map_or(0, |a| a.chars().count()),
            ))
        })
        .collect();
    let n = split.len() as f64;
    let trace = split.iter().map(|s| s.0 as f64).sum::<f64>();
    let answer = split.iter().map(|s| s.1 as f64).sum::<f64>();
    (ratio(trace, n), ratio(answer, n))
}

/// The most common answer among graded samples of one problem and whether it is right; `(None,
/// false)` without a graded answer. MATH answers are grouped by equivalence (`0.5` with
/// `\frac{1}{2}`); other graders' answers by equal text, as those graders compare them. The
/// verdict is the grader's own on the winning answer's first sample (all samples of a group get
/// the same verdict).
fn majority(samples: &[&JobResult]) -> (Option<String>, bool) {
    let graded = samples.iter().filter_map(|r| r.grade.as_ref());
    let math = samples
        .iter()
        .filter_map(|r| r.grade.as_ref())
        .all(|g| g.grader.starts_with("math"));
    if math {
        let winner = majority_vote(graded.clone().map(|g| g.answer_key.as_deref()));
        let right = winner.as_deref().is_some_and(|w| {
            graded
                .clone()
                .find(|g| {
                    g.answer_key
                        .as_deref()
                        .is_some_and(|k| math_equal(&normalize(k), w))
                })
                .is_some_and(|g| g.correct)
        });
        return (winner, right);
    }
    // Ties go to the answer seen first.
    let mut counts: Vec<(&str, usize, bool)> = Vec::new();
    for g in graded {
        let Some(key) = g.answer_key.as_deref().map(str::trim) else {
            continue;
        };
        match counts.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) => entry.1 += 1,
            None => counts.push((key, 1, g.correct)),
        }
    }
    let mut best: Option<(&str, usize, bool)> = None;
    for c in counts {
        if best.is_none_or(|b| c.1 > b.1) {
            best = Some(c);
        }
    }
    best.map_or((None, false), |(k, _, right)| (Some(k.to_string()), right))
}

/// First submission to last finish, in seconds.
fn wall_time<'a>(jobs: impl Iterator<Item = &'a JobResult> + Clone) -> Option<f64> {
    let first = jobs.clone().map(|r| r.submitted_at_ms).min()?;
    let last = jobs.map(|r| r.finished_at_ms).max()?;
    Some(last.saturating_sub(first) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use powerfleet_sampler::{BlockStats, Method};

    use super::*;
    use crate::test_results::{not_completed, result};

    #[test]
    fn accuracy_pass_at_k_and_majority_by_hand() {
        // Problem a: seeds 0..3 answer 7, 5, 7 (2 of 3 right); problem b: 5, 5, 7 (1 of 3).
        let mut results = Vec::new();
        for (seed, (a, b)) in [("7", "5"), ("5", "5"), ("7", "7")].into_iter().enumerate() {
            results.push(result(Method::Power, "a", seed as u64, a, a == "7"));
            results.push(result(Method::Power, "b", seed as u64, b, b == "7"));
        }
        let report = build("batch", &results, &Prices::default());
        assert_eq!(report.methods.len(), 1);
        let m = &report.methods[0];
        assert_eq!((m.jobs, m.completed, m.graded, m.samples), (6, 6, 6, 3));
        assert_eq!((m.scheduled, m.missing, m.problems_with_missing), (6, 0, 0));
        // Per seed: (1 + 0)/2, (0 + 0)/2, (1 + 1)/2 = 0.5, 0, 1: mean 0.5, sd 0.5, se 0.5/sqrt 3.
        // Every sample is graded, so accuracy over graded samples is the same.
        assert!((m.accuracy.unwrap() - 0.5).abs() < 1e-12);
        assert!((m.accuracy_stderr.unwrap() - 0.5 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(m.accuracy_graded, m.accuracy);
        assert_eq!(m.accuracy_graded_stderr, m.accuracy_stderr);
        // pass@1 = (2/3 + 1/3) / 2; pass@2: a = 1 - C(1,2)/C(3,2) = 1, b = 1 - C(2,2)/C(3,2) = 2/3.
        assert!((m.pass_at_k[0] - 0.5).abs() < 1e-12);
        assert!((m.pass_at_k[1] - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((m.pass_at_k[2] - 1.0).abs() < 1e-12);
        // Majority: a votes 7 (right), b votes 5 (wrong).
        assert_eq!(m.majority_accuracy, Some(0.5));
        let b = report
            .per_problem
            .iter()
            .find(|p| p.problem_id == "b")
            .unwrap();
        assert_eq!(b.methods[0].majority_answer.as_deref(), Some("5"));
        assert!(!b.methods[0].majority_correct);
        assert_eq!((b.methods[0].correct, b.methods[0].graded), (1, 3));
        assert_eq!((b.methods[0].scheduled, b.methods[0].missing), (3, 0));
        assert_eq!(b.solved_by, vec!["power".to_string()]);
        assert!(b.methods_with_missing.is_empty());
        assert_eq!(b.reference.as_deref(), Some("7"));
    }

    #[test]
    fn majority_votes_follow_the_grader() {
        // Exact grading: "42.0" is wrong even though it equals 42 as a number, and it wins 2 to 1.
        let mut results: Vec<JobResult> = [("42.0", false), ("42.0", false), ("42", true)]
            .into_iter()
            .enumerate()
            .map(|(seed, (a, right))| result(Method::Power, "a", seed as u64, a, right))
            .collect();
        let report = build("b", &results, &Prices::default());
        let pm = &report.per_problem[0].methods[0];
        assert_eq!(pm.majority_answer.as_deref(), Some("42.0"));
        assert!(!pm.majority_correct);
        // MATH grading groups equivalent answers: 0.5 and \frac12 outvote 2.
        for (r, a) in results.iter_mut().zip(["0.5", "\\frac12", "2"]) {
            let g = r.grade.as_mut().unwrap();
            g.grader = "math".into();
            g.answer_key = Some(a.into());
            g.correct = a != "2";
        }
        let report = build("b", &results, &Prices::default());
        assert!(report.per_problem[0].methods[0].majority_correct);
        assert_eq!(report.methods[0].majority_accuracy, Some(1.0));
    }

    /// A completed `result` whose text the server could not give, so it cannot be graded.
    fn ungradable(method: Method, problem: &str, seed: u64) -> JobResult {
        let mut r = result(method, problem, seed, "", false);
        r.text = None;
        r.text_error = Some("/detokenize answered 400".into());
        r.grade = None;
        r
    }

    #[test]
    fn missing_samples_count_as_wrong_and_are_flagged() {
        use JobStatus::{Cancelled, Dead, Failed};
        let (p, s) = (Method::Power, Method::Standard);
        // ReferenceAnswer 7 everywhere; seeds 0, 1, 2 on stream 0, so three runs per method.
        //            seed 0            seed 1               seed 2
        // power a:   7 right           7 right              ungradable
        // power b:   7 right           5 wrong              5 wrong
        // power c:   failed            cancelled            dead
        // std a:     7 right           5 wrong              7 right
        // std b:     dead              7 right              7 right
        // std c:     failed            failed               failed
        let mut failed_late = not_completed(p, "c", 0, Failed);
        // This chain proposed 12 times, accepted none, then failed: its proposals count.
        failed_late.stats.proposals = 12;
        failed_late.stats.acceptances = 0;
        failed_late.stats.blocks = vec![BlockStats {
            proposals: 12,
            acceptances: 0,
        }];
        let results = vec![
            result(p, "a", 0, "7", true),
            result(p, "a", 1, "7", true),
            ungradable(p, "a", 2),
            result(p, "b", 0, "7", true),
            result(p, "b", 1, "5", false),
            result(p, "b", 2, "5", false),
            failed_late,
            not_completed(p, "c", 1, Cancelled),
            not_completed(p, "c", 2, Dead),
            result(s, "a", 0, "7", true),
            result(s, "a", 1, "5", false),
            result(s, "a", 2, "7", true),
            not_completed(s, "b", 0, Dead),
            result(s, "b", 1, "7", true),
            result(s, "b", 2, "7", true),
            not_completed(s, "c", 0, Failed),
            not_completed(s, "c", 1, Failed),
            not_completed(s, "c", 2, Failed),
        ];
        let report = build("batch", &results, &Prices::default());
        let close = |a: Option<f64>, b: f64, what: &str| {
            let a = a.unwrap_or_else(|| panic!("{what}: none"));
            assert!((a - b).abs() < 1e-12, "{what}: {a} vs {b}");
        };

        // Batch: 18 jobs; not completed: power c (3), standard b seed 0 and c (4) = 7; graded:
        // 5 + 5 = 10; missing 4 + 4 = 8; every problem has a missing sample (a under power,
        // b under standard, c under both).
        assert_eq!(
            (
                report.jobs,
                report.completed,
                report.not_completed,
                report.graded,
                report.missing
            ),
            (18, 11, 7, 10, 8)
        );
        assert_eq!((report.problems, report.problems_with_missing), (3, 3));
        for field in [
            "accuracy",
            "accuracy_graded",
            "pass_at_k",
            "majority_accuracy",
            "acceptance_rate",
        ] {
            assert_eq!(report.definitions[field], definition(field), "{field}");
            assert!(!definition(field).is_empty(), "{field}");
        }

        let power = &report.methods[0];
        assert_eq!(power.row, "power");
        // Scheduled 9; graded: a 2, b 3, c 0 = 5; missing 4; completed: a 3 (one ungradable),
        // b 3 = 6; a and c have missing samples.
        assert_eq!(
            (
                power.jobs,
                power.scheduled,
                power.completed,
                power.graded,
                power.missing
            ),
            (9, 9, 6, 5, 4)
        );
        assert_eq!((power.problems, power.problems_with_missing), (3, 2));
        // Runs (correct / scheduled, correct / graded): seed 0 2/3, 2/2; seed 1 1/3, 1/2; seed 2
        // 0/3, 0/1. Accuracy: mean of 2/3, 1/3, 0 = 1/3, sample sd 1/3, se 1/(3 sqrt 3).
        // Over graded: mean of 1, 1/2, 0 = 1/2, sd 1/2, se 1/(2 sqrt 3).
        close(power.accuracy, 1.0 / 3.0, "power accuracy");
        close(power.accuracy_stderr, 1.0 / (3.0 * 3f64.sqrt()), "power se");
        close(power.accuracy_graded, 0.5, "power accuracy over graded");
        close(
            power.accuracy_graded_stderr,
            1.0 / (2.0 * 3f64.sqrt()),
            "power graded se",
        );
        // pass@k with n = 3 scheduled per problem; c: a 2, b 1, c 0.
        // pass@1 = (2/3 + 1/3 + 0) / 3 = 1/3.
        // pass@2: a 1 - C(1,2)/C(3,2) = 1, b 1 - C(2,2)/C(3,2) = 2/3, c 0: (1 + 2/3) / 3 = 5/9.
        // pass@3: a 1, b 1 - C(2,3)/C(3,3) = 1, c 0: 2/3.
        assert_eq!(power.samples, 3);
        assert_eq!(power.pass_at_k.len(), 3);
        close(Some(power.pass_at_k[0]), 1.0 / 3.0, "power pass@1");
        close(Some(power.pass_at_k[1]), 5.0 / 9.0, "power pass@2");
        close(Some(power.pass_at_k[2]), 2.0 / 3.0, "power pass@3");
        // Majority: a 7 (right), b 5 of 7, 5, 5 (wrong), c no graded answer (wrong): 1/3.
        close(power.majority_accuracy, 1.0 / 3.0, "power majority");
        // Acceptance, every job: 8 jobs propose 4 and accept 1 + seed % 2 (a and b: 1, 2, 1;
        // c seeds 1, 2: 2, 1), the failed one proposes 12 and accepts 0. Pooled:
        // (4 + 4 + 3 + 0) / (8 * 4 + 12) = 11/44 = 1/4. Mean of job rates: (1/4 + 2/4 + 1/4) * 2
        // + 2/4 + 1/4 + 0 = 2.75 over 9 = 11/36.
        assert_eq!((power.proposals, power.acceptances), (44, 11));
        close(power.acceptance_rate, 0.25, "power acceptance");
        close(
            power.mean_job_acceptance_rate,
            11.0 / 36.0,
            "power mean job acceptance",
        );
        // By block, pooled over all 9 jobs: block 1: 8 jobs 2 proposals 1 acceptance, the failed
        // one 12 and 0: 8/28 = 2/7; block 2: 8 jobs 2 proposals, seed % 2 acceptances
        // (a 0 1 0, b 0 1 0, c 1 0): 3/16.
        assert_eq!(power.acceptance_by_block.len(), 2);
        close(power.acceptance_by_block[0], 2.0 / 7.0, "power block 1");
        close(power.acceptance_by_block[1], 3.0 / 16.0, "power block 2");

        let standard = &report.methods[1];
        assert_eq!(standard.row, "standard");
        // Scheduled 9; graded: a 3, b 2, c 0 = 5; missing 4; completed 5; b and c missing.
        assert_eq!(
            (
                standard.scheduled,
                standard.completed,
                standard.graded,
                standard.missing
            ),
            (9, 5, 5, 4)
        );
        assert_eq!((standard.problems, standard.problems_with_missing), (3, 2));
        // Runs: seed 0 1/3, 1/1; seed 1 1/3, 1/2; seed 2 2/3, 2/2. Accuracy: mean 4/9,
        // deviations -1/9, -1/9, 2/9, variance (1 + 1 + 4)/81 / 2 = 1/27, se sqrt(1/81) = 1/9.
        // Over graded: mean of 1, 1/2, 1 = 5/6, deviations 1/6, -1/3, 1/6, variance
        // (1 + 4 + 1)/36 / 2 = 1/12, se sqrt(1/36) = 1/6.
        close(standard.accuracy, 4.0 / 9.0, "standard accuracy");
        close(standard.accuracy_stderr, 1.0 / 9.0, "standard se");
        close(standard.accuracy_graded, 5.0 / 6.0, "standard over graded");
        close(
            standard.accuracy_graded_stderr,
            1.0 / 6.0,
            "standard graded se",
        );
        // c: a 2, b 2, c 0 of 3. pass@1 = (2/3 + 2/3 + 0)/3 = 4/9; pass@2 = (1 + 1 + 0)/3 = 2/3;
        // pass@3 = 2/3.
        close(Some(standard.pass_at_k[0]), 4.0 / 9.0, "standard pass@1");
        close(Some(standard.pass_at_k[1]), 2.0 / 3.0, "standard pass@2");
        close(Some(standard.pass_at_k[2]), 2.0 / 3.0, "standard pass@3");
        // Majority: a 7 (2 of 3), b 7 (2 of 2), c none: 2/3.
        close(standard.majority_accuracy, 2.0 / 3.0, "standard majority");

        // Per problem: the one whose samples all failed is there, wrong, and flagged.
        let problem = |id: &str| {
            report
                .per_problem
                .iter()
                .find(|p| p.problem_id == id)
                .unwrap()
        };
        let counts = |pm: &ProblemMethod| (pm.scheduled, pm.graded, pm.correct, pm.missing);
        let a = problem("a");
        assert_eq!(a.methods_with_missing, ["power"]);
        assert_eq!(a.solved_by, ["power", "standard"]);
        assert_eq!(counts(&a.methods[0]), (3, 2, 2, 1));
        assert_eq!(counts(&a.methods[1]), (3, 3, 2, 0));
        let b = problem("b");
        assert_eq!(b.methods_with_missing, ["standard"]);
        assert_eq!(counts(&b.methods[0]), (3, 3, 1, 0));
        assert_eq!(b.methods[0].majority_answer.as_deref(), Some("5"));
        assert_eq!(counts(&b.methods[1]), (3, 2, 2, 1));
        let c = problem("c");
        assert_eq!(c.methods_with_missing, ["power", "standard"]);
        assert!(c.solved_by.is_empty());
        assert_eq!(c.reference.as_deref(), Some("7"));
        for pm in &c.methods {
            assert_eq!(counts(pm), (3, 0, 0, 3), "{}", pm.method);
            assert_eq!(
                (pm.majority_answer.as_deref(), pm.majority_correct),
                (None, false)
            );
        }

        // The renders say it: the marker on the cells, the methods, the legend.
        let render = |format| {
            let mut out = Vec::new();
            crate::render::write(&report, format, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        for format in [crate::ReportFormat::Table, crate::ReportFormat::Markdown] {
            let text = render(format);
            assert!(text.contains("8 missing"), "{text}");
            let row_c = text
                .lines()
                .find(|l| l.trim_start_matches("| ").starts_with("c "))
                .unwrap_or_else(|| panic!("a row for c:\n{text}"));
            assert_eq!(row_c.matches("0/3 !3").count(), 2, "{row_c}");
            assert!(row_c.contains("power standard"), "{row_c}");
            let row_a = text
                .lines()
                .find(|l| l.trim_start_matches("| ").starts_with("a "))
                .unwrap();
            assert!(row_a.contains("2/3 !1") && row_a.contains("2/3"), "{row_a}");
            for legend in [
                format!("acc %: {}", definition("accuracy")),
                format!("acc graded %: {}", definition("accuracy_graded")),
                format!("pass@3 %: {}", definition("pass_at_k")),
                format!("maj %: {}", definition("majority_accuracy")),
                format!("accept: {}", definition("acceptance_rate")),
                "c/n !m: c correct of n scheduled samples".to_string(),
            ] {
                assert!(text.contains(&legend), "{legend:?} in:\n{text}");
            }
        }
        let jsonl = render(crate::ReportFormat::Jsonl);
        let batch: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
        assert_eq!(batch["missing"], 8);
        assert_eq!(batch["definitions"]["pass_at_k"], definition("pass_at_k"));
        let csv = render(crate::ReportFormat::Csv);
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let cell = |row: &str, column: &str| {
            let i = header.iter().position(|h| *h == column).unwrap();
            row.split(',').nth(i).unwrap().to_string()
        };
        let power_row = csv
            .lines()
            .find(|l| l.starts_with("method,power,"))
            .unwrap();
        assert_eq!(cell(power_row, "missing"), "4");
        assert_eq!(cell(power_row, "acceptance_rate"), "0.25");
        let c_power = csv
            .lines()
            .find(|l| l.starts_with("problem,power,c,"))
            .unwrap();
        assert_eq!(
            ["scheduled", "missing", "accuracy", "accuracy_graded"].map(|c| cell(c_power, c)),
            ["3", "3", "0", ""]
        );
    }

    #[test]
    fn two_settings_of_one_method_are_two_rows_named_by_what_differs() {
        let with = |method: Method, n_mcmc: u32, seed: u64, correct: bool| {
            let mut r = result(method, "a", seed, if correct { "7" } else { "5" }, correct);
            let config = SamplerConfig {
                n_mcmc,
                ..SamplerConfig::new(method)
            };
            r.config = Some(config.validate().unwrap().manifest());
            r
        };
        let results = [
            with(Method::Power, 2, 0, false),
            with(Method::Power, 2, 1, false),
            with(Method::Power, 40, 0, true),
            with(Method::Power, 40, 1, true),
            with(Method::LowTemp, 1, 0, true),
        ];
        let report = build("sweep", &results, &Prices::default());
        let rows: Vec<(&str, u64, Option<f64>)> = report
            .methods
            .iter()
            .map(|m| (m.row.as_str(), m.jobs, m.accuracy))
            .collect();
        assert_eq!(
            rows,
            [
                ("power n_mcmc=2", 2, Some(0.0)),
                ("power n_mcmc=40", 2, Some(1.0)),
                ("low-temp", 1, Some(1.0)),
            ]
        );
        assert_eq!(report.methods[0].setting, "n_mcmc=2");
        assert_eq!(
            report.methods[1].config.as_ref().map(|c| c.n_mcmc),
            Some(40)
        );
        assert_eq!(report.methods[2].setting, "");
        // Each row knows its method, from its configuration or else from its name.
        let methods: Vec<Option<Method>> = report.methods.iter().map(|m| m.method()).collect();
        assert_eq!(
            methods,
            [
                Some(Method::Power),
                Some(Method::Power),
                Some(Method::LowTemp)
            ]
        );
        let mut unrecorded = report.methods[0].clone();
        unrecorded.config = None;
        assert_eq!(unrecorded.method(), Some(Method::Power));
        unrecorded.row = "beam width=4".into();
        assert_eq!(unrecorded.method(), None);
        // Per problem, each row on its own.
        let a = &report.per_problem[0];
        assert_eq!(a.solved_by, ["power n_mcmc=40", "low-temp"]);
        // Stored results alone say nothing is missing; the schedule says otherwise.
        assert!(report.complete && report.partial_note().is_none());
        let mut partial = report.clone();
        partial.set_progress(Some(9), Some(3));
        assert!(!partial.complete);
        assert_eq!(
            partial.partial_note().as_deref(),
            Some("partial: 5 of 9 stored, 3 still queued or running")
        );
        partial.set_progress(Some(9), None);
        assert_eq!(
            partial.partial_note().as_deref(),
            Some("partial: 5 of 9 stored")
        );
        partial.set_progress(Some(5), None);
        assert!(partial.complete);
    }

    #[test]
    fn a_report_carries_the_label_its_results_share() {
        let labelled = |label: Option<&str>| {
            let mut r = result(Method::Power, "a", 0, "7", true);
            r.label = label.map(|l| l.parse().unwrap());
            r
        };
        let report = |labels: &[Option<&str>]| {
            let results: Vec<JobResult> = labels.iter().map(|l| labelled(*l)).collect();
            build("b", &results, &Prices::default()).label
        };
        assert_eq!(
            report(&[Some("alpha 4"), Some("alpha 4")]).as_deref(),
            Some("alpha 4")
        );
        assert_eq!(report(&[Some("alpha 4"), Some("alpha 2")]), None);
        assert_eq!(report(&[Some("alpha 4"), None]), None);
        assert_eq!(report(&[None]), None);
    }

    #[test]
    fn results_stored_without_a_grade_are_graded_for_the_report() {
        let mut r = result(Method::Power, "a", 0, "7", true);
        r.grade = None;
        let report = build("b", &[r], &Prices::default());
        assert_eq!(report.graded, 1);
        assert_eq!(report.methods[0].accuracy, Some(1.0));
    }

    #[test]
    fn trace_and_answer_lengths_are_reported_side_by_side() {
        let mut traced = result(Method::Power, "a", 0, "7", true);
        traced.text = Some("<think>abcdef</think>7!".into());
        traced.grade = None;
        let mut unclosed = result(Method::Power, "b", 0, "7", false);
        unclosed.text = Some("<think>ab".into());
        unclosed.grade = None;
        let report = build("b", &[traced, unclosed], &Prices::default());
        let power = &report.methods[0];
        assert_eq!(
            (power.trace_chars, power.answer_chars),
            (Some(4.0), Some(1.0))
        );
        // Graded on what follows the trace: "7!" is not "7"; the unclosed trace has no answer.
        assert_eq!(power.accuracy, Some(0.0));
    }

    #[test]
    fn cost_acceptance_latency_and_money() {
        let results: Vec<JobResult> = (0..4)
            .map(|seed| {
                let mut r = result(Method::Power, "a", seed, "7", true);
                if seed == 0 {
                    // A longer first block: 10 proposals, 1 accepted.
                    r.stats.proposals = 12;
                    r.stats.blocks[0].proposals = 10;
                }
                r
            })
            .chain([{
                let mut failed = result(Method::LowTemp, "a", 0, "", false);
                failed.status = JobStatus::Failed;
                failed.tokens.clear();
                failed.grade = None;
                failed
            }])
            .collect();
        let report = build("b", &results, &Prices::default());
        assert_eq!(
            (report.jobs, report.completed, report.not_completed),
            (5, 4, 1)
        );
        let power = &report.methods[0];
        assert_eq!(power.row, "power");
        // Acceptances 1, 2, 1, 2 of 12, 4, 4, 4 proposals: pooled 6/24 = 0.25; the mean of the
        // job rates 1/12, 2/4, 1/4, 2/4 is 4/3 / 4 = 1/3. Block 1 pools 4 of 10+2+2+2, block 2
        // 0+1+0+1 of 8.
        assert_eq!((power.proposals, power.acceptances), (24, 6));
        assert_eq!(power.acceptance_rate, Some(0.25));
        assert!((power.mean_job_acceptance_rate.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(power.acceptance_by_block, vec![Some(0.25), Some(0.25)]);
        assert_eq!(power.tokens_generated, 40);
        assert_eq!(power.final_tokens, 8);
        assert_eq!(power.cost_multiplier, Some(5.0));
        assert_eq!(power.model_calls, 20);
        // Latencies 100, 200, 300, 400 ms.
        assert_eq!(
            (power.latency_p50_ms, power.latency_p95_ms),
            (Some(200), Some(400))
        );
        assert_eq!(power.wall_time_s, Some(0.4));
        assert!((power.tokens_per_s.unwrap() - 100.0).abs() < 1e-9);
        // 40 tokens at the submitted USD 2 per million.
        assert!((power.cost_usd.unwrap() - 80e-6).abs() < 1e-15);
        let low = &report.methods[1];
        assert_eq!((low.jobs, low.completed, low.graded), (1, 0, 0));
        // Its one scheduled sample failed: missing, so wrong; nothing graded, nothing completed.
        assert_eq!((low.scheduled, low.missing), (1, 1));
        assert_eq!(low.accuracy, Some(0.0));
        assert_eq!(low.pass_at_k, vec![0.0]);
        assert_eq!(low.majority_accuracy, Some(0.0));
        assert_eq!((low.accuracy_graded, low.cost_multiplier), (None, None));
        // A price given at report time wins over the submitted one.
        let prices = Prices::parse(["toy:m=1"]).unwrap();
        let report = build("b", &results, &prices);
        assert!((report.cost_usd.unwrap() - 50e-6).abs() < 1e-15);
    }

    #[test]
    fn prices_parse_or_name_the_problem() {
        let p = Prices::parse(["0.5", "toy:m=2"]).unwrap();
        assert_eq!(p.default, Some(0.5));
        assert_eq!(p.per_model["toy:m"], 2.0);
        let e = Prices::parse(["cheap"]).unwrap_err().to_string();
        assert!(e.contains("USD per million tokens"), "{e}");
        assert!(
            Prices::parse(["=1"])
                .unwrap_err()
                .to_string()
                .contains("names no model")
        );
        assert!(Prices::parse(["-1"]).is_err());
    }

    #[test]
    fn csv_shows_problem_ids_and_answers_that_look_like_formulas_as_text() {
        let id = "=HYPERLINK(\"http://evil\",\"open\")";
        let results = vec![result(Method::Power, id, 0, "-1+2", true)];
        let report = build("batch-1", &results, &Prices::default());
        let mut out = Vec::new();
        crate::render::write(&report, crate::ReportFormat::Csv, &mut out).unwrap();
        let csv = String::from_utf8(out).unwrap();
        assert!(
            csv.contains("problem,power,\"'=HYPERLINK(\"\"http://evil\"\",\"\"open\"\")\","),
            "{csv}"
        );
        assert!(csv.contains(",\"'-1+2\""), "the majority answer: {csv}");
        assert!(!csv.contains(",=") && !csv.contains(",-1+2"), "{csv}");
    }

    #[test]
    fn every_format_carries_the_numbers() {
        let results: Vec<JobResult> = (0..2)
            .flat_map(|seed| {
                [
                    result(Method::Power, "a,1", seed, "7", true),
                    result(Method::Standard, "a,1", seed, "5", false),
                ]
            })
            .collect();
        let report = build("batch-1", &results, &Prices::default());
        let render = |format| {
            let mut out = Vec::new();
            crate::render::write(&report, format, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let table = render(crate::ReportFormat::Table);
        assert!(table.contains("batch-1: 4 jobs"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("power ") && l.contains("100.0")),
            "{table}"
        );
        let csv = render(crate::ReportFormat::Csv);
        let header = csv.lines().next().unwrap();
        assert!(header.ends_with("pass_at_1,pass_at_2"), "{header}");
        assert!(
            csv.contains("problem,power,\"a,1\",7,"),
            "problem ids are quoted:\n{csv}"
        );
        let columns = header.split(',').count();
        let power = csv
            .lines()
            .find(|l| l.starts_with("method,power,"))
            .unwrap();
        assert_eq!(power.split(',').count(), columns, "{power}");
        let jsonl = render(crate::ReportFormat::Jsonl);
        let rows: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows[0]["row"], "batch");
        assert_eq!(rows[1]["row"], "method");
        assert_eq!(rows[1]["accuracy"], 1.0);
        assert_eq!(rows[2]["method"], "standard");
        assert_eq!(rows[2]["accuracy"], 0.0);
        assert_eq!(rows[3]["row"], "problem");
        let md = render(crate::ReportFormat::Markdown);
        assert!(md.contains("| method | jobs |"), "{md}");
        assert!(md.contains("|---|---:|"), "{md}");
        // A reference with a line break and a pipe stays on its row.
        let mut report = report.clone();
        report.per_problem[0].reference = Some("x\ny|z".into());
        for format in [crate::ReportFormat::Table, crate::ReportFormat::Markdown] {
            let mut out = Vec::new();
            crate::render::write(&report, format, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(!text.lines().any(|l| l.starts_with("y|z")), "{text}");
            assert!(text.contains("x y"), "{text}");
        }
    }

    #[test]
    fn power_smc_rows_show_the_mean_ess_where_mcmc_rows_show_acceptance() {
        let results: Vec<JobResult> = [vec![0.5, 0.7], vec![0.9]]
            .into_iter()
            .enumerate()
            .map(|(seed, ess)| {
                let mut r = result(Method::PowerSmc, "a", seed as u64, "7", true);
                r.stats.proposals = 0;
                r.stats.acceptances = 0;
                r.stats.smc = Some(powerfleet_sampler::SmcStats {
                    particles: 8,
                    ess,
                    ..Default::default()
                });
                r
            })
            .collect();
        let report = build("b", &results, &Prices::default());
        let smc = &report.methods[0];
        assert_eq!(smc.row, "power-smc");
        assert_eq!(smc.acceptance_rate, None);
        assert!((smc.mean_ess.unwrap() - 0.7).abs() < 1e-12);
        let mut out = Vec::new();
        crate::render::write(&report, crate::render::ReportFormat::Markdown, &mut out).unwrap();
        let table = String::from_utf8(out).unwrap();
        assert!(table.contains("ESS 0.70"), "{table}");
    }
}
