//! The acceptance figure: MCMC acceptances over proposals per block index per method, pooled over
//! its jobs.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes::{Axis, chart, draw_note, tick_label, ticks};
use super::layout::{plot_rect, title};
use super::lines::{draw_lines, indexed_series, longest};
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
    let series = indexed_series(
        report,
        looks,
        |m| {
            m.acceptance_by_block
                .iter()
                .flatten()
                .any(|a| a.is_finite())
        },
        |m| m.acceptance_by_block.iter().copied(),
        1.0,
    );
    let blocks = longest(&series);
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
