//! Benchmark reports for powerfleet: grading a stored result against the reference its job
//! carries, and the report of a batch (per-method accuracy with its standard error, pass@k,
//! majority vote, acceptance, cost, money and latency; per problem which methods solved it) as a
//! terminal table, CSV, JSONL, Markdown, and figures.
//!
//! - [`grading`]: [`grade`] one completion (used by the results collector).
//! - [`report`]: [`build`] a [`Report`] from a batch's stored [`powerfleet_jobs::JobResult`]s.
//! - [`render`]: [`write`] a report in a [`Format`].
//! - [`plot`]: [`write_figures`], PNG and SVG figures of a report.
//!
//! Everything here is pure but [`write_figures`], which writes the files it is asked for.

pub mod grading;
pub mod plot;
pub mod render;
pub mod report;

pub use grading::{grade, grade_result, reference_display};
pub use plot::write_figures;
pub use render::{Format, write};
pub use report::{MethodReport, Prices, ProblemMethod, ProblemReport, Report, build};
