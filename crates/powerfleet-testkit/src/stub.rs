//! A stub HTTP server: records every request it gets and answers each with a closure.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};

/// A request the stub got.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Its method.
    pub method: Method,
    /// Its URI (path and query).
    pub uri: Uri,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The path of the URI.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The value of header `name`, if it is present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// An HTTP server on a free port of 127.0.0.1 that records every request and answers it with
/// a closure; it serves until the test's runtime ends.
pub struct StubServer {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl StubServer {
    /// Starts a server answering every request (any method, any path) with `answer`; each
    /// request is recorded before its answer is sent.
    pub async fn start<F, R>(answer: F) -> StubServer
    where
        F: Fn(&Recorded) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let sink = requests.clone();
        let answer = Arc::new(answer);
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (sink, answer) = (sink.clone(), answer.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                let recorded = Recorded {
                    method: parts.method,
                    uri: parts.uri,
                    headers: parts.headers,
                    body,
                };
                let response: Response = answer(&recorded).into_response();
                sink.lock().unwrap().push(recorded);
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        StubServer {
            url: format!("http://{addr}"),
            addr,
            requests,
        }
    }

    /// Every request recorded so far, in the order they came.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}
