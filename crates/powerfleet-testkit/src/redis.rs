//! A private redis-server and a queue client on it, for tests of the queue itself.

use powerfleet_queue::local::{LocalRedis, LocalRedisOptions};
use powerfleet_queue::{Queue, QueueOptions};

/// A private redis-server (with an append-only file when `aof`); panics with how to get
/// redis-server when it cannot start.
pub fn redis_server(aof: bool) -> LocalRedis {
    LocalRedis::start(LocalRedisOptions {
        aof,
        ..LocalRedisOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e} (scripts/test.sh installs redis-server)"))
}

/// A queue client of namespace `ns` on `server`.
pub async fn queue_on(server: &LocalRedis, ns: &str) -> Queue {
    Queue::connect(
        &server.url(),
        QueueOptions {
            namespace: ns.to_string(),
            ..QueueOptions::default()
        },
    )
    .await
    .unwrap()
}
