//! 95% intervals of a comparison: the Wilson score interval of a proportion and the Student t
//! interval of a mean of paired differences, with the t quantile computed from the regularized
//! incomplete beta function (no statistics crate needed for one quantile).

use serde::{Deserialize, Serialize};

/// The normal distribution's 97.5% quantile: the z of a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// A closed interval `[lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

/// The 95% Wilson score interval of `correct` successes in `n` trials:
/// `(p + z²/2n ± z·sqrt(p(1 − p)/n + z²/4n²)) / (1 + z²/n)` with `p = correct / n`, `z` =
/// [`Z_95`]; `None` for `n = 0`. The ends are clamped to `[0, 1]` against rounding, and are
/// exactly 0 for no success and 1 for no failure, as the formula gives them.
pub fn wilson(correct: u64, n: u64) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let (n, p) = (n as f64, correct as f64 / n as f64);
    let z2 = Z_95 * Z_95;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = Z_95 / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval {
        lo: if p == 0.0 {
            0.0
        } else {
            (centre - half).max(0.0)
        },
        hi: if p == 1.0 {
            1.0
        } else {
            (centre + half).min(1.0)
        },
    })
}

/// The mean of paired differences with its 95% interval from them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairedMean {
    /// Pairs.
    pub n: u64,
    /// Mean difference.
    pub mean: f64,
    /// Sample standard deviation of the differences (n − 1 in the denominator); `None` for n < 2.
    pub sd: Option<f64>,
    /// The 97.5% quantile of Student's t with n − 1 degrees of freedom; `None` for n < 2.
    pub t: Option<f64>,
    /// `mean ± t · sd / sqrt(n)`; `None` for n < 2.
    pub ci95: Option<Interval>,
}

/// The mean of `differences` with its 95% Student t interval; `None` without differences.
pub fn paired_mean(differences: &[f64]) -> Option<PairedMean> {
    if differences.is_empty() {
        return None;
    }
    let n = differences.len();
    let mean = differences.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some(PairedMean {
            n: 1,
            mean,
            sd: None,
            t: None,
            ci95: None,
        });
    }
    let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let sd = variance.sqrt();
    let t = t_quantile_975((n - 1) as f64);
    let half = t * sd / (n as f64).sqrt();
    Some(PairedMean {
        n: n as u64,
        mean,
        sd: Some(sd),
        t: Some(t),
        ci95: Some(Interval {
            lo: mean - half,
            hi: mean + half,
        }),
    })
}

/// The 97.5% quantile of Student's t distribution with `df` > 0 degrees of freedom: the `t` with
/// `P(T > t) = 0.025`, found by bisection on the upper tail `I_{df/(df+t²)}(df/2, 1/2) / 2`
/// to within 1e-12.
pub fn t_quantile_975(df: f64) -> f64 {
    let upper_tail = |t: f64| 0.5 * beta_regularized(df / (df + t * t), df / 2.0, 0.5);
    let (mut lo, mut hi) = (0.0f64, 2.0f64);
    while upper_tail(hi) > 0.025 {
        lo = hi;
        hi *= 2.0;
    }
    while hi - lo > 1e-12 * hi.max(1.0) {
        let mid = 0.5 * (lo + hi);
        if upper_tail(mid) > 0.025 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// The regularized incomplete beta function `I_x(a, b)`, by its continued fraction (modified
/// Lentz), on the side of `x` where it converges fast.
fn beta_regularized(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

/// The continued fraction of the incomplete beta function.
fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=10_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        for numerator in [
            m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for x > 0 (Lanczos, g = 7, 9 terms; relative error about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 − x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEFFICIENTS[0];
    for (i, c) in COEFFICIENTS.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64, what: &str) {
        assert!((a - b).abs() < tolerance, "{what}: {a} vs {b}");
    }

    #[test]
    fn wilson_intervals_by_hand() {
        // 7 of 10: p = 0.7, z² = 3.841459, z²/n = 0.3841459; centre = (0.7 + 0.1920729) /
        // 1.3841459 = 0.6444935; half = 1.959964 / 1.3841459 · sqrt(0.021 + 0.0096036) =
        // 1.4160153 · 0.1749390 = 0.2477154: [0.3967781, 0.8922087]. (Checked with Python:
        // statistics.NormalDist().inv_cdf(0.975) and the formula, 0.39677814746, 0.89220873259.)
        let i = wilson(7, 10).unwrap();
        close(i.lo, 0.396_778_147_461_145, 1e-12, "7/10 lo");
        close(i.hi, 0.892_208_732_593_699, 1e-12, "7/10 hi");
        // 9 of 12: p = 0.75, z²/n = 0.3201216; centre = (0.75 + 0.1333858) / 1.3201216 =
        // 0.6691765; half = 1.4846941 · sqrt(0.015625 + 0.0066701) = 0.2217118:
        // [0.4676947, 0.9110583].
        let i = wilson(9, 12).unwrap();
        close(i.lo, 0.467_694_665_066_434, 1e-12, "9/12 lo");
        close(i.hi, 0.911_058_331_605_945, 1e-12, "9/12 hi");
        // 0 of 10: [0, z²/n / (1 + z²/n)] = [0, 0.3841459 / 1.3841459] = [0, 0.2775328].
        let i = wilson(0, 10).unwrap();
        assert_eq!(i.lo, 0.0);
        close(i.hi, 0.277_532_799_862_889, 1e-12, "0/10 hi");
        // 10 of 10 mirrors it: [1 - 0.2775328, 1].
        let i = wilson(10, 10).unwrap();
        close(i.lo, 0.722_467_200_137_111, 1e-12, "10/10 lo");
        assert_eq!(i.hi, 1.0);
        assert_eq!(wilson(0, 0), None);
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        // P(T > t) = 0.025; values from mpmath (betainc, findroot at 30 digits).
        for (df, t) in [
            (1.0, 12.706_204_736_174_705),
            (2.0, 4.302_652_729_749_464),
            (4.0, 2.776_445_105_197_794),
            (9.0, 2.262_157_162_798_206),
            (30.0, 2.042_272_456_301_238),
            (99.0, 1.984_216_951_586_417),
            (1000.0, 1.962_339_080_826_408),
        ] {
            close(t_quantile_975(df), t, 1e-9, &format!("df {df}"));
        }
    }

    #[test]
    fn paired_means_by_hand() {
        // Differences 0, 0, 0.5, 0.5, 0: mean 0.2; squared deviations 0.04 · 3 + 0.09 · 2 = 0.3,
        // sd = sqrt(0.3 / 4) = 0.2738613; se = sd / sqrt 5 = 0.1224745; t(4) = 2.7764451;
        // half = 0.3400437: [-0.1400437, 0.5400437].
        let p = paired_mean(&[0.0, 0.0, 0.5, 0.5, 0.0]).unwrap();
        assert_eq!(p.n, 5);
        close(p.mean, 0.2, 1e-15, "mean");
        close(p.sd.unwrap(), 0.075f64.sqrt(), 1e-15, "sd");
        close(p.t.unwrap(), 2.776_445_105_197_794, 1e-9, "t");
        let ci = p.ci95.unwrap();
        close(ci.lo, -0.140_043_690_329_128, 1e-9, "lo");
        close(ci.hi, 0.540_043_690_329_128, 1e-9, "hi");
        // One pair: a mean, no spread, no interval.
        let one = paired_mean(&[0.25]).unwrap();
        assert_eq!((one.n, one.mean, one.sd, one.ci95), (1, 0.25, None, None));
        assert!(paired_mean(&[]).is_none());
        // Equal differences: sd 0, the interval is the point.
        let same = paired_mean(&[0.5, 0.5]).unwrap();
        assert_eq!(same.ci95, Some(Interval { lo: 0.5, hi: 0.5 }), "{same:?}");
    }
}
