//! Dataset file formats (JSONL, the MATH500 JSON array, multiple-choice JSONL, HumanEval's
//! programming problems) and their parsing into [`Problem`]s, with every broken record reported
//! at once. A file whose name ends in `.gz` is gunzipped first (HumanEval ships as
//! `HumanEval.jsonl.gz`).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::{Answer, Problem};

/// The most record errors a [`DatasetError::Invalid`] lists; the rest are only counted.
pub const MAX_ERRORS: usize = 20;

/// The most options a multiple-choice problem may have: one per letter `A` to `Z`.
pub const MAX_CHOICES: usize = 26;
/// The default largest dataset file read: 64 MiB (MATH500 is 0.4 MB, the whole MATH set 10 MB,
/// HumanEval 0.2 MB). `submit --max-dataset-bytes` and `serve --max-dataset-bytes` raise it.
pub const DEFAULT_MAX_DATASET_BYTES: u64 = 64 << 20;

/// The most bytes a file may hold, and the flag or setting that raises the limit: a file over
/// it is refused as soon as the limit is passed (nothing beyond it is read), with an error that
/// names both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeCap {
    /// The most bytes read.
    pub bytes: u64,
    /// What raises it, as the error names it (`--max-dataset-bytes`).
    pub setting: &'static str,
}

impl SizeCap {
    /// The default cap of dataset files, raised by `--max-dataset-bytes`.
    pub const DATASET: SizeCap = SizeCap {
        bytes: DEFAULT_MAX_DATASET_BYTES,
        setting: "--max-dataset-bytes",
    };
}

impl fmt::Display for SizeCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (unit, div) = if self.bytes >= 1 << 20 && self.bytes.is_multiple_of(1 << 20) {
            ("MiB", 1u64 << 20)
        } else if self.bytes >= 1 << 10 && self.bytes.is_multiple_of(1 << 10) {
            ("KiB", 1 << 10)
        } else {
            ("bytes", 1)
        };
        if div == 1 {
            write!(f, "{} bytes", self.bytes)
        } else {
            write!(f, "{} bytes ({} {unit})", self.bytes, self.bytes / div)
        }
    }
}

/// A dataset file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DatasetFormat {
    /// One JSON object per line: `id` (optional, default the 1-based line number), `prompt` (or
    /// `question` or `problem`), `answer` (a string or number); other fields go to
    /// [`Problem::extra`].
    Jsonl,
    /// A JSON array of objects with `prompt` (or `problem`) and `answer`, as in the MATH500 file
    /// of the power-sampling reference; the id is `unique_id` (or `id`) if present, else the
    /// 0-based array index.
    Math500,
    /// One JSON object per line: `question` (or `prompt`), `choices` (2 to 26 strings) and
    /// `answer`, a letter (`"B"`) or a 0-based index into `choices`.
    MultipleChoice,
    /// HumanEval's JSONL: one programming problem per line with `task_id` (the id), `prompt`
    /// (the function's signature and docstring, which a completion continues), `test` (code
    /// defining `check(candidate)`) and `entry_point` (the function's name);
    /// `canonical_solution` and other fields go to [`Problem::extra`].
    Code,
}

impl DatasetFormat {
    /// Every format, for listing in messages.
    pub const ALL: [DatasetFormat; 4] = [
        DatasetFormat::Jsonl,
        DatasetFormat::Math500,
        DatasetFormat::MultipleChoice,
        DatasetFormat::Code,
    ];

    /// The format's name as accepted by [`DatasetFormat::from_str`].
    pub fn name(self) -> &'static str {
        match self {
            DatasetFormat::Jsonl => "jsonl",
            DatasetFormat::Math500 => "math500",
            DatasetFormat::MultipleChoice => "multiple-choice",
            DatasetFormat::Code => "code",
        }
    }

    /// Guesses the format of a file from its name and contents: a `.json` file or text that
    /// starts with `[` is [`DatasetFormat::Math500`]; JSON lines whose first record has `choices` are
    /// [`DatasetFormat::MultipleChoice`], those whose first record has `test` and `entry_point`
    /// are [`DatasetFormat::Code`]; anything else is [`DatasetFormat::Jsonl`]. `text` is the
    /// file's contents after any gunzipping.
    pub fn detect(path: &Path, text: &str) -> DatasetFormat {
        let text = strip_bom(text);
        let is_json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        if is_json || text.trim_start().starts_with('[') {
            return DatasetFormat::Math500;
        }
        let first = text.lines().map(str::trim).find(|line| !line.is_empty());
        let first = first.and_then(|line| serde_json::from_str::<Value>(line).ok());
        let has = |field: &str| first.as_ref().is_some_and(|v| v.get(field).is_some());
        if has("choices") {
            DatasetFormat::MultipleChoice
        } else if has("test") && has("entry_point") {
            DatasetFormat::Code
        } else {
            DatasetFormat::Jsonl
        }
    }
}

impl fmt::Display for DatasetFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of [`DatasetFormat::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dataset format {0:?} is not known; expected jsonl, math500, multiple-choice or code")]
pub struct UnknownFormat(pub String);

impl FromStr for DatasetFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<DatasetFormat, UnknownFormat> {
        DatasetFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// Where in a dataset a broken record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A 1-based line of a JSONL file.
    Line(usize),
    /// A 0-based index into the top-level JSON array.
    Index(usize),
    /// The document as a whole (for example, a MATH500 file that is not a JSON array).
    Document,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Index(i) => write!(f, "index {i}"),
            Location::Document => f.write_str("the document"),
        }
    }
}

/// One problem with one record of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// Where the record is.
    pub location: Location,
    /// The field that is wrong (`"answer"`, `"choices"`, ...), or `None` when the record as a
    /// whole is (not JSON, not an object).
    pub field: Option<&'static str>,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// A dataset that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read.
    #[error("cannot read dataset file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// Some records are broken; all of them (up to [`MAX_ERRORS`]) are listed.
    #[error("{}", describe_invalid(.path.as_deref(), *.format, .errors, *.omitted))]
    Invalid {
        /// The file, when the dataset came from one.
        path: Option<String>,
        /// The format it was parsed as.
        format: DatasetFormat,
        /// The broken records, in file order, at most [`MAX_ERRORS`].
        errors: Vec<RecordError>,
        /// How many more errors there were beyond `errors`.
        omitted: usize,
    },
    /// The dataset parsed but holds no problems.
    #[error("dataset{} holds no problems; expected at least one {format} record", in_path(.path.as_deref()))]
    Empty {
        /// The file, when the dataset came from one.
        path: Option<String>,
        /// The format it was parsed as.
        format: DatasetFormat,
    },
}

impl DatasetError {
    /// The record errors, empty unless this is [`DatasetError::Invalid`].
    pub fn record_errors(&self) -> &[RecordError] {
        match self {
            DatasetError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }

    fn with_path(self, path: &Path) -> DatasetError {
        let shown = Some(path.display().to_string());
        match self {
            DatasetError::Invalid {
                format,
                errors,
                omitted,
                ..
            } => DatasetError::Invalid {
                path: shown,
                format,
                errors,
                omitted,
            },
            DatasetError::Empty { format, .. } => DatasetError::Empty {
                path: shown,
                format,
            },
            other => other,
        }
    }
}

fn in_path(path: Option<&str>) -> String {
    path.map(|p| format!(" {p}")).unwrap_or_default()
}

fn describe_invalid(
    path: Option<&str>,
    format: DatasetFormat,
    errors: &[RecordError],
    omitted: usize,
) -> String {
    let total = errors.len() + omitted;
    let noun = if total == 1 { "error" } else { "errors" };
    let mut out = format!(
        "dataset{} ({format} format) has {total} {noun}:",
        in_path(path)
    );
    for e in errors {
        out.push_str("\n  ");
        out.push_str(&e.to_string());
    }
    if omitted > 0 {
        out.push_str(&format!("\n  ... and {omitted} more"));
    }
    out
}

/// Reads and parses a dataset file of at most [`SizeCap::DATASET`].
pub fn load(path: impl AsRef<Path>, format: DatasetFormat) -> Result<Vec<Problem>, DatasetError> {
    load_capped(path, Some(format), SizeCap::DATASET).map(|(_, problems)| problems)
}

/// Reads a dataset file of at most [`SizeCap::DATASET`], detects its format with
/// [`DatasetFormat::detect`] and parses it.
pub fn load_detected(
    path: impl AsRef<Path>,
) -> Result<(DatasetFormat, Vec<Problem>), DatasetError> {
    load_capped(path, None, SizeCap::DATASET)
}

/// Reads a dataset file of at most `cap` bytes (uncompressed; refused as soon as it passes the
/// cap, with an error naming the cap and its setting), in `format` or, when `None`, the format
/// [`DatasetFormat::detect`] finds, and parses it.
pub fn load_capped(
    path: impl AsRef<Path>,
    format: Option<DatasetFormat>,
    cap: SizeCap,
) -> Result<(DatasetFormat, Vec<Problem>), DatasetError> {
    let path = path.as_ref();
    let text = read(path, cap)?;
    let format = format.unwrap_or_else(|| DatasetFormat::detect(path, &text));
    let problems = parse(&text, format).map_err(|e| e.with_path(path))?;
    Ok((format, problems))
}

fn read(path: &Path, cap: SizeCap) -> Result<String, DatasetError> {
    let gzipped = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("gz"));
    let advice = "or split it into several files";
    let text = if gzipped {
        read_gzipped(path, cap, advice)
    } else {
        read_bounded(path, cap, advice)
    };
    text.map_err(|source| DatasetError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Reads a gzipped UTF-8 file whose contents are at most `cap` bytes, without ever holding
/// more than that (a gzip bomb fails as soon as its output passes the limit).
fn read_gzipped(path: &Path, cap: SizeCap, advice: &str) -> std::io::Result<String> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    read_limited(flate2::read::GzDecoder::new(file), cap, advice)
}

/// Reads a UTF-8 file of at most `cap` bytes, without ever holding more than that: a regular
/// file over the cap is refused before it is read, and an endless one (a device such as
/// `/dev/zero`, a pipe) as soon as it passes the cap, with an error naming the cap, the setting
/// that raises it and `advice` on what else to do.
pub fn read_bounded(path: &Path, cap: SizeCap, advice: &str) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    if let Ok(meta) = file.metadata()
        && meta.is_file()
        && meta.len() > cap.bytes
    {
        return Err(too_large(cap, advice));
    }
    read_limited(file, cap, advice)
}

/// The error of a file over `cap`.
fn too_large(cap: SizeCap, advice: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "it is larger than the limit of {cap}; raise the limit with {} {advice}",
            cap.setting
        ),
    )
}

/// Reads UTF-8 text of at most `cap` bytes from `reader`, failing as soon as it passes the cap:
/// at most `cap + 1` bytes are ever read.
fn read_limited(reader: impl std::io::Read, cap: SizeCap, advice: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    reader.take(cap.bytes + 1).read_to_string(&mut text)?;
    if text.len() as u64 > cap.bytes {
        return Err(too_large(cap, advice));
    }
    Ok(text)
}

/// Parses dataset text in `format`, reporting every broken record (up to [`MAX_ERRORS`]).
pub fn parse(text: &str, format: DatasetFormat) -> Result<Vec<Problem>, DatasetError> {
    let text = strip_bom(text);
    let mut errors = Errors::default();
    let mut problems = Vec::new();
    let record = |location: Location,
                  default_id: String,
                  value: Value,
                  errors: &mut Errors,
                  problems: &mut Vec<(Location, Problem)>| match value {
        Value::Object(object) => match build(format, location, default_id, object) {
            Ok(problem) => problems.push((location, problem)),
            Err(record_errors) => record_errors.into_iter().for_each(|e| errors.push(e)),
        },
        other => errors.push(RecordError {
            location,
            field: None,
            message: format!("expected a JSON object, got {}", kind(&other)),
        }),
    };
    match format {
        DatasetFormat::Jsonl | DatasetFormat::MultipleChoice | DatasetFormat::Code => {
            for (i, line) in text.lines().enumerate() {
                let location = Location::Line(i + 1);
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(line) {
                    Ok(value) => record(
                        location,
                        (i + 1).to_string(),
                        value,
                        &mut errors,
                        &mut problems,
                    ),
                    Err(e) => errors.push(RecordError {
                        location,
                        field: None,
                        message: format!("not valid JSON ({e}); expected one JSON object per line"),
                    }),
                }
            }
        }
        DatasetFormat::Math500 => match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => {
                for (i, value) in items.into_iter().enumerate() {
                    record(
                        Location::Index(i),
                        i.to_string(),
                        value,
                        &mut errors,
                        &mut problems,
                    );
                }
            }
            Ok(other) => errors.push(RecordError {
                location: Location::Document,
                field: None,
                message: format!(
                    "expected a JSON array of {{\"prompt\": ..., \"answer\": ...}} objects, got {}",
                    kind(&other)
                ),
            }),
            Err(e) => errors.push(RecordError {
                location: Location::Document,
                field: None,
                message: format!(
                    "not valid JSON ({e}); expected an array of {{\"prompt\": ..., \"answer\": ...}} objects"
                ),
            }),
        },
    }
    let mut first_seen: HashMap<String, Location> = HashMap::new();
    for (location, problem) in &problems {
        if let Some(first) = first_seen.get(&problem.id) {
            errors.push(RecordError {
                location: *location,
                field: Some("id"),
                message: format!(
                    "id {:?} is already used at {first}; ids must be unique",
                    problem.id
                ),
            });
        } else {
            first_seen.insert(problem.id.clone(), *location);
        }
    }
    if !errors.list.is_empty() {
        errors.list.sort_by_key(|e| order(e.location));
        return Err(DatasetError::Invalid {
            path: None,
            format,
            errors: errors.list,
            omitted: errors.omitted,
        });
    }
    if problems.is_empty() {
        return Err(DatasetError::Empty { path: None, format });
    }
    Ok(problems.into_iter().map(|(_, p)| p).collect())
}

fn order(location: Location) -> usize {
    match location {
        Location::Document => 0,
        Location::Line(n) | Location::Index(n) => n + 1,
    }
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

#[derive(Default)]
struct Errors {
    list: Vec<RecordError>,
    omitted: usize,
}

impl Errors {
    fn push(&mut self, e: RecordError) {
        if self.list.len() < MAX_ERRORS {
            self.list.push(e);
        } else {
            self.omitted += 1;
        }
    }
}

/// The JSON type of a value, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The accepted names of the question field, the first being the one named in errors.
fn question_names(format: DatasetFormat) -> &'static [&'static str] {
    match format {
        DatasetFormat::Jsonl => &["prompt", "question", "problem"],
        DatasetFormat::Math500 => &["prompt", "problem", "question"],
        DatasetFormat::MultipleChoice => &["question", "prompt", "problem"],
        DatasetFormat::Code => &["prompt"],
    }
}

/// Removes the one field among `names` that is present; an error if several are.
fn take_one(
    object: &mut Map<String, Value>,
    names: &'static [&'static str],
    location: Location,
) -> Result<Option<(&'static str, Value)>, RecordError> {
    let present: Vec<&'static str> = names
        .iter()
        .copied()
        .filter(|n| object.contains_key(*n))
        .collect();
    match present.as_slice() {
        [] => Ok(None),
        [name] => Ok(object.remove(*name).map(|v| (*name, v))),
        [first, second, ..] => Err(RecordError {
            location,
            field: Some(first),
            message: format!("has both `{first}` and `{second}`; keep one of them"),
        }),
    }
}

fn build(
    format: DatasetFormat,
    location: Location,
    default_id: String,
    mut object: Map<String, Value>,
) -> Result<Problem, Vec<RecordError>> {
    let mut errors = Vec::new();
    let mut error = |field: &'static str, message: String| {
        errors.push(RecordError {
            location,
            field: Some(field),
            message,
        });
    };

    let id = match take_one(&mut object, &["id", "unique_id", "task_id"], location) {
        Ok(None) => Some(default_id),
        Ok(Some((_, Value::String(s)))) if !s.trim().is_empty() => Some(s),
        Ok(Some((_, Value::Number(n)))) => Some(n.to_string()),
        Ok(Some((name, other))) => {
            error(
                "id",
                format!(
                    "`{name}` must be a non-empty string or a number, got {}",
                    describe(&other)
                ),
            );
            None
        }
        Err(e) => {
            errors_push(&mut error, e);
            None
        }
    };

    let names = question_names(format);
    let question = match take_one(&mut object, names, location) {
        Ok(Some((_, Value::String(s)))) if !s.trim().is_empty() => Some(s),
        Ok(Some((name, other))) => {
            error(
                names[0],
                format!(
                    "`{name}` must be the problem text as a non-empty string, got {}",
                    describe(&other)
                ),
            );
            None
        }
        Ok(None) => {
            let others = names[1..]
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" or ");
            error(
                names[0],
                format!(
                    "missing `{}` (or {others}); expected the problem text as a string",
                    names[0]
                ),
            );
            None
        }
        Err(e) => {
            errors_push(&mut error, e);
            None
        }
    };

    let answer = match format {
        DatasetFormat::Jsonl | DatasetFormat::Math500 => {
            text_answer(object.remove("answer"), &mut error)
        }
        DatasetFormat::MultipleChoice => choice_answer(
            object.remove("choices"),
            object.remove("answer"),
            &mut error,
        ),
        DatasetFormat::Code => code_answer(
            object.remove("test"),
            object.remove("entry_point"),
            &mut error,
        ),
    };

    match (id, question, answer) {
        (Some(id), Some(question), Some(answer)) if errors.is_empty() => Ok(Problem {
            id,
            question,
            answer,
            extra: object,
        }),
        _ => Err(errors),
    }
}

/// Pushes an already-built record error through the field-error sink.
fn errors_push(error: &mut impl FnMut(&'static str, String), e: RecordError) {
    error(e.field.unwrap_or("record"), e.message);
}

/// A value as shown in messages: its type, with short strings and numbers quoted.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) if s.trim().is_empty() => "an empty string".to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        other => kind(other).to_string(),
    }
}

fn text_answer(
    value: Option<Value>,
    error: &mut impl FnMut(&'static str, String),
) -> Option<Answer> {
    match value {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(Answer::Text(s)),
        Some(Value::Number(n)) => Some(Answer::Text(n.to_string())),
        Some(other) => {
            error(
                "answer",
                format!(
                    "`answer` must be a non-empty string or a number, got {}",
                    kind_or_empty(&other)
                ),
            );
            None
        }
        None => {
            error(
                "answer",
                "missing `answer`; expected the reference answer as a string or number".into(),
            );
            None
        }
    }
}

/// A programming problem's tests and entry point: `test` a non-empty string, `entry_point` a
/// Python identifier.
fn code_answer(
    test: Option<Value>,
    entry_point: Option<Value>,
    error: &mut impl FnMut(&'static str, String),
) -> Option<Answer> {
    let test = match test {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        Some(other) => {
            error(
                "test",
                format!(
                    "`test` must be the test code (defining check(candidate)) as a non-empty string, got {}",
                    kind_or_empty(&other)
                ),
            );
            None
        }
        None => {
            error(
                "test",
                "missing `test`; expected the test code, which defines check(candidate)".into(),
            );
            None
        }
    };
    let is_identifier = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric())
    };
    let entry_point = match entry_point {
        Some(Value::String(s)) if is_identifier(&s) => Some(s),
        Some(other) => {
            error(
                "entry_point",
                format!(
                    "`entry_point` must be the name of the function under test (a Python identifier), got {}",
                    describe(&other)
                ),
            );
            None
        }
        None => {
            error(
                "entry_point",
                "missing `entry_point`; expected the name of the function under test".into(),
            );
            None
        }
    };
    Some(Answer::Code {
        test: test?,
        entry_point: entry_point?,
    })
}

fn kind_or_empty(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "an empty string",
        other => kind(other),
    }
}

/// The letter of option `index` (`0` → `A`).
fn letter(index: usize) -> char {
    char::from(b'A' + u8::try_from(index).expect("at most 26 choices"))
}

fn choice_answer(
    choices: Option<Value>,
    answer: Option<Value>,
    error: &mut impl FnMut(&'static str, String),
) -> Option<Answer> {
    let choices: Option<Vec<String>> = match choices {
        None => {
            error(
                "choices",
                format!("missing `choices`; expected an array of 2 to {MAX_CHOICES} strings"),
            );
            None
        }
        Some(Value::Array(items)) if items.len() < 2 => {
            let entries = if items.len() == 1 { "entry" } else { "entries" };
            error(
                "choices",
                format!(
                    "`choices` has {} {entries}; expected at least 2",
                    items.len()
                ),
            );
            None
        }
        Some(Value::Array(items)) if items.len() > MAX_CHOICES => {
            error(
                "choices",
                format!(
                    "`choices` has {} entries; at most {MAX_CHOICES} can be lettered A to Z",
                    items.len()
                ),
            );
            None
        }
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            let mut bad = None;
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) if !s.trim().is_empty() => out.push(s),
                    other => {
                        bad.get_or_insert((i, kind_or_empty(&other)));
                    }
                }
            }
            match bad {
                Some((i, what)) => {
                    error(
                        "choices",
                        format!("`choices[{i}]` is {what}; expected a non-empty string"),
                    );
                    None
                }
                None => Some(out),
            }
        }
        Some(other) => {
            error(
                "choices",
                format!(
                    "`choices` must be an array of 2 to {MAX_CHOICES} strings, got {}",
                    kind(&other)
                ),
            );
            None
        }
    };
    let n = choices.as_ref().map(Vec::len);
    let range = |n: usize| format!("{} to {}", letter(0), letter(n - 1));
    let correct: Option<usize> = match answer {
        None => {
            error(
                "answer",
                "missing `answer`; expected a letter such as \"B\" or a 0-based index into `choices`"
                    .into(),
            );
            None
        }
        Some(Value::String(s)) => {
            let t = s.trim();
            let mut chars = t.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_alphabetic() => {
                    let index = usize::from(c.to_ascii_uppercase() as u8 - b'A');
                    match n {
                        Some(n) if index >= n => {
                            error(
                                "answer",
                                format!(
                                    "`answer` {s:?} is out of range for {n} choices; expected {}",
                                    range(n)
                                ),
                            );
                            None
                        }
                        _ => Some(index),
                    }
                }
                _ => {
                    error(
                        "answer",
                        format!(
                            "`answer` {s:?} is not a choice letter; expected a letter such as \"B\" or a 0-based index"
                        ),
                    );
                    None
                }
            }
        }
        Some(Value::Number(num)) => match (num.as_u64(), n) {
            (Some(i), Some(n)) if i < n as u64 => Some(i as usize),
            (Some(i), None) => Some(i as usize),
            (Some(i), Some(n)) => {
                error(
                    "answer",
                    format!(
                        "`answer` {i} is out of range for {n} choices; expected 0 to {}",
                        n - 1
                    ),
                );
                None
            }
            (None, _) => {
                error(
                    "answer",
                    format!(
                        "`answer` {num} is not a valid index; expected a 0-based index or a letter such as \"B\""
                    ),
                );
                None
            }
        },
        Some(other) => {
            error(
                "answer",
                format!(
                    "`answer` must be a letter such as \"B\" or a 0-based index, got {}",
                    kind(&other)
                ),
            );
            None
        }
    };
    Some(Answer::Choice {
        choices: choices?,
        correct: correct?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_through_their_names() {
        for f in DatasetFormat::ALL {
            assert_eq!(f.name().parse::<DatasetFormat>().unwrap(), f);
        }
        let err = "csv".parse::<DatasetFormat>().unwrap_err().to_string();
        assert!(
            err.contains("expected jsonl, math500, multiple-choice or code"),
            "{err}"
        );
    }

    #[test]
    fn detects_formats() {
        let p = Path::new;
        assert_eq!(
            DatasetFormat::detect(p("a.json"), "[]"),
            DatasetFormat::Math500
        );
        assert_eq!(
            DatasetFormat::detect(p("a.txt"), "  [{}]"),
            DatasetFormat::Math500
        );
        assert_eq!(
            DatasetFormat::detect(
                p("a.jsonl"),
                "\n{\"question\": \"q\", \"choices\": [\"a\", \"b\"]}\n"
            ),
            DatasetFormat::MultipleChoice
        );
        assert_eq!(
            DatasetFormat::detect(p("a.jsonl"), "{\"prompt\": \"q\", \"answer\": 1}"),
            DatasetFormat::Jsonl
        );
    }

    #[test]
    fn errors_beyond_the_limit_are_counted() {
        let text = "x\n".repeat(MAX_ERRORS + 5);
        let err = parse(&text, DatasetFormat::Jsonl).unwrap_err();
        let DatasetError::Invalid {
            errors, omitted, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(*omitted, 5);
        assert!(err.to_string().ends_with("... and 5 more"), "{err}");
        assert!(err.to_string().contains("has 25 errors"), "{err}");
    }

    #[test]
    fn empty_and_duplicate_ids_are_rejected() {
        let err = parse("\n\n", DatasetFormat::Jsonl).unwrap_err().to_string();
        assert_eq!(
            err,
            "dataset holds no problems; expected at least one jsonl record"
        );
        let text = "{\"id\": \"a\", \"prompt\": \"q\", \"answer\": \"1\"}\n{\"id\": \"a\", \"prompt\": \"r\", \"answer\": \"2\"}";
        let err = parse(text, DatasetFormat::Jsonl).unwrap_err();
        assert_eq!(err.record_errors()[0].location, Location::Line(2));
        assert_eq!(err.record_errors()[0].field, Some("id"));
        assert!(err.to_string().contains("already used at line 1"), "{err}");
    }
}
