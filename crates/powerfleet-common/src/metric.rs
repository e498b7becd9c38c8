//! Metrics declared once each: [`declare_metrics!`](crate::declare_metrics) makes a crate's typed
//! handles ([`Counter`], [`Gauge`], [`Histogram`], each knowing its name and label keys, so a
//! metric is recorded with exactly the labels it was declared with) and its table of
//! [`MetricDef`]s from one list, and whoever installs the recorder describes every table.

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

/// The labels of one recording: the declared keys with the values given for them.
fn labels<V: Into<metrics::SharedString>, const N: usize>(
    keys: [&'static str; N],
    values: [V; N],
) -> Vec<metrics::Label> {
    keys.into_iter()
        .zip(values)
        .map(|(k, v)| metrics::Label::new(k, v.into()))
        .collect()
}

/// A counter with `N` label keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counter<const N: usize> {
    /// Its name, as scraped.
    pub name: &'static str,
    /// Its label keys, in order.
    pub labels: [&'static str; N],
}

impl Counter<0> {
    /// Adds `n`.
    pub fn increment(&self, n: u64) {
        metrics::counter!(self.name).increment(n);
    }
}

impl<const N: usize> Counter<N> {
    /// The counter of these label values (one per declared key, in order).
    pub fn with<V: Into<metrics::SharedString>>(&self, values: [V; N]) -> metrics::Counter {
        metrics::counter!(self.name, labels(self.labels, values))
    }
}

/// A gauge with `N` label keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauge<const N: usize> {
    /// Its name, as scraped.
    pub name: &'static str,
    /// Its label keys, in order.
    pub labels: [&'static str; N],
}

impl Gauge<0> {
    /// Sets it to `value`.
    pub fn set(&self, value: f64) {
        metrics::gauge!(self.name).set(value);
    }

    /// Moves it by `delta`.
    pub fn increment(&self, delta: f64) {
        metrics::gauge!(self.name).increment(delta);
    }
}

impl<const N: usize> Gauge<N> {
    /// The gauge of these label values (one per declared key, in order).
    pub fn with<V: Into<metrics::SharedString>>(&self, values: [V; N]) -> metrics::Gauge {
        metrics::gauge!(self.name, labels(self.labels, values))
    }
}

/// A histogram with `N` label keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram<const N: usize> {
    /// Its name, as scraped.
    pub name: &'static str,
    /// Its label keys, in order.
    pub labels: [&'static str; N],
}

impl Histogram<0> {
    /// Records one observation.
    pub fn record(&self, value: f64) {
        metrics::histogram!(self.name).record(value);
    }
}

impl<const N: usize> Histogram<N> {
    /// The histogram of these label values (one per declared key, in order).
    pub fn with<V: Into<metrics::SharedString>>(&self, values: [V; N]) -> metrics::Histogram {
        metrics::histogram!(self.name, labels(self.labels, values))
    }
}

/// Declares a crate's metrics, each once: a typed handle per metric (`pub const NAME:
/// Counter<N>`, `Gauge<N>` or `Histogram<N>`, N its label keys) and a table of every
/// [`MetricDef`](crate::MetricDef), which the process describes to its recorder.
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
/// assert_eq!(REQUESTS.name, "example_requests_total");
/// REQUESTS.with(["ok"]).increment(1);
/// LATENCY.record(0.25);
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
            pub const $ident: $crate::$kind<{ $crate::__count!($($($label)*)?) }> = $crate::$kind {
                name: $name,
                labels: [$($($label),*)?],
            };
        )*

        $(#[$table_meta])*
        $table_vis const $table: &[$crate::MetricDef] = &[
            $(
                $crate::MetricDef {
                    name: $ident.name,
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

/// How many tokens it is given: the label count of a declaration.
#[doc(hidden)]
#[macro_export]
macro_rules! __count {
    () => { 0usize };
    ($head:tt $($tail:tt)*) => { 1usize + $crate::__count!($($tail)*) };
}

macro_rules! display_name {
    ($($handle:ident),*) => {$(
        /// Its name, as scraped.
        impl<const N: usize> std::fmt::Display for $handle<N> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name)
            }
        }
    )*};
}
display_name!(Counter, Gauge, Histogram);
