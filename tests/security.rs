//! No secret ever appears in logs, metrics or error messages: a password-protected Redis, a
//! database URL with a password, and wrong credentials, each planted and grepped for.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{BIN, Fleet, batch, submit_batch};
use powerfleet_queue::local::LocalRedisOptions;
use powerfleet_sampler::{Method, SamplerConfig};

const REDIS_SECRET: &str = "redis-pw-planted-5e1d";
const DB_SECRET: &str = "db-pw-planted-77c2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_appear_in_logs_metrics_or_errors() {
    let mut fleet = Fleet::with_redis(LocalRedisOptions {
        password: Some(REDIS_SECRET.into()),
        ..LocalRedisOptions::default()
    });
    assert!(
        fleet.redis.url().contains(REDIS_SECRET),
        "the fleet authenticates with the password"
    );
    let port = powerfleet_queue::local::free_port().unwrap();
    let metrics = format!("127.0.0.1:{port}");
    fleet.spawn_worker(&["--metrics-listen", &metrics]);
    fleet.spawn_collector();
    let queue = fleet.queue().await;
    let receipt = submit_batch(
        &queue,
        &batch(
            "toy:tiny",
            SamplerConfig::new(Method::Power),
            &[Method::Power],
            2,
            1,
        ),
    )
    .await;
    fleet
        .wait_for_results(receipt.batch_id.unwrap(), 2, Duration::from_secs(30))
        .await;
    let scraped = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(scraped.contains("powerfleet_jobs_finished_total"));
    assert!(!scraped.contains(REDIS_SECRET), "metrics hold no secret");

    // Wrong credentials and unreachable servers: the errors name the server, never the password.
    let wrong_redis = format!(
        "redis://:wrong-{REDIS_SECRET}@127.0.0.1:{}/",
        fleet.redis.port()
    );
    let out = Command::new(BIN)
        .args([
            "status",
            "x",
            "--redis",
            &wrong_redis,
            "--database-url",
            &fleet.db_url,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(":***@127.0.0.1"),
        "the server is named: {stderr}"
    );
    let db = format!("postgres://powerfleet:{DB_SECRET}@127.0.0.1:1/results");
    let out = Command::new(BIN)
        .args([
            "collector",
            "--redis",
            &fleet.redis.url(),
            "--database-url",
            &db,
        ])
        .output()
        .unwrap();
    let db_err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(db_err.contains("powerfleet:***@127.0.0.1:1"), "{db_err}");
    for (what, text) in [
        ("logs", fleet.logs()),
        ("redis error", stderr.to_string()),
        ("database error", db_err.to_string()),
    ] {
        assert!(
            !text.contains(REDIS_SECRET),
            "{what} leak the Redis password:\n{text}"
        );
        assert!(
            !text.contains(DB_SECRET),
            "{what} leak the database password:\n{text}"
        );
    }
}
