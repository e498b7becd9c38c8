//! Axes and the chart around them: round tick steps and tick labels, linear and logarithmic axes
//! ticked exactly where asked, the chart with its title, axis labels and grid, and the note of an
//! empty chart.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::layout::{Rect, Title, text_size};
use super::style::{
    GRID, INK, LABEL_SIZE, MUTED, NOTE_SIZE, SUBTITLE_SIZE, TICK_SIZE, TITLE_SIZE, font,
};
use super::{err, text};

/// The smallest of 1, 2, 5 times a power of ten that is at least `raw`.
pub(super) fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// Ticks for the integers 1..=n: all of them when few, else 1 and multiples of a round step.
pub(super) fn integer_ticks(n: u64) -> Vec<f64> {
    let n = n.max(1);
    if n <= 12 {
        return (1..=n).map(|k| k as f64).collect();
    }
    let step = (nice_step(n as f64 / 8.0) as u64).max(1);
    let mut ticks = vec![1.0];
    ticks.extend(
        (step..=n)
            .step_by(step as usize)
            .map(|k| k as f64)
            .filter(|&k| k > 1.0),
    );
    ticks
}

/// Ticks from `lo` to `hi` (inclusive) every `step`.
pub(super) fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick value without trailing zeros.
pub(super) fn tick_label(v: f64) -> String {
    let s = format!("{:.2}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A note in the middle of an empty plot.
pub(super) fn draw_note<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: Rect,
    note: &str,
) -> Result<(), String> {
    let style = font(NOTE_SIZE)
        .color(&MUTED)
        .pos(Pos::new(HPos::Center, VPos::Center));
    text(
        root,
        note,
        ((plot.x0 + plot.x1) / 2, (plot.y0 + plot.y1) / 2),
        style,
    )
}

/// An axis over `range` with ticks exactly at `ticks`, linear or logarithmic.
pub(super) struct Axis {
    range: std::ops::Range<f64>,
    pub(super) ticks: Vec<f64>,
    log: bool,
}

impl Axis {
    pub(super) fn linear(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Axis {
        Axis {
            range,
            ticks,
            log: false,
        }
    }

    /// The integers 1..=n with some room either side, ticked by [`integer_ticks`].
    pub(super) fn integers(n: u64) -> Axis {
        let n = n.max(1);
        let pad = (0.04 * (n - 1) as f64).max(0.35);
        Axis::linear(1.0 - pad..n as f64 + pad, integer_ticks(n))
    }

    /// A log axis over `lo..hi` (both > 0) ticked at 1, 2 and 5 times powers of ten (only the
    /// powers of ten when that would be too many).
    pub(super) fn log(lo: f64, hi: f64) -> Axis {
        let decades = lo.log10().floor() as i32..=hi.log10().ceil() as i32;
        let at = |ms: &[f64]| -> Vec<f64> {
            decades
                .clone()
                .flat_map(|d| ms.iter().map(move |m| m * 10f64.powi(d)))
                .filter(|v| *v >= lo && *v <= hi)
                .collect()
        };
        let mut ticks = at(&[1.0, 2.0, 5.0]);
        if ticks.len() > 9 {
            ticks = at(&[1.0]);
        }
        Axis {
            range: lo..hi,
            ticks,
            log: true,
        }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, (lo, hi): (i32, i32)) -> i32 {
        let f = |v: f64| {
            if self.log {
                v.max(f64::MIN_POSITIVE).ln()
            } else {
                v
            }
        };
        let span = f(self.range.end) - f(self.range.start);
        let t = if span > 0.0 {
            (f(*value) - f(self.range.start)) / span
        } else {
            0.5
        };
        (lo as f64 + t * (hi - lo) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// A chart over `x` and `y` under its title (and subtitle, muted), with axis labels, ticks at
/// `x_ticks` / `y_ticks` and a light grid. The chart is drawn on `root` below the title, so its
/// backend coordinates are `root`'s.
pub(super) fn chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &Title,
    x: Axis,
    y: Axis,
    (x_desc, y_desc): (&str, &str),
    x_format: &dyn Fn(&f64) -> String,
    y_format: &dyn Fn(&f64) -> String,
) -> Result<ChartContext<'a, DB, Cartesian2d<Axis, Axis>>, String> {
    let centre = root.dim_in_pixel().0 as i32 / 2;
    let top = Pos::new(HPos::Center, VPos::Top);
    let mut y0 = 14;
    text(root, &title.main, (centre, y0), font(TITLE_SIZE).pos(top))?;
    y0 += text_size(&title.main, TITLE_SIZE).1 + 10;
    if !title.sub.is_empty() {
        let style = font(SUBTITLE_SIZE).color(&MUTED).pos(top);
        text(root, &title.sub, (centre, y0), style)?;
        y0 += text_size(&title.sub, SUBTITLE_SIZE).1 + 8;
    }
    let mut chart = ChartBuilder::on(root)
        .margin_top(y0 + 6)
        .margin_left(16)
        .margin_right(36)
        .margin_bottom(12)
        .x_label_area_size(72)
        .y_label_area_size(92)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(font(LABEL_SIZE))
        .label_style(font(TICK_SIZE))
        .bold_line_style(GRID.stroke_width(1))
        .light_line_style(TRANSPARENT)
        .axis_style(INK.stroke_width(1))
        .x_label_formatter(x_format)
        .y_label_formatter(y_format)
        .draw()
        .map_err(err)?;
    Ok(chart)
}

pub(super) fn percent(v: &f64) -> String {
    tick_label(*v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_labels() {
        assert_eq!(integer_ticks(4), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            integer_ticks(64),
            vec![1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
        );
        assert_eq!(ticks(0.0, 1.0, 0.2).len(), 6);
        assert_eq!(tick_label(0.5), "0.5");
        assert_eq!(tick_label(20.0), "20");
    }
}
