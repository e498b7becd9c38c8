//! The cost figure: accuracy over all scheduled samples (±1 standard error) against tokens
//! generated per final token, one labelled point per method.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::layout::title;
use super::scatter::{self, Cost, Point, Scatter};
use super::style::Look;
use crate::report::Report;

/// The y axis label of the cost figure: accuracy over all scheduled samples, as the report's.
pub(super) const ACCURACY_LABEL: &str = "accuracy, all scheduled (%, ±1 s.e.)";

/// Draws the cost figure of `report` on `root`.
pub(super) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    looks: &[Look],
) -> Result<(), String> {
    let points = report
        .methods
        .iter()
        .zip(looks)
        .filter_map(|(m, look)| {
            let cost = m.cost_multiplier.filter(|c| c.is_finite())?;
            let acc = 100.0 * m.accuracy.filter(|a| a.is_finite())?;
            let se = m.accuracy_stderr.filter(|s| s.is_finite() && *s > 0.0);
            Some(Point {
                label: m.row.as_str(),
                look: *look,
                x: cost,
                y: acc,
                bar: se.map(|s| (acc - 100.0 * s, acc + 100.0 * s)),
            })
        })
        .collect();
    scatter::draw(
        root,
        &Scatter {
            title: title("Cost vs accuracy", report),
            cost: Cost::Multiplier,
            y_label: ACCURACY_LABEL,
            points,
            legend: true,
            empty: "no method with both accuracy and cost in this batch",
        },
    )
}
