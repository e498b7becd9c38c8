//! A report as a terminal table, CSV, JSONL or Markdown; [`compare`] writes a comparison of
//! runs in the same formats.

mod compare;

pub use compare::write_comparison;

use std::io::{self, Write};

use powerfleet_jobs::csv::concat_columns;
use serde_json::json;

use crate::report::{MethodReport, ProblemMethod, ProblemReport, Report, definition};

/// Output formats of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// Aligned columns for a terminal.
    Table,
    /// One row per method, then one per problem and method; `pass@k` columns up to the largest k.
    /// The definitions are in the JSON formats and the tables' legends, not here.
    Csv,
    /// One JSON object per line: `{"row": "batch" | "method" | "problem", ...}`.
    Jsonl,
    /// Markdown tables.
    Markdown,
}

/// A report format name that is not one of table, csv, jsonl, markdown (or md).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("format must be one of table, csv, jsonl, markdown, got {got:?}")]
pub struct UnknownReportFormat {
    /// What was given.
    pub got: String,
}

impl std::str::FromStr for ReportFormat {
    type Err = UnknownReportFormat;
    fn from_str(s: &str) -> Result<Self, UnknownReportFormat> {
        match s {
            "table" => Ok(ReportFormat::Table),
            "csv" => Ok(ReportFormat::Csv),
            "jsonl" => Ok(ReportFormat::Jsonl),
            "markdown" | "md" => Ok(ReportFormat::Markdown),
            _ => Err(UnknownReportFormat { got: s.to_string() }),
        }
    }
}

pub(super) fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

pub(super) fn pct(v: Option<f64>) -> String {
    opt(v, |x| format!("{:.1}", 100.0 * x))
}

/// The largest k of the `pass_at_k` lists (0 without any).
pub(super) fn max_k<'a>(pass_at_k: impl Iterator<Item = &'a [f64]>) -> usize {
    pass_at_k.map(<[f64]>::len).max().unwrap_or(0)
}

/// The method table's header and cells, shared by the table and Markdown formats.
fn method_cells(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let max_k = max_k(report.methods.iter().map(|m| &m.pass_at_k[..]));
    let mut header: Vec<String> = [
        "method",
        "jobs",
        "done",
        "graded",
        "missing",
        "acc %",
        "± se",
        "acc graded %",
        "± se",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if max_k > 1 {
        header.push(format!("pass@{max_k} %"));
    }
    header.extend(
        [
            "maj %",
            "accept",
            "cost x",
            "trace ch",
            "answer ch",
            "tokens",
            "USD",
            "calls",
            "p50 ms",
            "p95 ms",
            "wall s",
            "tok/s",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let rows = report
        .methods
        .iter()
        .map(|m: &MethodReport| {
            let mut row = vec![
                m.row.clone(),
                m.jobs.to_string(),
                m.completed.to_string(),
                m.graded.to_string(),
                m.missing.to_string(),
                pct(m.accuracy),
                pct(m.accuracy_stderr),
                pct(m.accuracy_graded),
                pct(m.accuracy_graded_stderr),
            ];
            if max_k > 1 {
                row.push(pct(m.pass_at_k.get(max_k - 1).copied()));
            }
            row.extend([
                pct(m.majority_accuracy),
                match (m.acceptance_rate, m.mean_ess) {
                    (None, Some(ess)) => format!("ESS {ess:.2}"),
                    (rate, _) => opt(rate, |a| format!("{a:.3}")),
                },
                opt(m.cost_multiplier, |c| format!("{c:.1}")),
                opt(m.trace_chars, |c| format!("{c:.0}")),
                opt(m.answer_chars, |c| format!("{c:.0}")),
                m.tokens_generated.to_string(),
                opt(m.cost_usd, |c| format!("{c:.4}")),
                m.model_calls.to_string(),
                opt(m.latency_p50_ms, |v| v.to_string()),
                opt(m.latency_p95_ms, |v| v.to_string()),
                opt(m.wall_time_s, |v| format!("{v:.1}")),
                opt(m.tokens_per_s, |v| format!("{v:.0}")),
            ]);
            row
        })
        .collect();
    (header, rows)
}

/// The marker of a problem cell with missing samples: `2/4 !1` is 2 correct of 4 scheduled
/// samples, 1 of them missing.
const MISSING_MARK: char = '!';

/// The per-problem table: correct over scheduled samples per method, marked where samples are
/// missing; which methods have missing samples, and who solved it.
fn problem_cells(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["problem".to_string(), "reference".to_string()];
    header.extend(report.methods.iter().map(|m| m.row.clone()));
    header.push("missing in".to_string());
    header.push("solved by".to_string());
    let names = |methods: &[String]| {
        if methods.is_empty() {
            "-".to_string()
        } else {
            methods.join(" ")
        }
    };
    let rows = report
        .per_problem
        .iter()
        .map(|p| {
            let mut row = vec![
                p.problem_id.clone(),
                p.reference.clone().unwrap_or_default(),
            ];
            for m in &report.methods {
                row.push(p.methods.iter().find(|pm| pm.method == m.row).map_or(
                    "-".to_string(),
                    |pm| {
                        let cell = format!("{}/{}", pm.correct, pm.scheduled);
                        if pm.missing > 0 {
                            format!("{cell} {MISSING_MARK}{}", pm.missing)
                        } else {
                            cell
                        }
                    },
                ));
            }
            row.push(names(&p.methods_with_missing));
            row.push(names(&p.solved_by));
            row
        })
        .collect();
    (header, rows)
}

/// The legend of the method table: each statistic's column and definition.
fn method_legend(report: &Report) -> Vec<String> {
    let max_k = max_k(report.methods.iter().map(|m| &m.pass_at_k[..]));
    let mut entries = vec![
        ("acc %".to_string(), "accuracy"),
        ("acc graded %".to_string(), "accuracy_graded"),
        ("missing".to_string(), "missing"),
    ];
    if max_k > 1 {
        entries.push((format!("pass@{max_k} %"), "pass_at_k"));
    }
    entries.extend([
        ("maj %".to_string(), "majority_accuracy"),
        ("accept".to_string(), "acceptance_rate"),
        ("ESS".to_string(), "mean_ess"),
    ]);
    entries
        .into_iter()
        .map(|(column, field)| format!("{column}: {}", definition(field)))
        .collect()
}

/// The legend of the problem table.
fn problem_legend() -> Vec<String> {
    vec![
        format!(
            "c/n {MISSING_MARK}m: c correct of n scheduled samples, m of them missing (counted as wrong)"
        ),
        "missing in: the methods with missing samples of the problem".to_string(),
    ]
}

/// A cell on one line: line breaks (a multiple-choice option may hold some) become spaces.
pub(super) fn one_line(cell: &str) -> String {
    cell.replace(['\r', '\n'], " ")
}

/// Writes a header and rows as a table: aligned columns or Markdown.
pub(super) type TableWriter = fn(&mut dyn Write, &[String], &[Vec<String>]) -> io::Result<()>;

pub(super) fn aligned(
    out: &mut dyn Write,
    header: &[String],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| one_line(c)).collect())
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(header))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

pub(super) fn markdown(
    out: &mut dyn Write,
    header: &[String],
    rows: &[Vec<String>],
) -> io::Result<()> {
    let escape = |c: &String| one_line(c).replace('|', "\\|");
    writeln!(
        out,
        "| {} |",
        header.iter().map(escape).collect::<Vec<_>>().join(" | ")
    )?;
    writeln!(
        out,
        "|{}",
        header
            .iter()
            .enumerate()
            .map(|(i, _)| if i == 0 { "---|" } else { "---:|" })
            .collect::<String>()
    )?;
    for r in rows {
        writeln!(
            out,
            "| {} |",
            r.iter().map(escape).collect::<Vec<_>>().join(" | ")
        )?;
    }
    Ok(())
}

pub(super) fn headline(report: &Report) -> String {
    format!(
        "{}: {} jobs ({} completed, {} not), {} graded, {} missing, {} problems ({} with missing samples), models {}; wall {}; {}",
        report.id,
        report.jobs,
        report.completed,
        report.not_completed,
        report.graded,
        report.missing,
        report.problems,
        report.problems_with_missing,
        report.models.join(", "),
        opt(report.wall_time_s, |w| format!("{w:.1} s")),
        opt(report.cost_usd, |c| format!("USD {c:.4}")),
    )
}

/// A text cell: RFC 4180 quoting, and formulas (`=HYPERLINK(...)` as a problem id) shown as text
/// ([`powerfleet_jobs::csv::text_cell`]).
pub(super) fn csv_field(s: &str) -> String {
    powerfleet_jobs::csv::text_cell(s)
}

pub(super) fn num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x}"))
}

fn int(v: Option<u64>) -> String {
    v.map_or_else(String::new, |x| x.to_string())
}

/// A method's tallies, CSV columns of a report and of a comparison: jobs, samples by outcome,
/// problems.
const TALLY_COLUMNS: [&str; 7] = [
    "jobs",
    "completed",
    "scheduled",
    "graded",
    "missing",
    "correct",
    "problems",
];

/// The CSV columns before the `pass_at_k` ones. A method row fills the method's columns, a problem
/// row (one per problem and method) the problem's; the other cells are empty.
const CSV_COLUMNS: [&str; 36] = concat_columns(&[
    &["row", "method", "problem_id", "reference"],
    &TALLY_COLUMNS,
    &[
        "problems_with_missing",
        "samples",
        "accuracy",
        "accuracy_stderr",
        "accuracy_graded",
        "accuracy_graded_stderr",
        "majority_accuracy",
        "majority_answer",
        "proposals",
        "acceptances",
        "acceptance_rate",
        "mean_job_acceptance_rate",
        "mean_ess",
        "tokens_generated",
        "final_tokens",
        "cost_multiplier",
        "trace_chars",
        "answer_chars",
        "cost_usd",
        "model_calls",
        "latency_p50_ms",
        "latency_p95_ms",
        "wall_time_s",
        "jobs_per_s",
        "tokens_per_s",
    ],
]);

/// A method row's cell in `column`.
fn method_field(m: &MethodReport, column: &str) -> String {
    match column {
        "row" => "method".to_string(),
        "method" => csv_field(&m.row),
        "jobs" => m.jobs.to_string(),
        "completed" => m.completed.to_string(),
        "scheduled" => m.scheduled.to_string(),
        "graded" => m.graded.to_string(),
        "missing" => m.missing.to_string(),
        "problems" => m.problems.to_string(),
        "problems_with_missing" => m.problems_with_missing.to_string(),
        "samples" => m.samples.to_string(),
        "accuracy" => num(m.accuracy),
        "accuracy_stderr" => num(m.accuracy_stderr),
        "accuracy_graded" => num(m.accuracy_graded),
        "accuracy_graded_stderr" => num(m.accuracy_graded_stderr),
        "majority_accuracy" => num(m.majority_accuracy),
        "proposals" => m.proposals.to_string(),
        "acceptances" => m.acceptances.to_string(),
        "acceptance_rate" => num(m.acceptance_rate),
        "mean_job_acceptance_rate" => num(m.mean_job_acceptance_rate),
        "mean_ess" => num(m.mean_ess),
        "tokens_generated" => m.tokens_generated.to_string(),
        "final_tokens" => m.final_tokens.to_string(),
        "cost_multiplier" => num(m.cost_multiplier),
        "trace_chars" => num(m.trace_chars),
        "answer_chars" => num(m.answer_chars),
        "cost_usd" => num(m.cost_usd),
        "model_calls" => m.model_calls.to_string(),
        "latency_p50_ms" => int(m.latency_p50_ms),
        "latency_p95_ms" => int(m.latency_p95_ms),
        "wall_time_s" => num(m.wall_time_s),
        "jobs_per_s" => num(m.jobs_per_s),
        "tokens_per_s" => num(m.tokens_per_s),
        _ => String::new(),
    }
}

/// A problem row's cell in `column`: the problem under one method. Its accuracy is correct over
/// scheduled samples, its majority accuracy 1 or 0.
fn problem_field(p: &ProblemReport, pm: &ProblemMethod, column: &str) -> String {
    let share = |of: u64| num((of > 0).then(|| pm.correct as f64 / of as f64));
    match column {
        "row" => "problem".to_string(),
        "method" => csv_field(&pm.method),
        "problem_id" => csv_field(&p.problem_id),
        "reference" => csv_field(p.reference.as_deref().unwrap_or("")),
        "scheduled" => pm.scheduled.to_string(),
        "graded" => pm.graded.to_string(),
        "missing" => pm.missing.to_string(),
        "correct" => pm.correct.to_string(),
        "accuracy" => share(pm.scheduled),
        "accuracy_graded" => share(pm.graded),
        "majority_accuracy" => u8::from(pm.majority_correct).to_string(),
        "majority_answer" => csv_field(pm.majority_answer.as_deref().unwrap_or("")),
        _ => String::new(),
    }
}

/// One JSONL line: `value` with its `row` tag.
pub(super) fn write_tagged(
    out: &mut dyn Write,
    value: &impl serde::Serialize,
    row: &str,
) -> io::Result<()> {
    let mut v = serde_json::to_value(value)?;
    v["row"] = json!(row);
    writeln!(out, "{v}")
}

/// A CSV header: `columns`, then `pass_at_1` to `pass_at_{max_k}`; returns how many columns it
/// names.
pub(super) fn write_csv_header(
    out: &mut dyn Write,
    columns: &[&str],
    max_k: usize,
) -> io::Result<usize> {
    let mut header: Vec<String> = columns.iter().map(|s| s.to_string()).collect();
    header.extend((1..=max_k).map(|k| format!("pass_at_{k}")));
    writeln!(out, "{}", header.join(","))?;
    Ok(header.len())
}

/// A JSONL line of `report` itself, tagged `row`: everything but its method and problem rows,
/// which have lines of their own.
pub(super) fn summary_line(report: &Report, row: &str) -> serde_json::Result<serde_json::Value> {
    let mut v = serde_json::to_value(report)?;
    if let Some(o) = v.as_object_mut() {
        o.remove("methods");
        o.remove("per_problem");
        o.insert("row".into(), json!(row));
    }
    Ok(v)
}

/// Writes `report` in `format`.
pub fn write(report: &Report, format: ReportFormat, out: &mut dyn Write) -> io::Result<()> {
    match format {
        ReportFormat::Table | ReportFormat::Markdown => {
            let (headline, table): (String, TableWriter) = if format == ReportFormat::Table {
                (headline(report), aligned)
            } else {
                (format!("**{}**", headline(report)), markdown)
            };
            let legend = |out: &mut dyn Write, lines: Vec<String>| -> io::Result<()> {
                writeln!(out)?;
                for line in lines {
                    let line = one_line(&line);
                    if format == ReportFormat::Markdown {
                        writeln!(out, "- {}", line.replace('|', "\\|"))?;
                    } else {
                        writeln!(out, "{line}")?;
                    }
                }
                Ok(())
            };
            if let Some(note) = report.partial_note() {
                writeln!(out, "{note}")?;
            }
            writeln!(out, "{headline}")?;
            writeln!(out)?;
            let (h, r) = method_cells(report);
            table(out, &h, &r)?;
            legend(out, method_legend(report))?;
            if report.per_problem.iter().any(|p| !p.methods.is_empty()) {
                writeln!(out)?;
                let (h, r) = problem_cells(report);
                table(out, &h, &r)?;
                legend(out, problem_legend())?;
            }
        }
        ReportFormat::Jsonl => {
            writeln!(out, "{}", summary_line(report, "batch")?)?;
            for m in &report.methods {
                write_tagged(out, m, "method")?;
            }
            for p in &report.per_problem {
                write_tagged(out, p, "problem")?;
            }
        }
        ReportFormat::Csv => {
            let max_k = max_k(report.methods.iter().map(|m| &m.pass_at_k[..]));
            let width = write_csv_header(out, &CSV_COLUMNS, max_k)?;
            for m in &report.methods {
                let mut row: Vec<String> = CSV_COLUMNS
                    .iter()
                    .map(|column| method_field(m, column))
                    .collect();
                row.extend((0..max_k).map(|k| num(m.pass_at_k.get(k).copied())));
                writeln!(out, "{}", row.join(","))?;
            }
            for p in &report.per_problem {
                for pm in &p.methods {
                    let mut row: Vec<String> = CSV_COLUMNS
                        .iter()
                        .map(|column| problem_field(p, pm, column))
                        .collect();
                    row.resize(width, String::new());
                    writeln!(out, "{}", row.join(","))?;
                }
            }
        }
    }
    Ok(())
}
