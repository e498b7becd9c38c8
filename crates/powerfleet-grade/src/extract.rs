//! Simple extractors: exact match after trimming, and the first capture group of the last match
//! of a regex.

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
    let regex = Regex::new(pattern).map_err(|source| GradeError::InvalidPattern {
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
    fn regex_errors_name_the_problem() {
        let err = grade_regex("x", "(", "x").unwrap_err();
        assert!(matches!(err, GradeError::InvalidPattern { .. }), "{err}");
        let err = grade_regex("x", r"\d+", "x").unwrap_err();
        assert!(err.to_string().contains("no capture group"), "{err}");
    }
}
