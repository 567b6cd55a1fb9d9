//! The stand-in legacy `api-service` of `tests/evalstack/legacy_service.py`, which runs
//! code with the same runner as the Celery worker, so both systems truly agree.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running legacy service, stopped on drop.
pub struct LegacyService {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl LegacyService {
    /// Starts it on 127.0.0.1:0 with this run time limit per evaluation.
    pub fn start(timeout_s: f64) -> LegacyService {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/evalstack/legacy_service.py");
        let mut child = Command::new("python3")
            .args([script, "--host", "127.0.0.1", "--port", "0", "--timeout-s", &timeout_s.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start legacy_service.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("LISTENING line");
        let address =
            line.trim().strip_prefix("LISTENING ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        LegacyService { url: format!("http://{address}"), child }
    }
}

impl Drop for LegacyService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
