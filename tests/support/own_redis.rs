//! A `redis-server` of a test's own on a free port, so that stopping it, or counting every
//! key in it, concerns nobody else; with TLS, ACL users, a replica or a Sentinel when a
//! test needs production's shapes ([`Certs`], [`OwnRedis::start_with`], [`OwnSentinel`]).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked: taken again at once by the caller).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A private Redis. Killed on drop.
pub struct OwnRedis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// Where it appends its log of writes (a restart keeps the data).
    dir: tempfile::TempDir,
    /// Arguments given on top of the defaults ([`OwnRedis::start_with`]).
    extra: Vec<String>,
}

impl OwnRedis {
    /// Starts one on a free port. Every write is appended and synced, so a SIGKILL loses
    /// nothing and a restart brings the data back, as a real deployment's Redis would.
    pub fn start() -> OwnRedis {
        OwnRedis::start_with(&[])
    }

    /// Like [`OwnRedis::start`] with more `redis-server` arguments, e.g. `--tls-port`
    /// ([`Certs::server_args`]), `--user` or `--replicaof`. The plain port stays open to
    /// the default user, for the test's own checks.
    pub fn start_with(extra: &[String]) -> OwnRedis {
        let mut redis = OwnRedis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.to_vec(),
        };
        redis.restart();
        redis
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// A plain connection to database 0.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url(0)).expect("url").get_connection().expect("own redis")
    }

    /// Starts it again on the same port, with the data written so far.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        for _ in 0..100 {
            if let Ok(mut connection) = redis::Client::open(self.url(0)).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut connection).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {} did not start", self.port);
    }

    /// Kills it (SIGKILL): clients see the connection drop and refused reconnects.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every key matching `pattern` in database 0.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut self.connection()).expect("KEYS");
        keys.sort();
        keys
    }

    /// Sends SIGKILL and waits: the process is gone, nothing is flushed.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// The value of `field` in `INFO replication`.
    pub fn replication(&self, field: &str) -> String {
        let info: String = redis::cmd("INFO").arg("replication").query(&mut self.connection()).expect("INFO");
        info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_default().trim().to_owned()
    }

    /// The length of a list in database 0.
    pub fn llen(&self, key: &str) -> u64 {
        redis::cmd("LLEN").arg(key).query(&mut self.connection()).expect("LLEN")
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A CA and a server certificate for 127.0.0.1 made with `openssl` in a temporary folder,
/// plus a second, unrelated CA (for "wrong CA" tests).
pub struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    /// Makes `ca.pem`, `server.pem`/`server.key` (signed by it, for IP 127.0.0.1 and
    /// `localhost`), `client.pem`/`client.key` (signed by it) and `other-ca.pem`.
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = |args: &[&str]| {
            let output = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        std::fs::write(dir.path().join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext");
        for leaf in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={leaf}"),
                "-keyout",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                &format!("{leaf}.pem"),
            ]);
        }
        Certs { dir }
    }

    /// A file of the set (`ca.pem`, `client.key`, …).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `redis-server` arguments for TLS on `tls_port` with these certificates;
    /// `auth_clients`: `no`, `optional` or `yes`.
    pub fn server_args(&self, tls_port: u16, auth_clients: &str) -> Vec<String> {
        let path = |name: &str| self.path(name).display().to_string();
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path("server.pem"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.pem"),
            "--tls-auth-clients".into(),
            auth_clients.into(),
        ]
    }
}

/// A `redis-server --sentinel` on a free port watching the master `name` at
/// 127.0.0.1:`master_port`, with quorum 1 and short timeouts (down after 1 s), so that a
/// killed master is replaced within a few seconds. Killed on drop.
pub struct OwnSentinel {
    child: Child,
    /// Its port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl OwnSentinel {
    /// Starts it and waits until it answers.
    pub fn start(name: &str, master_port: u16) -> OwnSentinel {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir = dir.path().display()
            ),
        )
        .expect("sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let sentinel = OwnSentinel { child, port, _dir: dir };
        wait_until("the sentinel answers", Duration::from_secs(10), || sentinel.master(name).is_some());
        sentinel
    }

    /// The master's port as this sentinel names it now.
    pub fn master(&self, name: &str) -> Option<u16> {
        let mut connection =
            redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?.get_connection().ok()?;
        let address: Vec<String> =
            redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(name).query(&mut connection).ok()?;
        address.get(1)?.parse().ok()
    }

    /// How many replicas of `name` this sentinel knows and takes as usable.
    pub fn usable_replicas(&self, name: &str) -> usize {
        let Ok(mut connection) =
            redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).and_then(|c| c.get_connection())
        else {
            return 0;
        };
        let replicas: Vec<Vec<String>> =
            redis::cmd("SENTINEL").arg("replicas").arg(name).query(&mut connection).unwrap_or_default();
        replicas
            .iter()
            .filter(|fields| {
                let flags = fields.iter().position(|f| f == "flags").and_then(|i| fields.get(i + 1));
                flags.is_some_and(|f| f == "slave")
            })
            .count()
    }
}

impl Drop for OwnSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` every 50 ms; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
