//! Errors of the results store, and the URL redaction that keeps passwords out of them.

pub use powerfleet_jobs::redact_url;

/// What went wrong with the results database. Every message names the database by its redacted URL
/// (never with a password) and says what to do next.
#[derive(Debug, thiserror::Error)]
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
    #[error(
        "results database at {url} failed to {action}: {cause}; check that the database server is \
         running and reachable, then retry"
    )]
    Query {
        /// The database, redacted.
        url: String,
        /// What the store was doing, e.g. "record job 0193...".
        action: String,
        /// Why, with any password removed.
        cause: String,
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
