//! A private `redis-server` on a free loopback port, in a directory of its own: what the tests and
//! `powerfleet demo` run against. It can be killed and restarted on the same port and data.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a private redis-server may take to answer its first PING: generous, because a loaded
/// machine (a build beside the tests) can hold a process's start back for many seconds.
pub(crate) const START_PATIENCE_S: u64 = 120;

/// How to start the server.
#[derive(Clone, Debug, Default)]
pub struct LocalRedisOptions {
    /// Append-only file on, fsync on every write: a restart loses nothing acknowledged.
    pub aof: bool,
    /// Require this password (AUTH); the URL carries it.
    pub password: Option<String>,
    /// Serve TLS only (`rediss://`), with a certificate for 127.0.0.1 signed by a CA made for
    /// this server (see [`LocalRedis::ca_file`]); needs `openssl` on PATH.
    pub tls: bool,
}

/// A running private `redis-server`; killed when dropped.
#[derive(Debug)]
pub struct LocalRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    options: LocalRedisOptions,
}

/// Why a local server could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalRedisError {
    /// No `redis-server` binary.
    #[error(
        "redis-server was not found on PATH; install it (Debian/Ubuntu: apt-get install redis-server, macOS: brew install redis) or point --redis at a running server"
    )]
    NotInstalled,
    /// It started but did not answer.
    #[error("redis-server on port {port} did not answer PING within {seconds} s; its log is {log}")]
    NoAnswer {
        /// The port.
        port: u16,
        /// How long we waited.
        seconds: u64,
        /// Its log file.
        log: String,
    },
    /// An IO error.
    #[error("cannot start redis-server: {0}")]
    Io(#[from] std::io::Error),
}

impl LocalRedis {
    /// Starts a server on a free port in a new temporary directory.
    pub fn start(options: LocalRedisOptions) -> Result<LocalRedis, LocalRedisError> {
        let tempdir = tempfile::Builder::new()
            .prefix("powerfleet-redis-")
            .tempdir()?;
        let dir = tempdir.path().to_path_buf();
        let mut server = LocalRedis {
            child: None,
            port: free_port()?,
            dir,
            _tempdir: Some(tempdir),
            options,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), LocalRedisError> {
        let log = self.dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        if self.options.tls {
            self.make_certificates()?;
            let file = |name: &str| self.dir.join(name);
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(file("server.crt"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        cmd.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--protected-mode",
            "yes",
        ])
        .arg("--dir")
        .arg(&self.dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if let Some(password) = &self.options.password {
            cmd.arg("--requirepass").arg(password);
        }
        if self.options.aof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LocalRedisError::NotInstalled,
            _ => LocalRedisError::Io(e),
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(START_PATIENCE_S);
        while Instant::now() < deadline {
            let up = if self.options.tls {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                ping(self.port)
            };
            if up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LocalRedisError::NoAnswer {
            port: self.port,
            seconds: START_PATIENCE_S,
            log: log.display().to_string(),
        })
    }

    /// `redis://127.0.0.1:PORT/` (`rediss://` with TLS), with `:PASSWORD@` when the server
    /// requires one.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        match &self.options.password {
            Some(p) => format!("{scheme}://:{p}@127.0.0.1:{}/", self.port),
            None => format!("{scheme}://127.0.0.1:{}/", self.port),
        }
    }

    /// The CA certificate that signed the server's certificate (TLS only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn make_certificates(&self) -> Result<(), LocalRedisError> {
        if self.dir.join("server.crt").exists() {
            return Ok(());
        }
        make_certificates(&self.dir)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills it with SIGKILL (no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it and starts it again on the same port with the same data directory.
    pub fn restart(&mut self) -> Result<(), LocalRedisError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a Redis server answers PING on 127.0.0.1:`port`.
pub fn ping(port: u16) -> bool {
    ping_addr(&format!("127.0.0.1:{port}"))
}

/// Whether a Redis server answers PING at `host:port` (without AUTH).
pub fn ping_addr(addr: &str) -> bool {
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(addr) else {
        return false;
    };
    for a in addrs {
        if let Ok(mut s) = TcpStream::connect_timeout(&a, Duration::from_millis(300)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            if s.write_all(b"PING\r\n").is_err() {
                continue;
            }
            let mut buf = [0u8; 64];
            if let Ok(n) = s.read(&mut buf)
                && (buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
            {
                return true;
            }
        }
    }
    false
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes a throwaway CA (`ca.crt`) and a certificate for 127.0.0.1 signed by it (`server.crt`,
/// `server.key`) into `dir`, with the `openssl` command: for servers in tests and demos.
pub fn make_certificates(dir: &Path) -> Result<(), LocalRedisError> {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=powerfleet test CA",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => LocalRedisError::Io(std::io::Error::new(
                    e.kind(),
                    "openssl was not found on PATH; install it (apt-get install openssl) to run Redis with TLS",
                )),
                _ => LocalRedisError::Io(e),
            })?;
        if !out.status.success() {
            return Err(LocalRedisError::Io(std::io::Error::other(format!(
                "openssl {} failed: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            ))));
        }
    }
    Ok(())
}
