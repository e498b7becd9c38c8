//! Legends: their size, the corner of the plot where they hide the fewest data, and drawing them.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::layout::{Rect, text_size};
use super::style::{LEGEND_SIZE, Look, font, marker};
use super::{err, text};

/// Points every few pixels along a polyline (in pixels), for telling what a legend would hide.
pub(super) fn sample_path(points: &[(i32, i32)], out: &mut Vec<(i32, i32)>) {
    out.extend(points.iter().copied());
    for w in points.windows(2) {
        let (a, b) = (w[0], w[1]);
        let len = (((b.0 - a.0) as f64).hypot((b.1 - a.1) as f64) / 4.0).ceil() as i32;
        for i in 1..len {
            let t = i as f64 / len as f64;
            out.push((
                a.0 + ((b.0 - a.0) as f64 * t).round() as i32,
                a.1 + ((b.1 - a.1) as f64 * t).round() as i32,
            ));
        }
    }
}

/// One legend row.
pub(super) struct Entry<'a> {
    pub(super) name: &'a str,
    pub(super) look: Look,
    pub(super) line: bool,
}

const LEGEND_PAD: i32 = 12;
const LEGEND_ROW: i32 = 30;
const LEGEND_KEY: i32 = 40;

pub(super) fn legend_size(entries: &[Entry<'_>]) -> (i32, i32) {
    let text = entries
        .iter()
        .map(|e| text_size(e.name, LEGEND_SIZE).0)
        .max()
        .unwrap_or(0);
    (
        2 * LEGEND_PAD + LEGEND_KEY + 10 + text,
        2 * LEGEND_PAD - 6 + LEGEND_ROW * entries.len() as i32,
    )
}

/// Where a legend of `size` goes inside `plot`: the corner (or side) covering the fewest of
/// `data` and overlapping the fewest of `taken`, upper right first on a tie.
pub(super) fn place_legend(
    plot: Rect,
    size: (i32, i32),
    data: &[(i32, i32)],
    taken: &[Rect],
) -> Rect {
    let inset = 12;
    let (w, h) = size;
    let left = plot.x0 + inset;
    let right = plot.x1 - inset - w;
    let top = plot.y0 + inset;
    let bottom = plot.y1 - inset - h;
    let middle = (plot.y0 + plot.y1 - h) / 2;
    let candidates = [
        (right, top),
        (left, top),
        (right, bottom),
        (left, bottom),
        (right, middle),
        (left, middle),
    ];
    candidates
        .into_iter()
        .map(|(x, y)| Rect::new(x, y, w, h))
        .min_by_key(|r| {
            let grown = Rect {
                x0: r.x0 - 8,
                y0: r.y0 - 8,
                x1: r.x1 + 8,
                y1: r.y1 + 8,
            };
            let hidden = data.iter().filter(|p| grown.contains(**p)).count() as i64;
            hidden * 10_000 + taken.iter().map(|t| t.overlap(&grown)).sum::<i64>()
        })
        .unwrap_or_else(|| Rect::new(right, top, w, h))
}

pub(super) fn draw_legend<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    at: Rect,
    entries: &[Entry<'_>],
) -> Result<(), String> {
    root.draw(&Rectangle::new(
        [(at.x0, at.y0), (at.x1, at.y1)],
        WHITE.mix(0.9).filled(),
    ))
    .map_err(err)?;
    root.draw(&Rectangle::new(
        [(at.x0, at.y0), (at.x1, at.y1)],
        RGBColor(0xbb, 0xbb, 0xbb).stroke_width(1),
    ))
    .map_err(err)?;
    let style = font(LEGEND_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, e) in entries.iter().enumerate() {
        let y = at.y0 + LEGEND_PAD + LEGEND_ROW / 2 - 3 + LEGEND_ROW * i as i32;
        let x = at.x0 + LEGEND_PAD;
        if e.line {
            root.draw(&PathElement::new(
                vec![(x, y), (x + LEGEND_KEY, y)],
                e.look.color.stroke_width(3),
            ))
            .map_err(err)?;
        } else {
            // A small error bar.
            let (mid, style) = (x + LEGEND_KEY / 2, e.look.color.stroke_width(2));
            for path in [
                [(mid, y - 11), (mid, y + 11)],
                [(mid - 5, y - 11), (mid + 5, y - 11)],
                [(mid - 5, y + 11), (mid + 5, y + 11)],
            ] {
                root.draw(&PathElement::new(path, style)).map_err(err)?;
            }
        }
        root.draw(&marker((x + LEGEND_KEY / 2, y), e.look))
            .map_err(err)?;
        text(root, e.name, (x + LEGEND_KEY + 10, y), style.clone())?;
    }
    Ok(())
}
