//! Simple extractors: exact match after trimming, and the first capture group of the last match
//! of a regex. Patterns are compiled once per process and kept in a small cache ([`compiled`]):
//! a benchmark grades thousands of results with one pattern, and a pattern near the regex size
//! limit takes long to compile.

use std::sync::{Arc, LazyLock, Mutex};

use regex::Regex;

use crate::{Grade, GradeError};

/// Grades by exact match: the whole completion, trimmed, against the reference, trimmed.
pub fn grade_exact(completion: &str, reference: &str) -> Grade {
    let extracted = completion.trim();
    Grade {
        correct: extracted == reference.trim(),
        extracted: Some(extracted.to_string()),
    }
}

/// The first capture group of the last match of `pattern` in `completion`, trimmed; `Ok(None)`
/// when nothing matches or the group did not take part in the last match.
///
/// # Errors
///
/// [`GradeError::InvalidPattern`] when `pattern` is not a valid regex and
/// [`GradeError::NoCaptureGroup`] when it has no capture group.
pub fn extract_regex(completion: &str, pattern: &str) -> Result<Option<String>, GradeError> {
    let regex = compiled(pattern).map_err(|source| GradeError::InvalidPattern {
        pattern: pattern.to_string(),
        source,
    })?;
    if regex.captures_len() < 2 {
        return Err(GradeError::NoCaptureGroup {
            pattern: pattern.to_string(),
        });
    }
    Ok(regex
        .captures_iter(completion)
        .last()
        .and_then(|caps| caps.get(1))
        .map(|m| m.as_str().trim().to_string()))
}

/// How many compiled patterns (or their errors) [`compiled`] keeps.
pub const REGEX_CACHE_ENTRIES: usize = 16;

/// The patterns compiled last, the most recent at the end.
type Cache = Vec<(String, Result<Arc<Regex>, regex::Error>)>;
static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// `pattern` compiled, from a cache of the last [`REGEX_CACHE_ENTRIES`] patterns (errors
/// included, so an invalid pattern is not compiled again either).
fn compiled(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    let lookup = |cache: &mut Cache| {
        let at = cache.iter().position(|(p, _)| p == pattern)?;
        // Most recently used last.
        let entry = cache.remove(at);
        let found = entry.1.clone();
        cache.push(entry);
        Some(found)
    };
    if let Some(found) = lookup(&mut CACHE.lock().unwrap_or_else(|e| e.into_inner())) {
        return found;
    }
    // Compiled outside the lock: another pattern's grading does not wait for it.
    let result = Regex::new(pattern).map(Arc::new);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = lookup(&mut cache) {
        return found;
    }
    if cache.len() >= REGEX_CACHE_ENTRIES {
        drop(cache.remove(0));
    }
    cache.push((pattern.to_string(), result.clone()));
    result
}

/// Grades with [`extract_regex`]: correct iff the extracted text equals `reference` after
/// trimming both.
///
/// # Errors
///
/// As [`extract_regex`]: the pattern is invalid or has no capture group.
pub fn grade_regex(completion: &str, pattern: &str, reference: &str) -> Result<Grade, GradeError> {
    let extracted = extract_regex(completion, pattern)?;
    let correct = extracted.as_deref() == Some(reference.trim());
    Ok(Grade { extracted, correct })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_trims_both_sides() {
        assert!(grade_exact("  42\n", "42 ").correct);
        assert!(!grade_exact("42.0", "42").correct);
    }

    #[test]
    fn regex_uses_last_match() {
        let grade = grade_regex("answer: 3 ... answer: 7", r"answer:\s*(\d+)", "7").unwrap();
        assert_eq!(grade.extracted.as_deref(), Some("7"));
        assert!(grade.correct);
    }

    #[test]
    fn a_pattern_is_compiled_once_and_kept_while_in_use() {
        let pattern = r"cached-once:\s*(\d+)";
        let first = compiled(pattern).unwrap();
        for _ in 0..3 {
            assert_eq!(
                extract_regex("cached-once: 4", pattern).unwrap().as_deref(),
                Some("4")
            );
        }
        assert!(
            Arc::ptr_eq(&first, &compiled(pattern).unwrap()),
            "the second use takes the compiled regex from the cache"
        );
        // A pattern near the size limit: compiled once, then every grading reuses it.
        let big = format!("({})", vec!["[a-z]{3}x"; 2000].join("|"));
        let compiled_big = compiled(&big).unwrap();
        assert!(Arc::ptr_eq(&compiled_big, &compiled(&big).unwrap()));
        // The cache stays small: older patterns make room for new ones.
        for i in 0..REGEX_CACHE_ENTRIES + 4 {
            compiled(&format!("evict-{i}-(x)")).unwrap();
        }
        assert!(CACHE.lock().unwrap().len() <= REGEX_CACHE_ENTRIES);
    }

    #[test]
    fn regex_errors_name_the_problem() {
        let err = grade_regex("x", "(", "x").unwrap_err();
        assert!(matches!(err, GradeError::InvalidPattern { .. }), "{err}");
        let err = grade_regex("x", r"\d+", "x").unwrap_err();
        assert!(err.to_string().contains("no capture group"), "{err}");
    }
}
