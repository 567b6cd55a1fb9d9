//! A real Celery worker (`tests/evalstack/celery_app.py`) for integration tests.
//!
//! `Worker::start` runs `.venv/bin/celery ... worker` (created by `scripts/test-env.sh`)
//! in its own process group, waits for its "ready." log line, and on drop stops the
//! worker (then its whole process group) and deletes the Redis keys it left behind
//! (bindings, pidbox).

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a worker may take to log "ready.".
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a warm shutdown (SIGTERM) may take before the group is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The switches of `celery_app.py`, cleared so the test's own environment cannot leak in.
const SWITCHES: [&str; 10] = [
    "SHADOWDIFF_USE_SSL",
    "SHADOWDIFF_TRANSPORT_OPTIONS",
    "EVALSTACK_RESULT_SERIALIZER",
    "EVALSTACK_TIMEOUT_S",
    "EVALSTACK_SLEEP_WHEN",
    "EVALSTACK_SLEEP_S",
    "EVALSTACK_RAISE_WHEN",
    "EVALSTACK_STDOUT_SUFFIX_WHEN",
    "EVALSTACK_STDOUT_SUFFIX",
    "EVALSTACK_NOISE_FIELD",
];

/// A running Celery worker consuming one or more queues of one Redis database.
pub struct Worker {
    child: Child,
    /// Node name given with `-n`; also a substring of every key it creates.
    node: String,
    queues: Vec<String>,
    /// Broker and result backend.
    url: String,
    log: Arc<Mutex<String>>,
    stopped: bool,
}

impl Worker {
    /// Starts a prefork worker with 2 processes on `queue` (broker and results in Redis
    /// database `db` on 127.0.0.1:6379) with the extra environment `env`, and waits until
    /// it is ready.
    pub fn start(queue: &str, db: u32, env: &[(&str, &str)]) -> Worker {
        Worker::start_with(&[queue], db, 2, env)
    }

    /// Like [`Worker::start`] with several queues and a chosen concurrency.
    pub fn start_with(queues: &[&str], db: u32, concurrency: u32, env: &[(&str, &str)]) -> Worker {
        Worker::start_on(&redis_url(db), queues, concurrency, env)
    }

    /// Like [`Worker::start_with`] on the Redis at `url` (broker and results).
    pub fn start_on(url: &str, queues: &[&str], concurrency: u32, env: &[(&str, &str)]) -> Worker {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let celery = root.join(".venv/bin/celery");
        assert!(celery.exists(), "{} is missing: run scripts/test-env.sh first", celery.display());
        let node = format!("w-{}", uuid::Uuid::new_v4().simple());
        let url = url.to_owned();
        let mut command = Command::new(&celery);
        command
            .current_dir(&root)
            .args(["--workdir", "tests/evalstack", "-A", "celery_app", "worker", "-Q", &queues.join(",")])
            .args(["-n", &format!("{node}@%h"), "-P", "prefork", "-c", &concurrency.to_string()])
            .args(["--without-mingle", "--without-gossip", "-l", "info"])
            .env("SHADOWDIFF_BROKER_URL", &url)
            .env("SHADOWDIFF_RESULT_URL", &url)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for name in SWITCHES {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot run {}: {e}", celery.display()));

        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        collect(stdout, Arc::clone(&log), ready_tx.clone());
        collect(stderr, Arc::clone(&log), ready_tx);

        let queues = queues.iter().map(|q| (*q).to_owned()).collect();
        let mut worker = Worker { child, node, queues, url, log, stopped: false };
        let started = Instant::now();
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return worker;
            }
            if let Ok(Some(status)) = worker.child.try_wait() {
                worker.stopped = true;
                panic!("celery worker exited ({status}) before it was ready; its log:\n{}", worker.log());
            }
            if started.elapsed() > READY_TIMEOUT {
                let log = worker.log();
                drop(worker);
                panic!("celery worker not ready after {READY_TIMEOUT:?}; its log:\n{log}");
            }
        }
    }

    /// Everything the worker printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log contains `needle`; `false` after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Kills the worker and its pool processes at once (SIGKILL to the group), as a
    /// machine loss would: nothing is restored, running tasks write no result.
    pub fn kill_hard(&mut self) {
        signal_group(self.child.id(), "-KILL");
        let _ = self.child.wait();
        self.stopped = true;
    }

    /// Freezes the worker and its pool processes (SIGSTOP to the group), as a paused VM or
    /// a stuck host would: it holds what it took and answers nothing.
    pub fn pause(&self) {
        signal_group(self.child.id(), "-STOP");
    }

    /// Lets a paused worker go on (SIGCONT to the group).
    pub fn resume(&self) {
        signal_group(self.child.id(), "-CONT");
    }

    /// Deletes what the worker left in Redis: keys named after its queues or its node
    /// (queue lists, bindings, pidbox queue) and its member of the pidbox binding set.
    fn clean_keys(&self) {
        let Ok(mut redis) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) else { return };
        let mut patterns: Vec<String> = self.queues.iter().map(|q| format!("*{q}*")).collect();
        patterns.push(format!("*{}*", self.node));
        for pattern in patterns {
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut redis).unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<u64> = redis::cmd("DEL").arg(&keys).query(&mut redis);
            }
        }
        for set in ["_kombu.binding.celery.pidbox", "_kombu.binding_permanent.celery.pidbox"] {
            let members: Vec<String> = redis::cmd("SMEMBERS").arg(set).query(&mut redis).unwrap_or_default();
            let ours: Vec<&String> = members.iter().filter(|m| m.contains(&self.node)).collect();
            if !ours.is_empty() {
                let _: redis::RedisResult<u64> = redis::cmd("SREM").arg(set).arg(&ours).query(&mut redis);
            }
        }
        // The pidbox bindings' expiry entry, once no worker is bound any more.
        let bound: redis::RedisResult<u64> = redis::cmd("EXISTS").arg("_kombu.binding.celery.pidbox").query(&mut redis);
        if matches!(bound, Ok(0)) {
            let _: redis::RedisResult<u64> =
                redis::cmd("ZREM").arg("_kombu.binding_deadlines").arg("celery.pidbox").query(&mut redis);
        }
    }
}

impl Drop for Worker {
    /// Warm shutdown (SIGTERM to the main process only: the pool processes it manages
    /// would die of it with `WorkerLostError`), SIGKILL to the group once it exited or
    /// after [`STOP_TIMEOUT`], then key cleanup. The log is printed if the test failed.
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- log of celery worker {} ----\n{}", self.node, self.log());
        }
        if !self.stopped {
            self.resume();
            signal(&self.child.id().to_string(), "-TERM");
            let started = Instant::now();
            while matches!(self.child.try_wait(), Ok(None)) && started.elapsed() < STOP_TIMEOUT {
                thread::sleep(Duration::from_millis(20));
            }
            // Also reaps pool processes that outlived the main one.
            signal_group(self.child.id(), "-KILL");
            let _ = self.child.wait();
            self.stopped = true;
        }
        self.clean_keys();
    }
}

/// `redis://127.0.0.1:6379/<db>`.
pub fn redis_url(db: u32) -> String {
    format!("redis://127.0.0.1:6379/{db}")
}

/// Sends `signal_name` (e.g. `-KILL`) to the process group led by `pid`.
fn signal_group(pid: u32, signal_name: &str) {
    signal(&format!("-{pid}"), signal_name);
}

/// Runs `kill <signal_name> -- <target>` (std has no `kill(2)`); a negative target is a group.
fn signal(target: &str, signal_name: &str) {
    let _ = Command::new("kill").args([signal_name, "--", target]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Copies a worker's output into `log` line by line, signalling when it says "ready.".
fn collect(output: impl Read + Send + 'static, log: Arc<Mutex<String>>, ready: mpsc::Sender<()>) {
    thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if line.contains(" ready.") {
                let _ = ready.send(());
            }
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
}
