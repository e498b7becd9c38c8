//! Multiple-choice grading (GPQA-style): read the chosen letter from a completion, shuffle the
//! options with a seeded permutation that never changes between versions, and map the chosen
//! displayed letter back to the original option.

use std::sync::LazyLock;

use regex::Regex;

use crate::Grade;

/// "The answer is (C)", "Answer: D", "**Answer:** B", "The correct option is A".
static STATED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?i:answer|correct option|correct choice|best option|best choice)(?:\s+(?i:is|would be|should be))?\s*[:：]?\s*(?:(?i:option|choice)\s+)?[\s*_]*(?:\\text(?:bf)?\{)?[\(\[]?([A-Z])\b",
    )
    .expect("the answer-statement pattern is a valid regex")
});

/// `\boxed{B}`, `\boxed{(B)}`, `\boxed{\text{B}}`, `\fbox{B}`.
static BOXED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\\(?:boxed|fbox)\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?[\(\[]?\s*([A-Z])\s*[\)\]]?\s*\}",
    )
    .expect("the boxed-letter pattern is a valid regex")
});

/// The letter of the `index`-th option (`0` → `A`), if it is within the alphabet.
pub fn letter(index: usize) -> Option<char> {
    u8::try_from(index)
        .ok()
        .filter(|&i| i < 26)
        .map(|i| char::from(b'A' + i))
}

/// The option index of an uppercase letter (`A` → `0`).
pub fn index_of(letter: char) -> Option<usize> {
    letter
        .is_ascii_uppercase()
        .then(|| usize::from(letter as u8 - b'A'))
}

/// The answer letter (`A`, `B`, ... within the first `n_choices` letters) a completion chose.
///
/// Explicit statements are preferred, and among them the last one in the text: `\boxed{B}`,
/// "The answer is (C)", "Answer: D", "The correct option is A" (letters must be uppercase and stand
/// alone, so "The answer is Avogadro's number" states nothing). Statements naming a letter beyond
/// `n_choices` are ignored. Without any statement, a final standalone letter counts: a last line
/// that is just `B`, `(B)` or `B.`, or text ending in `(B)`.
pub fn extract_letter(completion: &str, n_choices: usize) -> Option<char> {
    let valid = |c: char| index_of(c).is_some_and(|i| i < n_choices);
    let stated = [&*STATED, &*BOXED]
        .into_iter()
        .flat_map(|re| re.captures_iter(completion))
        .filter_map(|caps| caps.get(1))
        .filter_map(|m| {
            let c = m.as_str().chars().next()?;
            valid(c).then_some((m.start(), c))
        })
        .max_by_key(|&(at, _)| at);
    if let Some((_, c)) = stated {
        return Some(c);
    }
    final_standalone_letter(completion).filter(|&c| valid(c))
}

/// `B`, `(B)`, `**B.**` as the last line, or `(B)` as the last thing in the text.
fn final_standalone_letter(completion: &str) -> Option<char> {
    let decoration = |c: char| c.is_whitespace() || matches!(c, '*' | '#' | '_' | '$' | '.');
    let last_line = completion.lines().rev().find(|l| !l.trim().is_empty())?;
    let line = last_line.trim_matches(decoration);
    let line = line
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .or_else(|| line.strip_suffix(')'))
        .unwrap_or(line);
    let mut chars = line.chars();
    if let (Some(c), None) = (chars.next(), chars.next())
        && c.is_ascii_uppercase()
    {
        return Some(c);
    }
    let tail = completion.trim_end_matches(decoration);
    let inner = tail.strip_suffix(')')?;
    let c = inner.chars().last()?;
    let before = inner[..inner.len() - c.len_utf8()].chars().last()?;
    (before == '(' && c.is_ascii_uppercase()).then_some(c)
}

/// The splitmix64 generator (Steele, Lea and Flood 2014), which is all the shuffle needs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` by the multiply-high method (bias below 2^-64 * bound).
    fn below(&mut self, bound: usize) -> usize {
        let wide = u128::from(self.next()) * bound as u128;
        // The high word of a product of a u64 and a usize bound is below the bound.
        usize::try_from(wide >> 64).expect("multiply-high result is below the bound")
    }
}

/// The shuffle seed of one problem under one sampling seed: the seed xor the 64-bit FNV-1a hash
/// of the problem's id. Every problem of a seed gets its own order, so a dataset that always lists
/// the right option first does not put the right answer under the same letter throughout a seed.
/// **Stable across versions**, like [`shuffle_choices`].
pub fn problem_shuffle_seed(problem_id: &str, seed: u64) -> u64 {
    let hash = problem_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash ^ seed
}

/// A seeded permutation of `0..n` for showing options in a shuffled order:
/// `perm[displayed_position] = original_index`.
///
/// **Stable across versions**: the algorithm is fixed as splitmix64 seeded with `seed`, then a
/// Fisher-Yates shuffle from the last position down (`for i in (1..n).rev()`, swap `i` with
/// `j = (next() * (i + 1)) >> 64`). Changing it would silently change which letter is correct in
/// stored benchmark results, and a test pins the output for a fixed seed.
pub fn shuffle_choices(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64(seed);
    let mut perm: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i + 1);
        perm.swap(i, j);
    }
    perm
}

/// The displayed letter of the correct option under `perm`, for building reference answers.
/// `None` when `correct_original` is not in `perm` or its position is past `Z`.
pub fn correct_letter(perm: &[usize], correct_original: usize) -> Option<char> {
    perm.iter()
        .position(|&original| original == correct_original)
        .and_then(letter)
}

/// Grades a multiple-choice completion whose options were shown in the order `perm`
/// (`perm[displayed_position] = original_index`): correct iff the chosen displayed letter maps
/// to `correct_original`. `extracted` is the displayed letter as chosen.
pub fn grade_choice(completion: &str, perm: &[usize], correct_original: usize) -> Grade {
    let chosen = extract_letter(completion, perm.len());
    let correct = chosen
        .and_then(index_of)
        .and_then(|displayed| perm.get(displayed))
        .is_some_and(|&original| original == correct_original);
    Grade {
        extracted: chosen.map(String::from),
        correct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_round_trip() {
        for i in 0..26 {
            assert_eq!(letter(i).and_then(index_of), Some(i));
        }
        assert_eq!(letter(26), None);
        assert_eq!(index_of('a'), None);
    }

    #[test]
    fn problems_of_one_seed_get_their_own_orders() {
        // FNV-1a of the empty string is its offset basis; of "a", the published test value.
        assert_eq!(problem_shuffle_seed("", 0), 0xcbf2_9ce4_8422_2325);
        assert_eq!(problem_shuffle_seed("a", 0), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(problem_shuffle_seed("a", 5), 0xaf63_dc4c_8601_ec8c ^ 5);
        let orders: std::collections::HashSet<Vec<usize>> = (0..50)
            .map(|i| shuffle_choices(4, problem_shuffle_seed(&format!("q{i}"), 7)))
            .collect();
        assert!(orders.len() > 12, "{} distinct orders of 24", orders.len());
    }

    #[test]
    fn splitmix_reference_values() {
        // First outputs of splitmix64 seeded with 0 (the reference C implementation).
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        for n in 0..12 {
            for seed in 0..50 {
                let mut perm = shuffle_choices(n, seed);
                perm.sort_unstable();
                assert_eq!(perm, (0..n).collect::<Vec<_>>());
            }
        }
    }
}
