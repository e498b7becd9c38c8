//! How the figures look: canvas and font sizes, ink colours, and each method's colour and marker
//! (fixed for the sampler's methods, so a method looks the same in every figure).

use plotters::prelude::*;

use powerfleet_sampler::Method;

use crate::report::MethodReport;

/// Pixel size of the PNGs (and of the SVGs' canvas).
pub(super) const SIZE: (u32, u32) = (900, 600);
/// The family name the embedded font is registered under.
pub(super) const FONT: &str = "sans-serif";
/// Font sizes in plotters' units (the em is size / 1.24 pixels).
pub(super) const TITLE_SIZE: f64 = 30.0;
pub(super) const SUBTITLE_SIZE: f64 = 22.0;
pub(super) const LABEL_SIZE: f64 = 25.0;
pub(super) const TICK_SIZE: f64 = 22.0;
pub(super) const LEGEND_SIZE: f64 = 22.0;
pub(super) const NOTE_SIZE: f64 = 24.0;
/// Marker radius, pixels.
pub(super) const MARKER: i32 = 6;

pub(super) const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
pub(super) const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);
pub(super) const MUTED: RGBColor = RGBColor(0x77, 0x77, 0x77);

/// The colour and marker of each of the sampler's methods (Okabe-Ito colours, safe for
/// colour-blind readers): power blue, max-swap vermillion, low-temp bluish green, standard (the
/// baseline) grey, power-smc reddish purple, power-lookahead wine (Tol's). `None` for a method
/// this build does not know.
fn known(method: Option<Method>) -> Option<(RGBColor, Shape)> {
    Some(match method? {
        Method::Power => (RGBColor(0x00, 0x72, 0xb2), Shape::Circle),
        Method::MaxSwap => (RGBColor(0xd5, 0x5e, 0x00), Shape::Square),
        Method::LowTemp => (RGBColor(0x00, 0x9e, 0x73), Shape::Triangle),
        Method::Standard => (RGBColor(0x55, 0x55, 0x55), Shape::Diamond),
        Method::PowerSmc => (RGBColor(0xcc, 0x79, 0xa7), Shape::InvertedTriangle),
        Method::PowerLookahead => (RGBColor(0x88, 0x22, 0x55), Shape::Pentagon),
    })
}
/// Colours of any other method, in report order.
const EXTRA: [RGBColor; 4] = [
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0x56, 0xb4, 0xe9),
    RGBColor(0x00, 0x00, 0x00),
    RGBColor(0xb8, 0xa6, 0x00),
];
const SHAPES: [Shape; 4] = [
    Shape::Circle,
    Shape::Square,
    Shape::Triangle,
    Shape::Diamond,
];

/// Colours of a method's other families ([`family_look`]), in order.
const VARIANTS: [RGBColor; 3] = [
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0xb8, 0xa6, 0x00),
    RGBColor(0x00, 0x00, 0x00),
];

/// The look of a family of settings of `method`: variant 0 is the method's own look, the others
/// keep its marker in another colour (orange, olive, black).
pub(super) fn family_look(method: Method, variant: usize) -> Look {
    let (color, shape) = known(Some(method)).expect("every method has a look");
    let color = match variant {
        0 => color,
        v => VARIANTS[(v - 1) % VARIANTS.len()],
    };
    Look { color, shape }
}

/// How a method is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Look {
    pub(super) color: RGBColor,
    shape: Shape,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    InvertedTriangle,
    Pentagon,
}

/// The look of each method, in report order: fixed for the sampler's methods, the others by
/// their position among the unknown ones.
pub(super) fn looks(methods: &[MethodReport]) -> Vec<Look> {
    let mut extra = 0;
    methods
        .iter()
        .map(|m| match known(m.method()) {
            Some((color, shape)) => Look { color, shape },
            None => {
                extra += 1;
                Look {
                    color: EXTRA[(extra - 1) % EXTRA.len()],
                    shape: SHAPES[(extra - 1) % SHAPES.len()],
                }
            }
        })
        .collect()
}

/// Colours of the runs of a comparison, in order (Okabe-Ito, then grey and black).
const RUNS: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xb2),
    RGBColor(0xd5, 0x5e, 0x00),
    RGBColor(0x00, 0x9e, 0x73),
    RGBColor(0xcc, 0x79, 0xa7),
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0x56, 0xb4, 0xe9),
    RGBColor(0x55, 0x55, 0x55),
    RGBColor(0x00, 0x00, 0x00),
];

/// The look of each (run index, row name) of a comparison: the run's colour, the method's
/// marker (fixed for the sampler's methods, the others by their order of appearance).
pub(super) fn run_looks(rows: &[(usize, &str)]) -> Vec<Look> {
    let mut unknown: Vec<&str> = Vec::new();
    rows.iter()
        .map(|&(run, row)| {
            let method = row.split(' ').next().unwrap_or(row);
            let shape = match known(method.parse().ok()) {
                Some((_, shape)) => shape,
                None => {
                    let i = unknown
                        .iter()
                        .position(|m| *m == method)
                        .unwrap_or_else(|| {
                            unknown.push(method);
                            unknown.len() - 1
                        });
                    SHAPES[i % SHAPES.len()]
                }
            };
            Look {
                color: RUNS[run % RUNS.len()],
                shape,
            }
        })
        .collect()
}

/// The marker of `look` at `at`, drawn over a thin white ring so overlapping markers stay apart.
pub(super) fn marker<'b, DB: DrawingBackend + 'b, C: Clone + 'b>(
    at: C,
    look: Look,
) -> DynElement<'b, DB, C> {
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
        Shape::InvertedTriangle => {
            let t = |r: i32| vec![(0, r + 2), (r + 1, -r), (-r - 1, -r)];
            (base + Polygon::new(t(r + 2), ring) + Polygon::new(t(r), fill)).into_dyn()
        }
        Shape::Pentagon => {
            let p = |r: i32| {
                (0..5)
                    .map(|i| {
                        let a = std::f64::consts::TAU * f64::from(i) / 5.0;
                        let r = f64::from(r);
                        ((r * a.sin()).round() as i32, (-r * a.cos()).round() as i32)
                    })
                    .collect::<Vec<_>>()
            };
            (base + Polygon::new(p(r + 3), ring) + Polygon::new(p(r + 1), fill)).into_dyn()
        }
    }
}

pub(super) fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&INK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::test_reports::report;

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
    fn every_method_has_a_look_of_its_own() {
        let looks: Vec<(RGBColor, Shape)> = Method::ALL
            .iter()
            .map(|&m| known(Some(m)).unwrap())
            .collect();
        for (i, a) in looks.iter().enumerate() {
            for b in &looks[i + 1..] {
                assert_ne!(a.0, b.0);
                assert_ne!(a.1, b.1);
            }
            assert!(!EXTRA.contains(&a.0));
        }
        assert_eq!(known("beam".parse().ok()), None);
    }

    #[test]
    fn a_row_of_one_setting_looks_like_its_method() {
        let sweep = crate::report::build(
            "sweep",
            &[2, 40].map(|n_mcmc| {
                let config = powerfleet_sampler::SamplerConfig {
                    n_mcmc,
                    ..powerfleet_sampler::SamplerConfig::new(Method::Power)
                };
                powerfleet_jobs::JobResult {
                    config: Some(config.validate().unwrap().manifest()),
                    ..crate::test_results::result(Method::Power, "a", 0, "7", true)
                }
            }),
            &Default::default(),
        );
        assert_eq!(sweep.methods[0].row, "power n_mcmc=2");
        let power = known(Some(Method::Power)).unwrap();
        for look in looks(&sweep.methods) {
            assert_eq!((look.color, look.shape), power);
        }
    }

    #[test]
    fn runs_keep_a_colour_and_methods_a_marker() {
        let looks = run_looks(&[
            (0, "power"),
            (0, "beam"),
            (1, "power n_mcmc=2"),
            (1, "beam"),
        ]);
        assert_eq!(looks[0].color, looks[1].color);
        assert_ne!(looks[0].color, looks[2].color);
        assert_eq!(looks[0].shape, looks[2].shape);
        assert_eq!(looks[1].shape, looks[3].shape);
        assert_ne!(looks[0].color, looks[3].color);
    }
}
