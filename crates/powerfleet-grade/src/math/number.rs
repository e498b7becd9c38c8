//! The value of an answer that is a closed-form number: a recursive-descent evaluator over a
//! normalized answer ([`parse_number`]), the tolerance the lenient grader compares numbers
//! within, and plain integers in canonical digits, which compare exactly.

use super::normalize::{control_end, normalize};

/// Relative tolerance of numeric comparison in [`math_equal_lenient`](super::math_equal_lenient):
/// `|a - b| <= 1e-6 * max(|a|, |b|)` (plus an absolute floor of 1e-12 so that `0` equals a
/// rounding error). Two plain integers are always compared exactly instead.
pub const RELATIVE_TOLERANCE: f64 = 1e-6;

pub(super) const ABSOLUTE_FLOOR: f64 = 1e-12;

/// The numeric value of an answer, or `None` when it is not a closed-form number.
///
/// The answer is [`normalize`]d first, then evaluated: integers, decimals, `-`, `+`, `*`, `/`,
/// `\cdot`, `\times`, `\div`, `^`, parentheses and brace groups, `\frac{a}{b}`, `a/b`,
/// `\sqrt{n}`, `\sqrt[k]{n}`, `\pi`, and implicit multiplication (`2\sqrt{3}`, `3\pi`). An
/// integer followed directly by an integer fraction is a mixed number (`2\frac{1}{2}` = 2.5), as
/// in MATH. Variables, `\infty` and non-finite results give `None`.
pub fn parse_number(s: &str) -> Option<f64> {
    evaluate(&normalize(s))
}

pub(super) fn evaluate(normalized: &str) -> Option<f64> {
    let mut evaluator = Evaluator {
        chars: normalized.chars().collect(),
        pos: 0,
        depth: 0,
    };
    if evaluator.chars.is_empty() {
        return None;
    }
    let value = evaluator.expression()?;
    (evaluator.pos == evaluator.chars.len() && value.is_finite()).then_some(value)
}

/// A recursive-descent evaluator over a normalized answer.
struct Evaluator {
    chars: Vec<char>,
    pos: usize,
    /// Nesting of `expression` calls, bounded so hostile input cannot overflow the stack.
    depth: usize,
}

/// Deeper nesting than this is not a closed-form answer worth evaluating.
pub(super) const MAX_DEPTH: usize = 64;

impl Evaluator {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    /// The letters of the control word at the cursor, if there is one.
    fn peek_command(&self) -> Option<String> {
        if self.peek()? != '\\' {
            return None;
        }
        let end = control_end(&self.chars, self.pos);
        Some(self.chars[self.pos + 1..end].iter().collect())
    }

    fn eat_command(&mut self, name: &str) -> bool {
        let found = self.peek_command().as_deref() == Some(name);
        if found {
            self.pos += 1 + name.len();
        }
        found
    }

    fn expression(&mut self) -> Option<f64> {
        self.nested(Self::sum)
    }

    /// Runs `parse` one nesting level deeper, or gives up past [`MAX_DEPTH`].
    fn nested(&mut self, parse: fn(&mut Self) -> Option<f64>) -> Option<f64> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        let value = parse(self);
        self.depth -= 1;
        value
    }

    fn sum(&mut self) -> Option<f64> {
        let mut value = self.term()?;
        loop {
            if self.eat('+') {
                value += self.term()?;
            } else if self.eat('-') {
                value -= self.term()?;
            } else {
                return Some(value);
            }
        }
    }

    fn term(&mut self) -> Option<f64> {
        let start = self.pos;
        let mut value = self.signed()?;
        let mut mixed_number_allowed = is_integer_literal(&self.chars[start..self.pos]);
        loop {
            if self.eat('*') || self.eat_command("cdot") || self.eat_command("times") {
                value *= self.signed()?;
            } else if self.eat('/') || self.eat_command("div") {
                value /= self.signed()?;
            } else if self.starts_atom() {
                let factor_start = self.pos;
                let factor = self.power()?;
                if mixed_number_allowed && is_integer_fraction(&self.chars[factor_start..self.pos])
                {
                    value += factor.copysign(value);
                } else {
                    value *= factor;
                }
            } else {
                return Some(value);
            }
            mixed_number_allowed = false;
        }
    }

    fn signed(&mut self) -> Option<f64> {
        if self.eat('-') {
            Some(-self.nested(Self::signed)?)
        } else if self.eat('+') {
            self.nested(Self::signed)
        } else {
            self.power()
        }
    }

    fn power(&mut self) -> Option<f64> {
        let base = self.atom()?;
        if !self.eat('^') {
            return Some(base);
        }
        let exponent = match self.peek()? {
            '{' => self.group()?,
            c if c.is_ascii_digit() => {
                self.pos += 1;
                f64::from(c.to_digit(10)?)
            }
            _ => self.nested(Self::signed)?,
        };
        Some(base.powf(exponent))
    }

    fn group(&mut self) -> Option<f64> {
        if !self.eat('{') {
            return None;
        }
        let value = self.expression()?;
        self.eat('}').then_some(value)
    }

    fn starts_atom(&self) -> bool {
        match self.peek() {
            Some(c) if c.is_ascii_digit() || matches!(c, '.' | '(' | '{') => true,
            Some('\\') => matches!(self.peek_command().as_deref(), Some("frac" | "sqrt" | "pi")),
            _ => false,
        }
    }

    fn atom(&mut self) -> Option<f64> {
        match self.peek()? {
            c if c.is_ascii_digit() || c == '.' => self.number(),
            '(' => {
                self.pos += 1;
                let value = self.expression()?;
                self.eat(')').then_some(value)
            }
            '{' => self.group(),
            '\\' => {
                if self.eat_command("frac") {
                    let numerator = self.group()?;
                    let denominator = self.group()?;
                    Some(numerator / denominator)
                } else if self.eat_command("sqrt") {
                    let index = if self.eat('[') {
                        let index = self.expression()?;
                        if !self.eat(']') {
                            return None;
                        }
                        index
                    } else {
                        2.0
                    };
                    let radicand = self.group()?;
                    (radicand >= 0.0 && index > 0.0).then(|| radicand.powf(index.recip()))
                } else if self.eat_command("pi") {
                    Some(std::f64::consts::PI)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn number(&mut self) -> Option<f64> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.peek() == Some('.') {
            self.pos += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        let literal: String = self.chars[start..self.pos].iter().collect();
        literal.parse().ok()
    }
}

fn is_integer_literal(chars: &[char]) -> bool {
    let digits = chars.strip_prefix(&['-']).unwrap_or(chars);
    !digits.is_empty() && digits.iter().all(char::is_ascii_digit)
}

/// Whether `chars` is exactly `\frac{<digits>}{<digits>}`.
fn is_integer_fraction(chars: &[char]) -> bool {
    let s: String = chars.iter().collect();
    let Some(rest) = s.strip_prefix("\\frac{") else {
        return false;
    };
    let Some((num, den)) = rest.strip_suffix('}').and_then(|r| r.split_once("}{")) else {
        return false;
    };
    let int = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    int(num) && int(den)
}

/// A plain integer as canonical digits (no leading zeros, no `-0`).
pub(super) fn canonical_integer(s: &str) -> Option<String> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    Some(match (negative, digits.is_empty()) {
        (_, true) => "0".to_string(),
        (true, false) => format!("-{digits}"),
        (false, false) => digits.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_expressions() {
        let cases = [
            ("\\frac{1}{2}", 0.5),
            ("2\\sqrt{3}", 2.0 * 3f64.sqrt()),
            ("-\\frac{3}{4}", -0.75),
            ("2\\frac{1}{2}", 2.5),
            ("-2\\frac{1}{2}", -2.5),
            ("2^{10}", 1024.0),
            ("\\frac{\\pi}{2}", std::f64::consts::FRAC_PI_2),
            ("3\\cdot4+1", 13.0),
            ("\\sqrt[3]{8}", 2.0),
        ];
        for (raw, want) in cases {
            let got = parse_number(raw).unwrap_or_else(|| panic!("parse_number({raw:?})"));
            assert!((got - want).abs() < 1e-12, "parse_number({raw:?}) = {got}");
        }
        for raw in ["x+1", "\\infty", "(1,2)", "\\frac{1}{0}", ""] {
            assert_eq!(parse_number(raw), None, "parse_number({raw:?})");
        }
    }
}
