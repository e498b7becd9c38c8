//! Why a backend request failed: [`BackendError`], classified where the failure is born, and
//! the helpers that classify and word failures for every client of this crate (`client`,
//! `hosted`); and why a model reference does not parse: [`ReferenceError`].

/// Why a request failed. Errors are classified where they are born, so a caller never guesses
/// from a message:
///
/// | variant | what it says | what the caller does |
/// |---|---|---|
/// | `Unavailable` | the server is down or overloaded; nothing about the request | wait, however long it takes (up to the operator's patience) |
/// | `Transient` | this request failed, a retry may help | retry; the same failure on every attempt means the request is at fault |
/// | `Rejected` | the request itself is refused | fail the job with the message |
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// The server cannot serve anyone right now: connection refused or reset, a timeout, 429,
    /// 502, 503 or 504, or every server's circuit open. Says nothing about the request.
    #[error("{0}")]
    Unavailable(String),
    /// This request failed where a retry may help: a 500 (or another 5xx) answered to it, or a
    /// malformed, incomplete or unusable answer. A live server that answers the same request the
    /// same way every time is refusing it (llama-server answers `/tokenize` of text outside its
    /// vocabulary with a 500).
    #[error("{0}")]
    Transient(String),
    /// The server refused the request (a 4xx other than 408 and 429), or it cannot fit the
    /// server's limits: retrying the same request will not help.
    #[error("{0}")]
    Rejected(String),
}

impl BackendError {
    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, BackendError::Rejected(_))
    }

    /// Whether the server (rather than the request) is at fault: wait for it.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BackendError::Unavailable(_))
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            BackendError::Unavailable(m)
            | BackendError::Transient(m)
            | BackendError::Rejected(m) => m,
        }
    }
}

/// A model reference that does not parse ([`crate::parse`]). The message names the reference
/// (redacted) and says how to write it; nobody branches on its causes, so it carries only the
/// message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReferenceError(pub(crate) String);

/// How an HTTP status is classified (see [`BackendError`]).
pub fn classify_status(status: reqwest::StatusCode, message: String) -> BackendError {
    match status.as_u16() {
        408 | 429 | 502 | 503 | 504 => BackendError::Unavailable(message),
        s if s >= 500 => BackendError::Transient(message),
        _ => BackendError::Rejected(message),
    }
}

/// `e` with `context` before its message, in the same class.
pub(crate) fn in_context(e: BackendError, context: &str) -> BackendError {
    match e {
        BackendError::Unavailable(m) => BackendError::Unavailable(format!("{context}: {m}")),
        BackendError::Transient(m) => BackendError::Transient(format!("{context}: {m}")),
        BackendError::Rejected(m) => BackendError::Rejected(format!("{context}: {m}")),
    }
}

/// An error with its causes: reqwest's own message omits why a request failed (a refused
/// certificate, a reset connection).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
