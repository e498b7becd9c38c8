//! The databases of the tests that need one: the PostgreSQL server's admin URL and connection,
//! the URL of another database on it, a disk-full failure to inject, and SQL run past the store.

use powerfleet_jobs::redact_url;
use sqlx::{Connection, Executor};

/// The admin URL when `POWERFLEET_TEST_POSTGRES_URL` is not set: the server scripts/test.sh
/// starts.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// `POWERFLEET_TEST_POSTGRES_URL`, else [`DEFAULT_POSTGRES_URL`]: a server where the user may
/// create databases.
pub fn postgres_admin_url() -> String {
    std::env::var("POWERFLEET_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// A connection to [`postgres_admin_url`]; panics, saying how to get a server, when there is
/// none.
pub async fn postgres_admin() -> sqlx::PgConnection {
    let admin = postgres_admin_url();
    sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {}: {e}. Run scripts/test.sh (it installs and starts \
             PostgreSQL) or set POWERFLEET_TEST_POSTGRES_URL to a server where the user may \
             create databases",
            redact_url(&admin)
        )
    })
}

/// SQL that makes PostgreSQL fail writes as a full disk does while the table `failing` holds a
/// row: the table, with its row, and the trigger function `injected_failure()`, which raises
/// `disk_full`. A trigger calling the function follows.
pub const INJECTED_DISK_FULL: &str = "CREATE TABLE failing (x INT); INSERT INTO failing VALUES (1); \
     CREATE FUNCTION injected_failure() RETURNS trigger LANGUAGE plpgsql AS $$ \
     BEGIN \
       IF EXISTS (SELECT 1 FROM failing) THEN \
         RAISE EXCEPTION 'could not extend file: No space left on device (injected)' \
           USING ERRCODE = 'disk_full'; \
       END IF; \
       RETURN NEW; \
     END $$; ";

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    format!("{}/{database}{query}", &base[..host_end])
}

/// Runs `sql` (one or more statements) on the database at `url` (SQLite or PostgreSQL),
/// bypassing the store.
pub async fn execute_raw(url: &str, sql: &str) {
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        conn.execute(sql).await.unwrap();
        conn.close().await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        conn.execute(sql).await.unwrap();
        conn.close().await.unwrap();
    }
}
