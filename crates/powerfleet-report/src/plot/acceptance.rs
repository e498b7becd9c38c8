//! The acceptance figure: MCMC acceptances over proposals per block index per method, pooled over
//! its jobs.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes::{Axis, chart, draw_note, tick_label, ticks};
use super::layout::{plot_rect, title};
use super::lines::{Series, draw_lines};
use super::style::Look;
use crate::report::Report;

/// The y axis label of the acceptance figure: what its numbers are.
pub(super) const ACCEPTANCE_LABEL: &str = "acceptances / proposals, pooled";

/// Draws the acceptance figure of `report` on `root`.
pub(super) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    looks: &[Look],
) -> Result<(), String> {
    let series: Vec<Series<'_>> = report
        .methods
        .iter()
        .zip(looks)
        .filter(|(m, _)| {
            m.acceptance_by_block
                .iter()
                .flatten()
                .any(|a| a.is_finite())
        })
        .map(|(m, look)| {
            let points = m
                .acceptance_by_block
                .iter()
                .enumerate()
                .map(|(i, a)| a.filter(|a| a.is_finite()).map(|a| ((i + 1) as f64, a)))
                .collect();
            (m.row.as_str(), *look, points)
        })
        .collect();
    let blocks = series
        .iter()
        .map(|(_, _, p)| p.len() as u64)
        .max()
        .unwrap_or(1);
    let mut chart = chart(
        root,
        &title("MCMC acceptance rate by block", report),
        Axis::integers(blocks),
        Axis::linear(-0.02..1.02, ticks(0.0, 1.0, 0.2)),
        ("block index", ACCEPTANCE_LABEL),
        &|v| tick_label(*v),
        &|v| format!("{v:.1}"),
    )?;
    draw_lines(root, &mut chart, &series)?;
    if series.is_empty() {
        draw_note(root, plot_rect(&chart), "no MCMC proposals in this batch")?;
    }
    Ok(())
}
