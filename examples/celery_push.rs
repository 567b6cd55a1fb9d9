//! Load harness: how many evaluations per second the Celery shadow can push into Redis,
//! without the HTTP proxy in front of it. Each evaluation is what `serve` does for a
//! mirrored request up to the push: encode the task message (protocol v2), validate it,
//! register its waiter, subscribe to its result channel and `LPUSH` it, batched with the
//! evaluations submitted at the same moment.
//!
//! `cargo run --release --example celery_push -- [--redis redis://127.0.0.1:6379/14] [--tasks 200000] [--concurrency 1024]`
//!
//! It pushes onto a queue of its own (`push-<pid>`) that no worker consumes, prints one
//! line (`pushed N tasks in S s: R tasks/s`), then deletes the queue: nothing is left in
//! Redis.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt as _};
use serde_json::json;
use shadowdiff::celery::broker::{BrokerConfig, CeleryBroker};
use shadowdiff::celery::redis_target::RedisSpec;
use shadowdiff::celery::{encode_task, PriorityLayout, TaskSpec};

/// The allocator of the `shadowdiff` binary, so that the figure is the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    redis: String,
    tasks: usize,
    concurrency: usize,
}

fn args() -> Result<Args, String> {
    let mut args = Args { redis: "redis://127.0.0.1:6379/14".into(), tasks: 200_000, concurrency: 1024 };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<usize>().map_err(|e| format!("{flag} {value:?}: {e}"));
        match flag.as_str() {
            "--redis" => args.redis = value.clone(),
            "--tasks" => args.tasks = number()?,
            "--concurrency" => args.concurrency = number()?.max(1),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("celery_push: {e}");
            return ExitCode::from(2);
        }
    };
    let queue = format!("push-{}", std::process::id());
    let broker = match CeleryBroker::connect(BrokerConfig {
        broker: RedisSpec::url(&args.redis),
        result: RedisSpec::url(&args.redis),
        queue: queue.clone(),
        layout: PriorityLayout::default(),
        delete_results: true,
        result_poll_interval: Duration::from_secs(1),
        late_result_watch: Duration::ZERO,
    })
    .await
    {
        Ok(broker) => broker,
        Err(e) => {
            eprintln!("celery_push: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let pushed = stream::iter(0..args.tasks)
        .map(|n| {
            let broker = broker.clone();
            let queue = queue.clone();
            async move {
                let eval_id = format!("push-{n}");
                let spec = TaskSpec {
                    args: vec![json!(eval_id), json!("print('hello')"), json!("python")],
                    kwargs: vec![("shadow".into(), json!(true))],
                    // As the sidecar does: an id its pattern subscription covers.
                    task_id: Some(broker.new_task_id()),
                    ..TaskSpec::new("evaluate", queue)
                };
                let task = encode_task(&spec, &PriorityLayout::default()).map_err(|e| e.to_string())?;
                // The waiter is dropped at once.
                broker.submit(&task).await.map(drop).map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(args.concurrency)
        .fold((0usize, None), |(ok, first_error), result| async move {
            match result {
                Ok(()) => (ok + 1, first_error),
                Err(e) => (ok, first_error.or(Some(e))),
            }
        })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let depth = broker.queue_depth().await.unwrap_or(0);
    let mut link = match redis::Client::open(args.redis.as_str()).and_then(|c| c.get_connection()) {
        Ok(link) => Some(link),
        Err(e) => {
            eprintln!("celery_push: cannot delete queue {queue:?}: {e}");
            None
        }
    };
    if let Some(link) = link.as_mut() {
        let keys = PriorityLayout::default().keys(&queue);
        let _: redis::RedisResult<u64> = redis::cmd("DEL").arg(&keys).query(link);
    }
    println!(
        "pushed {} tasks in {seconds:.2} s: {:.0} tasks/s (queue depth {depth}, concurrency {})",
        pushed.0,
        pushed.0 as f64 / seconds,
        args.concurrency
    );
    match pushed.1 {
        Some(e) => {
            eprintln!("celery_push: {} failed, the first with: {e}", args.tasks - pushed.0);
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}
