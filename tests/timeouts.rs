//! Slow and silent peers are cut off: HTTP clients of `serve` and of the metrics listener that
//! send their headers or body too slowly (or nothing), and a "PostgreSQL server" that accepts the
//! connection and never answers.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Fleet, PATIENCE};

/// serve with a 1 s header-read timeout and a 2 s request timeout.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

struct Serve {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Reads until the server closes the connection (or `limit` passes): what it sent, and how long
/// after `since` the connection was closed (None if it stayed open).
fn read_until_closed(
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> (String, Option<Duration>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(since.elapsed());
        if left.is_zero() {
            return (String::from_utf8_lossy(&received).into_owned(), None);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (String::from_utf8_lossy(&received).into_owned(), None);
            }
            // A reset closes the connection as well.
            Err(_) => break,
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        Some(since.elapsed()),
    )
}

/// Asserts the server closed the connection, and not before `timeout` (a lower bound only: a
/// loaded machine may close it late, and a server without the timeout never closes it at all).
fn assert_closed_after(what: &str, closed: Option<Duration>, timeout: Duration) {
    let closed =
        closed.unwrap_or_else(|| panic!("{what}: the connection stayed open for {PATIENCE:?}"));
    assert!(
        closed >= timeout.mul_f64(0.8),
        "{what}: closed after {closed:?}, before the timeout of {timeout:?}"
    );
}

/// Sends `head`, then one more header byte every 100 ms, never ending the headers, until the
/// server closes the connection (or [`PATIENCE`] passes): how long after `since` it was closed
/// (None if it stayed open).
fn trickle_until_closed(stream: &mut TcpStream, head: &[u8], since: Instant) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut next: &[u8] = head;
    while since.elapsed() < PATIENCE {
        if stream.write_all(next).is_err() {
            return Some(since.elapsed());
        }
        next = b"a";
        // Waits 100 ms for the server to answer or close, and reads what it says.
        match stream.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // A reset closes the connection as well.
            Err(_) => return Some(since.elapsed()),
        }
    }
    None
}

fn http_get(addr: &str, path: &str, extra: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    read_until_closed(&mut stream, Instant::now(), PATIENCE).0
}

fn wait_listening(addr: &str, serve: &mut Serve) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = serve.child.try_wait().unwrap() {
            panic!("serve exited ({status}): {}", serve.log());
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never listened: {}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_serve(fleet: &Fleet, api: &str, metrics: &str) -> Serve {
    let log = fleet.dir.path().join("serve.log");
    let child = Command::new(BIN)
        .args(["serve", "--redis", &fleet.redis.url()])
        .args(["--namespace", &fleet.namespace])
        .args(["--database-url", &fleet.db_url])
        .args(["--listen", api, "--metrics-listen", metrics])
        .args([
            "--http-header-timeout",
            "1s",
            "--http-request-timeout",
            "2s",
        ])
        .env("POWERFLEET_API_TOKENS", "t")
        .env_remove("POWERFLEET_API_TOKENS_FILE")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut serve = Serve { child, log };
    wait_listening(api, &mut serve);
    wait_listening(metrics, &mut serve);
    serve
}

#[test]
fn serve_and_metrics_listener_cut_off_slow_and_silent_clients() {
    let fleet = Fleet::new(BIN, false);
    let api = common::free_addr();
    let metrics = common::free_addr();
    let serve = start_serve(&fleet, &api, &metrics);

    // Ordinary requests are answered.
    let job = http_get(
        &api,
        "/v1/jobs/0190b9c6-0000-7000-8000-000000000000",
        "Authorization: Bearer t\r\n",
    );
    assert!(job.starts_with("HTTP/1.1 404"), "{job}\n{}", serve.log());
    let health = http_get(&metrics, "/healthz", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    for addr in [&api, &metrics] {
        // Headers that never end.
        let mut stream = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        write!(stream, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").unwrap();
        let (_, closed) = read_until_closed(&mut stream, started, PATIENCE);
        assert_closed_after(&format!("{addr}: partial headers"), closed, HEADER_TIMEOUT);

        // Headers that never end, sent a byte every 100 ms: the timeout bounds the headers as a
        // whole, so the server cuts the client off while it is still sending (a timeout of
        // silence alone never would).
        let mut stream = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let closed = trickle_until_closed(
            &mut stream,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
            started,
        );
        assert_closed_after(&format!("{addr}: trickled headers"), closed, HEADER_TIMEOUT);

        // A connection that never sends anything.
        let mut stream = TcpStream::connect(addr).unwrap();
        let (sent, closed) = read_until_closed(&mut stream, Instant::now(), PATIENCE);
        assert_closed_after(
            &format!("{addr}: silent connection {sent:?}"),
            closed,
            HEADER_TIMEOUT,
        );

        // An idle keep-alive connection after an answered request.
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer t\r\n\r\n"
        )
        .unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).unwrap();
        assert!(first.starts_with(b"HTTP/1.1 "), "{first:?}");
        let answered = Instant::now();
        let (_, closed) = read_until_closed(&mut stream, answered, PATIENCE);
        assert_closed_after(&format!("{addr}: idle keep-alive"), closed, HEADER_TIMEOUT);
    }

    // A request body that trickles gets 408 and the connection closed.
    let mut stream = TcpStream::connect(&api).unwrap();
    let started = Instant::now();
    write!(
        stream,
        "POST /v1/jobs HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer t\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"jobs\": ["
    )
    .unwrap();
    let (answer, closed) = read_until_closed(&mut stream, started, PATIENCE);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request timeout"), "{answer}");
    assert_closed_after("trickled body", closed, REQUEST_TIMEOUT);

    // Still serving afterwards.
    let health = http_get(&metrics, "/healthz", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        serve.log().contains("http request timed out"),
        "{}",
        serve.log()
    );
}

#[test]
fn a_postgres_peer_that_never_answers_fails_within_the_connect_timeout() {
    let fleet = Fleet::new(BIN, false);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    // Accepts every connection and holds it open without a word, until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let url = format!("postgres://powerfleet:secret-pw@127.0.0.1:{port}/x");
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["status", "0190b9c6-0000-7000-8000-000000000000"])
        .args(["--redis", &fleet.redis.url(), "--database-url", &url])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // Not before the 10 s connect timeout (the upper bound only catches a hang).
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < PATIENCE,
        "failed after {elapsed:?}: {stderr}"
    );
    assert!(
        stderr.contains("results database")
            && stderr.contains(&format!("127.0.0.1:{port}"))
            && stderr.contains("within 10 s")
            && stderr.contains("check"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-pw"), "{stderr}");
}
