//! The pass@k figure: pass@k against k per method, missing samples counted as incorrect; k on a
//! log axis when there are many samples per problem.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes::{Axis, chart, draw_note, percent, tick_label, ticks};
use super::layout::{plot_rect, title};
use super::lines::{draw_lines, indexed_series, longest};
use super::style::Look;
use crate::report::Report;

/// The note of an empty pass@k figure.
pub(super) const PASS_AT_K_EMPTY: &str = "no benchmark samples in this batch";

/// Draws the pass@k figure of `report` on `root`.
pub(super) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    looks: &[Look],
) -> Result<(), String> {
    let series = indexed_series(
        report,
        looks,
        |m| !m.pass_at_k.is_empty(),
        |m| m.pass_at_k.iter().map(|&p| Some(p)),
        100.0,
    );
    let n = longest(&series);
    // Many samples: a log axis, so the small k where the methods differ keep their room.
    let (x_axis, x_label) = if n > 20 {
        (
            Axis::log(0.9, n as f64 * 1.1),
            "k (samples per problem, log scale)",
        )
    } else {
        (Axis::integers(n), "k (samples per problem)")
    };
    let mut chart = chart(
        root,
        &title("pass@k by method", report),
        x_axis,
        Axis::linear(-2.0..102.0, ticks(0.0, 100.0, 20.0)),
        (x_label, "pass@k (%)"),
        &|v| tick_label(*v),
        &percent,
    )?;
    draw_lines(root, &mut chart, &series)?;
    if series.is_empty() {
        draw_note(root, plot_rect(&chart), PASS_AT_K_EMPTY)?;
    }
    Ok(())
}
