//! How this crate shows server URLs and model references in messages, logs and metric labels:
//! credentials hidden.

/// `url` as messages, logs and metric labels may show it: credentials in its user-info part are
/// hidden (`http://user:***@host:8080`; a lone `http://TOKEN@host` becomes `http://***@host`,
/// since HTTP sends it as basic-auth credentials), and so is the value of every `password=`
/// parameter. Errs on the side of hiding too much. Every URL this crate shows goes through it;
/// requests use the URL as given (reqwest sends its user-info as basic auth, and its own errors
/// quote the URL without it).
pub fn redact_url(url: &str) -> String {
    powerfleet_jobs::redact_http_url(url)
}

/// A model reference as messages may show it: each of its comma-separated URLs redacted as by
/// [`redact_url`].
pub fn redact_reference(reference: &str) -> String {
    reference
        .split(',')
        .map(redact_url)
        .collect::<Vec<_>>()
        .join(",")
}
