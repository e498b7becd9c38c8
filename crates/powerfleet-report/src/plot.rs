//! Figures of a report (written by [`write_figures`]): pass@k curves, acceptance rate by block,
//! and cost against accuracy, each as PNG and SVG. Their numbers are the report's, defined as in
//! [`crate::DEFINITIONS`]: accuracy and pass@k count missing samples as wrong, and acceptance is
//! acceptances over proposals pooled over jobs.
//!
//! They are drawn with plotters in DejaVu Sans embedded in the binary, so they render the same on
//! a machine without system fonts or fontconfig. Every method keeps its colour and marker in every
//! figure (power, max-swap, low-temp and standard have fixed ones), legends go in the corner of
//! the plot that hides the fewest data, and the scatter's labels are placed clear of each other.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{MethodReport, Report};
use raster::Raster;

/// The y axis label of the acceptance figure: what its numbers are.
const ACCEPTANCE_LABEL: &str = "acceptances / proposals, pooled";
/// The y axis label of the cost figure: accuracy over all scheduled samples, as the report's.
const ACCURACY_LABEL: &str = "accuracy, all scheduled (%, ±1 s.e.)";
/// The note of an empty pass@k figure.
const PASS_AT_K_EMPTY: &str = "no benchmark samples in this batch";

/// Pixel size of the PNGs (and of the SVGs' canvas).
const SIZE: (u32, u32) = (900, 600);
/// The family name the embedded font is registered under.
const FONT: &str = "sans-serif";
/// Font sizes in plotters' units (the em is size / 1.24 pixels).
const TITLE_SIZE: f64 = 30.0;
const LABEL_SIZE: f64 = 25.0;
const TICK_SIZE: f64 = 22.0;
const LEGEND_SIZE: f64 = 22.0;
const NOTE_SIZE: f64 = 24.0;
/// Marker radius, pixels.
const MARKER: i32 = 6;

const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
const MUTED: RGBColor = RGBColor(0x77, 0x77, 0x77);

/// Colours of the sampler's methods (Okabe-Ito, safe for colour-blind readers): power blue,
/// max-swap vermillion, low-temp bluish green, standard (the baseline) grey.
const KNOWN: [(&str, RGBColor, Shape); 4] = [
    ("power", RGBColor(0x00, 0x72, 0xb2), Shape::Circle),
    ("max-swap", RGBColor(0xd5, 0x5e, 0x00), Shape::Square),
    ("low-temp", RGBColor(0x00, 0x9e, 0x73), Shape::Triangle),
    ("standard", RGBColor(0x55, 0x55, 0x55), Shape::Diamond),
];
/// Colours of any other method, in report order.
const EXTRA: [RGBColor; 4] = [
    RGBColor(0xcc, 0x79, 0xa7),
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0x56, 0xb4, 0xe9),
    RGBColor(0x00, 0x00, 0x00),
];
const SHAPES: [Shape; 4] = [
    Shape::Circle,
    Shape::Square,
    Shape::Triangle,
    Shape::Diamond,
];

/// Writes the report's figures into `dir` (created if missing) as PNG and SVG; returns the paths.
///
/// The figures are `pass_at_k` (pass@k against k per method, missing samples counted as
/// incorrect), `acceptance_by_block` (the MCMC acceptances over proposals per block index per
/// method, pooled over its jobs) and `cost_vs_accuracy` (accuracy over all scheduled samples with
/// ±1 standard error against tokens generated per final token, per method). A figure without data still has
/// its axes and a note saying why it is empty.
pub fn write_figures(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, FigureError> {
    if !register_font() {
        return Err(FigureError::Font);
    }
    std::fs::create_dir_all(dir).map_err(|source| FigureError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let looks = looks(&report.methods);
    let mut written = Vec::new();
    for figure in [Figure::PassAtK, Figure::Acceptance, Figure::CostAccuracy] {
        let png = dir.join(format!("{}.png", figure.name()));
        let root = Raster(BitMapBackend::new(&png, SIZE)).into_drawing_area();
        draw(figure, &root, report, &looks).map_err(drawing(&png))?;
        root.present().map_err(|e| drawing(&png)(e.to_string()))?;
        drop(root);
        written.push(png);

        let svg = dir.join(format!("{}.svg", figure.name()));
        let root = SVGBackend::new(&svg, SIZE).into_drawing_area();
        draw(figure, &root, report, &looks).map_err(drawing(&svg))?;
        root.present().map_err(|e| drawing(&svg)(e.to_string()))?;
        drop(root);
        written.push(svg);
    }
    Ok(written)
}

/// Why [`write_figures`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// The font built into the binary does not load.
    #[error("the embedded font (DejaVu Sans) does not load")]
    Font,
    /// The directory cannot be created.
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        /// The directory asked for.
        dir: PathBuf,
        /// Why it cannot be created.
        source: std::io::Error,
    },
    /// A figure cannot be drawn or written.
    #[error("{}: {message}", path.display())]
    Draw {
        /// The figure's file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// A drawing failure of the figure at `path`.
fn drawing(path: &Path) -> impl Fn(String) -> FigureError + '_ {
    move |message| FigureError::Draw {
        path: path.to_path_buf(),
        message,
    }
}

/// Registers the embedded font with plotters, once per process; whether it loaded.
fn register_font() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Figure {
    PassAtK,
    Acceptance,
    CostAccuracy,
}

impl Figure {
    fn name(self) -> &'static str {
        match self {
            Figure::PassAtK => "pass_at_k",
            Figure::Acceptance => "acceptance_by_block",
            Figure::CostAccuracy => "cost_vs_accuracy",
        }
    }
}

fn draw<DB: DrawingBackend>(
    figure: Figure,
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    looks: &[Look],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(err)?;
    match figure {
        Figure::PassAtK => pass_at_k(root, report, looks),
        Figure::Acceptance => acceptance(root, report, looks),
        Figure::CostAccuracy => cost_accuracy(root, report, looks),
    }
}

/// Draws `text` in `style` anchored at `pos` by the style's position.
fn text<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: &str,
    pos: (i32, i32),
    style: TextStyle<'_>,
) -> Result<(), String> {
    root.draw_text(text, &style, pos).map_err(err)
}

fn err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

/// How a method is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Look {
    color: RGBColor,
    shape: Shape,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

/// The look of each method, in report order: fixed for the sampler's methods, the others by
/// their position among the unknown ones.
fn looks(methods: &[MethodReport]) -> Vec<Look> {
    let mut extra = 0;
    methods
        .iter()
        .map(
            |m| match KNOWN.iter().find(|(name, _, _)| *name == m.method) {
                Some(&(_, color, shape)) => Look { color, shape },
                None => {
                    extra += 1;
                    Look {
                        color: EXTRA[(extra - 1) % EXTRA.len()],
                        shape: SHAPES[(extra - 1) % SHAPES.len()],
                    }
                }
            },
        )
        .collect()
}

/// The marker of `look` at `at`, drawn over a thin white ring so overlapping markers stay apart.
fn marker<'b, DB: DrawingBackend + 'b, C: Clone + 'b>(at: C, look: Look) -> DynElement<'b, DB, C> {
    let r = MARKER;
    let fill = look.color.filled();
    let ring = WHITE.filled();
    let base = EmptyElement::at(at);
    match look.shape {
        Shape::Circle => {
            (base + Circle::new((0, 0), r + 2, ring) + Circle::new((0, 0), r, fill)).into_dyn()
        }
        Shape::Square => {
            let s = r - 1;
            (base
                + Rectangle::new([(-s - 2, -s - 2), (s + 2, s + 2)], ring)
                + Rectangle::new([(-s, -s), (s, s)], fill))
            .into_dyn()
        }
        Shape::Triangle => {
            let t = |r: i32| vec![(0, -r - 2), (r + 1, r), (-r - 1, r)];
            (base + Polygon::new(t(r + 2), ring) + Polygon::new(t(r), fill)).into_dyn()
        }
        Shape::Diamond => {
            let d = |r: i32| vec![(0, -r), (r, 0), (0, r), (-r, 0)];
            (base + Polygon::new(d(r + 4), ring) + Polygon::new(d(r + 2), fill)).into_dyn()
        }
    }
}

/// A batch id as a title shows it: a UUID by its first 8 characters, anything else whole.
fn short_id(id: &str) -> String {
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
fn title(what: &str, report: &Report) -> String {
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
fn text_size(text: &str, size: f64) -> (i32, i32) {
    raster::text_size(text, size).unwrap_or((
        (0.6 * size / 1.24) as i32 * text.chars().count() as i32,
        (size / 1.24) as i32,
    ))
}

fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&INK)
}

/// The smallest of 1, 2, 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
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
fn integer_ticks(n: u64) -> Vec<f64> {
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
fn ticks(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick value without trailing zeros.
fn tick_label(v: f64) -> String {
    let s = format!("{:.2}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// A rectangle in pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rect {
    x0: i32,
    y0: i32,
    x1: i32,
    y1: i32,
}

impl Rect {
    fn new(x0: i32, y0: i32, w: i32, h: i32) -> Rect {
        Rect {
            x0,
            y0,
            x1: x0 + w,
            y1: y0 + h,
        }
    }
    fn around((x, y): (i32, i32), r: i32) -> Rect {
        Rect {
            x0: x - r,
            y0: y - r,
            x1: x + r,
            y1: y + r,
        }
    }
    fn overlap(&self, o: &Rect) -> i64 {
        let w = (self.x1.min(o.x1) - self.x0.max(o.x0)).max(0) as i64;
        let h = (self.y1.min(o.y1) - self.y0.max(o.y0)).max(0) as i64;
        w * h
    }
    fn inside(&self, o: &Rect) -> bool {
        self.x0 >= o.x0 && self.y0 >= o.y0 && self.x1 <= o.x1 && self.y1 <= o.y1
    }
    fn contains(&self, (x, y): (i32, i32)) -> bool {
        x >= self.x0 && x <= self.x1 && y >= self.y0 && y <= self.y1
    }
}

/// The plotting area of a chart, in pixels.
fn plot_rect<DB: DrawingBackend, X: Ranged, Y: Ranged>(
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

/// Points every few pixels along a polyline (in pixels), for telling what a legend would hide.
fn sample_path(points: &[(i32, i32)], out: &mut Vec<(i32, i32)>) {
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
struct Entry<'a> {
    name: &'a str,
    look: Look,
    line: bool,
}

const LEGEND_PAD: i32 = 12;
const LEGEND_ROW: i32 = 30;
const LEGEND_KEY: i32 = 40;

fn legend_size(entries: &[Entry<'_>]) -> (i32, i32) {
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
fn place_legend(plot: Rect, size: (i32, i32), data: &[(i32, i32)], taken: &[Rect]) -> Rect {
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

fn draw_legend<DB: DrawingBackend>(
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

/// A note in the middle of an empty plot.
fn draw_note<DB: DrawingBackend>(
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
struct Axis {
    range: std::ops::Range<f64>,
    ticks: Vec<f64>,
    log: bool,
}

impl Axis {
    fn linear(range: std::ops::Range<f64>, ticks: Vec<f64>) -> Axis {
        Axis {
            range,
            ticks,
            log: false,
        }
    }

    /// The integers 1..=n with some room either side, ticked by [`integer_ticks`].
    fn integers(n: u64) -> Axis {
        let n = n.max(1);
        let pad = (0.04 * (n - 1) as f64).max(0.35);
        Axis::linear(1.0 - pad..n as f64 + pad, integer_ticks(n))
    }

    /// A log axis over `lo..hi` (both > 0) ticked at 1, 2 and 5 times powers of ten (only the
    /// powers of ten when that would be too many).
    fn log(lo: f64, hi: f64) -> Axis {
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

/// A chart over `x` and `y` with its title, axis labels, ticks at `x_ticks` / `y_ticks` and a
/// light grid.
fn chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x: Axis,
    y: Axis,
    (x_desc, y_desc): (&str, &str),
    x_format: &dyn Fn(&f64) -> String,
    y_format: &dyn Fn(&f64) -> String,
) -> Result<ChartContext<'a, DB, Cartesian2d<Axis, Axis>>, String> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, font(TITLE_SIZE))
        .margin_top(14)
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

/// A line: method, look, and the points (x, y), `None` where there is no data.
type Series<'a> = (&'a str, Look, Vec<Option<(f64, f64)>>);

/// Lines with markers, one per method, over the chart; where points are missing, a thin dashed
/// line bridges the gap.
fn draw_lines<DB: DrawingBackend>(
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

fn percent(v: &f64) -> String {
    tick_label(*v)
}

fn pass_at_k<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    looks: &[Look],
) -> Result<(), String> {
    let series: Vec<Series<'_>> = report
        .methods
        .iter()
        .zip(looks)
        .filter(|(m, _)| !m.pass_at_k.is_empty())
        .map(|(m, look)| {
            let points = m
                .pass_at_k
                .iter()
                .enumerate()
                .map(|(i, &p)| p.is_finite().then_some(((i + 1) as f64, 100.0 * p)))
                .collect();
            (m.method.as_str(), *look, points)
        })
        .collect();
    let n = series
        .iter()
        .map(|(_, _, p)| p.len() as u64)
        .max()
        .unwrap_or(1);
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

fn acceptance<DB: DrawingBackend>(
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
            (m.method.as_str(), *look, points)
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

/// A scatter point: method, look, cost multiplier, accuracy and its standard error (percent).
type Point<'a> = (&'a str, Look, f64, f64, Option<f64>);

fn cost_accuracy<DB: DrawingBackend>(
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

/// Where a label of `size` for the point at `p`, whose error bar spans `bar` (top and bottom,
/// pixels), goes: right, left, on the diagonals, above or below the error bar, or a row further
/// up or down; the first that lies in `bounds` and hits nothing, else the one that hits the least,
/// other labels and the legend (`hard`) counting more than markers and error bars (`soft`).
fn place_label(
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

/// Text drawing for the PNGs.
mod raster {
    use std::sync::OnceLock;

    use ab_glyph::{Font, FontRef, PxScale, PxScaleFont, ScaleFont, point};
    use plotters::backend::BitMapBackend;
    use plotters::prelude::DrawingBackend;
    use plotters::style::text_anchor::{HPos, VPos};
    use plotters_backend::{
        BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
    };

    /// The PNG backend: plotters' bitmap backend, but with text laid out and rasterized here with
    /// ab_glyph, each glyph at its own bearing and the text placed the way SVG viewers place it, so
    /// the PNG matches the SVG (plotters' ab_glyph drawing ignores bearings and sets text high).
    pub(super) struct Raster<'a>(pub(super) BitMapBackend<'a>);

    /// DejaVu Sans' x-height per em, which SVG's `ex` unit is.
    const EX: f64 = 0.547;

    /// The embedded font, parsed once.
    fn face() -> Option<&'static FontRef<'static>> {
        static FACE: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
        FACE.get_or_init(|| FontRef::try_from_slice(dejavu::sans::regular()).ok())
            .as_ref()
    }

    /// The font at plotters' text `size` (whose em is size / 1.24 pixels, as in plotters' SVG).
    fn scaled(
        size: f64,
    ) -> Result<
        (PxScaleFont<&'static FontRef<'static>>, f64),
        Box<dyn std::error::Error + Send + Sync>,
    > {
        let face = face().ok_or("the embedded font (DejaVu Sans) does not load")?;
        let em = size / 1.24;
        let units = face.units_per_em().unwrap_or(2048.0);
        let scale = PxScale::from((em as f32) * face.height_unscaled() / units);
        Ok((face.as_scaled(scale), em))
    }

    /// The width (advances) and height (the em) of `text` at plotters' font `size`, pixels.
    pub(super) fn text_size(
        text: &str,
        size: f64,
    ) -> Result<(i32, i32), Box<dyn std::error::Error + Send + Sync>> {
        let (font, em) = scaled(size)?;
        Ok((advance(&font, text).ceil() as i32, em.round() as i32))
    }

    /// The advance width of `text`, pixels.
    fn advance(font: &PxScaleFont<&FontRef<'_>>, text: &str) -> f32 {
        let mut prev = None;
        let mut pen = 0.0;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                pen += font.kern(p, id);
            }
            pen += font.h_advance(id);
            prev = Some(id);
        }
        pen
    }

    impl DrawingBackend for Raster<'_> {
        type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

        fn get_size(&self) -> (u32, u32) {
            self.0.get_size()
        }

        fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.ensure_prepared()
        }

        fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.present()
        }

        fn draw_pixel(
            &mut self,
            point: BackendCoord,
            color: BackendColor,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.draw_pixel(point, color)
        }

        fn draw_line<S: BackendStyle>(
            &mut self,
            from: BackendCoord,
            to: BackendCoord,
            style: &S,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.draw_line(from, to, style)
        }

        fn draw_rect<S: BackendStyle>(
            &mut self,
            upper_left: BackendCoord,
            bottom_right: BackendCoord,
            style: &S,
            fill: bool,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.draw_rect(upper_left, bottom_right, style, fill)
        }

        fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
            &mut self,
            path: I,
            style: &S,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.draw_path(path, style)
        }

        fn draw_circle<S: BackendStyle>(
            &mut self,
            center: BackendCoord,
            radius: u32,
            style: &S,
            fill: bool,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.draw_circle(center, radius, style, fill)
        }

        fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
            &mut self,
            vert: I,
            style: &S,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.fill_polygon(vert, style)
        }

        fn blit_bitmap(
            &mut self,
            pos: BackendCoord,
            size: (u32, u32),
            src: &[u8],
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            self.0.blit_bitmap(pos, size, src)
        }

        fn estimate_text_size<S: BackendTextStyle>(
            &self,
            text: &str,
            style: &S,
        ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
            let (w, h) = text_size(text, style.size()).map_err(DrawingErrorKind::FontError)?;
            Ok((w as u32, h as u32))
        }

        fn draw_text<S: BackendTextStyle>(
            &mut self,
            text: &str,
            style: &S,
            pos: BackendCoord,
        ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
            let color = style.color();
            if color.alpha == 0.0 {
                return Ok(());
            }
            let (font, em) = scaled(style.size()).map_err(DrawingErrorKind::FontError)?;
            let width = advance(&font, text);
            let anchor = style.anchor();
            let mut pen = match anchor.h_pos {
                HPos::Left => 0.0,
                HPos::Center => -width / 2.0,
                HPos::Right => -width,
            };
            // Where SVG puts the baseline for the same anchor (plotters' SVG backend sets `dy`).
            let baseline = match anchor.v_pos {
                VPos::Top => 0.76 * em,
                VPos::Center => 0.5 * EX * em,
                VPos::Bottom => -0.5 * EX * em,
            } as f32;
            let transform = style.transform();
            let mut prev = None;
            for c in text.chars() {
                let id = font.glyph_id(c);
                if let Some(p) = prev {
                    pen += font.kern(p, id);
                }
                prev = Some(id);
                let glyph = id.with_scale_and_position(font.scale(), point(pen, baseline));
                pen += font.h_advance(id);
                let Some(outline) = font.outline_glyph(glyph) else {
                    continue;
                };
                let bounds = outline.px_bounds();
                let mut result = Ok(());
                outline.draw(|x, y, coverage| {
                    if result.is_err() || coverage <= 0.0 {
                        return;
                    }
                    let (dx, dy) = transform.transform(
                        bounds.min.x as i32 + x as i32,
                        bounds.min.y as i32 + y as i32,
                    );
                    let color = BackendColor {
                        alpha: color.alpha * f64::from(coverage.min(1.0)),
                        rgb: color.rgb,
                    };
                    result = self.0.draw_pixel((pos.0 + dx, pos.1 + dy), color);
                });
                result?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ProblemMethod, ProblemReport};

    fn method(
        name: &str,
        pass: [f64; 4],
        acceptance: Vec<Option<f64>>,
        cost: f64,
        acc: f64,
    ) -> MethodReport {
        MethodReport {
            method: name.to_string(),
            jobs: 40,
            completed: 40,
            scheduled: 40,
            graded: 40,
            missing: 0,
            problems: 10,
            problems_with_missing: 0,
            samples: 4,
            accuracy: Some(acc),
            accuracy_stderr: Some(0.025),
            accuracy_graded: Some(acc),
            accuracy_graded_stderr: Some(0.025),
            pass_at_k: pass.to_vec(),
            majority_accuracy: Some(acc + 0.02),
            proposals: 100,
            acceptances: 40,
            acceptance_rate: acceptance.iter().flatten().next().map(|_| 0.4),
            mean_job_acceptance_rate: acceptance
                .iter()
                .flatten()
                .copied()
                .reduce(|a, b| (a + b) / 2.0),
            acceptance_by_block: acceptance,
            tokens_generated: (cost * 10_000.0) as u64,
            final_tokens: 10_000,
            cost_multiplier: Some(cost),
            cost_usd: Some(0.01 * cost),
            model_calls: 400,
            latency_p50_ms: Some(1_200),
            latency_p95_ms: Some(3_400),
            wall_time_s: Some(60.0),
            jobs_per_s: Some(40.0 / 60.0),
            tokens_per_s: Some(cost * 10_000.0 / 60.0),
        }
    }

    fn report() -> Report {
        let methods = vec![
            method(
                "power",
                [0.52, 0.63, 0.69, 0.73],
                vec![Some(0.41), None, Some(0.33)],
                8.7,
                0.52,
            ),
            method(
                "max-swap",
                [0.49, 0.60, 0.66, 0.71],
                vec![Some(0.58), Some(0.47), Some(0.44)],
                6.2,
                0.49,
            ),
            method(
                "low-temp",
                [0.45, 0.55, 0.60, 0.63],
                vec![None, None, None],
                1.0,
                0.45,
            ),
            method("standard", [0.40, 0.53, 0.60, 0.65], vec![], 1.0, 0.40),
        ];
        Report {
            id: "0192f3a4-5b6c-7d8e-9f01-23456789abcd".to_string(),
            models: vec!["toy".to_string()],
            jobs: 160,
            completed: 160,
            not_completed: 0,
            graded: 160,
            missing: 0,
            problems: 10,
            problems_with_missing: 0,
            wall_time_s: Some(75.0),
            cost_usd: Some(0.17),
            per_problem: vec![ProblemReport {
                problem_id: "p1".to_string(),
                reference: Some("42".to_string()),
                methods: methods
                    .iter()
                    .map(|m| ProblemMethod {
                        method: m.method.clone(),
                        scheduled: 4,
                        graded: 4,
                        correct: 2,
                        missing: 0,
                        majority_answer: Some("42".to_string()),
                        majority_correct: true,
                    })
                    .collect(),
                solved_by: methods.iter().map(|m| m.method.clone()).collect(),
                methods_with_missing: Vec::new(),
            }],
            methods,
            definitions: Default::default(),
        }
    }

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            TempDir(std::env::temp_dir().join(format!(
                "powerfleet-plot-{tag}-{}-{nanos}",
                std::process::id()
            )))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const NAMES: [&str; 3] = ["pass_at_k", "acceptance_by_block", "cost_vs_accuracy"];

    /// A report with many methods, long series, coinciding points, costs spanning 1x to 41x
    /// and a long id.
    fn crowded() -> Report {
        let mut r = report();
        r.id = "nightly-math500-qwen2.5-math-7b-alpha4-run-2026-11-25".to_string();
        let curve = |a: f64| {
            (1..=64)
                .map(|k| 1.0 - (1.0 - a) * (k as f64).powf(-0.35))
                .collect::<Vec<_>>()
        };
        let blocks = |a: f64| {
            (0..16)
                .map(|b| (b % 5 != 3).then_some(a - 0.015 * b as f64))
                .collect::<Vec<_>>()
        };
        for (i, m) in r.methods.iter_mut().enumerate() {
            m.pass_at_k = curve(0.5 - 0.05 * i as f64);
            if i < 2 {
                m.acceptance_by_block = blocks(0.7 - 0.2 * i as f64);
            }
        }
        r.methods[0].cost_multiplier = Some(41.0);
        r.methods[3].accuracy = r.methods[2].accuracy;
        let mut long = method(
            "self-consistency-with-a-long-name",
            [0.3; 4],
            vec![],
            12.0,
            0.46,
        );
        long.pass_at_k = curve(0.2);
        r.methods.push(long);
        r.methods
            .push(method("beam", [0.35; 4], vec![Some(0.2)], 4.0, 0.47));
        r
    }

    /// A decoded PNG: width, height and its distinct RGB pixel values.
    fn decode(path: &Path) -> (u32, u32, std::collections::BTreeSet<(u8, u8, u8)>) {
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        let px = info.color_type.samples();
        assert!(px >= 3, "{} is not RGB", path.display());
        let pixels = buf[..info.buffer_size()]
            .chunks(px)
            .map(|p| (p[0], p[1], p[2]))
            .collect();
        (info.width, info.height, pixels)
    }

    /// The contents of an SVG's `<text>` elements.
    fn svg_texts(svg: &str) -> Vec<String> {
        svg.split("</text>")
            .filter_map(|chunk| chunk.rsplit_once('>').map(|(_, t)| t.trim().to_string()))
            .filter(|t| !t.is_empty())
            .collect()
    }

    fn rgb(c: RGBColor) -> (u8, u8, u8) {
        (c.0, c.1, c.2)
    }

    /// Checks an SVG is one and has a text element saying each of `texts`; returns its texts.
    fn check_svg(path: &Path, texts: &[&str]) -> Vec<String> {
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(!svg.is_empty(), "{} is empty", path.display());
        let body = match svg.trim_start().strip_prefix("<?xml") {
            Some(rest) => rest
                .split_once("?>")
                .map(|(_, b)| b)
                .unwrap_or("")
                .trim_start(),
            None => svg.trim_start(),
        };
        assert!(
            body.starts_with("<svg"),
            "{} does not start with <svg",
            path.display()
        );
        let found = svg_texts(&svg);
        for text in texts {
            assert!(
                found.iter().any(|t| t == text),
                "{} lacks the text {text:?}: {found:?}",
                path.display()
            );
        }
        found
    }

    #[test]
    fn writes_six_readable_figures() {
        let dir = TempDir::new("full");
        let report = report();
        let figures = dir.0.join("figures");
        let written = write_figures(&report, &figures).unwrap();
        assert_eq!(written.len(), 6);
        for name in NAMES {
            for ext in ["png", "svg"] {
                let path = figures.join(format!("{name}.{ext}"));
                assert!(written.contains(&path), "{} not returned", path.display());
                assert!(path.is_file(), "{} not written", path.display());
            }
            let (w, h, pixels) = decode(&figures.join(format!("{name}.png")));
            assert_eq!((w, h), SIZE);
            assert!(
                pixels.len() > 20,
                "{name}.png has {} distinct pixels",
                pixels.len()
            );
        }
        let svg = |name: &str| figures.join(format!("{name}.svg"));
        let png = |name: &str| decode(&figures.join(format!("{name}.png"))).2;
        let looks = looks(&report.methods);
        let colour = |method: &str| {
            let i = report.methods.iter().position(|m| m.method == method);
            rgb(looks[i.unwrap()].color)
        };

        let title = "pass@k by method — batch 0192f3a4";
        let names = ["power", "max-swap", "low-temp", "standard"];
        check_svg(
            &svg("pass_at_k"),
            &[
                &names[..],
                &[
                    title,
                    "pass@k (%)",
                    "k (samples per problem)",
                    "1",
                    "4",
                    "100",
                ],
            ]
            .concat(),
        );
        let pixels = png("pass_at_k");
        assert!(names.iter().all(|m| pixels.contains(&colour(m))));

        // Only methods with acceptance data are in the acceptance figure.
        let texts = check_svg(
            &svg("acceptance_by_block"),
            &[
                "power",
                "max-swap",
                "block index",
                ACCEPTANCE_LABEL,
                "3",
                "1.0",
            ],
        );
        assert!(
            !texts.iter().any(|t| t == "low-temp" || t == "standard"),
            "{texts:?}"
        );
        let pixels = png("acceptance_by_block");
        assert!(pixels.contains(&colour("power")) && pixels.contains(&colour("max-swap")));
        assert!(!pixels.contains(&colour("low-temp")));

        check_svg(
            &svg("cost_vs_accuracy"),
            &[
                &names[..],
                &[
                    "cost multiplier (tokens generated per final token)",
                    ACCURACY_LABEL,
                    "2×",
                ],
            ]
            .concat(),
        );
        let pixels = png("cost_vs_accuracy");
        assert!(names.iter().all(|m| pixels.contains(&colour(m))));

        // Writing again over the same files works.
        assert_eq!(write_figures(&report, &figures).unwrap(), written);
    }

    #[test]
    fn writes_figures_of_an_empty_report() {
        let dir = TempDir::new("empty");
        let mut report = report();
        report.methods.clear();
        report.per_problem.clear();
        report.id = "smoke".to_string();
        let written = write_figures(&report, &dir.0).unwrap();
        assert_eq!(written.len(), 6);
        for name in NAMES {
            let (w, h, pixels) = decode(&dir.0.join(format!("{name}.png")));
            assert_eq!((w, h), SIZE);
            assert!(
                pixels.len() > 5,
                "{name}.png has {} distinct pixels",
                pixels.len()
            );
        }
        check_svg(
            &dir.0.join("acceptance_by_block.svg"),
            &[
                "no MCMC proposals in this batch",
                "MCMC acceptance rate by block — batch smoke",
                "block index",
            ],
        );
        check_svg(
            &dir.0.join("pass_at_k.svg"),
            &[PASS_AT_K_EMPTY, "pass@k (%)"],
        );
        check_svg(
            &dir.0.join("cost_vs_accuracy.svg"),
            &[
                "no method with both accuracy and cost in this batch",
                ACCURACY_LABEL,
            ],
        );

        // No id: the title is just what the figure shows.
        report.id.clear();
        write_figures(&report, &dir.0).unwrap();
        check_svg(&dir.0.join("pass_at_k.svg"), &["pass@k by method"]);
    }

    #[test]
    fn methods_without_data_are_left_out() {
        let dir = TempDir::new("partial");
        let mut report = report();
        for m in &mut report.methods {
            m.acceptance_by_block.clear();
        }
        report.methods[0].cost_multiplier = None;
        report.methods[1].accuracy_stderr = None;
        report.methods[2].pass_at_k.clear();
        report.methods.push(method(
            "beam",
            [0.1, 0.2, 0.3, 0.4],
            vec![Some(f64::NAN)],
            3.0,
            0.3,
        ));
        write_figures(&report, &dir.0).unwrap();
        check_svg(
            &dir.0.join("acceptance_by_block.svg"),
            &["no MCMC proposals in this batch"],
        );
        let scatter = check_svg(&dir.0.join("cost_vs_accuracy.svg"), &["max-swap", "beam"]);
        assert!(!scatter.iter().any(|t| t == "power"), "{scatter:?}");
        let pass = check_svg(&dir.0.join("pass_at_k.svg"), &["power", "beam"]);
        assert!(!pass.iter().any(|t| t == "low-temp"), "{pass:?}");
    }

    #[test]
    fn crowded_reports_get_a_log_axis_and_a_shortened_id() {
        let dir = TempDir::new("crowded");
        write_figures(&crowded(), &dir.0).unwrap();
        let texts = check_svg(
            &dir.0.join("cost_vs_accuracy.svg"),
            &[
                "cost multiplier (tokens generated per final token, log scale)",
                "self-consistency-with-a-long-name",
                "1×",
                "10×",
            ],
        );
        let title = texts
            .iter()
            .find(|t| t.starts_with("Cost vs accuracy — batch nightly-math500"))
            .unwrap();
        assert!(
            title.ends_with('…') && text_size(title, TITLE_SIZE).0 < SIZE.0 as i32,
            "{title}"
        );
        check_svg(&dir.0.join("pass_at_k.svg"), &["1", "10", "60"]);
        check_svg(
            &dir.0.join("acceptance_by_block.svg"),
            &["power", "max-swap", "beam", "16"],
        );
    }

    #[test]
    fn axis_labels_fit_beside_the_plot() {
        // The y labels run along the plot's height: 600 pixels less the title and the x labels.
        for label in [ACCEPTANCE_LABEL, ACCURACY_LABEL, "pass@k (%)"] {
            let (width, _) = text_size(label, LABEL_SIZE);
            assert!(width < 440, "{label:?} is {width} pixels long");
        }
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_an_error() {
        let dir = TempDir::new("blocked");
        std::fs::create_dir_all(&dir.0).unwrap();
        let file = dir.0.join("file");
        std::fs::write(&file, b"").unwrap();
        let err = write_figures(&report(), &file.join("figures"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot create"), "{err}");
    }

    #[test]
    fn looks_are_fixed_per_method() {
        let r = report();
        let all = looks(&r.methods);
        let only_standard = looks(&r.methods[3..]);
        assert_eq!(all[3], only_standard[0]);
        let distinct: std::collections::BTreeSet<(u8, u8, u8)> = all
            .iter()
            .map(|l| (l.color.0, l.color.1, l.color.2))
            .collect();
        assert_eq!(distinct.len(), 4);
    }

    #[test]
    fn ids_and_ticks() {
        assert_eq!(short_id("0192f3a4-5b6c-7d8e-9f01-23456789abcd"), "0192f3a4");
        assert_eq!(short_id("nightly"), "nightly");
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
