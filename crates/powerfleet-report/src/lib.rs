//! Benchmark reports for powerfleet: the report of a batch (per method accuracy over all
//! scheduled samples beside accuracy over graded ones, each with its standard error, missing
//! samples, pass@k, majority vote, acceptance, cost, money and latency; per problem which methods
//! solved it and which have missing samples) as a terminal table, CSV, JSONL, Markdown, and
//! figures. A sample that failed, was cancelled, died or could not be graded counts as wrong,
//! never as absent. Results stored without a grade are graded with
//! [`powerfleet_grade::grade_result`].
//!
//! - [`report`]: [`build`] a [`Report`] from a batch's stored [`powerfleet_jobs::JobResult`]s.
//! - [`render`]: [`write`] a report in a [`ReportFormat`].
//! - [`plot`]: [`write_figures`], PNG and SVG figures of a report.
//! - [`compare`]: [`compare`] several runs' reports, each against the first: accuracy with its
//!   Wilson interval, pass@k, cost, and the paired per-problem difference with its t interval
//!   ([`interval`]); [`write_comparison`] and [`write_comparison_figure`] show it.
//!
//! Everything here is pure but [`write_figures`] and [`write_comparison_figure`], which write the
//! files they are asked for.

pub mod compare;
pub mod interval;
pub mod plot;
pub mod render;
pub mod report;
#[cfg(test)]
mod test_results;

pub use compare::{
    COMPARISON_DEFINITIONS, ComparedRow, ComparedRun, Comparison, PairedDifference,
    ProblemDifference, compare, comparison_definition, name_runs,
};
pub use interval::Interval;
pub use plot::{
    COMPARISON_FIGURE, FigureError, FrontierPanel, FrontierPlot, FrontierSeries,
    write_comparison_figure, write_figures, write_frontier_figure,
};
pub use render::{ReportFormat, UnknownReportFormat, write, write_comparison};
pub use report::{
    DEFINITIONS, MethodReport, PriceError, Prices, ProblemMethod, ProblemReport, Report, build,
    definition,
};
