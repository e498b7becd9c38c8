//! The API's error: a status code and a message, with client errors' quoted input cut short.

use super::*;

/// A client error message with every quoted value (`"..."` or `` `...` ``) and every other run of
/// non-space characters cut to [`MAX_QUOTED_CHARS`] characters, and the whole to
/// [`MAX_MESSAGE_CHARS`]: messages from other crates (serde, ids, datasets) quote input whole.
pub fn shorten_inputs(message: &str) -> String {
    fn flush(word: &mut String, out: &mut String) {
        if word.chars().count() > MAX_QUOTED_CHARS {
            out.extend(word.chars().take(MAX_QUOTED_CHARS));
            out.push('…');
        } else {
            out.push_str(word);
        }
        word.clear();
    }
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::new();
    let mut word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if c == '"' && chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            if j < chars.len() {
                flush(&mut word, &mut out);
                let inner = &chars[i + 1..j];
                out.push(c);
                if inner.len() > MAX_QUOTED_CHARS {
                    let mut keep = MAX_QUOTED_CHARS;
                    // Never end inside an escape.
                    while keep > 0
                        && c == '"'
                        && inner[..keep]
                            .iter()
                            .rev()
                            .take_while(|&&x| x == '\\')
                            .count()
                            % 2
                            == 1
                    {
                        keep -= 1;
                    }
                    out.extend(&inner[..keep]);
                    out.push(c);
                    out.push_str(&format!("… ({} characters)", inner.len()));
                } else {
                    out.extend(inner);
                    out.push(c);
                }
                i = j + 1;
                continue;
            }
        }
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
        i += 1;
    }
    flush(&mut word, &mut out);
    let n = out.chars().count();
    if n > MAX_MESSAGE_CHARS {
        let mut cut: String = out.chars().take(MAX_MESSAGE_CHARS).collect();
        cut.push_str(&format!("… (message cut, {n} characters)"));
        cut
    } else {
        out
    }
}

/// An error of the API: a status code and a message, sent as `{"error": "<message>"}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, an unknown field, a wrong type, a bad id (400).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing is known under the id, or no such route (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request body is larger than the limit (413).
    #[error(
        "request body is larger than the limit of {limit} bytes (max_body_bytes); send fewer problems per request"
    )]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A `POST` without `Content-Type: application/json` (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well-formed but cannot be accepted (422).
    #[error("{0}")]
    Unprocessable(String),
    /// The submission key was used for a different request (409).
    #[error("{0}")]
    Conflict(String),
    /// The queue failed: 503 if Redis is unreachable, 502 if it answered nonsense.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The results database failed: 503 if it is unreachable, 500 otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The status code of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Queue(QueueError::Redis { .. } | QueueError::NotReplicated { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Queue(QueueError::Protocol { .. }) => StatusCode::BAD_GATEWAY,
            ApiError::Queue(QueueError::Invalid(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(StoreError::Connect { .. } | StoreError::Query { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StatusError> for ApiError {
    fn from(e: StatusError) -> Self {
        match e {
            StatusError::NotFound(_) => ApiError::NotFound(e.to_string()),
            StatusError::Queue(q) => ApiError::Queue(q),
            StatusError::Store(s) => ApiError::Store(s),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::BadRequest(message) => ApiError::BadRequest(message),
            RequestError::Invalid(message) => ApiError::Unprocessable(message),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(invalid) => ApiError::Unprocessable(invalid.0),
            SubmitError::Conflict(message) => ApiError::Conflict(message),
            SubmitError::Queue(q) => ApiError::Queue(q),
        }
    }
}

/// The body of every error response.
#[derive(Serialize)]
pub(super) struct ErrorBody<'a> {
    pub(super) error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut message = self.to_string();
        if status.is_client_error() {
            // A client error answers the caller: it quotes only a prefix of what was sent.
            message = shorten_inputs(&message);
        }
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %message, "http request failed");
        }
        (status, Json(ErrorBody { error: &message })).into_response()
    }
}
