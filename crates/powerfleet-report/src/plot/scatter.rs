//! Scatter figures of accuracy against cost: one labelled point per row with its error bar, the
//! x axis from 0 (logarithmic when costs span more than a factor of 10), y around the data, a
//! legend where it hides the least and labels placed clear of each other. The report's cost
//! figure ([`super::cost_accuracy`]) and the comparison's ([`super::compare`]) draw with it.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{Axis, chart, draw_note, nice_step, percent, tick_label, ticks};
use super::layout::{Rect, Title, place_label, plot_rect, text_size};
use super::legend::{Entry, draw_legend, legend_size, place_legend};
use super::style::{LEGEND_SIZE, Look, MARKER, font, marker};
use super::{err, text};

/// A point: its label, look, cost, accuracy and error bar (low and high end), in percent.
pub(super) struct Point<'a> {
    pub(super) label: &'a str,
    pub(super) look: Look,
    pub(super) x: f64,
    pub(super) y: f64,
    pub(super) bar: Option<(f64, f64)>,
}

/// What the x axis measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Cost {
    /// Tokens generated per final token, ticked `2×`.
    Multiplier,
    /// Tokens generated per problem, ticked `500`, `20k`, `1.5M`.
    TokensPerProblem,
}

impl Cost {
    fn label(self, log: bool) -> &'static str {
        match (self, log) {
            (Cost::Multiplier, false) => "cost multiplier (tokens generated per final token)",
            (Cost::Multiplier, true) => {
                "cost multiplier (tokens generated per final token, log scale)"
            }
            (Cost::TokensPerProblem, false) => "tokens generated per problem",
            (Cost::TokensPerProblem, true) => "tokens generated per problem (log scale)",
        }
    }

    fn tick(self, v: f64) -> String {
        match self {
            _ if v == 0.0 => "0".to_string(),
            Cost::Multiplier => format!("{}×", tick_label(v)),
            Cost::TokensPerProblem if v >= 1e6 => format!("{}M", tick_label(v / 1e6)),
            Cost::TokensPerProblem if v >= 1e3 => format!("{}k", tick_label(v / 1e3)),
            Cost::TokensPerProblem => tick_label(v),
        }
    }
}

/// A scatter figure: its title, axes, points, whether a legend lists them, and the note shown
/// when there are none.
pub(super) struct Scatter<'a> {
    pub(super) title: Title,
    pub(super) cost: Cost,
    pub(super) y_label: &'a str,
    pub(super) points: Vec<Point<'a>>,
    pub(super) legend: bool,
    pub(super) empty: &'a str,
}

/// Draws `scatter` on `root`.
pub(super) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    scatter: &Scatter<'_>,
) -> Result<(), String> {
    let points = &scatter.points;
    // x linear from 0, so the baseline's 1x reads as such, to past the costliest method with
    // room for its label; logarithmic when the costs span more than a factor of 10.
    let max_cost = points.iter().map(|p| p.x).fold(1.0f64, f64::max);
    let min_cost = points.iter().map(|p| p.x).fold(max_cost, f64::min);
    let log_x = min_cost > 0.0 && max_cost / min_cost > 10.0;
    let x_axis = if log_x {
        Axis::log(min_cost / 1.3, max_cost * 1.5)
    } else {
        let step = nice_step(max_cost * 1.25 / 6.0);
        let hi = ((max_cost * 1.25) / step).ceil() * step;
        Axis::linear(-hi * 0.02..hi, ticks(0.0, hi, step))
    };
    // y around the data (accuracies, error bars), at least 20 points, within 0..100.
    let lo = points
        .iter()
        .map(|p| p.bar.map_or(p.y, |b| b.0.min(p.y)))
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.bar.map_or(p.y, |b| b.1.max(p.y)))
        .fold(f64::NEG_INFINITY, f64::max);
    let (y_lo, y_hi) = if points.is_empty() {
        (0.0, 100.0)
    } else {
        let mut lo = ((lo - 5.0) / 10.0).floor() * 10.0;
        let mut hi = ((hi + 5.0) / 10.0).ceil() * 10.0;
        while hi - lo < 20.0 {
            lo -= 5.0;
            hi += 5.0;
        }
        let (lo, hi) = (lo.max(0.0), hi.min(100.0));
        if hi - lo < 20.0 {
            if lo <= 0.0 {
                (0.0, 20.0)
            } else {
                (80.0, 100.0)
            }
        } else {
            (lo, hi)
        }
    };
    let y_step = nice_step((y_hi - y_lo) / 6.0);
    let y_pad = (y_hi - y_lo) * 0.02;

    let cost = scatter.cost;
    let mut chart = chart(
        root,
        &scatter.title,
        x_axis,
        Axis::linear(y_lo - y_pad..y_hi + y_pad, ticks(y_lo, y_hi, y_step)),
        (cost.label(log_x), scatter.y_label),
        &|v| cost.tick(*v),
        &percent,
    )?;
    let plot = plot_rect(&chart);
    if points.is_empty() {
        return draw_note(root, plot, scatter.empty);
    }

    // Error bars, then markers over them; both are what labels should avoid.
    let mut soft = Vec::new();
    let mut bars = Vec::new();
    for p in points {
        let centre = chart.backend_coord(&(p.x, p.y));
        soft.push(Rect::around(centre, MARKER + 3));
        let Some((lo, hi)) = p.bar else {
            bars.push((centre.1, centre.1));
            continue;
        };
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(
                p.x,
                lo,
                p.y,
                hi,
                p.look.color.stroke_width(2),
                14,
            )))
            .map_err(err)?;
        let (top, bottom) = (
            chart.backend_coord(&(p.x, hi)),
            chart.backend_coord(&(p.x, lo)),
        );
        soft.push(Rect {
            x0: top.0 - 8,
            y0: top.1 - 2,
            x1: top.0 + 8,
            y1: bottom.1 + 2,
        });
        bars.push((top.1, bottom.1));
    }
    for p in points {
        root.draw(&marker(chart.backend_coord(&(p.x, p.y)), p.look))
            .map_err(err)?;
    }

    // The legend where it hides the least, then each point's label where it hits the least.
    let entries: Vec<Entry<'_>> = points
        .iter()
        .map(|p| Entry {
            name: p.label,
            look: p.look,
            line: false,
        })
        .collect();
    let data: Vec<(i32, i32)> = points
        .iter()
        .map(|p| chart.backend_coord(&(p.x, p.y)))
        .collect();
    let mut hard = Vec::new();
    let legend = if scatter.legend && entries.len() > 1 {
        let at = place_legend(plot, legend_size(&entries), &data, &soft);
        hard.push(at);
        Some(at)
    } else {
        None
    };
    let style = font(LEGEND_SIZE);
    let mut labels = Vec::new();
    for ((p, &centre), &bar) in points.iter().zip(&data).zip(&bars) {
        let at = place_label(
            centre,
            bar,
            text_size(p.label, LEGEND_SIZE),
            plot,
            &soft,
            &hard,
        );
        hard.push(at);
        labels.push((p.label, p.look, at));
    }
    if let Some(at) = legend {
        draw_legend(root, at, &entries)?;
    }
    for (name, look, at) in labels {
        let style = style
            .color(&look.color)
            .pos(Pos::new(HPos::Left, VPos::Center));
        text(root, name, (at.x0, (at.y0 + at.y1) / 2), style)?;
    }
    Ok(())
}
