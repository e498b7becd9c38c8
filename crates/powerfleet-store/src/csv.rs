//! CSV export of job results: one header row, one row per result, RFC 4180 quoting.

use std::io::{self, Write};

use powerfleet_jobs::JobResult;

/// The header row of [`write_csv`], in column order.
pub const CSV_COLUMNS: [&str; 26] = [
    "job_id",
    "correlation_id",
    "batch_id",
    "problem_id",
    "model",
    "method",
    "seed",
    "stream",
    "status",
    "tokens",
    "text",
    "log_p",
    "ends_with_eos",
    "final_len",
    "proposals",
    "acceptances",
    "acceptance_rate",
    "tokens_generated",
    "model_calls",
    "cost_multiplier",
    "attempts",
    "error",
    "submitted_at_ms",
    "started_at_ms",
    "finished_at_ms",
    "latency_ms",
];

/// Writes `results` as CSV: a header row ([`CSV_COLUMNS`]), then one row per result, lines ended
/// by `\n`. Fields holding a comma, a double quote, CR or LF are quoted, with quotes doubled
/// (RFC 4180). Tokens are space-separated ids; absent values are empty fields; floats are written
/// in the shortest form that reads back exactly.
pub fn write_csv(results: &[JobResult], out: &mut impl Write) -> io::Result<()> {
    write_row(out, CSV_COLUMNS.iter().map(|c| c.to_string()))?;
    for r in results {
        let opt = |v: Option<String>| v.unwrap_or_default();
        let tokens = r
            .tokens
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let fields = [
            r.job_id.to_string(),
            r.correlation_id.to_string(),
            opt(r.batch_id.map(|b| b.to_string())),
            opt(r.problem_id.clone()),
            r.model.clone(),
            r.method.as_str().to_string(),
            r.seed.to_string(),
            r.stream.to_string(),
            r.status.as_str().to_string(),
            tokens,
            opt(r.text.clone()),
            opt(r.log_p.map(|v| v.to_string())),
            r.ends_with_eos.to_string(),
            r.tokens.len().to_string(),
            r.stats.proposals.to_string(),
            r.stats.acceptances.to_string(),
            opt(r.stats.acceptance_rate().map(|v| v.to_string())),
            r.stats.tokens_generated.to_string(),
            r.stats.model_calls.to_string(),
            opt(r.cost_multiplier().map(|v| v.to_string())),
            r.attempts.to_string(),
            opt(r.error.clone()),
            r.submitted_at_ms.to_string(),
            opt(r.started_at_ms.map(|v| v.to_string())),
            r.finished_at_ms.to_string(),
            r.latency_ms().to_string(),
        ];
        write_row(out, fields.into_iter())?;
    }
    Ok(())
}

fn write_row(out: &mut impl Write, fields: impl Iterator<Item = String>) -> io::Result<()> {
    let line = fields.map(|f| quote(&f)).collect::<Vec<_>>().join(",");
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// One field, quoted when RFC 4180 requires it.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote("plain text"), "plain text");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
        assert_eq!(quote("cr\r"), "\"cr\r\"");
        assert_eq!(quote(""), "");
    }
}
