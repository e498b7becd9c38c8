//! No secret ever appears in logs, metrics or error messages: a password-protected Redis, a
//! database URL with a password, and wrong credentials, each planted and grepped for. The API
//! fails closed without tokens, and a token holder cannot point workers at a server, a file or a
//! credential of its own choosing.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{BIN, Fleet, Serve, StubServer};
use powerfleet_queue::local::LocalRedisOptions;

const REDIS_SECRET: &str = "redis-pw-planted-5e1d";
const DB_SECRET: &str = "db-pw-planted-77c2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_never_appear_in_logs_metrics_or_errors() {
    let mut fleet = Fleet::with_redis(
        BIN,
        LocalRedisOptions {
            password: Some(REDIS_SECRET.into()),
            ..LocalRedisOptions::default()
        },
    );
    assert!(
        fleet.redis.url().contains(REDIS_SECRET),
        "the fleet authenticates with the password"
    );
    let metrics = common::free_addr();
    fleet.spawn_worker(&["--metrics-listen", &metrics]);
    fleet.spawn_collector();
    common::run_tiny_batch(&fleet, 2).await;
    let scraped = common::metrics_text(&metrics).await;
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
    // A collector whose database cannot be reached waits for it, saying so; the message names
    // the server, never the password.
    let db = format!("postgres://powerfleet:{DB_SECRET}@127.0.0.1:1/results");
    let log_path = fleet.dir.path().join("waiting-collector.log");
    let mut collector = Command::new(BIN)
        .args([
            "collector",
            "--redis",
            &fleet.redis.url(),
            "--database-url",
            &db,
        ])
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let db_err = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("waiting for the results database") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline && collector.try_wait().unwrap().is_none(),
            "the collector does not say it waits for its database:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = collector.kill();
    let _ = collector.wait();
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
    let mut fleet = Fleet::with_redis(
        BIN,
        LocalRedisOptions {
            tls: true,
            password: Some(REDIS_SECRET.into()),
            ..LocalRedisOptions::default()
        },
    );
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
    let results = fleet.wait_for_results(batch_id, 3, common::PATIENCE).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_tokens_refuses_to_start_unless_told_to_run_open() {
    let fleet = Fleet::new(BIN, false);
    let comments = fleet.dir.path().join("tokens.txt");
    std::fs::write(&comments, "# one token per line\n\n   \n# none yet\n").unwrap();
    let comments = comments.display().to_string();
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let cases: [(&[&str], Option<&str>); 4] = [
        (&[], None),
        (&[], Some("")),
        (&[], Some(" , ,, ")),
        (&["--api-tokens-file", &comments], None),
    ];
    for (i, (extra, tokens)) in cases.into_iter().enumerate() {
        let mut args = vec!["--listen", &listen];
        args.extend(extra);
        let mut serve = Serve::start(&fleet, &format!("closed-{i}"), &args, tokens);
        let status = serve.exit_within(common::PATIENCE);
        let log = serve.log();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(1),
            "serve with no token ({extra:?}, POWERFLEET_API_TOKENS={tokens:?}) must refuse to start:\n{log}"
        );
        for needle in [
            "no API tokens configured",
            "POWERFLEET_API_TOKENS",
            "--api-tokens-file",
            "--insecure-no-auth",
        ] {
            assert!(log.contains(needle), "{needle:?} not in:\n{log}");
        }
    }

    // Told to, it starts open, and says so loudly.
    let mut serve = Serve::start(
        &fleet,
        "open",
        &["--listen", &listen, "--insecure-no-auth"],
        Some(" , "),
    );
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    let reply = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .json(&serde_json::json!({"model": "toy:tiny", "prompt": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    let log = serve.log();
    assert!(
        log.contains("WARN") && log.contains("INSECURE") && log.contains(&listen),
        "{log}"
    );
}

/// Records every request it gets: the server a token holder would like workers to call.
async fn attacker() -> StubServer {
    StubServer::start(|_| "{}").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holder_cannot_send_workers_to_a_server_file_or_credential_of_its_choosing() {
    let attacker = attacker().await;
    let evil = &attacker.url;
    let mut fleet = Fleet::with_redis(
        BIN,
        LocalRedisOptions {
            password: Some(REDIS_SECRET.into()),
            ..LocalRedisOptions::default()
        },
    );
    let redis_url = fleet.redis.url();
    // Workers hold the Redis URL (with its password) in their environment, as deployed.
    fleet.spawn_worker_env(
        &["--model", "small=toy:pivot"],
        &[("POWERFLEET_REDIS_URL", &redis_url)],
    );
    fleet.spawn_collector();
    const TOKEN: &str = "pf-api-token-3b9e";
    let port = powerfleet_queue::local::free_port().unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Serve::start(
        &fleet,
        "api",
        &["--listen", &listen, "--model", "small"],
        Some(TOKEN),
    );
    let base = format!("http://{listen}");
    serve.wait_until_up(&base).await;
    let client = reqwest::Client::new();
    // The scheme in lower case, as some clients send it.
    let submit = |model: &str| {
        client
            .post(format!("{base}/v1/jobs"))
            .header("authorization", format!("bearer {TOKEN}"))
            .json(&serde_json::json!({
                "model": model,
                "prompt": "A",
                "methods": ["standard"],
                "seeds": [0, 1],
            }))
            .send()
    };
    let passwd = Path::new("/etc/passwd")
        .exists()
        .then_some("toy:/etc/passwd");
    let attacks = [
        Some(format!(
            "openai+{evil}/v1?model=x&key_env=POWERFLEET_REDIS_URL"
        )),
        Some(format!("openai+{evil}/v1?model=x")),
        Some(format!("llamacpp+{evil}")),
        Some(format!("vllm+{evil}?model=m")),
        Some(format!("sglang+{evil}")),
        passwd.map(str::to_string),
        Some("toy:tiny?delay_ms=600000".to_string()),
    ];
    for model in attacks.into_iter().flatten() {
        let reply = submit(&model).await.unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        assert_eq!(status, 400, "{model}: {text}");
        assert!(text.contains("model: "), "{text}");
        assert!(
            !text.contains("root:") && !text.contains(REDIS_SECRET),
            "{text}"
        );
    }
    // What the operator configured works, on the workers' name.
    let reply = submit("small").await.unwrap();
    assert_eq!(reply.status().as_u16(), 201);
    let receipt: serde_json::Value = reply.json().await.unwrap();
    let batch = receipt["batch_id"].as_str().unwrap().parse().unwrap();
    let results = fleet.wait_for_results(batch, 2, common::PATIENCE).await;
    assert!(
        results
            .iter()
            .all(|r| r.status == powerfleet_jobs::JobStatus::Completed)
    );
    assert!(
        attacker.requests().is_empty(),
        "workers called the attacker: {:?}",
        attacker.requests()
    );
    let logs = format!("{}\n{}", fleet.logs(), serve.log());
    assert!(
        !logs.contains(REDIS_SECRET) && !logs.contains(TOKEN),
        "{logs}"
    );
}
