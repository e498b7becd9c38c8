//! Inference servers over https: the client verifies the server's certificate (against
//! SSL_CERT_FILE for a private CA) and then talks to it like any other server.

use std::process::Command;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A fake llama-server behind TLS: every POST /completion gets one token (id 5) with raw top-2
/// log-probabilities; /tokenize and /detokenize answer too.
async fn tls_fake(dir: &std::path::Path) -> u16 {
    powerfleet_backends::install_tls_provider();
    let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                loop {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (head_end, length) = loop {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    l.strip_prefix("content-length:")
                                        .map(|v| v.trim().parse::<usize>().unwrap())
                                })
                                .unwrap_or(0);
                            break (i + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let Ok(n) = tls.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let body = if head.starts_with("POST /tokenize") {
                        r#"{"tokens":[1,5]}"#.to_string()
                    } else if head.starts_with("POST /detokenize") {
                        r#"{"content":"ok"}"#.to_string()
                    } else {
                        r#"{"content":"a","tokens":[5],"stop_type":"limit","completion_probabilities":[{"id":5,"token":"a","logprob":-0.2,"top_logprobs":[{"id":5,"token":"a","logprob":-0.2},{"id":6,"token":"b","logprob":-1.7}]}]}"#.to_string()
                    };
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_servers_over_https_are_verified_and_used() {
    let dir = tempfile::tempdir().unwrap();
    powerfleet_queue::local::make_certificates(dir.path())
        .expect("openssl makes test certificates (scripts/test.sh installs it)");
    let port = tls_fake(dir.path()).await;
    let model = format!("llamacpp+https://127.0.0.1:{port}?k=2");
    let sample = move |ca: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_powerfleet"));
        cmd.args([
            "sample",
            "--model",
            &model,
            "--prompt",
            "hi",
            "--method",
            "standard",
            "--max-new-tokens",
            "1",
            "--block-size",
            "1",
            "--format",
            "jsonl",
        ]);
        match ca {
            Some(ca) => cmd.env("SSL_CERT_FILE", ca),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
        cmd.output().unwrap()
    };
    let ok = tokio::task::spawn_blocking({
        let (ca, sample) = (dir.path().join("ca.crt"), sample.clone());
        move || sample(Some(&ca))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let record: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(record["tokens"], serde_json::json!([5]));
    assert_eq!(record["text"], "ok");
    let refused = tokio::task::spawn_blocking(move || sample(None))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    eprintln!("refused: {stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}
