//! Figures of a report (written by [`write_figures`]): pass@k curves, acceptance rate by block,
//! and cost against accuracy, each as PNG and SVG. Their numbers are the report's, defined as in
//! [`crate::DEFINITIONS`]: accuracy and pass@k count missing samples as wrong, and acceptance is
//! acceptances over proposals pooled over jobs.
//!
//! They are drawn with plotters in DejaVu Sans embedded in the binary, so they render the same on
//! a machine without system fonts or fontconfig. Every method keeps its colour and marker in every
//! figure (each of the sampler's methods has a fixed one), legends go in the corner of
//! the plot that hides the fewest data, and the scatter's labels are placed clear of each other.

mod acceptance;
mod axes;
mod compare;
mod cost_accuracy;
mod frontier;
mod layout;
mod legend;
mod lines;
mod pass_at_k;
mod raster;
mod scatter;
mod style;
#[cfg(test)]
mod test_reports;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::compare::Comparison;
use crate::report::Report;
use raster::Raster;
use style::{FONT, Look, SIZE, looks};

pub use frontier::{FrontierPanel, FrontierPlot, FrontierSeries, write_frontier_figure};

/// Writes the report's figures into `dir` (created if missing) as PNG and SVG; returns the paths.
///
/// The figures are `pass_at_k` (pass@k against k per method, missing samples counted as
/// incorrect), `acceptance_by_block` (the MCMC acceptances over proposals per block index per
/// method, pooled over its jobs) and `cost_vs_accuracy` (accuracy over all scheduled samples with
/// ±1 standard error against tokens generated per final token, per method). A figure without data still has
/// its axes and a note saying why it is empty. Each is titled by the report's label (else its
/// id), with its models and settings beneath.
pub fn write_figures(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, FigureError> {
    prepare(dir)?;
    let looks = looks(&report.methods);
    let mut written = Vec::new();
    for figure in [Figure::PassAtK, Figure::Acceptance, Figure::CostAccuracy] {
        let paint = ReportFigure {
            figure,
            report,
            looks: &looks,
        };
        written.extend(write_pair(dir, figure.name(), &paint)?);
    }
    Ok(written)
}

/// The file name (without extension) of the comparison figure.
pub const COMPARISON_FIGURE: &str = "compare_accuracy_vs_cost";

/// Writes the comparison's figure into `dir` (created if missing) as
/// [`COMPARISON_FIGURE`]`.png` and `.svg`; returns the paths. It shows accuracy over graded
/// samples with its 95% Wilson interval as error bars against the cost multiplier (tokens
/// generated per problem when a row has no multiplier), one point per run and row, labelled
/// `run · row` and coloured by run.
pub fn write_comparison_figure(
    comparison: &Comparison,
    dir: &Path,
) -> Result<Vec<PathBuf>, FigureError> {
    prepare(dir)?;
    write_pair(dir, COMPARISON_FIGURE, &ComparisonFigure(comparison))
}

/// Loads the font and creates `dir`.
fn prepare(dir: &Path) -> Result<(), FigureError> {
    if !register_font() {
        return Err(FigureError::Font);
    }
    std::fs::create_dir_all(dir).map_err(|source| FigureError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })
}

/// A figure that draws on any backend.
trait Paint {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// One of a report's figures.
struct ReportFigure<'a> {
    figure: Figure,
    report: &'a Report,
    looks: &'a [Look],
}

impl Paint for ReportFigure<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        draw(self.figure, root, self.report, self.looks)
    }
}

/// The comparison's figure.
struct ComparisonFigure<'a>(&'a Comparison);

impl Paint for ComparisonFigure<'_> {
    fn paint<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        compare::draw(root, self.0)
    }
}

/// Draws `figure` as `dir/name.png` and `dir/name.svg`; returns both paths.
fn write_pair(dir: &Path, name: &str, figure: &impl Paint) -> Result<Vec<PathBuf>, FigureError> {
    write_pair_sized(dir, name, SIZE, figure)
}

/// [`write_pair`] on a canvas of `size` pixels.
fn write_pair_sized(
    dir: &Path,
    name: &str,
    size: (u32, u32),
    figure: &impl Paint,
) -> Result<Vec<PathBuf>, FigureError> {
    let png = dir.join(format!("{name}.png"));
    let root = Raster(BitMapBackend::new(&png, size)).into_drawing_area();
    figure.paint(&root).map_err(drawing(&png))?;
    root.present().map_err(|e| drawing(&png)(e.to_string()))?;
    drop(root);

    let svg = dir.join(format!("{name}.svg"));
    let root = SVGBackend::new(&svg, size).into_drawing_area();
    figure.paint(&root).map_err(drawing(&svg))?;
    root.present().map_err(|e| drawing(&svg)(e.to_string()))?;
    drop(root);
    Ok(vec![png, svg])
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
        Figure::PassAtK => pass_at_k::draw(root, report, looks),
        Figure::Acceptance => acceptance::draw(root, report, looks),
        Figure::CostAccuracy => cost_accuracy::draw(root, report, looks),
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

#[cfg(test)]
mod tests {
    use super::layout::text_size;
    use super::style::{LABEL_SIZE, TITLE_SIZE};
    use super::test_reports::{crowded, method, report};
    use super::*;
    use acceptance::ACCEPTANCE_LABEL;
    use compare::COMPARED_ACCURACY_LABEL;
    use cost_accuracy::ACCURACY_LABEL;
    use pass_at_k::PASS_AT_K_EMPTY;

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
            let i = report.methods.iter().position(|m| m.row == method);
            rgb(looks[i.unwrap()].color)
        };

        // Titled by the whole id (the report has no label), with the model and the one
        // configuration's settings: α over the methods that sharpen (max-swap's is ∞).
        let title = "pass@k by method — 0192f3a4-5b6c-7d8e-9f01-23456789abcd";
        let subtitle = "toy · α=4/∞ n_mcmc=10 block_size=192 max_new_tokens=3072";
        let names = ["power", "max-swap", "low-temp", "standard"];
        check_svg(
            &svg("pass_at_k"),
            &[
                &names[..],
                &[
                    title,
                    subtitle,
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
                "MCMC acceptance rate by block — smoke",
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
        // A label names the study instead of the id.
        report.label = Some("alpha sweep".to_string());
        report.id = "0192f3a4-5b6c-7d8e-9f01-23456789abcd".to_string();
        write_figures(&report, &dir.0).unwrap();
        let texts = check_svg(
            &dir.0.join("pass_at_k.svg"),
            &["pass@k by method — alpha sweep"],
        );
        assert!(!texts.iter().any(|t| t.contains("0192f3a4")), "{texts:?}");
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
    fn crowded_reports_get_a_log_axis_and_a_shortened_title() {
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
            .find(|t| t.starts_with("Cost vs accuracy — nightly-math500"))
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

    /// Two runs of the test report: the baseline as it is, and one that spends half again as
    /// many tokens and gets one more problem right per method.
    fn comparison() -> Comparison {
        // The test report's one problem has 4 graded samples per method, 2 right.
        let mut baseline = report();
        baseline.methods.iter_mut().for_each(|m| m.graded = 4);
        let mut better = baseline.clone();
        better.id = "0192f3a4-0000-7d8e-9f01-23456789abcd".to_string();
        for m in &mut better.methods {
            m.cost_multiplier = m.cost_multiplier.map(|c| 1.5 * c);
        }
        for pm in &mut better.per_problem[0].methods {
            pm.correct += 1;
        }
        crate::compare::compare(vec![
            ("alpha-4".to_string(), baseline),
            ("label=alpha-2".to_string(), better),
        ])
    }

    #[test]
    fn a_comparison_is_drawn_as_accuracy_against_cost_per_run_and_method() {
        let dir = TempDir::new("compare");
        let c = comparison();
        let written = write_comparison_figure(&c, &dir.0).unwrap();
        let (png, svg) = (
            dir.0.join(format!("{COMPARISON_FIGURE}.png")),
            dir.0.join(format!("{COMPARISON_FIGURE}.svg")),
        );
        assert_eq!(written, [png.clone(), svg.clone()]);
        let (w, h, pixels) = decode(&png);
        assert_eq!((w, h), SIZE);
        // Each run in its colour.
        let looks = style::run_looks(&[(0, "power"), (1, "power")]);
        assert!(pixels.contains(&rgb(looks[0].color)) && pixels.contains(&rgb(looks[1].color)));
        // Every point labelled with its run and method; the title names the runs.
        let labels: Vec<String> = c
            .rows
            .iter()
            .map(|r| format!("{} · {}", r.run, r.row.row))
            .collect();
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let texts = check_svg(
            &svg,
            &[
                &labels[..],
                &[
                    "Accuracy vs cost — alpha-4 vs label=alpha-2",
                    COMPARED_ACCURACY_LABEL,
                ],
            ]
            .concat(),
        );
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with("cost multiplier (tokens generated per final token")),
            "{texts:?}"
        );
        for run in ["alpha-4", "label=alpha-2"] {
            assert!(texts.iter().any(|t| t.contains(run)), "{run} in {texts:?}");
        }

        // A row without a cost multiplier: cost is tokens per problem for all.
        let mut c = c;
        c.rows[0].row.cost_multiplier = None;
        write_comparison_figure(&c, &dir.0).unwrap();
        check_svg(&svg, &["tokens generated per problem", "alpha-4 · power"]);
    }

    #[test]
    fn axis_labels_fit_beside_the_plot() {
        // The y labels run along the plot's height: 600 pixels less the title and the x labels.
        for label in [
            ACCEPTANCE_LABEL,
            ACCURACY_LABEL,
            COMPARED_ACCURACY_LABEL,
            "pass@k (%)",
        ] {
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
}
