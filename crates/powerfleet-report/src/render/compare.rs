//! A comparison of runs as a terminal table, CSV, JSONL or Markdown: one row per run and
//! method-and-configuration row, with accuracy and its interval, pass@k, cost, and the paired
//! difference against the baseline.

use std::io::{self, Write};

use powerfleet_jobs::csv::concat_columns;
use serde_json::json;

use super::{
    ReportFormat, TALLY_COLUMNS, TableWriter, aligned, csv_field, headline, markdown, method_field,
    num, one_line, opt,
};
use crate::compare::{ComparedRow, Comparison, comparison_definition};
use crate::interval::Interval;

/// A fraction as a percentage with one decimal.
fn pct(v: Option<f64>) -> String {
    opt(v, |x| format!("{:.1}", 100.0 * x))
}

/// A difference in percentage points, signed.
fn pp(v: Option<f64>) -> String {
    opt(v, |x| format!("{:+.1}", 100.0 * x))
}

/// An interval of fractions in percent, `[lo, hi]`, signed for differences.
fn interval(v: Option<Interval>, signed: bool) -> String {
    opt(v, |i| {
        if signed {
            format!("[{:+.1}, {:+.1}]", 100.0 * i.lo, 100.0 * i.hi)
        } else {
            format!("[{:.1}, {:.1}]", 100.0 * i.lo, 100.0 * i.hi)
        }
    })
}

/// The comparison table's header and cells, shared by the table and Markdown formats.
fn cells(c: &Comparison) -> (Vec<String>, Vec<Vec<String>>) {
    let pass = c
        .pass_k
        .map_or("pass@k %".to_string(), |k| format!("pass@{k} %"));
    let header = [
        "run",
        "method",
        "graded",
        "missing",
        "acc %",
        "acc 95% CI",
        &pass,
        "cost x",
        "tokens/problem",
        "USD",
        "paired with",
        "problems",
        "Δ acc pp",
        "Δ 95% CI",
    ]
    .map(str::to_string)
    .to_vec();
    let rows = c
        .rows
        .iter()
        .map(|r: &ComparedRow| {
            let m = &r.row;
            let mut row = vec![
                r.run.clone(),
                m.row.clone(),
                m.graded.to_string(),
                m.missing.to_string(),
                pct(r.sample_accuracy),
                interval(r.sample_accuracy_ci95, false),
                pct(r.pass_at_common_k),
                opt(m.cost_multiplier, |x| format!("{x:.1}")),
                opt(r.tokens_per_problem, |x| format!("{x:.0}")),
                opt(m.cost_usd, |x| format!("{x:.4}")),
            ];
            match &r.paired {
                Some(p) => row.extend([
                    p.paired_with.clone(),
                    p.problems.to_string(),
                    pp(p.difference),
                    interval(p.difference_ci95, true),
                ]),
                None if r.run == c.baseline => {
                    row.extend(["(baseline)", "-", "-", "-"].map(str::to_string))
                }
                None => row.extend(["-", "-", "-", "-"].map(str::to_string)),
            }
            row
        })
        .collect();
    (header, rows)
}

/// The legend of the comparison table: each column's definition.
fn legend(c: &Comparison) -> Vec<String> {
    let pass = c
        .pass_k
        .map_or("pass@k %".to_string(), |k| format!("pass@{k} %"));
    [
        ("baseline".to_string(), "baseline"),
        ("acc %".to_string(), "sample_accuracy"),
        ("acc 95% CI".to_string(), "sample_accuracy_ci95"),
        (pass, "pass_at_k"),
        ("cost x".to_string(), "cost_multiplier"),
        ("tokens/problem".to_string(), "tokens_per_problem"),
        ("USD".to_string(), "cost_usd"),
        ("paired with".to_string(), "paired_with"),
        ("Δ acc pp".to_string(), "paired_difference"),
        ("Δ 95% CI".to_string(), "paired_difference_ci95"),
    ]
    .into_iter()
    .map(|(column, field)| format!("{column}: {}", comparison_definition(field)))
    .collect()
}

/// The first line: what is compared with what.
fn title(c: &Comparison) -> String {
    format!(
        "comparison of {} runs, each against the baseline {}",
        c.runs.len(),
        c.baseline
    )
}

/// A run's headline, led by its name where that is not its id.
fn run_line(name: &str, report: &crate::Report) -> String {
    if name == report.id {
        headline(report)
    } else {
        format!("{name} = {}", headline(report))
    }
}

/// The CSV columns before the `pass_at_k` ones.
const CSV_COLUMNS: [&str; 31] = concat_columns(&[
    &["run", "method"],
    &TALLY_COLUMNS,
    &[
        "samples",
        "sample_accuracy",
        "sample_accuracy_lo",
        "sample_accuracy_hi",
        "accuracy",
        "accuracy_stderr",
        "accuracy_graded",
        "accuracy_graded_stderr",
        "pass_k",
        "pass_at_common_k",
        "cost_multiplier",
        "tokens_generated",
        "tokens_per_problem",
        "cost_usd",
        "paired_with",
        "paired_problems",
        "difference",
        "difference_sd",
        "t",
        "difference_lo",
        "difference_hi",
        "baseline",
    ],
]);

/// A compared row's cell in `column`.
fn field(c: &Comparison, r: &ComparedRow, column: &str) -> String {
    let m = &r.row;
    let paired = r.paired.as_ref();
    match column {
        "run" => csv_field(&r.run),
        "correct" => r.correct.to_string(),
        "sample_accuracy" => num(r.sample_accuracy),
        "sample_accuracy_lo" => num(r.sample_accuracy_ci95.map(|i| i.lo)),
        "sample_accuracy_hi" => num(r.sample_accuracy_ci95.map(|i| i.hi)),
        "pass_k" => c.pass_k.map_or_else(String::new, |k| k.to_string()),
        "pass_at_common_k" => num(r.pass_at_common_k),
        "tokens_per_problem" => num(r.tokens_per_problem),
        "paired_with" => paired.map_or_else(String::new, |p| csv_field(&p.paired_with)),
        "paired_problems" => paired.map_or_else(String::new, |p| p.problems.to_string()),
        "difference" => num(paired.and_then(|p| p.difference)),
        "difference_sd" => num(paired.and_then(|p| p.difference_sd)),
        "t" => num(paired.and_then(|p| p.t)),
        "difference_lo" => num(paired.and_then(|p| p.difference_ci95).map(|i| i.lo)),
        "difference_hi" => num(paired.and_then(|p| p.difference_ci95).map(|i| i.hi)),
        "baseline" => u8::from(r.run == c.baseline).to_string(),
        // The method's own columns, as a report writes them.
        _ => method_field(m, column),
    }
}

/// Writes the comparison `c` in `format`. JSONL gives a `comparison` line (baseline, runs,
/// `pass_k`, definitions), a `run` line per run (its report's batch line, named), and a
/// `compared` line per row (the report's row with the comparison's numbers, per-problem
/// differences included).
pub fn write_comparison(
    c: &Comparison,
    format: ReportFormat,
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        ReportFormat::Table | ReportFormat::Markdown => {
            let md = format == ReportFormat::Markdown;
            let table: TableWriter = if md { markdown } else { aligned };
            let line = |out: &mut dyn Write, text: &str| -> io::Result<()> {
                let text = one_line(text);
                if md {
                    writeln!(out, "- {}", text.replace('|', "\\|"))
                } else {
                    writeln!(out, "{text}")
                }
            };
            if md {
                writeln!(out, "**{}**", title(c))?;
            } else {
                writeln!(out, "{}", title(c))?;
            }
            writeln!(out)?;
            for note in c.partial_notes() {
                line(out, &note)?;
            }
            for run in &c.runs {
                line(out, &run_line(&run.name, &run.report))?;
            }
            writeln!(out)?;
            let (h, r) = cells(c);
            table(out, &h, &r)?;
            writeln!(out)?;
            for l in legend(c) {
                line(out, &l)?;
            }
        }
        ReportFormat::Jsonl => {
            writeln!(
                out,
                "{}",
                json!({
                    "row": "comparison",
                    "baseline": c.baseline,
                    "runs": c.runs.iter().map(|r| &r.name).collect::<Vec<_>>(),
                    "pass_k": c.pass_k,
                    "definitions": c.definitions,
                })
            )?;
            for run in &c.runs {
                let mut v = super::summary_line(&run.report, "run")?;
                v["run"] = json!(run.name);
                writeln!(out, "{v}")?;
            }
            for r in &c.rows {
                super::write_tagged(out, r, "compared")?;
            }
        }
        ReportFormat::Csv => {
            let max_k = super::max_k(c.rows.iter().map(|r| &r.row.pass_at_k[..]));
            super::write_csv_header(out, &CSV_COLUMNS, max_k)?;
            for r in &c.rows {
                let mut row: Vec<String> = CSV_COLUMNS
                    .iter()
                    .map(|column| field(c, r, column))
                    .collect();
                row.extend((0..max_k).map(|k| num(r.row.pass_at_k.get(k).copied())));
                writeln!(out, "{}", row.join(","))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use powerfleet_sampler::Method;

    use super::*;
    use crate::compare::compare;
    use crate::report::{Prices, build};
    use crate::test_results::result;

    /// A 7 of 10 baseline and a 9 of 10 run on the same five problems, two seeds each.
    fn comparison() -> Comparison {
        let run = |correct: [u64; 5]| {
            let results: Vec<_> = correct
                .iter()
                .enumerate()
                .flat_map(|(i, &c)| {
                    (0..2).map(move |seed| {
                        let right = seed < c;
                        let problem = format!("p{}", i + 1);
                        result(
                            Method::Power,
                            &problem,
                            seed,
                            if right { "7" } else { "5" },
                            right,
                        )
                    })
                })
                .collect();
            build("batch-x", &results, &Prices::default())
        };
        compare(vec![
            ("alpha-4".to_string(), run([2, 2, 1, 1, 1])),
            ("alpha-2".to_string(), run([2, 2, 2, 2, 1])),
        ])
    }

    fn render(c: &Comparison, format: ReportFormat) -> String {
        let mut out = Vec::new();
        write_comparison(c, format, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_format_shows_the_comparison() {
        let c = comparison();
        // alpha-2 minus alpha-4 per problem: 0, 0, 0.5, 0.5, 0, as in the compare tests:
        // +20.0 pp, [-14.0, +54.0]. Accuracy 7/10 [39.7, 89.2] and 9/10: z²/n = 0.3841459,
        // centre (0.9 + 0.1920729) / 1.3841459 = 0.7889869, half 1.4160153 · sqrt(0.009 +
        // 0.0096036) = 0.1931369: [59.6, 98.2].
        for format in [ReportFormat::Table, ReportFormat::Markdown] {
            let text = render(&c, format);
            assert!(
                text.contains("comparison of 2 runs, each against the baseline alpha-4"),
                "{text}"
            );
            assert!(text.contains("alpha-4 = batch-x: 10 jobs"), "{text}");
            let row = |run: &str| {
                text.lines()
                    .find(|l| l.trim_start_matches("| ").starts_with(run) && !l.contains(" = "))
                    .unwrap_or_else(|| panic!("a row for {run}:\n{text}"))
                    .to_string()
            };
            let base = row("alpha-4 ");
            assert!(
                base.contains("70.0")
                    && base.contains("[39.7, 89.2]")
                    && base.contains("(baseline)"),
                "{base}"
            );
            let other = row("alpha-2 ");
            assert!(
                other.contains("90.0")
                    && other.contains("[59.6, 98.2]")
                    && other.contains("+20.0")
                    && other.contains("[-14.0, +54.0]"),
                "{other}"
            );
            assert!(text.contains("pass@2 %"), "{text}");
            for field in ["sample_accuracy_ci95", "paired_difference_ci95"] {
                let definition = comparison_definition(field).replace('|', "\\|");
                assert!(text.contains(&definition), "{field} in:\n{text}");
            }
        }

        let csv = render(&c, ReportFormat::Csv);
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let cell = |run: &str, column: &str| {
            let i = header.iter().position(|h| *h == column).unwrap();
            let row = csv
                .lines()
                .find(|l| l.starts_with(&format!("{run},")))
                .unwrap();
            row.split(',').nth(i).unwrap().to_string()
        };
        assert_eq!(cell("alpha-4", "sample_accuracy"), "0.7");
        assert_eq!(cell("alpha-4", "baseline"), "1");
        assert_eq!(cell("alpha-4", "difference"), "");
        assert_eq!(cell("alpha-2", "paired_problems"), "5");
        let lo: f64 = cell("alpha-2", "difference_lo").parse().unwrap();
        assert!((lo + 0.140_043_690_329_128).abs() < 1e-9, "{lo}");

        let jsonl = render(&c, ReportFormat::Jsonl);
        let rows: Vec<serde_json::Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows[0]["row"], "comparison");
        assert_eq!(rows[0]["baseline"], "alpha-4");
        assert_eq!(rows[0]["pass_k"], 2);
        assert_eq!(
            rows[0]["definitions"]["paired_difference_ci95"],
            comparison_definition("paired_difference_ci95")
        );
        assert_eq!(
            (&rows[1]["row"], &rows[1]["run"]),
            (&json!("run"), &json!("alpha-4"))
        );
        assert_eq!(rows[2]["jobs"], 10);
        let compared = &rows[4];
        assert_eq!(compared["row"], "compared");
        assert_eq!(
            (&compared["run"], &compared["method"]),
            (&json!("alpha-2"), &json!("power"))
        );
        assert_eq!(compared["correct"], 9);
        assert_eq!(compared["paired"]["problems"], 5);
        assert!((compared["paired"]["difference"].as_f64().unwrap() - 0.2).abs() < 1e-12);
        assert!(
            (compared["paired"]["difference_ci95"]["hi"]
                .as_f64()
                .unwrap()
                - 0.540_043_690_329_128)
                .abs()
                < 1e-9
        );
        assert_eq!(compared["paired"]["per_problem"][2]["difference"], 0.5);
        assert!(compared["sample_accuracy_ci95"]["lo"].as_f64().unwrap() > 0.59);
    }
}
