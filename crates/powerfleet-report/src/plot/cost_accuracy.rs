//! The cost figure: accuracy over all scheduled samples (±1 standard error) against tokens
//! generated per final token, one labelled point per method.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{Axis, chart, draw_note, nice_step, percent, tick_label, ticks};
use super::layout::{Rect, place_label, plot_rect, text_size, title};
use super::legend::{Entry, draw_legend, legend_size, place_legend};
use super::style::{LEGEND_SIZE, Look, MARKER, font, marker};
use super::{err, text};
use crate::report::Report;

/// The y axis label of the cost figure: accuracy over all scheduled samples, as the report's.
pub(super) const ACCURACY_LABEL: &str = "accuracy, all scheduled (%, ±1 s.e.)";

/// A scatter point: method, look, cost multiplier, accuracy and its standard error (percent).
pub(super) type Point<'a> = (&'a str, Look, f64, f64, Option<f64>);

/// Draws the cost figure of `report` on `root`.
pub(super) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    looks: &[Look],
) -> Result<(), String> {
    let points: Vec<Point<'_>> = report
        .methods
        .iter()
        .zip(looks)
        .filter_map(|(m, look)| {
            let cost = m.cost_multiplier.filter(|c| c.is_finite())?;
            let acc = m.accuracy.filter(|a| a.is_finite())?;
            let se = m.accuracy_stderr.filter(|s| s.is_finite() && *s > 0.0);
            Some((
                m.method.as_str(),
                *look,
                cost,
                100.0 * acc,
                se.map(|s| 100.0 * s),
            ))
        })
        .collect();

    // x linear from 0, so the baseline's 1x reads as such, to past the costliest method with
    // room for its label; logarithmic when the costs span more than a factor of 10.
    let max_cost = points.iter().map(|p| p.2).fold(1.0f64, f64::max);
    let min_cost = points.iter().map(|p| p.2).fold(max_cost, f64::min);
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
        .map(|p| p.3 - p.4.unwrap_or(0.0))
        .fold(f64::INFINITY, f64::min);
    let hi = points
        .iter()
        .map(|p| p.3 + p.4.unwrap_or(0.0))
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

    let mut chart = chart(
        root,
        &title("Cost vs accuracy", report),
        x_axis,
        Axis::linear(y_lo - y_pad..y_hi + y_pad, ticks(y_lo, y_hi, y_step)),
        (
            if log_x {
                "cost multiplier (tokens generated per final token, log scale)"
            } else {
                "cost multiplier (tokens generated per final token)"
            },
            ACCURACY_LABEL,
        ),
        &|v| {
            if *v == 0.0 {
                "0".to_string()
            } else {
                format!("{}×", tick_label(*v))
            }
        },
        &percent,
    )?;
    let plot = plot_rect(&chart);
    if points.is_empty() {
        return draw_note(
            root,
            plot,
            "no method with both accuracy and cost in this batch",
        );
    }

    // Error bars, then markers over them; both are what labels should avoid.
    let mut soft = Vec::new();
    let mut bars = Vec::new();
    for &(_, look, x, y, se) in &points {
        let centre = chart.backend_coord(&(x, y));
        soft.push(Rect::around(centre, MARKER + 3));
        let Some(se) = se else {
            bars.push((centre.1, centre.1));
            continue;
        };
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(
                x,
                y - se,
                y,
                y + se,
                look.color.stroke_width(2),
                14,
            )))
            .map_err(err)?;
        let (top, bottom) = (
            chart.backend_coord(&(x, y + se)),
            chart.backend_coord(&(x, y - se)),
        );
        soft.push(Rect {
            x0: top.0 - 8,
            y0: top.1 - 2,
            x1: top.0 + 8,
            y1: bottom.1 + 2,
        });
        bars.push((top.1, bottom.1));
    }
    for &(_, look, x, y, _) in &points {
        root.draw(&marker(chart.backend_coord(&(x, y)), look))
            .map_err(err)?;
    }

    // The legend where it hides the least, then each point's label where it hits the least.
    let entries: Vec<Entry<'_>> = points
        .iter()
        .map(|&(name, look, ..)| Entry {
            name,
            look,
            line: false,
        })
        .collect();
    let data: Vec<(i32, i32)> = points
        .iter()
        .map(|p| chart.backend_coord(&(p.2, p.3)))
        .collect();
    let mut hard = Vec::new();
    let legend = if entries.len() > 1 {
        let at = place_legend(plot, legend_size(&entries), &data, &soft);
        hard.push(at);
        Some(at)
    } else {
        None
    };
    let style = font(LEGEND_SIZE);
    let mut labels = Vec::new();
    for ((&(name, look, ..), &centre), &bar) in points.iter().zip(&data).zip(&bars) {
        let at = place_label(
            centre,
            bar,
            text_size(name, LEGEND_SIZE),
            plot,
            &soft,
            &hard,
        );
        hard.push(at);
        labels.push((name, look, at));
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
