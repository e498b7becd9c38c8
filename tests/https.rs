//! Inference servers over https: the client verifies the server's certificate (against
//! SSL_CERT_FILE for a private CA) and then talks to it like any other server. The server is a
//! real llama-server behind a TLS-terminating proxy (llama-server is built without TLS here).

use std::process::Command;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// TLS in front of a real llama-server: every connection is decrypted with the test
/// certificate and relayed to the server on `upstream_port`, as a TLS-terminating proxy does.
async fn tls_proxy(dir: &std::path::Path, upstream_port: u16) -> u16 {
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
                let Ok(mut plain) =
                    tokio::net::TcpStream::connect(("127.0.0.1", upstream_port)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
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
    let server = powerfleet_testkit::llama::LlamaServer::start(1);
    let port = tls_proxy(dir.path(), server.port).await;
    let model = format!("llamacpp+https://127.0.0.1:{port}");
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
    let tokens = record["tokens"].as_array().expect("a completion");
    assert_eq!(tokens.len(), 1, "{record}");
    assert!(
        record["exactness"]
            .as_str()
            .unwrap_or_default()
            .contains("llama.cpp"),
        "{record}"
    );
    assert_eq!(
        record["text"].as_str().map(str::chars).map(Iterator::count),
        Some(1),
        "{record}"
    );
    let refused = tokio::task::spawn_blocking(move || sample(None))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    eprintln!("refused: {stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}
