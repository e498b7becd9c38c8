//! [`Serve`]: a `powerfleet serve` process on a [`Fleet`]'s Redis and database.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Fleet, PATIENCE};

/// A `powerfleet serve` process, logging to a file of the fleet's directory; killed on drop.
pub struct Serve {
    /// The process.
    pub child: Child,
    log: std::path::PathBuf,
}

impl Serve {
    /// Starts `serve` on `fleet` with `extra` flags and `tokens` (None: no token variable at
    /// all), logging to `NAME.log` in the fleet's directory.
    pub fn start(fleet: &Fleet, name: &str, extra: &[&str], tokens: Option<&str>) -> Serve {
        let log = fleet.dir.path().join(format!("{name}.log"));
        let mut command = Command::new(&fleet.bin);
        command
            .args(["serve", "--redis", &fleet.redis_url()])
            .args([
                "--namespace",
                &fleet.namespace,
                "--database-url",
                &fleet.db_url,
            ])
            .args(extra)
            .env_remove("POWERFLEET_API_TOKENS")
            .env_remove("POWERFLEET_API_TOKENS_FILE")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(tokens) = tokens {
            command.env("POWERFLEET_API_TOKENS", tokens);
        }
        Serve {
            child: command.spawn().unwrap(),
            log,
        }
    }

    /// The exit status if the process ends within `timeout`.
    pub fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the API accepts connections on `base` (`http://HOST:PORT`); panics with the
    /// log if the process exits first, or if it hangs ([`PATIENCE`]).
    pub async fn wait_until_up(&mut self, base: &str) {
        let addr = base.trim_start_matches("http://").trim_end_matches('/');
        let deadline = Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the API did not start in {PATIENCE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
