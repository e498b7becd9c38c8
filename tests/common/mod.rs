//! What the end-to-end tests share that must be compiled into the integration-test binary: the
//! path of the `powerfleet` binary, which only an integration test of this package can name.
//! Everything else comes from `powerfleet-testkit`.

pub use powerfleet_testkit::*;

/// The `powerfleet` binary under test, for [`Fleet::new`] and direct runs.
pub const BIN: &str = env!("CARGO_BIN_EXE_powerfleet");

/// `GET url` (with `token` as its bearer token, if any), the answer's body as JSON.
pub async fn get_json(url: &str, token: Option<&str>) -> serde_json::Value {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// `POST url` with the JSON `body` (and `token` as its bearer token, if any), the answer's body
/// as JSON.
pub async fn post_json(
    url: &str,
    token: Option<&str>,
    body: &serde_json::Value,
) -> serde_json::Value {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}
