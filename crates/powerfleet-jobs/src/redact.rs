//! Passwords out of URLs: a URL that a result, a message or a log line shows goes through
//! [`redact_url`] (Redis, Postgres) or [`redact_http_url`] (inference servers) first.

/// `url` with any password replaced by `***`: the `user:password@` part becomes `user:***@`, and a
/// `password=` query parameter gets the value `***`. Errs on the side of hiding too much. A lone
/// user name (`redis://alice@h/`) is kept: for Redis and Postgres it is no secret.
pub fn redact_url(url: &str) -> String {
    redact(url, false)
}

/// [`redact_url`] for HTTP URLs, where a lone user-info (`http://TOKEN@host`) is sent as basic-auth
/// credentials and so becomes `http://***@host` too.
pub fn redact_http_url(url: &str) -> String {
    redact(url, true)
}

fn redact(url: &str, hide_lone_user: bool) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..after_scheme]);
    let rest = &url[after_scheme..];
    // The last `@` ends the user-info: a password may hold `@`, `/` or `?` unencoded.
    match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None if hide_lone_user => out.push_str("***"),
                None => out.push_str(userinfo),
            }
            out.push_str(&rest[at..]);
        }
        None => out.push_str(rest),
    }
    redact_password_params(&out)
}

/// Replaces the value of every `password=` / `sslpassword=` parameter (any case) by `***`.
fn redact_password_params(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let mut out = String::with_capacity(url.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find("password=") {
        let value_start = pos + found + "password=".len();
        let value_end = url[value_start..]
            .find(['&', '#'])
            .map_or(url.len(), |i| value_start + i);
        out.push_str(&url[pos..value_start]);
        out.push_str("***");
        pos = value_end;
    }
    out.push_str(&url[pos..]);
    out
}
