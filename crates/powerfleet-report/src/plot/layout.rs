//! Measuring and placing in pixels: text sizes, titles that fit the figure, rectangles, the
//! plotting area of a chart, and where the scatter's labels go.

use plotters::prelude::*;

use super::raster;
use super::style::{MARKER, SIZE, SUBTITLE_SIZE, TITLE_SIZE};
use crate::report::{MethodReport, Report};

/// A figure's title: what it shows and of which study (its label, else its whole id), and
/// under it the models and settings of what it shows.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Title {
    /// `what — study`, the study cut short (with "…") where the whole would not fit.
    pub(super) main: String,
    /// `models · settings`, cut short at the end where it would not fit; may be empty.
    pub(super) sub: String,
}

/// Whether `text` at `size` fits the figure's width with a margin.
fn fits(text: &str, size: f64) -> bool {
    text_size(text, size).0 + 60 <= SIZE.0 as i32
}

/// `prefix` followed by as much of `text` as fits at `size` (at least `min` characters), with
/// "…" where it is cut.
fn fit(prefix: &str, text: &str, size: f64, min: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut keep = chars.len();
    loop {
        let mut shown: String = chars[..keep].iter().collect();
        if keep < chars.len() {
            shown.truncate(
                shown
                    .trim_end_matches(['.', '-', '_', ' ', ',', '·', '/'])
                    .len(),
            );
            shown.push('…');
        }
        let line = format!("{prefix}{shown}");
        if keep <= min || fits(&line, size) {
            return line;
        }
        keep -= 1;
    }
}

/// The title of a figure about `what` in `report`: the study is its label, else its whole id;
/// the subtitle names its models and the settings of its rows ([`settings`]).
pub(super) fn title(what: &str, report: &Report) -> Title {
    let study = report.label.as_deref().unwrap_or(&report.id);
    titled(what, study, &report.models, report.methods.iter())
}

/// The title of a figure about `what` of `study` (empty: none), over `rows` on `models`.
pub(super) fn titled<'a>(
    what: &str,
    study: &str,
    models: &[String],
    rows: impl Iterator<Item = &'a MethodReport>,
) -> Title {
    let main = if study.is_empty() {
        what.to_string()
    } else {
        fit(&format!("{what} — "), study, TITLE_SIZE, 8)
    };
    let models = match models {
        [] => String::new(),
        few if few.len() <= 3 => few.join(", "),
        many => format!("{} models", many.len()),
    };
    let sub = [models, settings(rows)]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" · ");
    Title {
        main,
        sub: fit("", &sub, SUBTITLE_SIZE, 0),
    }
}

/// Settings every study states: sharpening, MCMC steps, block and budget, and the options of
/// the methods that have them.
const STUDY_SETTINGS: [&str; 6] = [
    "alpha",
    "n_mcmc",
    "block_size",
    "max_new_tokens",
    "top_k",
    "particles",
];

/// The settings of `rows` (their recorded configurations) as a title shows them: first the
/// settings that tell rows of one method apart (a sweep's `n_mcmc=2/40`), then the
/// [`STUDY_SETTINGS`], each as `key=value`, or `key=v1/v2` when rows differ, over the rows it
/// applies to (no α for standard, no `n_mcmc` for methods without MCMC steps). Empty when no
/// row recorded its configuration.
pub(super) fn settings<'a>(rows: impl Iterator<Item = &'a MethodReport>) -> String {
    let configs: Vec<(String, serde_json::Map<String, serde_json::Value>)> = rows
        .filter_map(|m| {
            let config = m.config.as_ref()?;
            let serde_json::Value::Object(fields) = serde_json::to_value(config).ok()? else {
                return None;
            };
            Some((config.method.as_str().to_string(), fields))
        })
        .collect();
    let applies = |method: &str, key: &str, value: &serde_json::Value| match key {
        _ if value.is_null() => false,
        "method" => false,
        "alpha" | "proposal_temp" => method != "standard",
        "n_mcmc" => value.as_u64() != Some(0),
        _ => true,
    };
    // Keys whose values differ between two rows of one method.
    let mut distinguishing: Vec<&str> = Vec::new();
    for (i, (method, fields)) in configs.iter().enumerate() {
        for (other_method, other) in &configs[i + 1..] {
            if other_method != method {
                continue;
            }
            for key in fields.keys().chain(other.keys()) {
                if fields.get(key) != other.get(key) && !distinguishing.contains(&key.as_str()) {
                    distinguishing.push(key);
                }
            }
        }
    }
    distinguishing.sort_unstable();
    let keys = distinguishing.iter().copied().chain(
        STUDY_SETTINGS
            .into_iter()
            .filter(|k| !distinguishing.contains(k)),
    );
    keys.filter_map(|key| {
        let mut values: Vec<String> = Vec::new();
        for (method, fields) in &configs {
            if let Some(v) = fields.get(key).filter(|v| applies(method, key, v)) {
                let shown = setting_value(v);
                if !values.contains(&shown) {
                    values.push(shown);
                }
            }
        }
        let name = if key == "alpha" { "α" } else { key };
        (!values.is_empty()).then(|| format!("{name}={}", values.join("/")))
    })
    .collect::<Vec<_>>()
    .join(" ")
}

/// A setting's value as a title shows it: whole numbers without ".0", text without quotes, an
/// infinite α as ∞.
fn setting_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if s == "inf" => "∞".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
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

    use powerfleet_sampler::{Alpha, Method, SamplerConfig};

    use crate::plot::test_reports::{method, report};

    /// A row of `method` with `alpha` and `n_mcmc`, named `name`.
    fn row(name: &str, m: Method, alpha: f64, n_mcmc: u32) -> MethodReport {
        let mut row = method(name, [0.5; 4], vec![], 1.0, 0.5);
        let config = SamplerConfig {
            alpha: Some(Alpha::new(alpha).unwrap()),
            n_mcmc,
            max_new_tokens: 1024,
            ..SamplerConfig::new(m)
        };
        row.config = Some(config.validate().unwrap().manifest());
        row
    }

    #[test]
    fn titles_name_the_study_its_models_and_settings() {
        // Three batches submitted in one minute, α = 1, 2, 4, no label: each titled by its
        // whole id, and the subtitles tell them apart.
        let mut r = report();
        r.methods = vec![
            row("power", Method::Power, 4.0, 10),
            row("standard", Method::Standard, 4.0, 0),
        ];
        let t = title("pass@k by method", &r);
        assert_eq!(
            t.main,
            "pass@k by method — 0192f3a4-5b6c-7d8e-9f01-23456789abcd"
        );
        assert_eq!(
            t.sub,
            "toy · α=4 n_mcmc=10 block_size=192 max_new_tokens=1024"
        );
        let subs: Vec<String> = [1.0, 2.0, 4.0]
            .map(|alpha| {
                r.methods[0] = row("power", Method::Power, alpha, 10);
                title("pass@k by method", &r).sub
            })
            .to_vec();
        assert_eq!(
            subs[0],
            "toy · α=1 n_mcmc=10 block_size=192 max_new_tokens=1024"
        );
        assert!(subs[0] != subs[1] && subs[1] != subs[2], "{subs:?}");

        // A label names the study; a sweep's rows are told apart by what differs first.
        r.label = Some("n_mcmc sweep".to_string());
        r.models = vec!["qwen".to_string(), "llama".to_string()];
        r.methods = vec![
            row("power n_mcmc=2", Method::Power, 4.0, 2),
            row("power n_mcmc=40", Method::Power, 4.0, 40),
            row("low-temp", Method::LowTemp, 4.0, 0),
        ];
        let t = title("Cost vs accuracy", &r);
        assert_eq!(t.main, "Cost vs accuracy — n_mcmc sweep");
        assert_eq!(
            t.sub,
            "qwen, llama · n_mcmc=2/40 α=4 block_size=192 max_new_tokens=1024"
        );

        // Without recorded configurations, the models alone; many models are counted.
        r.methods.iter_mut().for_each(|m| m.config = None);
        r.models = (0..5).map(|i| format!("m{i}")).collect();
        assert_eq!(title("x", &r).sub, "5 models");
    }

    #[test]
    fn long_titles_are_cut_to_fit() {
        let mut r = report();
        r.label = Some("a study whose label goes on and on and on, longer than any figure".into());
        r.models = vec!["an-organisation/a-model-with-a-long-name-Instruct-2507".into()];
        let t = title("MCMC acceptance rate by block", &r);
        assert!(
            t.main
                .starts_with("MCMC acceptance rate by block — a study"),
            "{t:?}"
        );
        for (line, size) in [(&t.main, TITLE_SIZE), (&t.sub, SUBTITLE_SIZE)] {
            assert!(line.ends_with('…'), "{line}");
            assert!(fits(line, size), "{line}");
        }
    }
}
