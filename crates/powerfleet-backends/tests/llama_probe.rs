//! The start-up probe and the pinned `/completion` body against a real `llama-server` running the
//! tiny random-weight model (`POWERFLEET_LLAMA_SERVER` and `POWERFLEET_TINY_GGUF`, which
//! scripts/test.sh sets after building both). Without them the tests say so and pass: plain
//! `cargo test -p powerfleet-backends` needs no llama.cpp build.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use powerfleet_backends::{BackendError, HttpModel, ModelRef, parse};
use powerfleet_sampler::OwnedRequest;

const EOS: u32 = 2;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary and model; a test without them fails and says how to get them.
fn setup() -> (String, String) {
    match (
        std::env::var("POWERFLEET_LLAMA_SERVER"),
        std::env::var("POWERFLEET_TINY_GGUF"),
    ) {
        (Ok(bin), Ok(model)) => (bin, model),
        _ => panic!(
            "POWERFLEET_LLAMA_SERVER and POWERFLEET_TINY_GGUF are not set: run scripts/test.sh, which builds llama-server (scripts/ensure-llama-server.sh) and the tiny model (scripts/make-tiny-gguf.py) and sets them"
        ),
    }
}

/// llama-server on a free port with one slot of 256 tokens (the tiny model's training context,
/// which is also the smallest slot llama.cpp makes), serving the model as `alias`, with `extra`
/// arguments; healthy.
async fn start(bin: &str, model: &str, alias: &str, extra: &[&str]) -> Server {
    powerfleet_backends::install_tls_provider();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .args([
            "-m",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(["-np", "1", "-c", "256", "-t", "1", "--alias", alias])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    // Far off: a loaded machine starts the server late, and only a hang should fail here.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/health", server.url)).await
            && r.status().is_success()
        {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "llama-server did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn model(urls: &[&str], options: &str) -> HttpModel {
    match parse(&format!("llamacpp+{}{options}", urls.join(","))).unwrap() {
        ModelRef::Http(h) => HttpModel::new(h),
        other => panic!("{other:?}"),
    }
}

fn request(prefix: &[u32], seed: u64) -> OwnedRequest {
    OwnedRequest {
        prefix: prefix.to_vec(),
        prompt_len: prefix.len(),
        max_tokens: 64,
        temperature: 1.0,
        top_k: Some(98),
        seed,
        candidates: 0,
    }
}

#[tokio::test]
async fn the_probe_passes_on_a_real_server_and_every_answer_is_checked() {
    let (bin, gguf) = setup();
    let server = start(&bin, &gguf, "tiny", &[]).await;
    let m = model(&[&server.url], "");
    let info = m.probe().await.expect("a llama-server passes the probe");
    assert_eq!(info.served_model, "tiny");
    assert_eq!(info.context_len, Some(256));
    assert_eq!(
        info.terminal_tokens,
        vec![EOS],
        "EOS is the tiny model's only EOG token"
    );
    // The slot holds prompt + generated tokens below n_ctx.
    m.check_fits(&info, 6, 249).unwrap();
    assert!(m.check_fits(&info, 6, 250).is_err());

    // Every generation's echoed sampler settings match the pinned body (checked inside
    // generate); with 64 tokens at temperature 1 some chains stop at EOS.
    let prefix = m.tokenize("hello").await.unwrap();
    let mut stops = 0;
    for seed in 0..12 {
        let g = m.generate(&request(&prefix, seed), 0).await.unwrap();
        assert_eq!(g.tokens.len(), g.log_q.len());
        if g.eos {
            stops += 1;
            assert_eq!(*g.tokens.last().unwrap(), EOS);
        } else {
            assert_eq!(g.tokens.len(), 64);
        }
    }
    assert!(stops > 0, "no chain stopped at EOS in 12 tries");
    // The seed mapping replays: the same request gives the same tokens.
    let a = m.generate(&request(&prefix, u64::MAX), 0).await.unwrap();
    let b = m.generate(&request(&prefix, u64::MAX), 0).await.unwrap();
    assert_eq!(a.tokens, b.tokens);
}

#[tokio::test]
async fn server_settings_a_request_cannot_clear_are_refused_at_the_probe() {
    let (bin, gguf) = setup();
    for (extra, needle) in [
        (&["-r", "User:"][..], "--reverse-prompt"),
        (&["--grammar", "root ::= [a-z]+"][..], "--grammar"),
    ] {
        let server = start(&bin, &gguf, "tiny", extra).await;
        let err = model(&[&server.url], "").probe().await.unwrap_err();
        assert!(matches!(err, BackendError::Rejected(_)), "{extra:?}: {err}");
        assert!(err.to_string().contains(needle), "{extra:?}: {err}");
    }
}

#[tokio::test]
async fn servers_of_one_reference_must_agree_and_the_context_must_fit() {
    let (bin, gguf) = setup();
    let tiny = start(&bin, &gguf, "tiny", &[]).await;
    let other = start(&bin, &gguf, "tiny-copy", &[]).await;
    let err = model(&[&tiny.url, &other.url], "")
        .probe()
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("served model"), "{err}");
    // A generation that fills the slot is refused, never returned short.
    let m = model(&[&tiny.url], "");
    let mut r = request(&[1, 75, 72, 79, 79, 82], 3);
    r.max_tokens = 250;
    let mut refused = false;
    for seed in 0..20 {
        r.seed = seed;
        match m.generate(&r, 0).await {
            Ok(g) => assert!(g.eos, "a generation shorter than asked must end at EOS"),
            Err(e) => {
                assert!(e.to_string().contains("truncated"), "{e}");
                assert!(!e.is_transient(), "{e}");
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "20 tries without filling the 256-token slot");
}
