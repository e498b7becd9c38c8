//! Batch files: JSONL, one prompt per line (text, token ids or chat messages), read line by
//! line in bounded memory; errors name the line and the field.

use powerfleet_jobs::{ChatMessage, Prompt};
use powerfleet_sampler::TokenId;
use serde::{Deserialize, Serialize};

use super::{MAX_JOBS_PER_SUBMISSION, SubmittedPrompt};

/// Longest line of a batch file, in bytes (newline excluded).
pub const MAX_BATCH_LINE_BYTES: usize = 1 << 20;
/// Default largest batch file, in bytes (`submit --max-batch-file-bytes`).
pub const DEFAULT_MAX_BATCH_FILE_BYTES: u64 = 256 << 20;

/// One line of a batch file.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLine {
    /// The problem's id (default: the line number).
    #[serde(default)]
    pub id: Option<String>,
    /// Prompt text.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Prompt token ids.
    #[serde(default)]
    pub prompt_tokens: Option<Vec<TokenId>>,
    /// Chat messages, formatted through the model's chat template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
}

impl BatchLine {
    /// The line's prompt: exactly one of `prompt`, `prompt_tokens` and `messages`; the error says
    /// which were given.
    pub fn take_prompt(&mut self) -> Result<Prompt, &'static str> {
        match (
            self.prompt.take(),
            self.prompt_tokens.take(),
            self.messages.take(),
        ) {
            (Some(text), None, None) => Ok(Prompt::Text(text)),
            (None, Some(ids), None) => Ok(Prompt::Tokens(ids)),
            (None, None, Some(messages)) => Ok(Prompt::Messages(messages)),
            (Some(_), Some(_), None) => Err("give prompt or prompt_tokens, not both"),
            (None, None, None) => Err(
                "missing field `prompt` (text) or `prompt_tokens` (token ids) or `messages` (chat messages)",
            ),
            _ => Err("give only one of prompt, prompt_tokens and messages"),
        }
    }
}

impl From<SubmittedPrompt> for BatchLine {
    fn from(p: SubmittedPrompt) -> BatchLine {
        let mut line = BatchLine {
            id: p.id,
            prompt: None,
            prompt_tokens: None,
            messages: None,
        };
        match p.prompt {
            Prompt::Text(text) => line.prompt = Some(text),
            Prompt::Tokens(ids) => line.prompt_tokens = Some(ids),
            Prompt::Messages(messages) => line.messages = Some(messages),
            // A reference has no line of its own: it is made when jobs are enqueued.
            Prompt::Stored(_) => {}
        }
        line
    }
}

/// Why a batch file is refused ([`read_batch_file`]); messages name the line and the field.
#[derive(Debug, thiserror::Error)]
pub enum BatchFileError {
    /// Reading the file failed.
    #[error("cannot read line {line}: {source}")]
    Read {
        /// The line being read, from 1.
        line: usize,
        /// The IO error.
        source: std::io::Error,
    },
    /// More lines than one submission may hold.
    #[error(
        "the batch file has more than {MAX_JOBS_PER_SUBMISSION} lines; at most {MAX_JOBS_PER_SUBMISSION} jobs are accepted at once, split it"
    )]
    TooManyLines,
    /// A line longer than [`MAX_BATCH_LINE_BYTES`].
    #[error(
        "line {line} is longer than {MAX_BATCH_LINE_BYTES} bytes (1 MiB, the most one problem's line may hold); is this a JSONL batch file (one JSON object per line)?"
    )]
    LineTooLong {
        /// The line, from 1.
        line: usize,
    },
    /// A file larger than its cap; nothing past the cap was read.
    #[error(
        "the batch file is larger than the limit of {cap}; raise the limit with {} or split the file",
        .cap.setting
    )]
    TooLarge {
        /// The cap.
        cap: powerfleet_datasets::SizeCap,
    },
    /// Lines that are not a prompt: one message per line (`line N: ...`), up to 20.
    #[error("{}", .0.join("\n"))]
    BadLines(Vec<String>),
    /// No line holds a prompt.
    #[error("the batch file holds no prompts")]
    Empty,
}

/// Parses a JSONL batch file; errors name the line and the field.
pub fn parse_batch_file(text: &str) -> Result<Vec<SubmittedPrompt>, BatchFileError> {
    read_batch_file(
        text.as_bytes(),
        powerfleet_datasets::SizeCap {
            bytes: u64::MAX - 1,
            setting: "",
        },
    )
}

/// Reads a JSONL batch file line by line, in memory bounded by [`MAX_BATCH_LINE_BYTES`] per line
/// and [`MAX_JOBS_PER_SUBMISSION`] lines (blank lines included), and at most `cap` bytes in all
/// (nothing past `cap + 1` bytes is read), so an endless or binary file fails fast. A UTF-8 byte
/// order mark at the start is skipped; errors name the line and field.
pub fn read_batch_file(
    mut reader: impl std::io::BufRead,
    cap: powerfleet_datasets::SizeCap,
) -> Result<Vec<SubmittedPrompt>, BatchFileError> {
    use std::io::{BufRead, Read};
    let mut problems = Vec::new();
    let mut errors = Vec::new();
    let mut buf = Vec::new();
    let mut total: u64 = 0;
    for n in 1.. {
        buf.clear();
        let left = (cap.bytes + 1).saturating_sub(total);
        let read = reader
            .by_ref()
            .take((MAX_BATCH_LINE_BYTES as u64 + 2).min(left))
            .read_until(b'\n', &mut buf)
            .map_err(|source| BatchFileError::Read { line: n, source })?;
        if read == 0 {
            break;
        }
        total += read as u64;
        if total > cap.bytes {
            return Err(BatchFileError::TooLarge { cap });
        }
        if n > MAX_JOBS_PER_SUBMISSION {
            return Err(BatchFileError::TooManyLines);
        }
        let mut bytes = buf.as_slice();
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        if n == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        if bytes.len() > MAX_BATCH_LINE_BYTES {
            return Err(BatchFileError::LineTooLong { line: n });
        }
        let Ok(raw) = std::str::from_utf8(bytes) else {
            errors.push(format!("line {n}: not UTF-8 text"));
            if errors.len() >= 20 {
                break;
            }
            continue;
        };
        if raw.trim().is_empty() {
            continue;
        }
        let mut line: BatchLine = match serde_json::from_str(raw) {
            Ok(l) => l,
            Err(e) => {
                errors.push(format!("line {n}: {e}"));
                continue;
            }
        };
        let prompt = match line.take_prompt() {
            Ok(prompt) => prompt,
            Err(e) => {
                errors.push(format!("line {n}: {e}"));
                continue;
            }
        };
        problems.push(SubmittedPrompt {
            id: Some(line.id.unwrap_or_else(|| n.to_string())),
            prompt,
        });
        if errors.len() >= 20 {
            break;
        }
    }
    if !errors.is_empty() {
        return Err(BatchFileError::BadLines(errors));
    }
    if problems.is_empty() {
        return Err(BatchFileError::Empty);
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_files_are_read_in_bounded_memory_and_may_start_with_a_bom() {
        let ok = parse_batch_file("\u{feff}{\"prompt\": \"A\"}\r\n{\"prompt\": \"B\"}").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].prompt, Prompt::Text("A".into()));
        let cap = powerfleet_datasets::SizeCap {
            bytes: DEFAULT_MAX_BATCH_FILE_BYTES,
            setting: "--max-batch-file-bytes",
        };
        // An endless line (/dev/zero) fails after one line's worth.
        let zeros = std::io::BufReader::new(std::io::repeat(0));
        let err = read_batch_file(zeros, cap).unwrap_err().to_string();
        assert_eq!(
            err.split(';').next().unwrap(),
            "line 1 is longer than 1048576 bytes (1 MiB, the most one problem's line may hold)"
        );
        // Endless blank lines fail after MAX_JOBS_PER_SUBMISSION lines.
        let blank = std::io::BufReader::new(std::io::repeat(b'\n'));
        let err = read_batch_file(blank, cap).unwrap_err().to_string();
        assert!(err.contains("more than 100000 lines"), "{err}");
        // Endless short lines fail at the cap, having read one byte past it.
        let small = powerfleet_datasets::SizeCap {
            bytes: 1000,
            setting: "--max-batch-file-bytes",
        };
        let mut lines = std::io::BufReader::new(std::io::Read::chain(
            &b"{\"prompt\": \"A\"}\n"[..],
            std::io::repeat(b'\n'),
        ));
        let err = read_batch_file(&mut lines, small).unwrap_err().to_string();
        assert_eq!(
            err,
            "the batch file is larger than the limit of 1000 bytes; raise the limit with --max-batch-file-bytes or split the file"
        );
        // A line of exactly the limit is read.
        let line = format!(
            "{{\"prompt\": \"{}\"}}",
            "a".repeat(MAX_BATCH_LINE_BYTES - 14)
        );
        assert_eq!(line.len(), MAX_BATCH_LINE_BYTES);
        assert_eq!(parse_batch_file(&line).unwrap().len(), 1);
        let err = parse_batch_file(&format!("{line} \n"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1 is longer"), "{err}");
        let err = read_batch_file(&b"{\"prompt\": \"A\"}\n\xff\n"[..], cap)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2: not UTF-8"), "{err}");
    }

    #[test]
    fn batch_files_report_the_line_and_field() {
        let text = "{\"prompt\": \"A\"}\n\n{\"prompt_tokens\": [1, 2], \"id\": \"q2\"}\n{\"promt\": \"x\"}\n{}\nnot json\n{\"prompt\": \"a\", \"prompt_tokens\": [1]}\n";
        let err = parse_batch_file(text).unwrap_err().to_string();
        assert!(err.contains("line 4: unknown field `promt`"), "{err}");
        assert!(err.contains("line 5: missing field `prompt`"), "{err}");
        assert!(err.contains("line 6: expected"), "{err}");
        assert!(
            err.contains("line 7: give prompt or prompt_tokens, not both"),
            "{err}"
        );
        let ok = parse_batch_file("{\"prompt\": \"A\"}\n{\"prompt_tokens\": [1], \"id\": \"q2\"}")
            .unwrap();
        assert_eq!(ok[0].id.as_deref(), Some("1"));
        assert_eq!(ok[1].id.as_deref(), Some("q2"));
        assert!(
            parse_batch_file("\n")
                .unwrap_err()
                .to_string()
                .contains("no prompts")
        );
    }
}
