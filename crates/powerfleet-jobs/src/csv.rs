//! CSV cells, the one way powerfleet's CSV writers (the results export and the report) write a
//! field: RFC 4180 quoting, and for text that came from outside (problem ids, model names,
//! completions, errors, answers) the escape against formula injection that OWASP recommends.

/// A text cell: quoted when RFC 4180 requires it (a comma, a double quote, CR or LF; quotes
/// doubled), and, when it starts with `=`, `+`, `-`, `@`, a tab or CR (which a spreadsheet would
/// read as a formula), prefixed with `'` inside quotes, so that `=HYPERLINK(...)` shows as text.
pub fn text_cell(field: &str) -> String {
    if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("\"'{}\"", field.replace('"', "\"\""))
    } else {
        plain_cell(field)
    }
}

/// A cell powerfleet wrote itself (a number, an id, a status): quoted only when RFC 4180
/// requires it, so that `-1.5` stays a number.
pub fn plain_cell(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// A list of column names made of shorter lists, in order: for writers whose columns share runs
/// of names. `N` is the total, checked where the constant is evaluated (at compile time).
pub const fn concat_columns<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut columns = [""; N];
    let mut n = 0;
    let mut part = 0;
    while part < parts.len() {
        let mut i = 0;
        while i < parts[part].len() {
            assert!(n < N, "more columns than the list holds");
            columns[n] = parts[part][i];
            n += 1;
            i += 1;
        }
        part += 1;
    }
    assert!(n == N, "fewer columns than the list holds");
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenated_columns_keep_the_parts_in_order() {
        const COLUMNS: [&str; 4] = concat_columns(&[&["a"], &[], &["b", "c"], &["d"]]);
        assert_eq!(COLUMNS, ["a", "b", "c", "d"]);
    }

    #[test]
    #[should_panic(expected = "fewer columns")]
    fn a_list_longer_than_its_parts_is_refused() {
        let _: [&str; 3] = concat_columns(&[&["a", "b"]]);
    }

    #[test]
    #[should_panic(expected = "more columns")]
    fn a_list_shorter_than_its_parts_is_refused() {
        let _: [&str; 1] = concat_columns(&[&["a", "b"]]);
    }

    #[test]
    fn formulas_are_shown_as_text_and_quoting_follows_rfc_4180() {
        assert_eq!(
            text_cell("=HYPERLINK(\"http://x\",\"y\")"),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        for start in ["=", "+", "-", "@", "\t", "\r"] {
            let cell = text_cell(&format!("{start}1+1"));
            assert!(cell.starts_with("\"'"), "{start:?}: {cell}");
        }
        assert_eq!(text_cell("-3"), "\"'-3\"");
        assert_eq!(text_cell("plain text"), "plain text");
        assert_eq!(text_cell("a=b"), "a=b", "only the first character counts");
        assert_eq!(text_cell("a,b"), "\"a,b\"");
        assert_eq!(text_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(text_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(text_cell(""), "");
        assert_eq!(plain_cell("-1.5"), "-1.5");
        assert_eq!(plain_cell("cr\r"), "\"cr\r\"");
    }
}
