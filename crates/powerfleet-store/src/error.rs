//! Errors of the results store, and the URL redaction that keeps passwords out of them.

pub use powerfleet_jobs::redact_url;

/// What went wrong with the results database. Every message names the database by its redacted URL
/// (never with a password) and says what to do next.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error(
        "unsupported database url {url:?}: use sqlite://PATH (the file is created if missing) or \
         postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (postgresql:// works too)"
    )]
    UnsupportedUrl {
        /// The URL given, redacted.
        url: String,
    },
    /// No connection could be made.
    #[error(
        "cannot connect to the results database at {url}: {cause}; check --database-url and that the \
         server is running"
    )]
    Connect {
        /// The database, redacted.
        url: String,
        /// Why, with any password removed.
        cause: String,
    },
    /// The schema migrations failed.
    #[error(
        "cannot apply the schema migrations to the results database at {url}: {cause}; check that \
         the database user may create tables and that no newer powerfleet version migrated this \
         database"
    )]
    Migrate {
        /// The database, redacted.
        url: String,
        /// Why, with any password removed.
        cause: String,
    },
    /// A query failed.
    #[error("results database at {url} failed to {action}: {cause}; {}", .class.advice())]
    Query {
        /// The database, redacted.
        url: String,
        /// What the store was doing, e.g. "record job 0193...".
        action: String,
        /// Why, with any password removed.
        cause: String,
        /// Whether the data of the query or the database is at fault.
        class: StoreErrorClass,
    },
    /// A stored row does not decode.
    #[error(
        "results database at {url} holds a row that cannot be decoded ({what}): {cause}; it was \
         probably written by an incompatible powerfleet version, use that version to read it"
    )]
    Corrupt {
        /// The database, redacted.
        url: String,
        /// Which row or column.
        what: String,
        /// Why.
        cause: String,
    },
    /// A result that is not finished was given to `record`.
    #[error(
        "cannot store job {job_id} with status {status}: only finished jobs (completed, failed, \
         cancelled, dead) are stored"
    )]
    NotFinished {
        /// The job.
        job_id: String,
        /// Its status.
        status: String,
    },
}

/// Whose fault a failed store operation is: what decides whether the collector gives a result up
/// (dead-letters it) or keeps it and retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreErrorClass {
    /// The data itself: it cannot be encoded, or the database refuses it by a rule that refuses it
    /// however often it is tried (a constraint, a value out of range). Storing the same result
    /// again fails the same way.
    ResultRefused,
    /// Anything else: the database is unreachable, restarting, read-only, out of disk space, busy,
    /// locked or too slow (a statement or pool timeout), or disagrees with this powerfleet version
    /// about the schema. The same result can be stored once that is over.
    DatabaseUnavailable,
}

impl StoreErrorClass {
    /// What to do about an error of this class, for messages.
    fn advice(self) -> &'static str {
        match self {
            StoreErrorClass::ResultRefused => {
                "the database refuses this data, so storing it again fails the same way"
            }
            StoreErrorClass::DatabaseUnavailable => {
                "check that the database server is running, reachable and writable (not read-only, \
                 not out of disk space), then retry"
            }
        }
    }

    /// The class of a driver error.
    pub(crate) fn of(e: &sqlx::Error) -> StoreErrorClass {
        match e {
            sqlx::Error::Database(db) => {
                use sqlx::error::ErrorKind;
                if matches!(
                    db.kind(),
                    ErrorKind::UniqueViolation
                        | ErrorKind::ForeignKeyViolation
                        | ErrorKind::NotNullViolation
                        | ErrorKind::CheckViolation
                ) {
                    return StoreErrorClass::ResultRefused;
                }
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    StoreErrorClass::of_sqlstate(code)
                } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    StoreErrorClass::of_sqlite_code(code)
                } else {
                    StoreErrorClass::DatabaseUnavailable
                }
            }
            // A bound value that cannot be encoded: the result's own value.
            sqlx::Error::Encode(_) => StoreErrorClass::ResultRefused,
            // Connection, TLS, IO and protocol errors, pool timeouts and a closed pool, and
            // columns or types the schema lacks: nothing the result can change.
            _ => StoreErrorClass::DatabaseUnavailable,
        }
    }

    /// The class of a PostgreSQL error by its SQLSTATE: integrity constraint violations (class
    /// 23) and data exceptions (class 22) refuse the result, except the two encoding errors
    /// (22021, a byte the database encoding cannot hold, such as 0x00; 22P05, a character the
    /// database encoding cannot represent), which depend on the database's encoding, not on the
    /// result being wrong.
    pub(crate) fn of_sqlstate(sqlstate: &str) -> StoreErrorClass {
        match sqlstate {
            "22021" | "22P05" => StoreErrorClass::DatabaseUnavailable,
            s if s.starts_with("23") || s.starts_with("22") => StoreErrorClass::ResultRefused,
            _ => StoreErrorClass::DatabaseUnavailable,
        }
    }

    /// The class of a SQLite error by its extended result code: every constraint violation
    /// (SQLITE_CONSTRAINT and its extended codes, a trigger's RAISE(ABORT) included), a value
    /// over the size limit (SQLITE_TOOBIG) and a datatype mismatch (SQLITE_MISMATCH) refuse the
    /// result; busy, locked, read-only, full, IO errors and the rest do not.
    pub(crate) fn of_sqlite_code(code: &str) -> StoreErrorClass {
        const SQLITE_TOOBIG: i64 = 18;
        const SQLITE_CONSTRAINT: i64 = 19;
        const SQLITE_MISMATCH: i64 = 20;
        match code.parse::<i64>().map(|c| c & 0xff) {
            Ok(SQLITE_TOOBIG | SQLITE_CONSTRAINT | SQLITE_MISMATCH) => {
                StoreErrorClass::ResultRefused
            }
            _ => StoreErrorClass::DatabaseUnavailable,
        }
    }
}

impl StoreError {
    /// Whose fault the error is; see [`StoreErrorClass`].
    pub fn class(&self) -> StoreErrorClass {
        match self {
            StoreError::Query { class, .. } => *class,
            // A result that does not serialize, or is not finished: it stays so.
            StoreError::Corrupt { .. } | StoreError::NotFinished { .. } => {
                StoreErrorClass::ResultRefused
            }
            StoreError::UnsupportedUrl { .. }
            | StoreError::Connect { .. }
            | StoreError::Migrate { .. } => StoreErrorClass::DatabaseUnavailable,
        }
    }

    /// Whether storing the same result again is bound to fail the same way (the result is at
    /// fault, not the database): such a result is given up, every other one kept and retried.
    pub fn is_permanent_for_this_result(&self) -> bool {
        self.class() == StoreErrorClass::ResultRefused
    }
}

/// The password in `url`, if any (the `user:password@` part or a `password=` parameter).
fn passwords_in(url: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    if let Some(at) = rest.rfind('@')
        && let Some(colon) = rest[..at].find(':')
    {
        found.push(&rest[colon + 1..at]);
    }
    let lower = url.to_ascii_lowercase();
    let mut pos = 0;
    while let Some(i) = lower[pos..].find("password=") {
        let start = pos + i + "password=".len();
        let end = url[start..]
            .find(['&', '#'])
            .map_or(url.len(), |j| start + j);
        found.push(&url[start..end]);
        pos = end;
    }
    found
}

/// `cause` (an error message from the driver) with anything that looks like the URL's password or
/// the URL itself replaced by the redacted forms.
pub(crate) fn sanitize(cause: &str, url: &str) -> String {
    let mut out = cause.replace(url, &redact_url(url));
    for password in passwords_in(url) {
        // Very short passwords would turn ordinary words into asterisks; the driver never prints
        // them anyway, this is a second line of defence.
        if password.len() >= 4 {
            out = out.replace(password, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use StoreErrorClass::{DatabaseUnavailable, ResultRefused};

    #[test]
    fn postgres_errors_by_sqlstate() {
        for (sqlstate, class, what) in [
            ("23502", ResultRefused, "not_null_violation"),
            ("23503", ResultRefused, "foreign_key_violation"),
            ("23505", ResultRefused, "unique_violation"),
            ("23514", ResultRefused, "check_violation"),
            ("23P01", ResultRefused, "exclusion_violation"),
            ("22001", ResultRefused, "string_data_right_truncation"),
            ("22003", ResultRefused, "numeric_value_out_of_range"),
            ("22P02", ResultRefused, "invalid_text_representation"),
            // Encodings: the database's, not the result's.
            (
                "22021",
                DatabaseUnavailable,
                "character_not_in_repertoire (0x00)",
            ),
            ("22P05", DatabaseUnavailable, "untranslatable_character"),
            ("25006", DatabaseUnavailable, "read_only_sql_transaction"),
            ("53100", DatabaseUnavailable, "disk_full"),
            ("53200", DatabaseUnavailable, "out_of_memory"),
            ("53300", DatabaseUnavailable, "too_many_connections"),
            (
                "57014",
                DatabaseUnavailable,
                "query_canceled (statement_timeout)",
            ),
            ("57P01", DatabaseUnavailable, "admin_shutdown"),
            ("57P03", DatabaseUnavailable, "cannot_connect_now"),
            ("08006", DatabaseUnavailable, "connection_failure"),
            ("40001", DatabaseUnavailable, "serialization_failure"),
            ("40P01", DatabaseUnavailable, "deadlock_detected"),
            ("55P03", DatabaseUnavailable, "lock_not_available"),
            ("42P01", DatabaseUnavailable, "undefined_table"),
            ("42501", DatabaseUnavailable, "insufficient_privilege"),
            ("XX000", DatabaseUnavailable, "internal_error"),
            ("", DatabaseUnavailable, "no code"),
        ] {
            assert_eq!(
                StoreErrorClass::of_sqlstate(sqlstate),
                class,
                "{sqlstate} {what}"
            );
        }
    }

    #[test]
    fn sqlite_errors_by_extended_result_code() {
        for (code, class, what) in [
            ("19", ResultRefused, "SQLITE_CONSTRAINT"),
            ("275", ResultRefused, "SQLITE_CONSTRAINT_CHECK"),
            ("787", ResultRefused, "SQLITE_CONSTRAINT_FOREIGNKEY"),
            ("1299", ResultRefused, "SQLITE_CONSTRAINT_NOTNULL"),
            ("1555", ResultRefused, "SQLITE_CONSTRAINT_PRIMARYKEY"),
            ("1811", ResultRefused, "SQLITE_CONSTRAINT_TRIGGER"),
            ("2067", ResultRefused, "SQLITE_CONSTRAINT_UNIQUE"),
            ("3091", ResultRefused, "SQLITE_CONSTRAINT_DATATYPE"),
            ("18", ResultRefused, "SQLITE_TOOBIG"),
            ("20", ResultRefused, "SQLITE_MISMATCH"),
            ("5", DatabaseUnavailable, "SQLITE_BUSY"),
            ("261", DatabaseUnavailable, "SQLITE_BUSY_RECOVERY"),
            ("517", DatabaseUnavailable, "SQLITE_BUSY_SNAPSHOT"),
            ("6", DatabaseUnavailable, "SQLITE_LOCKED"),
            ("8", DatabaseUnavailable, "SQLITE_READONLY"),
            ("10", DatabaseUnavailable, "SQLITE_IOERR"),
            ("13", DatabaseUnavailable, "SQLITE_FULL"),
            ("14", DatabaseUnavailable, "SQLITE_CANTOPEN"),
            ("11", DatabaseUnavailable, "SQLITE_CORRUPT"),
            (
                "1",
                DatabaseUnavailable,
                "SQLITE_ERROR (no such table, ...)",
            ),
            ("", DatabaseUnavailable, "no code"),
        ] {
            assert_eq!(
                StoreErrorClass::of_sqlite_code(code),
                class,
                "{code} {what}"
            );
        }
    }

    #[test]
    fn driver_errors_other_than_the_database_s() {
        let io = sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(StoreErrorClass::of(&io), DatabaseUnavailable);
        assert_eq!(
            StoreErrorClass::of(&sqlx::Error::PoolTimedOut),
            DatabaseUnavailable
        );
        assert_eq!(
            StoreErrorClass::of(&sqlx::Error::PoolClosed),
            DatabaseUnavailable
        );
        assert_eq!(
            StoreErrorClass::of(&sqlx::Error::Protocol("unexpected".into())),
            DatabaseUnavailable
        );
        assert_eq!(
            StoreErrorClass::of(&sqlx::Error::ColumnNotFound("grader".into())),
            DatabaseUnavailable
        );
        assert_eq!(
            StoreErrorClass::of(&sqlx::Error::Encode("value too large".into())),
            ResultRefused
        );
    }

    #[test]
    fn store_errors_other_than_queries() {
        let url = || "sqlite://x.db".to_string();
        let permanent = |e: StoreError| e.is_permanent_for_this_result();
        assert!(permanent(StoreError::NotFinished {
            job_id: "j".into(),
            status: "running".into()
        }));
        assert!(permanent(StoreError::Corrupt {
            url: url(),
            what: "result".into(),
            cause: "c".into()
        }));
        assert!(!permanent(StoreError::Connect {
            url: url(),
            cause: "refused".into()
        }));
        assert!(!permanent(StoreError::Migrate {
            url: url(),
            cause: "c".into()
        }));
        let query = |class| StoreError::Query {
            url: url(),
            action: "record job j".into(),
            cause: "c".into(),
            class,
        };
        assert!(permanent(query(ResultRefused)));
        assert!(!permanent(query(DatabaseUnavailable)));
        assert!(
            query(DatabaseUnavailable)
                .to_string()
                .contains("then retry")
        );
        assert!(
            query(ResultRefused)
                .to_string()
                .contains("storing it again fails the same way")
        );
    }

    /// Real SQLite errors, as the driver reports them.
    #[tokio::test]
    async fn sqlite_errors_from_the_driver() {
        use sqlx::sqlite::SqliteConnectOptions;
        use sqlx::{ConnectOptions, Connection, Executor};
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("t.db");
        let options = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::ZERO);
        let mut a = options.connect().await.unwrap();
        a.execute(
            "CREATE TABLE t (x TEXT NOT NULL CHECK (x <> 'bad') UNIQUE); \
             CREATE TRIGGER refuse BEFORE INSERT ON t WHEN NEW.x = 'trigger' \
             BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END; \
             INSERT INTO t VALUES ('taken');",
        )
        .await
        .unwrap();
        let class_of = |e: sqlx::Error| (StoreErrorClass::of(&e), e.to_string());
        for x in [Some("bad"), None, Some("taken"), Some("trigger")] {
            let e = sqlx::query("INSERT INTO t VALUES ($1)")
                .bind(x)
                .execute(&mut a)
                .await
                .unwrap_err();
            let (class, msg) = class_of(e);
            assert_eq!(class, ResultRefused, "{x:?}: {msg}");
        }
        let e = a
            .execute("INSERT INTO missing VALUES (1)")
            .await
            .unwrap_err();
        assert_eq!(class_of(e).0, DatabaseUnavailable);

        // Another connection holds the write lock: SQLITE_BUSY.
        let mut b = options.connect().await.unwrap();
        b.execute("BEGIN IMMEDIATE").await.unwrap();
        let e = a.execute("INSERT INTO t VALUES ('new')").await.unwrap_err();
        let (class, msg) = class_of(e);
        assert_eq!(class, DatabaseUnavailable, "{msg}");
        assert!(msg.contains("locked") || msg.contains("busy"), "{msg}");
        b.execute("ROLLBACK").await.unwrap();
        b.close().await.unwrap();

        // A read-only database: SQLITE_READONLY.
        let mut ro = options.clone().read_only(true).connect().await.unwrap();
        let e = ro
            .execute("INSERT INTO t VALUES ('new')")
            .await
            .unwrap_err();
        let (class, msg) = class_of(e);
        assert_eq!(class, DatabaseUnavailable, "{msg}");
        assert!(msg.contains("readonly"), "{msg}");
        ro.close().await.unwrap();
        a.close().await.unwrap();
    }

    #[test]
    fn redacts_userinfo_passwords() {
        assert_eq!(
            redact_url("postgres://alice:s3cret@db:5432/pf"),
            "postgres://alice:***@db:5432/pf"
        );
        assert_eq!(
            redact_url("postgres://alice@db/pf"),
            "postgres://alice@db/pf"
        );
        assert_eq!(redact_url("postgres://db/pf"), "postgres://db/pf");
        assert_eq!(
            redact_url("sqlite://data/results.db"),
            "sqlite://data/results.db"
        );
        // Unencoded '/' and '@' inside the password.
        assert_eq!(
            redact_url("postgresql://u:p/a@ss@h/d"),
            "postgresql://u:***@h/d"
        );
    }

    #[test]
    fn redacts_password_parameters() {
        assert_eq!(
            redact_url("postgres://db/pf?user=a&password=hunter22&sslmode=require"),
            "postgres://db/pf?user=a&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/pf?PassWord=x#frag"),
            "postgres://db/pf?PassWord=***#frag"
        );
        assert!(!redact_url("postgres://u:pw1234@db/pf?password=pw1234").contains("pw1234"));
    }

    #[test]
    fn sanitize_removes_passwords_from_causes() {
        let url = "postgres://alice:s3cret@db/pf";
        let cause = format!("failed for {url}: bad password s3cret");
        let clean = sanitize(&cause, url);
        assert!(!clean.contains("s3cret"), "{clean}");
        assert!(clean.contains("alice:***@db"), "{clean}");
    }
}
