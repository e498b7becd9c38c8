//! Aggregates over graded samples: the unbiased pass@k estimator, majority vote over equivalent
//! answers, and mean with standard error.

use crate::math::{normalize, normalized_equal};

/// The unbiased pass@k estimator of Chen et al. (2021): the probability that at least one of `k`
/// samples drawn without replacement from `n` samples, `c` of them correct, is correct,
/// `1 - C(n - c, k) / C(n, k)`, computed stably as `1 - prod_{i = n-c+1}^{n} (1 - k / i)`.
///
/// `k = 0` and `c = 0` give 0; `n - c < k` gives 1.
///
/// # Panics
///
/// When `c > n` or `k > n`: such counts describe no possible draw.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> f64 {
    assert!(
        c <= n,
        "pass@k needs c <= n correct samples, got c = {c} > n = {n}"
    );
    assert!(k <= n, "pass@k needs k <= n samples, got k = {k} > n = {n}");
    if c == 0 || k == 0 {
        return 0.0;
    }
    if n - c < k {
        return 1.0;
    }
    let k = k as f64;
    let all_fail: f64 = ((n - c + 1)..=n).map(|i| 1.0 - k / i as f64).product();
    1.0 - all_fail
}

/// The most common answer, after [`normalize`], among the `Some` entries; `None` entries and
/// answers that normalize to nothing are skipped. Answers that [`crate::math_equal`] considers
/// equal (`0.5` and `\frac{1}{2}`) count as one, represented by the normalized form of the
/// first seen. Ties go to the answer seen first. `None` when no answer was given.
pub fn majority_vote<'a>(answers: impl IntoIterator<Item = Option<&'a str>>) -> Option<String> {
    let mut clusters: Vec<(String, usize)> = Vec::new();
    for answer in answers.into_iter().flatten() {
        let normalized = normalize(answer);
        if normalized.is_empty() {
            continue;
        }
        match clusters
            .iter_mut()
            .find(|(representative, _)| normalized_equal(representative, &normalized))
        {
            Some((_, count)) => *count += 1,
            None => clusters.push((normalized, 1)),
        }
    }
    let mut best: Option<(String, usize)> = None;
    for (answer, count) in clusters {
        if best.as_ref().is_none_or(|(_, top)| count > *top) {
            best = Some((answer, count));
        }
    }
    best.map(|(answer, _)| answer)
}

/// The mean of `values` and its standard error, `s / sqrt(n)` with the sample standard deviation
/// `s` (denominator `n - 1`). An empty slice gives `(NaN, NaN)`; a single value gives
/// `(value, NaN)`, as one observation says nothing about spread.
pub fn mean_and_stderr(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, f64::NAN);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (variance / n).sqrt())
}

/// The nearest-rank `pct`-th percentile of `sorted` (ascending): the smallest value such that at
/// least `pct` percent of the values are at most it. `None` for no values.
pub fn percentile(sorted: &[u64], pct: u32) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(pct) * n).div_ceil(100).clamp(1, n);
    Some(sorted[(rank - 1) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_stderr_by_hand() {
        let (mean, se) = mean_and_stderr(&[1.0, 0.0, 1.0, 1.0]);
        assert_eq!(mean, 0.75);
        // sample variance = (3 * 0.0625 + 0.5625) / 3 = 0.25; se = sqrt(0.25 / 4) = 0.25
        assert!((se - 0.25).abs() < 1e-12);
        let (mean, se) = mean_and_stderr(&[]);
        assert!(mean.is_nan() && se.is_nan());
        let (mean, se) = mean_and_stderr(&[2.0]);
        assert_eq!(mean, 2.0);
        assert!(se.is_nan());
    }

    #[test]
    #[should_panic(expected = "c <= n")]
    fn pass_at_k_rejects_more_correct_than_samples() {
        pass_at_k(3, 4, 1);
    }
}
