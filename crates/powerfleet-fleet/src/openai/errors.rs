//! Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: the endpoints'
//! own, the job API's as OpenAI clients expect them, and the shared layers' answers reshaped.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use powerfleet_jobs::ErrorCode;
use serde_json::{Value, json};

use crate::request::RequestError;

/// What a completion refused for want of a slot is told to wait before it tries again, in
/// seconds.
const BUSY_RETRY_AFTER_S: u64 = 2;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenAiError {
    /// The status code.
    pub status: StatusCode,
    /// What went wrong and what to do.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// OpenAI's error type: `invalid_request_error`, `server_error`, ...
    pub kind: &'static str,
    /// OpenAI's machine-readable `code` where one names the cause
    /// (`context_length_exceeded`, `model_not_found`, ...).
    pub code: Option<&'static str>,
}

impl OpenAiError {
    /// 400 naming `param`.
    pub fn invalid(param: &str, message: String) -> OpenAiError {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message,
            param: Some(param.to_string()),
            kind: "invalid_request_error",
            code: None,
        }
    }

    /// The same error, naming `param` as the field at fault.
    pub(super) fn at(self, param: &str) -> OpenAiError {
        OpenAiError {
            param: Some(param.to_string()),
            ..self
        }
    }

    pub(super) fn server(status: StatusCode, message: String) -> OpenAiError {
        OpenAiError {
            status,
            message,
            param: None,
            kind: "server_error",
            code: None,
        }
    }
}

/// The status the job API gives it (400 or 422), as an `invalid_request_error`.
impl From<RequestError> for OpenAiError {
    fn from(e: RequestError) -> Self {
        crate::api::ApiError::from(e).into()
    }
}

impl From<crate::api::ApiError> for OpenAiError {
    fn from(e: crate::api::ApiError) -> Self {
        let status = e.status();
        let mut message = e.to_string();
        if status.is_client_error() {
            message = crate::api::shorten_inputs(&message);
        }
        OpenAiError {
            status,
            message,
            param: None,
            kind: if status.is_client_error() {
                "invalid_request_error"
            } else {
                "server_error"
            },
            code: None,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let busy = self.status == StatusCode::SERVICE_UNAVAILABLE && self.param.is_none();
        if self.status.is_server_error() && !busy {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "openai request failed");
        }
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if busy {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_S));
        }
        response
    }
}

/// 400 `context_length_exceeded`: the prompt plus `max_tokens` does not fit the model's
/// context. The request's own fault, so not 5xx, which OpenAI's clients would retry.
pub(super) fn context_length_exceeded(prompt_field: &str, message: String) -> OpenAiError {
    OpenAiError {
        code: Some(ErrorCode::ContextLengthExceeded.as_str()),
        ..OpenAiError::invalid(prompt_field, message)
    }
}

/// 503 with `Retry-After`: every completion slot is taken. Not 429: the limit is this server's,
/// shared by every caller, not a rate the caller exceeded; OpenAI's clients retry both after
/// the time given, and a load balancer may send the retry to another replica.
pub(super) fn busy(capacity: usize) -> OpenAiError {
    OpenAiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        message: format!(
            "this server is answering its most completions at once ({capacity}, serve --openai-max-waiting); retry in {BUSY_RETRY_AFTER_S} s"
        ),
        param: None,
        kind: "server_error",
        code: None,
    }
}

/// An error answer of the shared layers (authentication, rate limit, body limit, content type),
/// `{"error": "message"}`, in OpenAI's shape for the OpenAI-compatible routes; other answers
/// pass unchanged. Headers (`WWW-Authenticate`, `Retry-After`) stay.
pub async fn reshape_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 16).await else {
        return (status, "").into_response();
    };
    let message = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => match o.get("error") {
            Some(Value::String(m)) => m.clone(),
            _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
        },
        _ => return Response::from_parts(parts, axum::body::Body::from(bytes)),
    };
    let kind = match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_client_error() => "invalid_request_error",
        _ => "server_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "param": Value::Null, "code": Value::Null}});
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_error_has_the_job_apis_status_as_an_invalid_request_error() {
        let errors: [(fn() -> RequestError, StatusCode); 2] = [
            (
                || RequestError::BadRequest("bad".into()),
                StatusCode::BAD_REQUEST,
            ),
            (
                || RequestError::Invalid("invalid".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
        ];
        for (e, status) in errors {
            let message = e().to_string();
            let api = crate::api::ApiError::from(e()).status();
            let openai = OpenAiError::from(e());
            assert_eq!((openai.status, api), (status, status));
            assert_eq!(openai.message, message);
            assert_eq!(openai.kind, "invalid_request_error");
            assert_eq!((openai.param, openai.code), (None, None));
        }
    }

    #[test]
    fn a_submission_that_fails_validation_is_answered_422() {
        let invalid = crate::producer::InvalidSubmission("submission key must be ...".into());
        let submit = crate::producer::SubmitError::from(invalid.clone());
        assert_eq!(submit.to_string(), invalid.to_string());
        let api = crate::api::ApiError::from(submit);
        assert_eq!(api.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(api.to_string(), invalid.to_string());
    }
}
