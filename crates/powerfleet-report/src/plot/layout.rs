//! Measuring and placing in pixels: text sizes, titles that fit the figure, rectangles, the
//! plotting area of a chart, and where the scatter's labels go.

use plotters::prelude::*;

use super::raster;
use super::style::{MARKER, SIZE, TITLE_SIZE};
use crate::report::Report;

/// A batch id as a title shows it: a UUID by its first 8 characters, anything else whole.
pub(super) fn short_id(id: &str) -> String {
    let is_uuid = id.len() == 36
        && id.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if is_uuid {
        id[..8].to_string()
    } else {
        id.to_string()
    }
}

/// The title of a figure about `what` in the report's batch, the id cut short (with "…") where
/// the whole would not fit the figure's width.
pub(super) fn title(what: &str, report: &Report) -> String {
    if report.id.is_empty() {
        return what.to_string();
    }
    let id: Vec<char> = short_id(&report.id).chars().collect();
    let fits = |t: &str| text_size(t, TITLE_SIZE).0 + 60 <= SIZE.0 as i32;
    let mut keep = id.len();
    loop {
        let mut shown: String = id[..keep].iter().collect();
        if keep < id.len() {
            shown.truncate(shown.trim_end_matches(['.', '-', '_', ' ']).len());
        }
        let ellipsis = if keep < id.len() { "…" } else { "" };
        let title = format!("{what} — batch {shown}{ellipsis}");
        if keep <= 8 || fits(&title) {
            return title;
        }
        keep -= 1;
    }
}

/// The size of `text` at plotters' font `size`, pixels, as the PNGs draw it and SVG viewers with
/// DejaVu Sans do (plotters' own estimate is some 7% wider), so both lay out alike.
pub(super) fn text_size(text: &str, size: f64) -> (i32, i32) {
    raster::text_size(text, size).unwrap_or((
        (0.6 * size / 1.24) as i32 * text.chars().count() as i32,
        (size / 1.24) as i32,
    ))
}

/// A rectangle in pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Rect {
    pub(super) x0: i32,
    pub(super) y0: i32,
    pub(super) x1: i32,
    pub(super) y1: i32,
}

impl Rect {
    pub(super) fn new(x0: i32, y0: i32, w: i32, h: i32) -> Rect {
        Rect {
            x0,
            y0,
            x1: x0 + w,
            y1: y0 + h,
        }
    }
    pub(super) fn around((x, y): (i32, i32), r: i32) -> Rect {
        Rect {
            x0: x - r,
            y0: y - r,
            x1: x + r,
            y1: y + r,
        }
    }
    pub(super) fn overlap(&self, o: &Rect) -> i64 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0) as i64;
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0) as i64;
        w * h
    }
    pub(super) fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.y0 >= o.y0 && self.x1 <= o.x1 && self.y1 <= o.y1
    }
    pub(super) fn contains(&self, (x, y): (i32, i32)) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }
}

/// The plotting area of a chart, in pixels.
pub(super) fn plot_rect<DB: DrawingBackend, X: Ranged, Y: Ranged>(
    chart: &ChartContext<'_, DB, Cartesian2d<X, Y>>,
) -> Rect {
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    Rect {
        x0: xs.start,
        y0: ys.start,
        x1: xs.end,
        y1: ys.end,
    }
}

/// Where a label of `size` for the point at `p`, whose error bar spans `bar` (top and bottom,
/// pixels), goes: right, left, on the diagonals, above or below the error bar, or a row further
/// up or down; the first that lies in `bounds` and hits nothing, else the one that hits the least,
/// other labels and the legend (`hard`) counting more than markers and error bars (`soft`).
pub(super) fn place_label(
    p: (i32, i32),
    bar: (i32, i32),
    (w, h): (i32, i32),
    bounds: Rect,
    soft: &[Rect],
    hard: &[Rect],
) -> Rect {
    let g = MARKER + 9;
    let above = bar.0.min(p.1 - g) - 4 - h;
    let below = bar.1.max(p.1 + g) + 4;
    let mid = p.1 - h / 2;
    let candidates = [
        (p.0 + g, mid),
        (p.0 - g - w, mid),
        (p.0 + g, p.1 - g - h),
        (p.0 + g, p.1 + g),
        (p.0 - g - w, p.1 - g - h),
        (p.0 - g - w, p.1 + g),
        (p.0 - w / 2, above),
        (p.0 - w / 2, below),
        (p.0 + g, mid - h - 4),
        (p.0 + g, mid + h + 4),
        (p.0 - g - w, mid - h - 4),
        (p.0 - g - w, mid + h + 4),
    ];
    let cost = |r: &Rect| -> i64 {
        let out = if r.inside(&bounds) { 0 } else { 1_000_000 };
        let hits = |rs: &[Rect]| rs.iter().map(|t| t.overlap(r)).sum::<i64>();
        out + 8 * hits(hard) + hits(soft)
    };
    candidates
        .into_iter()
        .map(|(x, y)| Rect::new(x, y, w, h))
        .enumerate()
        .min_by_key(|(i, r)| (cost(r), *i))
        .map(|(_, r)| r)
        .unwrap_or_else(|| Rect::new(p.0 + g, mid, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(short_id("0192f3a4-5b6c-7d8e-9f01-23456789abcd"), "0192f3a4");
        assert_eq!(short_id("nightly"), "nightly");
    }
}
