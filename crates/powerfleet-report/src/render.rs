//! A report as a terminal table, CSV, JSONL or Markdown.

use std::io::{self, Write};

use serde_json::json;

use crate::report::{MethodReport, Report};

/// Output formats of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One row per method, then one per problem and method; `pass@k` columns up to the largest k.
    Csv,
    /// One JSON object per line: `{"row": "batch" | "method" | "problem", ...}`.
    Jsonl,
    /// Markdown tables.
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "jsonl" => Ok(Format::Jsonl),
            "markdown" | "md" => Ok(Format::Markdown),
            _ => Err(format!(
                "format must be one of table, csv, jsonl, markdown, got {s:?}"
            )),
        }
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

fn pct(v: Option<f64>) -> String {
    opt(v, |x| format!("{:.1}", 100.0 * x))
}

/// The method table's header and cells, shared by the table and Markdown formats.
fn method_cells(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let max_k = report
        .methods
        .iter()
        .map(|m| m.pass_at_k.len())
        .max()
        .unwrap_or(0);
    let mut header: Vec<String> = ["method", "jobs", "done", "acc %", "± se"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if max_k > 1 {
        header.push(format!("pass@{max_k} %"));
    }
    header.extend(
        [
            "maj %", "accept", "cost x", "tokens", "USD", "calls", "p50 ms", "p95 ms", "wall s",
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
                m.method.clone(),
                m.jobs.to_string(),
                m.completed.to_string(),
                pct(m.accuracy),
                pct(m.accuracy_stderr),
            ];
            if max_k > 1 {
                row.push(pct(m.pass_at_k.get(max_k - 1).copied()));
            }
            row.extend([
                pct(m.majority_accuracy),
                opt(m.acceptance_rate, |a| format!("{a:.3}")),
                opt(m.cost_multiplier, |c| format!("{c:.1}")),
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

/// The per-problem table: correct over graded samples per method, and who solved it.
fn problem_cells(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["problem".to_string(), "reference".to_string()];
    header.extend(report.methods.iter().map(|m| m.method.clone()));
    header.push("solved by".to_string());
    let rows = report
        .per_problem
        .iter()
        .map(|p| {
            let mut row = vec![
                p.problem_id.clone(),
                p.reference.clone().unwrap_or_default(),
            ];
            for m in &report.methods {
                row.push(
                    p.methods
                        .iter()
                        .find(|pm| pm.method == m.method)
                        .map_or("-".to_string(), |pm| {
                            format!("{}/{}", pm.correct, pm.graded)
                        }),
                );
            }
            row.push(if p.solved_by.is_empty() {
                "-".to_string()
            } else {
                p.solved_by.join(" ")
            });
            row
        })
        .collect();
    (header, rows)
}

/// A cell on one line: line breaks (a multiple-choice option may hold some) become spaces.
fn one_line(cell: &str) -> String {
    cell.replace(['\r', '\n'], " ")
}

/// Writes a header and rows as a table: aligned columns or Markdown.
type TableWriter = fn(&mut dyn Write, &[String], &[Vec<String>]) -> io::Result<()>;

fn aligned(out: &mut dyn Write, header: &[String], rows: &[Vec<String>]) -> io::Result<()> {
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

fn markdown(out: &mut dyn Write, header: &[String], rows: &[Vec<String>]) -> io::Result<()> {
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

fn headline(report: &Report) -> String {
    format!(
        "{}: {} jobs ({} completed, {} not), {} graded, {} problems, models {}; wall {}; {}",
        report.id,
        report.jobs,
        report.completed,
        report.not_completed,
        report.graded,
        report.problems,
        report.models.join(", "),
        opt(report.wall_time_s, |w| format!("{w:.1} s")),
        opt(report.cost_usd, |c| format!("USD {c:.4}")),
    )
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| format!("{x}"))
}

fn int(v: Option<u64>) -> String {
    v.map_or_else(String::new, |x| x.to_string())
}

/// Writes `report` in `format`.
pub fn write(report: &Report, format: Format, out: &mut dyn Write) -> io::Result<()> {
    match format {
        Format::Table | Format::Markdown => {
            let (headline, table): (String, TableWriter) = if format == Format::Table {
                (headline(report), aligned)
            } else {
                (format!("**{}**", headline(report)), markdown)
            };
            writeln!(out, "{headline}")?;
            writeln!(out)?;
            let (h, r) = method_cells(report);
            table(out, &h, &r)?;
            if report.per_problem.iter().any(|p| !p.methods.is_empty()) {
                writeln!(out)?;
                let (h, r) = problem_cells(report);
                table(out, &h, &r)?;
            }
        }
        Format::Jsonl => {
            let mut batch = serde_json::to_value(report)?;
            if let Some(o) = batch.as_object_mut() {
                o.remove("methods");
                o.remove("per_problem");
                o.insert("row".into(), json!("batch"));
            }
            writeln!(out, "{batch}")?;
            for m in &report.methods {
                let mut v = serde_json::to_value(m)?;
                v["row"] = json!("method");
                writeln!(out, "{v}")?;
            }
            for p in &report.per_problem {
                let mut v = serde_json::to_value(p)?;
                v["row"] = json!("problem");
                writeln!(out, "{v}")?;
            }
        }
        Format::Csv => {
            let max_k = report
                .methods
                .iter()
                .map(|m| m.pass_at_k.len())
                .max()
                .unwrap_or(0);
            let mut header: Vec<String> = [
                "row",
                "method",
                "problem_id",
                "reference",
                "jobs",
                "completed",
                "graded",
                "correct",
                "samples",
                "accuracy",
                "accuracy_stderr",
                "majority_accuracy",
                "majority_answer",
                "acceptance_rate",
                "tokens_generated",
                "final_tokens",
                "cost_multiplier",
                "cost_usd",
                "model_calls",
                "latency_p50_ms",
                "latency_p95_ms",
                "wall_time_s",
                "jobs_per_s",
                "tokens_per_s",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            header.extend((1..=max_k).map(|k| format!("pass_at_{k}")));
            writeln!(out, "{}", header.join(","))?;
            for m in &report.methods {
                let mut row = vec![
                    "method".to_string(),
                    csv_field(&m.method),
                    String::new(),
                    String::new(),
                    m.jobs.to_string(),
                    m.completed.to_string(),
                    m.graded.to_string(),
                    String::new(),
                    m.samples.to_string(),
                    num(m.accuracy),
                    num(m.accuracy_stderr),
                    num(m.majority_accuracy),
                    String::new(),
                    num(m.acceptance_rate),
                    m.tokens_generated.to_string(),
                    m.final_tokens.to_string(),
                    num(m.cost_multiplier),
                    num(m.cost_usd),
                    m.model_calls.to_string(),
                    int(m.latency_p50_ms),
                    int(m.latency_p95_ms),
                    num(m.wall_time_s),
                    num(m.jobs_per_s),
                    num(m.tokens_per_s),
                ];
                row.extend((0..max_k).map(|k| num(m.pass_at_k.get(k).copied())));
                writeln!(out, "{}", row.join(","))?;
            }
            for p in &report.per_problem {
                for pm in &p.methods {
                    let mut row = vec![
                        "problem".to_string(),
                        csv_field(&pm.method),
                        csv_field(&p.problem_id),
                        csv_field(p.reference.as_deref().unwrap_or("")),
                        String::new(),
                        String::new(),
                        pm.graded.to_string(),
                        pm.correct.to_string(),
                        String::new(),
                        num((pm.graded > 0).then(|| pm.correct as f64 / pm.graded as f64)),
                        String::new(),
                        u8::from(pm.majority_correct).to_string(),
                        csv_field(pm.majority_answer.as_deref().unwrap_or("")),
                    ];
                    row.resize(header.len(), String::new());
                    writeln!(out, "{}", row.join(","))?;
                }
            }
        }
    }
    Ok(())
}
