//! A `redis-server` of a test's own on a free port, so that stopping it, or counting every
//! key in it, concerns nobody else.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private Redis. Killed on drop.
pub struct OwnRedis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    /// Where it appends its log of writes (a restart keeps the data).
    dir: tempfile::TempDir,
}

impl OwnRedis {
    /// Starts one on a free port. Every write is appended and synced, so a SIGKILL loses
    /// nothing and a restart brings the data back, as a real deployment's Redis would.
    pub fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let mut redis = OwnRedis { child: None, port, dir: tempfile::tempdir().expect("tempdir") };
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
