//! MATH-style grading: pull the last `\boxed{...}` out of a completion, normalize answers the way
//! Hendrycks et al. (`is_equiv`/`strip_string`) and Minerva (`normalize_final_answer`) do, and
//! compare them as strings, as numbers, element-wise as tuples and intervals, and as sets.

mod extract;
mod lenient;
mod normalize;
mod number;
mod reference;
mod structure;

pub use extract::{extract_math_answer, last_boxed};
pub(crate) use lenient::normalized_equal;
pub use lenient::{PAIRING_BUDGET, math_equal_lenient};
pub use normalize::normalize;
pub use number::{RELATIVE_TOLERANCE, parse_number};
pub use reference::{hendrycks_normalize, math_equal};

use crate::Grade;

/// Grades a MATH completion: extracts its answer with [`extract_math_answer`] and compares it
/// with [`math_equal`]. A `reference` that contains a `\boxed{}` (a full MATH solution) is
/// reduced to its last box first.
pub fn grade_math(completion: &str, reference: &str) -> Grade {
    grade_math_with(completion, reference, math_equal)
}

/// [`grade_math`] with [`math_equal_lenient`]: the `math-lenient` grader.
pub fn grade_math_lenient(completion: &str, reference: &str) -> Grade {
    grade_math_with(completion, reference, math_equal_lenient)
}

fn grade_math_with(completion: &str, reference: &str, equal: fn(&str, &str) -> bool) -> Grade {
    let extracted = extract_math_answer(completion);
    let reference = last_boxed(reference).unwrap_or_else(|| reference.to_string());
    let correct = extracted
        .as_deref()
        .is_some_and(|answer| equal(answer, &reference));
    Grade { extracted, correct }
}

#[cfg(test)]
mod linear_tests;
