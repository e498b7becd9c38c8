//! The backends' own metrics, declared like the fleet's (`powerfleet_common::declare_metrics!`);
//! the fleet describes them with its own.

powerfleet_common::declare_metrics! {
    /// Every metric of this crate.
    pub const METRICS;

    /// 1 while a server's circuit is open (it is being skipped), 0 otherwise; labelled by `server`.
    CIRCUIT_OPEN: Gauge {
        name: "powerfleet_backend_circuit_open",
        labels: ["server"],
        help: "1 while an inference server's circuit breaker is open",
    },
}
