//! Runs the real `shadowdiff serve` binary with a config written for the test, learns its
//! ports from the `LISTENING` line, and talks to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A running `shadowdiff serve`.
pub struct Sidecar {
    child: Option<Child>,
    /// The proxied listener.
    pub proxy: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Its config directory (kept alive with it).
    pub dir: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A whole response.
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A plain HTTP/1.1 client for tests.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends one request and reads the whole answer.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client.request(builder.body(Full::new(body.into())).expect("request")).await.expect("send");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Reply { status, headers, body }
}

impl Sidecar {
    /// Starts `shadowdiff serve` with this config text (`{legacy}`/`{shadow}` already filled).
    pub fn start(config: &str) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shadowdiff.toml");
        std::fs::write(&path, config).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_shadowdiff"));
        command.args(["serve", "--config"]).arg(&path);
        Sidecar::spawn(command, dir)
    }

    /// Like [`Sidecar::start`], with its log (warnings and above) written to a file that
    /// [`Sidecar::log`] reads.
    pub fn start_logging(config: &str) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shadowdiff.toml");
        std::fs::write(&path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_shadowdiff"));
        command.args(["serve", "--config"]).arg(&path).stderr(log);
        Sidecar::spawn(command, dir)
    }

    /// What [`Sidecar::start_logging`] logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Like [`Sidecar::start`], under `ulimit -n open_files` (soft and hard: the sidecar
    /// cannot raise it).
    pub fn start_with_open_files(config: &str, open_files: u64) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shadowdiff.toml");
        std::fs::write(&path, config).expect("write config");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {open_files} && exec \"$0\" serve --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_shadowdiff"))
            .arg(&path);
        Sidecar::spawn(command, dir)
    }

    fn spawn(mut command: Command, dir: tempfile::TempDir) -> Sidecar {
        let mut child = command.env("SHADOWDIFF_LOG", "warn").stdout(Stdio::piped()).spawn().expect("spawn shadowdiff");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read LISTENING line");
        let address = |key: &str| -> SocketAddr {
            let start = line.find(key).unwrap_or_else(|| panic!("no {key} in {line:?}")) + key.len();
            line[start..].split_whitespace().next().expect("address").parse().expect("socket address")
        };
        let (proxy, admin) = (address("proxy="), address("admin="));
        Sidecar { child: Some(child), proxy, admin, dir, client: client() }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Its resident memory now (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib * 1024
    }

    /// One unlabelled metric's value from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let metrics = self.admin_get("/metrics", None).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// A URL on the proxied listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Submits an evaluation through the proxy.
    pub async fn submit(&self, eval_id: &str, code: &str) -> Reply {
        let body = serde_json::json!({"eval_id": eval_id, "code": code, "language": "python"}).to_string();
        send(&self.client, Method::POST, &self.url("/evaluations"), &[("content-type", "application/json")], body).await
    }

    /// GET on the admin listener with an optional token.
    pub async fn admin_get(&self, path: &str, token: Option<&str>) -> Reply {
        let header = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
        send(&self.client, Method::GET, &self.admin_url(path), &headers, Bytes::new()).await
    }

    /// The live report.
    pub async fn report(&self, token: Option<&str>) -> Value {
        self.admin_get("/report.json", token).await.json()
    }

    /// Waits until every submission is judged or not mirrored (nothing pending) and at
    /// least `submissions` were seen; returns the report.
    pub async fn settled(&self, submissions: u64, token: Option<&str>) -> Value {
        let start = Instant::now();
        loop {
            let report = self.report(token).await;
            let accounting = &report["accounting"];
            if accounting["submissions"].as_u64() >= Some(submissions) && accounting["pending"] == 0 {
                return report;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "not settled: {accounting}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal (`-HUP`, `-TERM`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
    }

    /// The config file it was started with (rewrite it before a SIGHUP).
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("shadowdiff.toml")
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().expect("wait")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A config for a legacy and an HTTP shadow stand-in, with short intervals; `extra` is
/// appended (TOML tables only, so it cannot collide with the keys written here).
pub fn http_config(legacy: &str, shadow: &str, extra: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
shutdown_grace_ms = 5000
[legacy]
url = "{legacy}"
timeout_ms = 5000
[legacy.outcome]
interval_ms = 20
deadline_ms = 5000
[[routes]]
method = "POST"
path = "/evaluations"
[shadow.http]
url = "{shadow}"
timeout_ms = 2000
[shadow.outcome]
interval_ms = 20
deadline_ms = 5000
[admin]
listen = "127.0.0.1:0"
{extra}
"#
    )
}

/// A config for a legacy stand-in and a Celery shadow on `broker` (a `redis://` URL) and
/// `queue`, with this outcome deadline; `extra` goes into `[shadow.celery]`.
pub fn celery_config(legacy: &str, broker: &str, queue: &str, deadline_ms: u64, extra: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
shutdown_grace_ms = 15000
[legacy]
url = "{legacy}"
[legacy.outcome]
interval_ms = 50
deadline_ms = 20000
[[routes]]
method = "POST"
path = "/evaluations"
[shadow]
kind = "celery"
breaker_failures = 0
[shadow.outcome]
interval_ms = 200
deadline_ms = {deadline_ms}
[shadow.celery]
broker_url = "{broker}"
queue = "{queue}"
{extra}
[admin]
listen = "127.0.0.1:0"
"#
    )
}
