//! Live progress of a watch (`submit --wait`, `status --wait` and the demo). On a terminal, a bar
//! on stderr; otherwise (a batch log), a line on stderr when the watch starts, every
//! [`LINE_EVERY`], as soon as the models no live worker serves change, and at the end. Each says what the watch waits for, jobs finished per method,
//! the acceptance rate and, for graded runs, the accuracy so far. When no job has finished for
//! [`STANDSTILL`], it also shows what the unfinished jobs wait for, through
//! [`crate::output::write_problems`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use powerfleet_fleet::status::{self, Page, StatusQuery};
use powerfleet_fleet::watch::{self, Phase, Poll, Snapshot, WatchPolicy, Watched, thousands};
use powerfleet_jobs::{JobId, JobStatus};
use powerfleet_queue::Queue;
use powerfleet_store::Store;

/// How often a progress line is written when stderr is not a terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(10);
/// The environment variable that overrides [`LINE_EVERY`] (a duration, e.g. 200ms): for the
/// tests, which watch several lines go by in a short run. Not a user setting.
const LINE_EVERY_VAR: &str = "POWERFLEET_PROGRESS_EVERY";

/// [`LINE_EVERY`], or the duration [`LINE_EVERY_VAR`] gives.
fn line_every() -> Result<Duration> {
    let Ok(text) = std::env::var(LINE_EVERY_VAR) else {
        return Ok(LINE_EVERY);
    };
    let every = crate::options::parse_duration(&text)
        .map_err(|e| anyhow::anyhow!("{LINE_EVERY_VAR}: {e}"))?;
    anyhow::ensure!(!every.is_zero(), "{LINE_EVERY_VAR} must be longer than 0");
    Ok(every)
}
/// How long no job may finish before the progress shows what the unfinished jobs wait for
/// (again after each [`STANDSTILL_REPEAT`] of standstill).
pub const STANDSTILL: Duration = Duration::from_secs(60);
const STANDSTILL_REPEAT: Duration = Duration::from_secs(600);

/// What is watched, and how hints name it.
pub struct Target<'a> {
    /// The queue.
    pub queue: &'a Queue,
    /// The results database, if the watch waits for results to be stored.
    pub store: Option<&'a Store>,
    /// The jobs.
    pub watched: &'a Watched,
}

impl Target<'_> {
    /// The id `powerfleet status` takes for the watched jobs.
    fn id(&self) -> String {
        match self.watched {
            Watched::Job(id) => id.to_string(),
            Watched::Batch(id) => id.to_string(),
            Watched::Correlation(id) => id.to_string(),
        }
    }
}

/// Watches `target` under `policy` with live progress on stderr; prints the final counts and
/// returns the last snapshot. Errs on a stall the policy does not sit out, saying what did not
/// move.
pub async fn watch(target: &Target<'_>, policy: &WatchPolicy) -> Result<Snapshot> {
    let line_every = line_every()?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len}  eta {eta}  {msg}")
                .expect("valid template"),
        );
        bar
    });
    let started = Instant::now();
    let accuracy_text: RefCell<Option<String>> = RefCell::new(None);
    let mut accuracy = AccuracySoFar::default();
    let (standstill_tx, mut standstill_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut last_line: Option<Instant> = None;
    let mut last_unserved: Vec<String> = Vec::new();
    let mut noticed = Duration::ZERO;
    let hint = Hints {
        id: target.id(),
        database: target.store.map(|s| s.url().to_string()),
    };
    let watching = watch::watch(target.queue, target.store, target.watched, policy, |poll| {
        let line = progress_line(poll, accuracy_text.borrow().as_deref(), &hint);
        match &bar {
            Some(bar) => {
                let s = poll.snapshot;
                bar.set_length(s.tally.total);
                bar.set_position(match poll.phase {
                    Phase::Storing => s.stored,
                    _ => s.tally.finished,
                });
                bar.set_message(line);
            }
            None => {
                // A model nobody served gets a worker, or loses its last one: said at once.
                let unserved_changed = poll.snapshot.unserved != last_unserved;
                if unserved_changed || last_line.is_none_or(|at| at.elapsed() >= line_every) {
                    last_line = Some(Instant::now());
                    last_unserved.clone_from(&poll.snapshot.unserved);
                    eprintln!("[{}] {line}", clock(started.elapsed()));
                }
            }
        }
        // Standstill: show once (then every STANDSTILL_REPEAT) what the unfinished jobs wait for.
        if poll.unmoved_for < noticed {
            noticed = Duration::ZERO;
        }
        let due = if noticed.is_zero() {
            STANDSTILL
        } else {
            noticed + STANDSTILL_REPEAT
        };
        if poll.phase == Phase::Jobs && poll.unmoved_for >= due {
            noticed = poll.unmoved_for;
            let _ = standstill_tx.send(());
        }
    });
    tokio::pin!(watching);
    let mut refresh = tokio::time::interval(if bar.is_some() {
        Duration::from_secs(2)
    } else {
        line_every
    });
    let outcome = loop {
        tokio::select! {
            biased;
            outcome = &mut watching => break outcome,
            Some(()) = standstill_rx.recv() => {
                let mut text = Vec::new();
                if write_waiting(target, &mut text).await.is_ok() && !text.is_empty() {
                    let text = String::from_utf8_lossy(&text);
                    match &bar {
                        Some(bar) => bar.println(text.trim_end()),
                        None => eprint!("{text}"),
                    }
                }
            }
            _ = refresh.tick(), if target.store.is_some() => {
                // A failed read leaves the last numbers in place: progress never fails a watch.
                if let Ok(text) = accuracy.refresh(target).await {
                    *accuracy_text.borrow_mut() = text;
                }
            }
        }
    };
    match &bar {
        Some(bar) if outcome.is_ok() => bar.finish_and_clear(),
        Some(bar) => bar.abandon(),
        None => {}
    }
    let snap = outcome.with_context(|| format!("waiting for {}", target.id()))?;
    if let Ok(text) = accuracy.refresh(target).await {
        *accuracy_text.borrow_mut() = text;
    }
    eprintln!(
        "done in {}: {}{}",
        clock(started.elapsed()),
        final_counts(&snap),
        accuracy_text
            .borrow()
            .as_deref()
            .map_or(String::new(), |a| format!("; accuracy {a}"))
    );
    Ok(snap)
}

/// What hints in progress lines name.
struct Hints {
    /// The id `powerfleet status` takes.
    id: String,
    /// The results database watched, if any.
    database: Option<String>,
}

/// One progress line: what the watch waits for, per method, the acceptance rate, the accuracy so
/// far, and after a standstill what to check.
fn progress_line(poll: &Poll<'_>, accuracy: Option<&str>, hints: &Hints) -> String {
    let s = poll.snapshot;
    let mut parts = vec![poll.waiting_for()];
    let methods: Vec<String> = s
        .tally
        .by_method
        .iter()
        .map(|(m, (done, total))| format!("{m} {}/{}", thousands(*done), thousands(*total)))
        .collect();
    if !methods.is_empty() {
        parts.push(methods.join(" "));
    }
    if let Some(summary) = &s.summary
        && summary.proposals > 0
    {
        parts.push(format!(
            "acceptance rate {:.3}",
            summary.acceptances as f64 / summary.proposals as f64
        ));
    }
    if let Some(accuracy) = accuracy {
        parts.push(format!("accuracy so far {accuracy}"));
    }
    // Jobs of a model nobody serves wait for a worker that maps it: said on every line.
    parts.extend(s.unserved.iter().cloned());
    if poll.unmoved_for >= STANDSTILL {
        let what = match poll.phase {
            Phase::Storing => format!(
                "no result stored for {}: is a collector running on this namespace, writing to {}?",
                clock(poll.unmoved_for),
                hints.database.as_deref().unwrap_or("the results database")
            ),
            _ => format!(
                "no job finished for {}: are workers running on this namespace, serving the jobs' model? (powerfleet status {})",
                clock(poll.unmoved_for),
                hints.id
            ),
        };
        parts.push(what);
    }
    parts.join("; ")
}

/// The final counts by status, and how many jobs did not finish.
fn final_counts(snap: &Snapshot) -> String {
    let mut counts: Vec<String> = snap
        .tally
        .by_status
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    if snap.unfinished() > 0 {
        counts.push(format!("unfinished {}", snap.unfinished()));
    }
    counts.join(", ")
}

/// A duration as progress shows it: 45s, 3m05s, 2h07m.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// What the unfinished jobs wait for, rendered as `status` renders it.
async fn write_waiting(target: &Target<'_>, out: &mut Vec<u8>) -> Result<()> {
    let query = StatusQuery {
        page: Page::NONE,
        problems: true,
    };
    let (queue, store) = (target.queue, target.store);
    match target.watched {
        Watched::Job(id) => {
            if let Some(view) = status::job_view(queue, store, *id).await? {
                crate::output::write_job_line(out, &view)?;
            }
        }
        Watched::Batch(id) => {
            if let Some(problems) = status::batch_status(queue, store, *id, query)
                .await?
                .and_then(|r| r.problems().cloned())
            {
                crate::output::write_problems(out, &problems, &id.to_string())?;
            }
        }
        Watched::Correlation(id) => {
            if let Some(problems) = status::correlation_status(queue, store, id, query)
                .await?
                .and_then(|r| r.problems().cloned())
            {
                crate::output::write_problems(out, &problems, id.as_str())?;
            }
        }
    }
    Ok(())
}

/// The share of graded answers that are correct, per method, over the results stored so far;
/// each stored result is read once.
#[derive(Default)]
struct AccuracySoFar {
    /// Completed jobs already read.
    seen: HashSet<JobId>,
    /// Per method: (correct, graded).
    by_method: BTreeMap<String, (u64, u64)>,
    /// Whether the jobs are graded, once the first stored results have said.
    graded: Option<bool>,
}

impl AccuracySoFar {
    /// Reads the results stored since the last call; the text to show ("power 0.458 (183 of
    /// 400 graded), ..."), `None` when the jobs are not graded (or none is stored yet).
    async fn refresh(&mut self, target: &Target<'_>) -> Result<Option<String>> {
        let Some(store) = target.store else {
            return Ok(None);
        };
        if self.graded == Some(false) {
            return Ok(None);
        }
        let statuses = match target.watched {
            Watched::Job(_) => return Ok(None),
            Watched::Batch(id) => store.statuses_by_batch(*id).await?,
            Watched::Correlation(id) => store.statuses_by_correlation(id).await?,
        };
        let new: Vec<JobId> = statuses
            .into_iter()
            .filter(|(id, status)| *status == JobStatus::Completed && !self.seen.contains(id))
            .map(|(id, _)| id)
            .collect();
        for chunk in new.chunks(500) {
            for r in store.jobs_in(chunk).await? {
                self.seen.insert(r.job_id);
                if r.grading.is_some() {
                    self.graded = Some(true);
                }
                if let Some(grade) = &r.grade {
                    let entry = self.by_method.entry(r.method.to_string()).or_default();
                    entry.0 += u64::from(grade.correct);
                    entry.1 += 1;
                }
            }
            // Jobs without grading: no accuracy, and no more results read for it.
            if self.graded.is_none() && !self.seen.is_empty() {
                self.graded = Some(false);
                return Ok(None);
            }
        }
        Ok(self.text())
    }

    fn text(&self) -> Option<String> {
        if self.graded != Some(true) || self.by_method.is_empty() {
            return None;
        }
        let methods: Vec<String> = self
            .by_method
            .iter()
            .map(|(m, (correct, graded))| {
                format!(
                    "{m} {:.3} ({} of {} graded)",
                    *correct as f64 / *graded as f64,
                    thousands(*correct),
                    thousands(*graded)
                )
            })
            .collect();
        Some(methods.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use powerfleet_queue::Tally;

    fn poll_of(snap: &Snapshot, phase: Phase, unmoved_for: Duration) -> String {
        let hints = Hints {
            id: "B".into(),
            database: Some("sqlite://r.db".into()),
        };
        progress_line(
            &Poll {
                snapshot: snap,
                phase,
                unmoved_for,
            },
            Some("power 0.500 (1 of 2 graded)"),
            &hints,
        )
    }

    #[test]
    fn a_progress_line_says_what_it_waits_for_per_method_with_accuracy() {
        let snap = Snapshot {
            tally: Tally {
                total: 5000,
                finished: 3026,
                by_method: BTreeMap::from([
                    ("power".to_string(), (1026, 2500)),
                    ("standard".to_string(), (2000, 2500)),
                ]),
                ..Tally::default()
            },
            ..Snapshot::default()
        };
        let line = poll_of(&snap, Phase::Jobs, Duration::ZERO);
        assert_eq!(
            line,
            "waiting for 1,974 of 5,000 jobs to finish; power 1,026/2,500 standard 2,000/2,500; accuracy so far power 0.500 (1 of 2 graded)"
        );
        let line = poll_of(&snap, Phase::Jobs, Duration::from_secs(125));
        assert!(
            line.ends_with(
                "no job finished for 2m05s: are workers running on this namespace, serving the jobs' model? (powerfleet status B)"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_stalled_store_names_the_collector_and_the_database() {
        let snap = Snapshot {
            tally: Tally {
                total: 5000,
                finished: 5000,
                ..Tally::default()
            },
            stored: 3026,
            summary: None,
            unserved: Vec::new(),
        };
        let line = poll_of(&snap, Phase::Storing, Duration::from_secs(61));
        assert!(
            line.starts_with("waiting for the collector to store 1,974 of 5,000 results"),
            "{line}"
        );
        assert!(
            line.ends_with(
                "no result stored for 1m01s: is a collector running on this namespace, writing to sqlite://r.db?"
            ),
            "{line}"
        );
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(clock(Duration::from_secs(9)), "9s");
        assert_eq!(clock(Duration::from_secs(185)), "3m05s");
        assert_eq!(clock(Duration::from_secs(7620)), "2h07m");
    }
}
