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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_speak_tls_to_redis_and_verify_its_certificate() {
    let mut fleet = Fleet::with_redis(LocalRedisOptions {
        tls: true,
        password: Some(REDIS_SECRET.into()),
        ..LocalRedisOptions::default()
    });
    assert!(fleet.redis.url().starts_with("rediss://"));
    let ca = fleet.redis.ca_file().display().to_string();
    // Worker and collector verify the server against the test CA.
    fleet.spawn_worker_env(&[], &[("SSL_CERT_FILE", &ca)]);
    fleet.spawn_collector();
    // Submissions go through the CLI, which verifies the server the same way.
    let out = Command::new(BIN)
        .args([
            "submit", "--model", "toy:tiny", "--chains", "3", "--format", "json",
        ])
        .args([
            "--redis",
            &fleet.redis.url(),
            "--namespace",
            &fleet.namespace,
        ])
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let batch_id = receipt["batch_id"].as_str().unwrap().parse().unwrap();
    let results = fleet
        .wait_for_results(batch_id, 3, Duration::from_secs(30))
        .await;
    assert!(
        results
            .iter()
            .all(|r| r.status == powerfleet_jobs::JobStatus::Completed)
    );
    // Without the CA, the server's certificate is refused: TLS is verified, not just on.
    let out = Command::new(BIN)
        .args([
            "status",
            "x",
            "--redis",
            &fleet.redis.url(),
            "--database-url",
            &fleet.db_url,
        ])
        .env_remove("SSL_CERT_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(!stderr.contains(REDIS_SECRET));
}

#[tokio::test]
async fn the_results_store_connects_to_postgres_over_tls() {
    use sqlx::Connection;
    let base = std::env::var("POWERFLEET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".into());
    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable: {e}. Run scripts/test.sh (it installs and starts PostgreSQL) or set POWERFLEET_TEST_POSTGRES_URL")
    });
    let db = format!("pf_tls_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{db}?sslmode=require");
    let store = powerfleet_store::Store::connect(&url)
        .await
        .expect("the store connects with sslmode=require");
    store.ping().await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (encrypted,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(encrypted, "the session is encrypted");
    conn.close().await.unwrap();
    store.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
