//! A real llama-server (built by scripts/ensure-llama-server.sh) with the tiny random-weight
//! model (scripts/make-tiny-gguf.py) on a free port, for the tests that need an inference server.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use powerfleet_backends::{HttpModel, ModelRef, parse};

/// Vocabulary size of the tiny model (scripts/make-tiny-gguf.py): <unk>, <s>, </s>, printable ASCII.
pub const VOCAB: u32 = 98;
/// The tiny model's EOS token.
pub const EOS: u32 = 2;

/// A real llama-server with the tiny test model on a free port; killed on drop.
pub struct LlamaServer {
    child: Child,
    /// Its base URL.
    pub url: String,
    log: std::path::PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    slots: u32,
    extra: Vec<String>,
}

impl LlamaServer {
    /// Starts llama-server on a free port, with flash attention off and an f32 KV cache. Several
    /// `slots` batch concurrent requests together, which perturbs log-probabilities by up to
    /// ~1e-4 between runs. One slot runs with one-token micro-batches (`-ub 1`), which makes every
    /// answer bit for bit reproducible whatever the prompt cache holds (docs/llama-server.md,
    /// "Determinism"); `extra` may override either.
    pub fn start(slots: u32) -> LlamaServer {
        LlamaServer::start_with(slots, &[])
    }

    /// [`LlamaServer::start`] with extra command-line arguments.
    pub fn start_with(slots: u32, extra: &[&str]) -> LlamaServer {
        let port = powerfleet_queue::local::free_port().unwrap();
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        LlamaServer::start_on(port, slots, extra)
    }

    /// Stops the server (as an outage or a restart would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port, with the same arguments.
    pub fn restart(&mut self) {
        self.stop();
        let again = LlamaServer::start_on(self.port, self.slots, self.extra.clone());
        let old = std::mem::replace(self, again);
        // The old process is gone; its Drop would delete the log the new one writes.
        std::mem::forget(old);
    }

    fn start_on(port: u16, slots: u32, extra: Vec<String>) -> LlamaServer {
        let need = |var: &str| {
            std::env::var(var).unwrap_or_else(|_| {
                panic!("{var} is not set: run scripts/test.sh, which builds llama-server (scripts/ensure-llama-server.sh) and makes the tiny test model (scripts/make-tiny-gguf.py)")
            })
        };
        let (bin, model) = (
            need("POWERFLEET_LLAMA_SERVER"),
            need("POWERFLEET_TINY_GGUF"),
        );
        let log = std::env::temp_dir().join(format!("llama-server-{port}.log"));
        let child = Command::new(&bin)
            .args([
                "-m",
                &model,
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args([
                "-np",
                &slots.to_string(),
                "-c",
                &(256 * slots).to_string(),
                "-t",
                "1",
            ])
            .args(["-fa", "off", "-ctk", "f32", "-ctv", "f32"])
            .args(if slots == 1 { &["-ub", "1"][..] } else { &[] })
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin}: {e}; run scripts/ensure-llama-server.sh")
            });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + crate::PATIENCE;
        loop {
            let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /health HTTP/1.0\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                buf.contains("\"ok\"")
            });
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "llama-server did not become healthy; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        LlamaServer {
            child,
            url,
            log,
            port,
            slots,
            extra,
        }
    }

    /// The model reference of the server for `--model NAME=REFERENCE`, with the tiny model's
    /// vocabulary size.
    pub fn reference(&self) -> String {
        format!("llamacpp+{}?k={VOCAB}", self.url)
    }

    /// A client of the server, with reference `options` (such as `?k=98`).
    pub fn model(&self, options: &str) -> HttpModel {
        match parse(&format!("llamacpp+{}{options}", self.url)).unwrap() {
            ModelRef::Http(h) => HttpModel::new(h),
            other => panic!("{other:?}"),
        }
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
