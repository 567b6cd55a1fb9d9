//! Redis as production runs it, end to end with the real binary and a real Celery worker:
//! TLS (`rediss://` with a CA made here), an ACL user with a password, and Sentinel with a
//! failover. Every Redis and sentinel here is the test's own, on free ports.

#[path = "support/evalapi.rs"]
mod evalapi;
#[path = "support/legacy_py.rs"]
mod legacy_py;
#[path = "support/own_redis.rs"]
mod own_redis;
#[path = "support/sidecar.rs"]
mod sidecar;
#[path = "support/worker.rs"]
mod worker;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use own_redis::{free_port, wait_until, Certs, OwnRedis, OwnSentinel};
use serde_json::{json, Value};
use sidecar::Sidecar;
use worker::Worker;

/// The ACL user's password: it must appear in no output of shadowdiff.
const PASSWORD: &str = "Pw-4b7e-never-printed";
const USER: &str = "shadow";
const MASTER: &str = "sdmaster";

fn queue(name: &str) -> String {
    format!("sd-{name}-{}", uuid::Uuid::new_v4().simple())
}

/// A Redis with a TLS port (certificates from `certs`, client certificates optional) and
/// the ACL user [`USER`] with [`PASSWORD`]; returns it and its TLS port.
fn tls_redis(certs: &Certs) -> (OwnRedis, u16) {
    let tls_port = free_port();
    let mut args = certs.server_args(tls_port, "optional");
    args.extend(["--user", USER, "on", &format!(">{PASSWORD}"), "~*", "&*", "+@all"].map(String::from));
    (OwnRedis::start_with(&args), tls_port)
}

/// `[shadow.celery] broker_use_ssl` (or `[fleet] redis_use_ssl`) naming `ca`, with the
/// client certificate.
fn use_ssl(certs: &Certs, ca: &str) -> String {
    format!(
        "{{ ssl_ca_certs = \"{}\", ssl_certfile = \"{}\", ssl_keyfile = \"{}\", ssl_cert_reqs = \"required\" }}",
        certs.path(ca).display(),
        certs.path("client.pem").display(),
        certs.path("client.key").display()
    )
}

/// Runs `shadowdiff <args>` to its end (at most 30 s); its exit code and stderr.
fn shadowdiff(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(args)
        .env("SHADOWDIFF_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shadowdiff");
    let started = Instant::now();
    while matches!(child.try_wait(), Ok(None)) {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("shadowdiff {args:?} still runs after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `serve` with this config, which must refuse to start; the line that says why (its
/// whole log, at debug level, holds no password).
fn serve_refuses(config: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shadowdiff.toml");
    std::fs::write(&path, config).expect("config");
    let (code, stderr) = shadowdiff(&["serve", "--config", path.to_str().expect("utf-8")]);
    assert_eq!(code, Some(2), "serve must refuse to start:\n{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password leaked:\n{stderr}");
    let why =
        stderr.lines().find(|l| l.starts_with("shadowdiff: ")).unwrap_or_else(|| panic!("no error in:\n{stderr}"));
    why.to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_an_acl_user_judges_everything_and_never_shows_the_password() {
    let certs = Certs::generate();
    let (_redis, tls_port) = tls_redis(&certs);
    let url = format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{tls_port}/0");
    let queue = queue("tls");
    let ssl = json!({
        "ssl_ca_certs": certs.path("ca.pem"), "ssl_certfile": certs.path("client.pem"),
        "ssl_keyfile": certs.path("client.key"), "ssl_cert_reqs": "required",
    });
    let _worker = Worker::start_on(&url, &[&queue], 2, &[("SHADOWDIFF_USE_SSL", &ssl.to_string())]);
    let legacy = legacy_py::LegacyService::start(1.0);
    let extra = format!("broker_use_ssl = {}\n", use_ssl(&certs, "ca.pem"));
    let config = format!(
        "{}[fleet]\nredis_url = \"{url}\"\nredis_use_ssl = {}\nrun = \"{queue}\"\nsnapshot_ms = 200\n",
        sidecar::celery_config(&legacy.url, &url, &queue, 20_000, &extra),
        use_ssl(&certs, "ca.pem")
    );
    let mut sidecar = Sidecar::start_logging(&config);

    for i in 0..4 {
        let reply = sidecar.submit(&format!("tls-{i}"), &format!("print({i})")).await;
        assert_eq!(reply.json(), json!({"eval_id": format!("tls-{i}"), "status": "queued"}));
    }
    let report = sidecar.settled(4, None).await;
    assert_eq!(
        report["totals"],
        json!({"evaluations": 4, "match": 4, "equivalent": 0, "mismatch": 0, "noise": 0, "shadow_error": 0,
               "shadow_lost": 0, "legacy_failed": 0, "malformed": 0}),
        "{report:#}"
    );
    assert_eq!(report["accounting"]["judged"], 4);

    // The fleet state went over TLS too: the merged report reads it back.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let fleet = sidecar.admin_get("/report.json?scope=fleet", None).await;
    assert_eq!(fleet.json()["totals"]["evaluations"], 4, "{}", String::from_utf8_lossy(&fleet.body));

    let mut outputs = vec![report.to_string(), String::from_utf8_lossy(&fleet.body).into_owned()];
    for path in ["/metrics", "/report"] {
        outputs.push(String::from_utf8_lossy(&sidecar.admin_get(path, None).await.body).into_owned());
    }
    let (code, checked) = shadowdiff(&["check-config", sidecar.config_path().to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{checked}");
    outputs.push(checked);
    assert!(sidecar.stop().success());
    outputs.push(sidecar.log());
    for output in outputs {
        assert!(!output.contains(PASSWORD), "the password leaked into:\n{output}");
    }
}

#[test]
fn a_wrong_ca_or_password_stops_serve_naming_the_redis_and_why() {
    let certs = Certs::generate();
    let (_redis, tls_port) = tls_redis(&certs);
    let celery = |url: &str, ca: &str| {
        let extra = format!("broker_use_ssl = {}\n", use_ssl(&certs, ca));
        sidecar::celery_config("http://127.0.0.1:9", url, "unused", 5_000, &extra)
    };
    let good = format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{tls_port}/0");

    let stderr = serve_refuses(&celery(&good, "other-ca.pem"));
    assert!(
        stderr.starts_with("shadowdiff: cannot connect to the Celery shadow's Redis: broker unavailable (connect): ")
            && stderr.ends_with("invalid peer certificate: UnknownIssuer"),
        "{stderr}"
    );

    let wrong = format!("rediss://{USER}:wrong-{PASSWORD}@127.0.0.1:{tls_port}/0");
    let stderr = serve_refuses(&celery(&wrong, "ca.pem"));
    assert!(
        stderr.starts_with("shadowdiff: cannot connect to the Celery shadow's Redis: broker unavailable (connect): ")
            && stderr.ends_with("unavailable (connect): Password authentication failed - AuthenticationFailed"),
        "{stderr}"
    );

    // The result backend is named as such, and the fleet as the fleet.
    let split = celery(&good, "ca.pem").replace(
        "queue = \"unused\"",
        &format!(
            "queue = \"unused\"\nresult_backend = \"{wrong}\"\nredis_backend_use_ssl = {}",
            use_ssl(&certs, "ca.pem")
        ),
    );
    let stderr = serve_refuses(&split);
    assert!(
        stderr.contains("result backend unavailable (connect): ")
            && stderr.ends_with("unavailable (connect): Password authentication failed - AuthenticationFailed"),
        "{stderr}"
    );
    let fleet = format!(
        "{}[fleet]\nredis_url = \"{wrong}\"\nredis_use_ssl = {}\n",
        sidecar::http_config("http://127.0.0.1:9", "http://127.0.0.1:9", ""),
        use_ssl(&certs, "ca.pem")
    );
    let stderr = serve_refuses(&fleet);
    assert!(
        stderr.starts_with("shadowdiff: cannot join the fleet (fleet.redis_url): fleet Redis unavailable (connect): ")
            && stderr.ends_with("unavailable (connect): Password authentication failed - AuthenticationFailed"),
        "{stderr}"
    );
}

#[test]
fn check_config_names_every_bad_redis_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("config");
        path.display().to_string()
    };
    let base = sidecar::celery_config("http://127.0.0.1:9", "BROKER", "q", 5_000, "EXTRA");
    let config = |broker: &str, extra: &str| base.replace("BROKER", broker).replace("EXTRA", extra);

    let path = write(
        "values.toml",
        &config(
            &format!("rediss://{USER}:{PASSWORD}@127.0.0.1:1/0"),
            "broker_use_ssl = { ssl_ca_certs = \"/nonexistent/ca.pem\", ssl_cert_reqs = \"sometimes\", \
             ssl_certfile = \"/nonexistent/c.pem\" }\n",
        ),
    );
    let (code, stderr) = shadowdiff(&["check-config", &path]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "shadowdiff: config {path} has 2 problem(s):\n  \
             - shadow.celery.broker_use_ssl.ssl_cert_reqs: \"sometimes\" is not required, optional or none\n  \
             - shadow.celery.broker_use_ssl.ssl_keyfile: is required with ssl_certfile\n"
        )
    );

    let path = write(
        "files.toml",
        &config(
            &format!("rediss://:{PASSWORD}@127.0.0.1:1/0"),
            "broker_use_ssl = { ssl_ca_certs = \"/nonexistent/ca.pem\" }\n",
        ),
    );
    let (code, stderr) = shadowdiff(&["check-config", &path]);
    assert_eq!(code, Some(2), "{stderr}");
    let missing = "cannot read /nonexistent/ca.pem: No such file or directory (os error 2)";
    assert_eq!(
        stderr,
        format!(
            "shadowdiff: config {path} cannot serve:\n  - shadow.celery.broker_use_ssl.ssl_ca_certs: {missing}\n  \
             - shadow.celery.redis_backend_use_ssl.ssl_ca_certs: {missing}\n"
        ),
        "the result backend shares the broker's options when result_url is not set"
    );

    let path = write("sentinel.toml", &config(&format!("sentinel://:{PASSWORD}@127.0.0.1:26379/0"), ""));
    let (code, stderr) = shadowdiff(&["check-config", &path]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "  - shadow.celery.broker_transport_options: a sentinel:// URL in shadow.celery.broker_url needs \
             shadow.celery.broker_transport_options = { master_name = \"…\" }\n"
        ),
        "{stderr}"
    );

    let path = write(
        "unknown.toml",
        &config("sentinel://127.0.0.1:26379", "broker_transport_options = { master_name = \"m\", visibility = 1 }\n"),
    );
    let (code, stderr) = shadowdiff(&["check-config", &path]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("unknown field `visibility`"), "{stderr}");

    let path = write("plain.toml", &config(&format!("http://{USER}:{PASSWORD}@h/0"), ""));
    let (_, stderr) = shadowdiff(&["check-config", &path]);
    assert!(
        stderr.contains(&format!(
            "  - shadow.celery.broker_url: \"http://{USER}:***@h/0\" is not a redis://, rediss:// or sentinel:// URL\n"
        )),
        "{stderr}"
    );
    for path in ["values.toml", "files.toml", "sentinel.toml", "plain.toml"] {
        let (_, stderr) = shadowdiff(&["check-config", &dir.path().join(path).display().to_string()]);
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_pauses_mirroring_then_resumes_on_the_new_master_with_exact_accounting() {
    let mut master = OwnRedis::start();
    let replica = OwnRedis::start_with(&["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()]);
    wait_until("the replica is in sync", Duration::from_secs(10), || replica.replication("master_link_status") == "up");
    let sentinel = OwnSentinel::start(MASTER, master.port);
    wait_until("the sentinel knows the replica", Duration::from_secs(15), || sentinel.usable_replicas(MASTER) == 1);

    let url = format!("sentinel://127.0.0.1:{}/0", sentinel.port);
    let queue = queue("sentinel");
    let options = json!({"master_name": MASTER}).to_string();
    let _worker = Worker::start_on(&url, &[&queue], 2, &[("SHADOWDIFF_TRANSPORT_OPTIONS", &options)]);
    let legacy = legacy_py::LegacyService::start(1.0);
    let extra = format!("broker_transport_options = {{ master_name = \"{MASTER}\" }}\n");
    let sidecar = Sidecar::start_logging(&sidecar::celery_config(&legacy.url, &url, &queue, 8_000, &extra));

    for i in 0..3 {
        sidecar.submit(&format!("before-{i}"), &format!("print({i})")).await;
    }
    let report = sidecar.settled(3, None).await;
    assert_eq!(report["totals"]["match"], 3, "{report:#}");

    master.kill();
    wait_until("the sentinel promotes the replica", Duration::from_secs(20), || {
        sentinel.master(MASTER) == Some(replica.port)
    });

    // Keep submitting until three evaluations made after the failover were judged on the
    // new master; those sent meanwhile are not mirrored (shadow_unavailable) or, once
    // pushed, judged or lost.
    let started = Instant::now();
    let mut submitted = 3;
    loop {
        sidecar.submit(&format!("after-{submitted}"), &format!("print({submitted})")).await;
        submitted += 1;
        let report = sidecar.report(None).await;
        if report["totals"]["match"].as_u64() >= Some(6) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "mirroring did not resume: {report:#}\n{}", sidecar.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let report = sidecar.settled(submitted, None).await;
    eprintln!("after the failover: {} {}", report["totals"], report["accounting"]);
    let (totals, accounting) = (&report["totals"], &report["accounting"]);
    let count = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    let not_mirrored: u64 = accounting["not_mirrored"].as_object().expect("object").values().map(count).sum();
    assert!(
        accounting["not_mirrored"].as_object().expect("object").keys().all(|k| k == "shadow_unavailable"),
        "{accounting}"
    );
    assert_eq!(count(&accounting["submissions"]), submitted, "{accounting}");
    assert_eq!(
        count(&accounting["judged"]) + not_mirrored,
        submitted,
        "every submission ends in one place: {accounting}"
    );
    assert_eq!(count(&totals["evaluations"]), count(&accounting["judged"]), "{report:#}");
    assert_eq!(
        count(&totals["match"]) + count(&totals["shadow_lost"]),
        count(&totals["evaluations"]),
        "each mirrored evaluation is judged a match or lost, nothing else: {totals}"
    );
    let log = sidecar.log();
    assert!(log.contains(&format!("master=127.0.0.1:{}", replica.port)), "the move is logged:\n{log}");
}

#[tokio::test]
async fn an_acl_refusing_the_result_pattern_still_gets_every_result_by_its_own_channel() {
    use shadowdiff::celery::broker::{BrokerConfig, CeleryBroker, WaitOutcome};
    use shadowdiff::celery::redis_target::RedisSpec;
    use shadowdiff::celery::{encode_task, result_key, PriorityLayout, TaskSpec, TaskState};

    // Result channels allowed as a narrow ACL allows them: Redis accepts a PSUBSCRIBE only
    // for a pattern listed literally, so the broker's own pattern is refused.
    let redis = OwnRedis::start_with(
        &["--user", USER, "on", &format!(">{PASSWORD}"), "~*", "&celery-task-meta-*", "+@all"].map(String::from),
    );
    let url = format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}/0", redis.port);
    let queue = queue("acl-pattern");
    let broker = CeleryBroker::connect(BrokerConfig {
        broker: RedisSpec::url(&url),
        result: RedisSpec::url(&url),
        queue: queue.clone(),
        layout: PriorityLayout::default(),
        delete_results: false,
        // Polling so slow that only pub/sub can deliver the result in time.
        result_poll_interval: Duration::from_secs(60),
        late_result_watch: Duration::ZERO,
    })
    .await
    .expect("connects all the same");
    let spec = TaskSpec { task_id: Some(broker.new_task_id()), ..TaskSpec::new("trivial", &queue) };
    let task = encode_task(&spec, &PriorityLayout::default()).expect("encodes");
    let waiter = broker.submit(&task).await.expect("submitted");

    // Written as a worker writes it, by the default user: one receiver, the task's channel.
    let key = result_key(&task.task_id);
    let value = json!({"status": "SUCCESS", "result": "done", "traceback": null, "children": [],
        "date_done": "2026-12-07T09:00:00.000000+00:00", "task_id": task.task_id})
    .to_string();
    let ((), receivers): ((), u32) = redis::pipe()
        .atomic()
        .set_ex(&key, &value, 60)
        .publish(&key, &value)
        .query(&mut redis.connection())
        .expect("MULTI");
    assert_eq!(receivers, 1);
    match waiter.wait(Duration::from_secs(10)).await {
        Ok(WaitOutcome::Final { result, retries_seen: 0 }) => {
            assert_eq!(result.state, TaskState::Success(json!("done")))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(broker.stats().result_polls, 0);
}
