//! Metrics declared once each: [`declare_metrics!`](crate::declare_metrics) makes a crate's name
//! constants and its table of [`MetricDef`]s from one list, and whoever installs the recorder
//! describes every table. No metrics crate here: a table is plain data.

/// How a metric's values behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (`_total`).
    Counter,
    /// Set or moved up and down.
    Gauge,
    /// A distribution of observations.
    Histogram,
}

/// The unit of a metric's values, when it has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricUnit {
    /// Seconds (`_seconds`).
    Seconds,
    /// Bytes (`_bytes`).
    Bytes,
}

/// One metric: everything about it but its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDef {
    /// Its name, as scraped.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The unit of its values, if any.
    pub unit: Option<MetricUnit>,
    /// The label keys it is recorded with, in order; empty for none.
    pub labels: &'static [&'static str],
    /// Its description (`# HELP`).
    pub help: &'static str,
}

/// Declares a crate's metrics, each once: a `pub const NAME: &str` per metric (what the
/// recording macros take) and a table of every [`MetricDef`](crate::MetricDef), which the
/// process describes to its recorder.
///
/// ```
/// powerfleet_common::declare_metrics! {
///     /// Every metric of this example.
///     pub const METRICS;
///
///     /// Requests answered.
///     REQUESTS: Counter {
///         name: "example_requests_total",
///         labels: ["status"],
///         help: "Requests answered, by status",
///     },
///     /// Time to answer.
///     LATENCY: Histogram(Seconds) {
///         name: "example_latency_seconds",
///         help: "Time to answer a request",
///     },
/// }
///
/// assert_eq!(REQUESTS, "example_requests_total");
/// assert_eq!(METRICS.len(), 2);
/// assert_eq!(METRICS[0].labels, ["status"]);
/// assert_eq!(METRICS[1].unit, Some(powerfleet_common::MetricUnit::Seconds));
/// ```
#[macro_export]
macro_rules! declare_metrics {
    (
        $(#[$table_meta:meta])*
        $table_vis:vis const $table:ident;
        $(
            $(#[$meta:meta])*
            $ident:ident: $kind:ident $(($unit:ident))? {
                name: $name:literal,
                $(labels: [$($label:literal),* $(,)?],)?
                help: $help:literal $(,)?
            }
        ),* $(,)?
    ) => {
        $(
            $(#[$meta])*
            pub const $ident: &str = $name;
        )*

        $(#[$table_meta])*
        $table_vis const $table: &[$crate::MetricDef] = &[
            $(
                $crate::MetricDef {
                    name: $ident,
                    kind: $crate::MetricKind::$kind,
                    unit: $crate::__metric_unit!($($unit)?),
                    labels: &[$($($label),*)?],
                    help: $help,
                },
            )*
        ];
    };
}

/// The `unit` of a declaration: `None`, or the [`MetricUnit`](crate::MetricUnit) named.
#[doc(hidden)]
#[macro_export]
macro_rules! __metric_unit {
    () => {
        ::core::option::Option::None
    };
    ($unit:ident) => {
        ::core::option::Option::Some($crate::MetricUnit::$unit)
    };
}
