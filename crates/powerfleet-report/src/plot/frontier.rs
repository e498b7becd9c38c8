//! The cost-frontier figure of `powerfleet bench frontier`: panels side by side, each a quality
//! (TV to p^α, accuracy, wall time) against tokens generated per final sample on a log axis, one
//! family of settings per line. Every measured setting is a marker; the line joins the family's
//! frontier (the settings no cheaper setting of the family beats), which the benchmark computes.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use powerfleet_sampler::Method;

use super::axes::{Axis, chart, draw_note, nice_step, tick_label, ticks};
use super::layout::{Rect, Title, plot_rect, text_size};
use super::legend::{Entry, draw_legend, legend_size, place_legend, sample_path};
use super::style::{LEGEND_SIZE, MUTED, SIZE, family_look, font, marker};
use super::{FigureError, Paint, err, prepare, text, write_pair_sized};

/// A figure of panels, drawn two to a row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrontierPlot {
    /// The panels, in reading order.
    pub panels: Vec<FrontierPanel>,
}

/// One panel: its titles, axis labels, whether y is logarithmic, a dashed reference level
/// (with its label) and the families drawn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FrontierPanel {
    /// What the panel shows.
    pub title: String,
    /// Under the title, muted: the setting it was measured in.
    pub subtitle: String,
    /// The x axis's label (x is always logarithmic).
    pub x_label: String,
    /// The y axis's label.
    pub y_label: String,
    /// Whether y is logarithmic (else linear, from the data's range).
    pub log_y: bool,
    /// A horizontal dashed line and its label (say, the sampling noise).
    pub level: Option<(f64, String)>,
    /// The families.
    pub series: Vec<FrontierSeries>,
    /// What an empty panel says.
    pub empty: String,
    /// Lines of muted text in the plot's lower right corner (say, settings not measured).
    pub notes: Vec<String>,
}

/// A family of settings of one method: its legend name, its method and variant (variant 0 takes
/// the method's own colour, others another colour with the method's marker), every measured
/// point, and the line drawn through its frontier.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontierSeries {
    /// The legend's name.
    pub name: String,
    /// The sampler method the family runs.
    pub method: Method,
    /// Which family of that method: 0 for its own colour.
    pub variant: usize,
    /// Every measured (x, y).
    pub points: Vec<(f64, f64)>,
    /// The line drawn, in order.
    pub line: Vec<(f64, f64)>,
}

/// Writes `plot` into `dir` (created if missing) as `name.png` and `name.svg`; returns the paths.
/// Each panel is as large as a report figure.
pub fn write_frontier_figure(
    plot: &FrontierPlot,
    dir: &Path,
    name: &str,
) -> Result<Vec<PathBuf>, FigureError> {
    prepare(dir)?;
    let (cols, rows) = grid(plot.panels.len());
    let size = (SIZE.0 * cols as u32, SIZE.1 * rows as u32);
    write_pair_sized(dir, name, size, &FrontierFigure(plot))
}

/// Columns and rows of `n` panels: side by side up to two, then two to a row.
fn grid(n: usize) -> (usize, usize) {
    let n = n.max(1);
    let cols = n.min(2);
    (cols, n.div_ceil(cols))
}

struct FrontierFigure<'a>(&'a FrontierPlot);

impl Paint for FrontierFigure<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let (cols, rows) = grid(self.0.panels.len());
        let areas = root.split_evenly((rows, cols));
        for (panel, area) in self.0.panels.iter().zip(&areas) {
            draw_panel(root, area, panel)?;
        }
        Ok(())
    }
}

/// A log axis around `values` (all > 0), with a little room either side.
fn log_axis(values: impl Iterator<Item = f64>) -> Axis {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if hi <= 0.0 {
        return Axis::log(1.0, 100.0);
    }
    let (lo, hi) = (lo / 1.4, hi * 1.4);
    // At least one tick: widen to a decade when the range holds none.
    if lo.log10().floor() == hi.log10().floor() && (hi / lo) < 2.0 {
        return Axis::log(lo / 2.0, hi * 2.0);
    }
    Axis::log(lo, hi)
}

/// A tick of a log axis: as many decimals as its size needs.
fn log_tick(v: f64) -> String {
    if v >= 1.0 {
        if v >= 1e4 {
            format!("{}k", tick_label(v / 1e3))
        } else {
            tick_label(v)
        }
    } else {
        let decimals = (-v.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

/// Draws `panel` in `area` of `root`. The chart's coordinates are `root`'s backend pixels, so the
/// markers, the legend and the level's label are drawn on `root`.
fn draw_panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    panel: &FrontierPanel,
) -> Result<(), String> {
    let xs = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
    };
    let ys = || {
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(panel.level.iter().map(|l| l.0))
    };
    let x = log_axis(xs());
    let (y, y_format): (Axis, &dyn Fn(&f64) -> String) = if panel.log_y {
        (log_axis(ys()), &|v| log_tick(*v))
    } else {
        let lo = ys().fold(f64::INFINITY, f64::min);
        let hi = ys().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        let step = nice_step((hi - lo) / 6.0);
        let (lo, hi) = ((lo / step).floor() * step, (hi / step).ceil() * step);
        let pad = (hi - lo) * 0.03;
        (
            Axis::linear(lo - pad..hi + pad, ticks(lo, hi, step)),
            &|v| tick_label(*v),
        )
    };
    let title = Title {
        main: panel.title.clone(),
        sub: panel.subtitle.clone(),
    };
    let mut chart = chart(
        area,
        &title,
        x,
        y,
        (&panel.x_label, &panel.y_label),
        &|v| log_tick(*v),
        y_format,
    )?;
    let plot = plot_rect(&chart);
    let mut taken = Vec::new();
    let note_size = LEGEND_SIZE * 0.8;
    let line = text_size("Ag", note_size).1 + 4;
    for (i, note) in panel.notes.iter().rev().enumerate() {
        let (w, h) = text_size(note, note_size);
        let y = plot.y1 - 10 - line * i as i32;
        taken.push(Rect::new(plot.x1 - 10 - w, y - h, w, h));
        let style = font(note_size)
            .color(&MUTED)
            .pos(Pos::new(HPos::Right, VPos::Bottom));
        text(root, note, (plot.x1 - 10, y), style)?;
    }
    if panel.series.iter().all(|s| s.points.is_empty()) {
        return draw_note(root, plot, &panel.empty);
    }
    if let Some((level, label)) = &panel.level {
        let range = chart.x_range();
        chart
            .draw_series(DashedLineSeries::new(
                [(range.start, *level), (range.end, *level)],
                6,
                6,
                MUTED.stroke_width(2),
            ))
            .map_err(err)?;
        let (_, y) = chart.backend_coord(&(range.start, *level));
        let style = font(LEGEND_SIZE * 0.8)
            .color(&MUTED)
            .pos(Pos::new(HPos::Left, VPos::Bottom));
        text(root, label, (plot.x0 + 8, y - 4), style)?;
        // The legend keeps clear of the label.
        let (w, h) = text_size(label, LEGEND_SIZE * 0.8);
        taken.push(Rect::new(plot.x0 + 8, y - 4 - h, w, h));
    }
    let mut data = Vec::new();
    let mut entries = Vec::new();
    for s in &panel.series {
        let look = family_look(s.method, s.variant);
        chart
            .draw_series(LineSeries::new(
                s.line.iter().copied(),
                look.color.stroke_width(3),
            ))
            .map_err(err)?;
        let pixels: Vec<(i32, i32)> = s.line.iter().map(|p| chart.backend_coord(p)).collect();
        sample_path(&pixels, &mut data);
        for p in &s.points {
            let at = chart.backend_coord(p);
            data.push(at);
            root.draw(&marker(at, look)).map_err(err)?;
        }
        if !s.points.is_empty() {
            entries.push(Entry {
                name: &s.name,
                look,
                line: true,
            });
        }
    }
    let at = place_legend(plot, legend_size(&entries), &data, &taken);
    draw_legend(root, at, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, method: Method, variant: usize, scale: f64) -> FrontierSeries {
        let points: Vec<(f64, f64)> = [2.0, 10.0, 50.0, 300.0]
            .iter()
            .map(|&x| (x, scale / x))
            .collect();
        FrontierSeries {
            name: name.to_string(),
            method,
            variant,
            line: points.clone(),
            points,
        }
    }

    #[test]
    fn writes_panels_with_every_family_in_its_colour() {
        let dir = std::env::temp_dir().join(format!("powerfleet-frontier-{}", std::process::id()));
        let tv = FrontierPanel {
            title: "TV to p^α".into(),
            subtitle: "toy:pivot".into(),
            x_label: "tokens per sample".into(),
            y_label: "TV".into(),
            log_y: true,
            level: Some((0.05, "sampling noise".into())),
            series: vec![
                series("MH", Method::Power, 0, 1.0),
                series("SMC", Method::PowerSmc, 0, 0.5),
                series("SMC + resample-move", Method::PowerSmc, 1, 0.4),
                series("lookahead", Method::PowerLookahead, 0, 0.2),
            ],
            empty: "nothing".into(),
            notes: Vec::new(),
        };
        let empty = FrontierPanel {
            title: "wall time".into(),
            empty: "no llama-server".into(),
            notes: vec!["lookahead: not supported by this backend".into()],
            ..FrontierPanel::default()
        };
        let plot = FrontierPlot {
            panels: vec![tv.clone(), tv, empty],
        };
        let written = write_frontier_figure(&plot, &dir, "frontier").unwrap();
        assert_eq!(
            written,
            vec![dir.join("frontier.png"), dir.join("frontier.svg")]
        );
        let decoder = png::Decoder::new(std::fs::File::open(&written[0]).unwrap());
        let reader = decoder.read_info().unwrap();
        assert_eq!(
            (reader.info().width, reader.info().height),
            (2 * SIZE.0, 2 * SIZE.1)
        );
        let svg = std::fs::read_to_string(&written[1]).unwrap();
        for text in [
            "SMC + resample-move",
            "sampling noise",
            "no llama-server",
            "lookahead: not supported by this backend",
        ] {
            assert!(svg.contains(text), "{text}");
        }
        for (method, variant) in [
            (Method::Power, 0),
            (Method::PowerSmc, 0),
            (Method::PowerSmc, 1),
            (Method::PowerLookahead, 0),
        ] {
            let c = family_look(method, variant).color;
            let hex = format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
            assert!(
                svg.to_uppercase().contains(&hex),
                "{method} {variant}: {hex}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn panels_go_two_to_a_row() {
        assert_eq!(grid(1), (1, 1));
        assert_eq!(grid(2), (2, 1));
        assert_eq!(grid(3), (2, 2));
        assert_eq!(grid(4), (2, 2));
    }

    #[test]
    fn log_ticks_keep_their_digits() {
        assert_eq!(log_tick(0.002), "0.002");
        assert_eq!(log_tick(0.05), "0.05");
        assert_eq!(log_tick(0.5), "0.5");
        assert_eq!(log_tick(20.0), "20");
        assert_eq!(log_tick(20_000.0), "20k");
    }
}
