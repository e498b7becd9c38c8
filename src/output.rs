//! The fleet subcommands' text output: a submission's receipt, a status report, its problems
//! (the one place waiting reasons are rendered) and a cancellation's summary. Text stays a few
//! lines whatever a batch's size; job-by-job listings only when asked for (`--jobs`,
//! `--limit N`). `--format json` is complete and is written elsewhere (serde).

use std::collections::BTreeSet;
use std::io::{self, Write};

use powerfleet_fleet::producer::{Receipt, Submission};
use powerfleet_fleet::status::{FailedJob, JobView, Problems, StatusReport};
use powerfleet_jobs::{JobId, JobStatus, now_ms};
use powerfleet_queue::{CancelOutcome, Tally};

/// A receipt: correlation id, batch id and the job count with its breakdown; the job ids, one a
/// line, only with `with_jobs`.
pub fn write_receipt(
    out: &mut impl Write,
    receipt: &Receipt,
    submission: &Submission,
    with_jobs: bool,
) -> io::Result<()> {
    writeln!(out, "correlation_id {}", receipt.correlation_id)?;
    if let Some(b) = receipt.batch_id {
        writeln!(out, "batch_id {b}")?;
    }
    let problems = submission
        .graded_run
        .as_ref()
        .map_or(submission.problems.len(), |run| run.problems.len()) as u64;
    let (methods, seeds, chains) = (
        submission.methods.len() as u64,
        submission.seeds.len() as u64,
        submission.chains,
    );
    let n = receipt.job_ids.len() as u64;
    let product = problems
        .checked_mul(methods)
        .and_then(|x| x.checked_mul(seeds))
        .and_then(|x| x.checked_mul(chains));
    if product == Some(n) {
        writeln!(
            out,
            "jobs {n} ({problems} {} x {methods} {} x {seeds} {} x {chains} {})",
            plural(problems, "problem"),
            plural(methods, "method"),
            plural(seeds, "seed"),
            plural(chains, "chain"),
        )?;
    } else {
        writeln!(out, "jobs {n}")?;
    }
    if with_jobs {
        for id in &receipt.job_ids {
            writeln!(out, "{id}")?;
        }
    }
    Ok(())
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// A status report: what it is, counts by status, per-method tallies (from `tally`, the
/// batch's or correlation's in Redis, and the stored aggregates), the problems, and the jobs the
/// report lists (none unless asked for).
pub fn write_status(
    out: &mut impl Write,
    report: &StatusReport,
    tally: Option<&Tally>,
) -> io::Result<()> {
    let (id, total, next_after) = match report {
        StatusReport::Job(j) => {
            writeln!(out, "{}", counts_line(report))?;
            return write_job_line(out, j);
        }
        StatusReport::Batch {
            batch_id,
            total,
            next_after,
            ..
        } => {
            writeln!(out, "batch {batch_id}")?;
            (batch_id.to_string(), *total, *next_after)
        }
        StatusReport::Correlation {
            correlation_id,
            total,
            next_after,
            ..
        } => {
            writeln!(out, "correlation {correlation_id}")?;
            (correlation_id.to_string(), *total, *next_after)
        }
    };
    writeln!(out, "jobs {total}: {}", counts_line(report))?;
    write_methods(out, report, tally)?;
    if let StatusReport::Batch {
        summary: Some(s), ..
    } = report
    {
        // The acceptance rate is pooled over every stored job, as in the benchmark report.
        writeln!(
            out,
            "acceptance rate {}  cost multiplier {}  latency p50 {} ms  p95 {} ms",
            s.acceptance_rate.map_or("-".into(), |a| {
                format!("{a:.3} ({} of {} proposals)", s.acceptances, s.proposals)
            }),
            s.cost_multiplier.map_or("-".into(), |c| format!("{c:.2}")),
            s.latency_p50_ms.map_or("-".into(), |v| v.to_string()),
            s.latency_p95_ms.map_or("-".into(), |v| v.to_string()),
        )?;
    }
    if let StatusReport::Batch { unserved, .. } | StatusReport::Correlation { unserved, .. } =
        report
    {
        for why in unserved {
            writeln!(out, "{why}")?;
        }
    }
    if let Some(problems) = report.problems() {
        write_problems(out, problems, &id)?;
    }
    let jobs = report.jobs();
    for j in &jobs {
        write_job_line(out, j)?;
    }
    match next_after {
        Some(after) => writeln!(
            out,
            "listed {} of {total} jobs; the next ones: --after {after}",
            jobs.len()
        )?,
        None if jobs.is_empty() && total > 0 => writeln!(
            out,
            "list the jobs with --jobs (all) or --limit N, or --format json"
        )?,
        None => {}
    }
    Ok(())
}

/// Jobs by status: "completed 2900, failed 12, queued 80".
fn counts_line(report: &StatusReport) -> String {
    report
        .counts()
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Per method: jobs finished of jobs (from the tally in Redis, else the stored jobs), and the
/// stored jobs' completed count and acceptance rate (a batch's aggregates).
fn write_methods(
    out: &mut impl Write,
    report: &StatusReport,
    tally: Option<&Tally>,
) -> io::Result<()> {
    let summary = match report {
        StatusReport::Batch { summary, .. } => summary.as_deref(),
        _ => None,
    };
    let mut methods: BTreeSet<&str> = BTreeSet::new();
    if let Some(t) = tally {
        methods.extend(t.by_method.keys().map(String::as_str));
    }
    if let Some(s) = summary {
        methods.extend(s.by_method.iter().map(|m| m.method.as_str()));
    }
    for method in methods {
        let stored = summary.and_then(|s| s.by_method.iter().find(|m| m.method == method));
        let mut line = format!("  {method:<10}");
        match tally.and_then(|t| t.by_method.get(method)) {
            Some((finished, total)) => line.push_str(&format!(" {finished} of {total} finished")),
            None => {
                if let Some(m) = stored {
                    line.push_str(&format!(" {} stored", m.jobs));
                }
            }
        }
        if let Some(m) = stored {
            line.push_str(&format!("  {} completed", m.completed));
            if let Some(a) = m.acceptance_rate {
                line.push_str(&format!("  acceptance {a:.3}"));
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// How many kinds of failure (status and error) [`write_problems`] shows.
const FAILED_GROUPS_SHOWN: usize = 10;

/// What needs a look: the failed and dead jobs (grouped by their error) and, per
/// model, the queued jobs that wait and why. Every waiting reason the CLI shows, in `status` and
/// in `--wait` when nothing moves, is rendered here; a new kind of reason gathered in
/// [`Problems`] gets its line here.
pub fn write_problems(out: &mut impl Write, problems: &Problems, id: &str) -> io::Result<()> {
    if problems.failed_total > 0 {
        writeln!(out, "failed or dead: {}", problems.failed_total)?;
        // The jobs read, grouped by what ended them: a thousand jobs that failed the same way
        // are one line.
        let mut groups: Vec<(&FailedJob, u64)> = Vec::new();
        for f in &problems.failed {
            match groups
                .iter_mut()
                .find(|(g, _)| g.status == f.status && g.error == f.error)
            {
                Some((_, n)) => *n += 1,
                None => groups.push((f, 1)),
            }
        }
        for (f, n) in groups.iter().take(FAILED_GROUPS_SHOWN) {
            writeln!(
                out,
                "  {n} {}: {} (e.g. job {}{})",
                f.status.as_str(),
                f.error.as_deref().unwrap_or("no reason recorded"),
                f.job_id,
                f.problem_id
                    .as_deref()
                    .map_or(String::new(), |p| format!(", problem {p}")),
            )?;
        }
        let shown: u64 = groups
            .iter()
            .take(FAILED_GROUPS_SHOWN)
            .map(|(_, n)| n)
            .sum();
        let more = problems.failed_total.saturating_sub(shown);
        if more > 0 {
            writeln!(
                out,
                "  {more} more: powerfleet status {id} --jobs, or --format json"
            )?;
        }
    }
    let waiting: Vec<_> = problems.models.iter().filter(|m| m.waiting > 0).collect();
    if !waiting.is_empty() {
        let scope = if problems.queued_read < problems.queued_total {
            format!(
                " (of the first {} of {} queued jobs)",
                problems.queued_read, problems.queued_total
            )
        } else {
            String::new()
        };
        writeln!(out, "waiting for their model{scope}:")?;
        for m in waiting {
            let next = m.next_try_ms.map_or(String::new(), |t| {
                format!(
                    ", next try in {} s",
                    t.saturating_sub(now_ms()).div_ceil(1000)
                )
            });
            writeln!(
                out,
                "  {}: {} of {} queued jobs wait{next}: {}",
                m.model,
                m.waiting,
                m.queued,
                m.reason.as_deref().unwrap_or("no reason recorded")
            )?;
        }
    }
    Ok(())
}

/// One job: id, status, method, attempts, and its progress, completion or why it waits or
/// failed.
pub fn write_job_line(out: &mut impl Write, j: &JobView) -> io::Result<()> {
    let detail = match (&j.progress, &j.result) {
        (Some(p), _) => format!(
            "block {}/{} step {}/{}",
            p.block_idx + 1,
            p.n_blocks,
            p.step_idx,
            p.n_mcmc
        ),
        (None, Some(r)) if r.status == JobStatus::Completed => format!(
            "{} tokens{}",
            r.tokens.len(),
            match (&r.text, &r.text_error) {
                (Some(t), _) => format!(": {t}"),
                (None, Some(why)) => format!(" (no text, not graded: {why})"),
                (None, None) => String::new(),
            }
        ),
        _ => match &j.waiting {
            Some(why) => why.clone(),
            None => j.error.clone().unwrap_or_default(),
        },
    };
    writeln!(
        out,
        "{}  {:<9}  {:<9} attempts {}  {}",
        j.job_id,
        j.status.as_str(),
        j.method.as_deref().unwrap_or("-"),
        j.attempts,
        detail
    )
}

/// One job's cancellation outcome in words.
fn outcome_text(outcome: &CancelOutcome) -> String {
    match outcome {
        CancelOutcome::Cancelled => "cancelled".to_string(),
        CancelOutcome::Requested => {
            "cancellation requested (running; stops between MCMC steps)".to_string()
        }
        CancelOutcome::AlreadyFinal(s) => format!("already {s}"),
        CancelOutcome::Missing => "not found in Redis".to_string(),
    }
}

/// A cancellation: a line per job when `with_jobs` (or for a single job), then, for several, one
/// summary line.
pub fn write_cancel(
    out: &mut impl Write,
    outcomes: &[(JobId, CancelOutcome)],
    single: bool,
    with_jobs: bool,
) -> io::Result<()> {
    if single || with_jobs {
        for (id, outcome) in outcomes {
            writeln!(out, "{id}  {}", outcome_text(outcome))?;
        }
    }
    if single {
        return Ok(());
    }
    let count = |f: fn(&CancelOutcome) -> bool| outcomes.iter().filter(|(_, o)| f(o)).count();
    let mut line = format!(
        "cancelled {}, running jobs asked to stop {}, already finished {}",
        count(|o| *o == CancelOutcome::Cancelled),
        count(|o| *o == CancelOutcome::Requested),
        count(|o| matches!(o, CancelOutcome::AlreadyFinal(_))),
    );
    let missing = count(|o| *o == CancelOutcome::Missing);
    if missing > 0 {
        line.push_str(&format!(", not found in Redis {missing}"));
    }
    writeln!(out, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerfleet_fleet::status::ModelQueue;

    fn text(f: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        f(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_cancellation_of_many_jobs_ends_with_one_summary_line() {
        let outcomes: Vec<(JobId, CancelOutcome)> = [
            CancelOutcome::Cancelled,
            CancelOutcome::Cancelled,
            CancelOutcome::Requested,
            CancelOutcome::AlreadyFinal(JobStatus::Completed),
        ]
        .into_iter()
        .map(|o| (JobId::new(), o))
        .collect();
        let summary = text(|out| write_cancel(out, &outcomes, false, false));
        assert_eq!(
            summary,
            "cancelled 2, running jobs asked to stop 1, already finished 1\n"
        );
        let listed = text(|out| write_cancel(out, &outcomes, false, true));
        assert_eq!(listed.lines().count(), 5, "{listed}");
        assert!(listed.ends_with(&summary), "{listed}");
    }

    #[test]
    fn problems_show_a_few_failed_jobs_and_what_queued_jobs_wait_for() {
        let failed: Vec<FailedJob> = (0..3)
            .map(|i| FailedJob {
                job_id: JobId::new(),
                status: if i < 2 {
                    JobStatus::Failed
                } else {
                    JobStatus::Dead
                },
                method: Some("power".into()),
                problem_id: Some(format!("q{i}")),
                error: Some(
                    if i < 2 {
                        "model: unknown model \"m\""
                    } else {
                        "delivered 6 times"
                    }
                    .into(),
                ),
            })
            .collect();
        let problems = Problems {
            failed_total: 12,
            failed,
            queued_total: 80,
            queued_read: 80,
            models: vec![
                ModelQueue {
                    model: "qwen".into(),
                    queued: 70,
                    waiting: 70,
                    reason: Some("waiting for model qwen (unavailable for 40 s; patience 7200 s): connection refused".into()),
                    next_try_ms: None,
                },
                ModelQueue {
                    model: "toy:pivot".into(),
                    queued: 10,
                    waiting: 0,
                    reason: None,
                    next_try_ms: None,
                },
            ],
        };
        let shown = text(|out| write_problems(out, &problems, "B"));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "failed or dead: 12");
        assert_eq!(
            lines[1],
            format!(
                "  2 failed: model: unknown model \"m\" (e.g. job {}, problem q0)",
                problems.failed[0].job_id
            )
        );
        assert!(
            lines[2].starts_with("  1 dead: delivered 6 times (e.g. job "),
            "{shown}"
        );
        assert_eq!(
            lines[3],
            "  9 more: powerfleet status B --jobs, or --format json"
        );
        assert_eq!(lines[4], "waiting for their model:");
        assert_eq!(
            lines[5],
            "  qwen: 70 of 70 queued jobs wait: waiting for model qwen (unavailable for 40 s; patience 7200 s): connection refused"
        );
        assert_eq!(
            lines.len(),
            6,
            "a model whose jobs do not wait is not a problem: {shown}"
        );
    }
}
