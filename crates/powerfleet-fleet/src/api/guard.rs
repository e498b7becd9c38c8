//! What every request passes through before its handler: authentication, the rate limit, the
//! JSON content type, and one log line; and the answers for unknown routes and methods.

use super::error::ErrorBody;
use super::*;

/// Whether `given` equals one of `tokens`, comparing in time independent of where they differ.
pub fn token_matches(tokens: &[String], given: &str) -> bool {
    let mut any = false;
    for t in tokens {
        let (a, b) = (t.as_bytes(), given.as_bytes());
        let mut diff = (a.len() != b.len()) as u8;
        for i in 0..a.len().max(b.len()) {
            diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
        }
        any |= diff == 0;
    }
    any
}

/// The rate-limit key of a request: its bearer token, or one key for every request when no tokens
/// are configured (authentication runs first, so only configured tokens ever become keys).
#[derive(Clone, Debug)]
pub(super) struct BearerKey {
    tokens: std::sync::Arc<Vec<String>>,
}

impl tower_governor::key_extractor::KeyExtractor for BearerKey {
    type Key = String;

    fn extract<T>(
        &self,
        request: &axum::http::Request<T>,
    ) -> Result<Self::Key, tower_governor::GovernorError> {
        if self.tokens.is_empty() {
            return Ok(String::new());
        }
        Ok(request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .unwrap_or("")
            .to_string())
    }
}

/// A limit of `per_minute` requests per minute per token (a burst of a minute's worth, then one
/// every `60 s / per_minute`); over it, 429 with `Retry-After` and a JSON error. Off for 0.
pub(super) fn with_rate_limit(
    routes: Router<ApiState>,
    per_minute: u32,
    tokens: &std::sync::Arc<Vec<String>>,
) -> Router<ApiState> {
    if per_minute == 0 {
        return routes;
    }
    let period = std::time::Duration::from_nanos(60_000_000_000 / u64::from(per_minute));
    let config = tower_governor::governor::GovernorConfigBuilder::default()
        .period(period)
        .burst_size(per_minute)
        .key_extractor(BearerKey {
            tokens: tokens.clone(),
        })
        .finish()
        .expect("a positive period and burst");
    routes.layer(
        tower_governor::GovernorLayer::new(config).error_handler(move |e| match e {
            tower_governor::GovernorError::TooManyRequests { wait_time, .. } => {
                let wait = wait_time.max(1);
                let mut response = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(ErrorBody {
                        error: &format!(
                            "too many requests: at most {per_minute} per minute per API token (rate_limit_per_minute, serve --rate-limit-per-minute); retry after {wait} s"
                        ),
                    }),
                )
                    .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
                response
            }
            other => ApiError::Unprocessable(format!("rate limit: {other}")).into_response(),
        }),
    )
}

/// The token of an `Authorization` header value: the `Bearer` scheme, in any case, then the
/// token after one or more spaces.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_matches(' ').split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// With tokens configured, every request needs `Authorization: Bearer TOKEN`; others get 401 and
/// nothing else.
pub(super) async fn authenticate(
    State(tokens): State<std::sync::Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    if tokens.is_empty() {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .unwrap_or("");
    if token_matches(&tokens, given) {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({"error": "unauthorized: send Authorization: Bearer TOKEN with a token configured for this API"})),
        )
            .into_response()
    }
}

/// Whether the headers declare a JSON body: `Content-Type: application/json`, with or without
/// parameters such as `charset=utf-8`.
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// The `POST` routes take JSON only: a browser form (or any request a page can send cross-site
/// without asking first) cannot use them. Others get 415.
pub(super) async fn require_json(request: Request, next: Next) -> Response {
    let post_route = matches!(
        route_name(request.uri().path()),
        "jobs" | "cancel" | "openai_completions" | "openai_chat_completions"
    );
    if request.method() == axum::http::Method::POST && post_route && !is_json(request.headers()) {
        let got = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map_or("no Content-Type".to_string(), |v| {
                quote(&String::from_utf8_lossy(v.as_bytes()))
            });
        return ApiError::UnsupportedMediaType(format!(
            "POST {} needs the header Content-Type: application/json (the body, if any, is JSON), got {got}",
            quote(request.uri().path())
        ))
        .into_response();
    }
    next.run(request).await
}

/// Logs one line per request, and turns tower-http's plain-text 413 into a JSON error.
pub(super) async fn log_and_fix_up(
    State(limit): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        response = ApiError::BodyTooLarge { limit }.into_response();
    }
    if route_name(&path).starts_with("openai_") {
        response = crate::openai::reshape_error(response).await;
    }
    crate::metrics::http_request(route_name(&path), response.status().as_u16());
    tracing::info!(
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "http request"
    );
    response
}

pub(super) async fn no_route(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}; the routes are POST /v1/jobs, GET /v1/jobs/{{id}}, POST /v1/jobs/{{id}}/cancel, GET /v1/batches/{{id}}, GET /v1/batches/{{id}}/report, GET /v1/correlations/{{id}}, and the OpenAI-compatible POST /v1/completions, POST /v1/chat/completions and GET /v1/models",
        request.method(),
        quote(request.uri().path())
    ))
}

pub(super) async fn wrong_method(request: Request) -> Response {
    let path = request.uri().path();
    let allowed =
        if path.ends_with("/cancel") || path == "/v1/jobs" || path.ends_with("/completions") {
            "POST"
        } else {
            "GET"
        };
    let mut response = ApiError::MethodNotAllowed(format!(
        "method {} is not allowed on {}; use {allowed}",
        request.method(),
        quote(path)
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    response
}
