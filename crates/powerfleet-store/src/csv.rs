//! CSV export of job results: one header row, one row per result, RFC 4180 quoting, and text that
//! came from outside escaped against formula injection ([`powerfleet_jobs::csv::text_cell`]).

use std::io::{self, Write};

use powerfleet_jobs::csv::concat_columns;
use powerfleet_jobs::{JobResult, ReferenceAnswer};

use crate::record::{RUN_COLUMNS, SAMPLE_COLUMNS};

/// The header row of [`write_csv`], in column order.
pub const CSV_COLUMNS: [&str; 36] = concat_columns(&[
    &["job_id", "correlation_id", "batch_id"],
    &SAMPLE_COLUMNS,
    &[
        "final_len",
        "proposals",
        "acceptances",
        "acceptance_rate",
        "tokens_generated",
        "model_calls",
    ],
    &RUN_COLUMNS,
    &[
        "correct",
        "extracted",
        "reference",
        "grade_error",
        "label",
        "version",
        "n_mcmc",
        "block_size",
        "max_new_tokens",
        "config",
    ],
]);

/// Writes `results` as CSV: a header row ([`CSV_COLUMNS`]), then one row per result, lines ended
/// by `\n`. Fields holding a comma, a double quote, CR or LF are quoted, with quotes doubled
/// (RFC 4180); text fields (correlation and problem ids, model, text, error, and a graded run's
/// extracted answer, reference and grade error) that start with `=`, `+`, `-`, `@`, a tab or CR
/// get a `'` in front, inside quotes, so a spreadsheet shows them as text instead of running
/// them as formulas. Tokens are space-separated ids; absent values are empty fields; floats are
/// written in the shortest form that reads back exactly. A graded run's rows carry the verdict
/// (`correct`, `extracted`), the answer key (`reference`, see [`reference_cell`]) and why a
/// completion could not be graded (`grade_error`); these are empty for ungraded rows.
/// `config` is the result's whole validated configuration as JSON; `n_mcmc`, `block_size` and
/// `max_new_tokens` repeat its key settings; `label` is text from outside, guarded like the
/// other text fields.
pub fn write_csv(results: &[JobResult], out: &mut impl Write) -> io::Result<()> {
    write_row(out, CSV_COLUMNS.iter().map(|c| Cell::Plain(c.to_string())))?;
    for r in results {
        let opt = |v: Option<String>| v.unwrap_or_default();
        let text = |v: Option<&str>| Cell::Text(v.unwrap_or_default().to_string());
        let tokens = r
            .tokens
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let fields = [
            Cell::Plain(r.job_id.to_string()),
            text(Some(r.correlation_id.as_str())),
            Cell::Plain(opt(r.batch_id.map(|b| b.to_string()))),
            text(r.problem_id.as_deref()),
            text(Some(&r.model)),
            Cell::Plain(r.method.as_str().to_string()),
            Cell::Plain(r.seed.to_string()),
            Cell::Plain(r.stream.to_string()),
            Cell::Plain(r.status.as_str().to_string()),
            Cell::Plain(tokens),
            text(r.text.as_deref()),
            Cell::Plain(opt(r.log_p.map(|v| v.to_string()))),
            Cell::Plain(r.ends_with_eos.to_string()),
            Cell::Plain(r.tokens.len().to_string()),
            Cell::Plain(r.stats.proposals.to_string()),
            Cell::Plain(r.stats.acceptances.to_string()),
            Cell::Plain(opt(r.stats.acceptance_rate().map(|v| v.to_string()))),
            Cell::Plain(r.stats.tokens_generated.to_string()),
            Cell::Plain(r.stats.model_calls.to_string()),
            Cell::Plain(opt(r.cost_multiplier().map(|v| v.to_string()))),
            Cell::Plain(r.attempts.to_string()),
            text(r.error.as_deref()),
            Cell::Plain(r.submitted_at_ms.to_string()),
            Cell::Plain(opt(r.started_at_ms.map(|v| v.to_string()))),
            Cell::Plain(r.finished_at_ms.to_string()),
            Cell::Plain(r.latency_ms().to_string()),
            Cell::Plain(opt(r.grade.as_ref().map(|g| g.correct.to_string()))),
            text(r.grade.as_ref().and_then(|g| g.extracted.as_deref())),
            Cell::Text(opt(r
                .grading
                .as_ref()
                .and_then(|g| reference_cell(&g.reference)))),
            text(r.grade_error.as_deref()),
            text(r.label.as_ref().map(|l| l.as_str())),
            Cell::Plain(opt(r.version.clone())),
            Cell::Plain(opt(r.config.as_ref().map(|c| c.n_mcmc.to_string()))),
            Cell::Plain(opt(r.config.as_ref().map(|c| c.block_size.to_string()))),
            Cell::Plain(opt(r.config.as_ref().map(|c| c.max_new_tokens.to_string()))),
            Cell::Plain(opt(r.config.as_ref().map(|c| {
                serde_json::to_string(c).expect("a configuration serializes")
            }))),
        ];
        write_row(out, fields.into_iter())?;
    }
    Ok(())
}

/// A field: text from outside, or a value powerfleet wrote.
enum Cell {
    Text(String),
    Plain(String),
}

/// The answer key of a graded job as a cell: a free-form answer as written; for multiple
/// choice, the letter of the right option as the job showed it (the letter a correct
/// `extracted` holds); none for a programming problem, whose key is its tests.
fn reference_cell(reference: &ReferenceAnswer) -> Option<String> {
    match reference {
        ReferenceAnswer::Text(answer) => Some(answer.clone()),
        ReferenceAnswer::Choice {
            correct,
            permutation,
            ..
        } => permutation
            .iter()
            .position(|original| original == correct)
            .and_then(|shown| u8::try_from(shown).ok())
            .filter(|shown| *shown < 26)
            .map(|shown| char::from(b'A' + shown).to_string()),
        ReferenceAnswer::Code { .. } => None,
    }
}

fn write_row(out: &mut impl Write, fields: impl Iterator<Item = Cell>) -> io::Result<()> {
    let line = fields
        .map(|f| match f {
            Cell::Text(t) => powerfleet_jobs::csv::text_cell(&t),
            Cell::Plain(p) => powerfleet_jobs::csv::plain_cell(&p),
        })
        .collect::<Vec<_>>()
        .join(",");
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}
