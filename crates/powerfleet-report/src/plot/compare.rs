//! The comparison figure: accuracy over graded samples with its 95% Wilson interval against cost,
//! one point per run and method-and-configuration row, labelled with both, coloured by run.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::layout::titled;
use super::scatter::{self, Cost, Point, Scatter};
use super::style::run_looks;
use crate::compare::{ComparedRow, Comparison};

/// The y axis label of the comparison figure.
pub(super) const COMPARED_ACCURACY_LABEL: &str = "accuracy, graded (%, 95% Wilson)";

/// The label of a row's point: run and row.
pub(super) fn point_label(row: &ComparedRow) -> String {
    format!("{} · {}", row.run, row.row.row)
}

/// Draws the comparison figure of `c` on `root`. Cost is the cost multiplier when every row with
/// an accuracy has one, else tokens generated per problem.
pub(super) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &Comparison,
) -> Result<(), String> {
    let runs: Vec<&str> = c.runs.iter().map(|r| r.name.as_str()).collect();
    let rows: Vec<&ComparedRow> = c
        .rows
        .iter()
        .filter(|r| r.sample_accuracy.is_some_and(f64::is_finite))
        .collect();
    let by_multiplier = rows
        .iter()
        .all(|r| r.row.cost_multiplier.is_some_and(f64::is_finite));
    let (cost, x): (Cost, fn(&ComparedRow) -> Option<f64>) = if by_multiplier {
        (Cost::Multiplier, |r| r.row.cost_multiplier)
    } else {
        (Cost::TokensPerProblem, |r| r.tokens_per_problem)
    };
    let looks = run_looks(
        &rows
            .iter()
            .map(|r| {
                let run = runs.iter().position(|n| *n == r.run).unwrap_or(0);
                (run, r.row.row.as_str())
            })
            .collect::<Vec<_>>(),
    );
    let labels: Vec<String> = rows.iter().map(|r| point_label(r)).collect();
    let points = rows
        .iter()
        .zip(&looks)
        .zip(&labels)
        .filter_map(|((r, look), label)| {
            let x = x(r).filter(|x| x.is_finite())?;
            Some(Point {
                label,
                look: *look,
                x,
                y: 100.0 * r.sample_accuracy?,
                bar: r.sample_accuracy_ci95.map(|i| (100.0 * i.lo, 100.0 * i.hi)),
            })
        })
        .collect();
    let mut models: Vec<String> = c
        .runs
        .iter()
        .flat_map(|r| r.report.models.iter().cloned())
        .collect();
    models.sort();
    models.dedup();
    scatter::draw(
        root,
        &Scatter {
            title: titled(
                "Accuracy vs cost",
                &runs.join(" vs "),
                &models,
                c.rows.iter().map(|r| &r.row),
            ),
            cost,
            y_label: COMPARED_ACCURACY_LABEL,
            points,
            legend: false,
            empty: "no run with both accuracy and cost",
        },
    )
}
