//! What several of powerfleet's IO crates must share and nothing else; it depends on no other
//! powerfleet crate, so the queue, the backends and the fleet use it without knowing each other.
//! Kept tiny: the process's TLS crypto provider, and the shape of a metric's declaration.

mod metric;

pub use metric::{Counter, Gauge, Histogram, MetricDef, MetricKind, MetricUnit};

/// Makes ring the process's TLS crypto provider, once: `https://` inference servers, `rediss://`
/// Redis and Postgres TLS all need one. Clients are built after it.
pub fn install_tls_provider() {
    // Fails only when a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
