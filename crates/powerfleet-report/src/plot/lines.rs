//! Line figures: one line with markers per method, dashed across missing points, and a legend
//! where it hides the fewest data.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes::Axis;
use super::err;
use super::layout::plot_rect;
use super::legend::{Entry, draw_legend, legend_size, place_legend, sample_path};
use super::style::{Look, marker};
use crate::report::{MethodReport, Report};

/// A line: method, look, and the points (x, y), `None` where there is no data.
pub(super) type Series<'a> = (&'a str, Look, Vec<Option<(f64, f64)>>);

/// One line per method of `report` that `keep` accepts, in the method's look: its `values` at
/// x = 1, 2, ..., each times `scale`, a gap where one is missing or not finite.
pub(super) fn indexed_series<'a, V>(
    report: &'a Report,
    looks: &[Look],
    keep: impl Fn(&MethodReport) -> bool,
    values: impl Fn(&'a MethodReport) -> V,
    scale: f64,
) -> Vec<Series<'a>>
where
    V: IntoIterator<Item = Option<f64>>,
{
    report
        .methods
        .iter()
        .zip(looks)
        .filter(|(m, _)| keep(m))
        .map(|(m, look)| {
            let points = values(m)
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    v.filter(|v| v.is_finite())
                        .map(|v| ((i + 1) as f64, scale * v))
                })
                .collect();
            (m.row.as_str(), *look, points)
        })
        .collect()
}

/// The most points of any of `series`, at least 1.
pub(super) fn longest(series: &[Series<'_>]) -> u64 {
    series
        .iter()
        .map(|(_, _, p)| p.len() as u64)
        .max()
        .unwrap_or(1)
}

/// Lines with markers, one per method, over the chart; where points are missing, a thin dashed
/// line bridges the gap.
pub(super) fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &mut ChartContext<'_, DB, Cartesian2d<Axis, Axis>>,
    series: &[Series<'_>],
) -> Result<(), String> {
    let mut data = Vec::new();
    for (_, look, points) in series {
        let known: Vec<(usize, (f64, f64))> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (i, p)))
            .collect();
        for pair in known.windows(2) {
            let ((i, a), (j, b)) = (pair[0], pair[1]);
            if j == i + 1 {
                chart
                    .draw_series(LineSeries::new([a, b], look.color.stroke_width(3)))
                    .map_err(err)?;
            } else {
                chart
                    .draw_series(DashedLineSeries::new(
                        [a, b],
                        8,
                        6,
                        look.color.stroke_width(2),
                    ))
                    .map_err(err)?;
            }
        }
        let pixels: Vec<(i32, i32)> = known.iter().map(|(_, p)| chart.backend_coord(p)).collect();
        sample_path(&pixels, &mut data);
    }
    // Markers on every point, or on long series only at the ticks (and the last point).
    let n = series.iter().map(|(_, _, p)| p.len()).max().unwrap_or(0);
    let mut marked = chart.as_coord_spec().x_spec().ticks.clone();
    marked.push(n as f64);
    for (_, look, points) in series {
        for p in points.iter().flatten() {
            if n <= 20 || marked.contains(&p.0) {
                root.draw(&marker(chart.backend_coord(p), *look))
                    .map_err(err)?;
            }
        }
    }
    if !series.is_empty() {
        let entries: Vec<Entry<'_>> = series
            .iter()
            .map(|(name, look, _)| Entry {
                name,
                look: *look,
                line: true,
            })
            .collect();
        let at = place_legend(plot_rect(chart), legend_size(&entries), &data, &[]);
        draw_legend(root, at, &entries)?;
    }
    Ok(())
}
