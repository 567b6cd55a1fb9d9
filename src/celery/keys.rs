//! Reading and deleting result keys in batches: one background task takes every `GET` and
//! `DEL` the waiters ask for at that moment and sends them in one pipeline, so that many
//! evaluations finishing together (or given up together at their deadline) cost one round
//! trip, not one each. A quiet sidecar sends batches of one, as before.

use tokio::sync::{mpsc, oneshot};

use super::batch::{stopped, Batcher};
use super::error::{BrokerError, RESULT_BACKEND};
use super::redis_target::RedisLink;

/// Most commands sent in one pipeline.
const MAX_BATCH: usize = 512;
/// Commands waiting for the batcher; a full queue makes the caller wait.
const QUEUE: usize = 8 * MAX_BATCH;

/// What to do with one result key.
enum Op {
    /// `GET`: the value, if any.
    Get(oneshot::Sender<Result<Option<Vec<u8>>, BrokerError>>),
    /// `DEL`: whether there was one.
    Del(oneshot::Sender<Result<bool, BrokerError>>),
}

struct Request {
    key: String,
    op: Op,
}

/// The sending half, held by the result reader. The batcher ends when it is dropped.
#[derive(Clone)]
pub(super) struct Keys {
    batcher: Batcher<Request>,
}

impl Keys {
    /// Starts the batcher on the result backend's connection.
    pub(super) fn start(results: RedisLink) -> Keys {
        Keys { batcher: Batcher::start(QUEUE, |requests| run(results, requests)) }
    }

    /// `GET key`, with the other commands asked for at the same moment.
    pub(super) async fn get(&self, key: String) -> Result<Option<Vec<u8>>, BrokerError> {
        // The error's text is written only if it is needed: formatting it for every key
        // cost more than the rest of the request.
        let shown = key.clone();
        let gone = || stopped(RESULT_BACKEND, format!("GET {shown:?}"), "result-key");
        self.batcher.ask(|reply| Request { key, op: Op::Get(reply) }, gone).await
    }

    /// `DEL key`, with the other commands asked for at the same moment; whether it existed.
    pub(super) async fn delete(&self, key: String) -> Result<bool, BrokerError> {
        let shown = key.clone();
        let gone = || stopped(RESULT_BACKEND, format!("DEL {shown:?}"), "result-key");
        self.batcher.ask(|reply| Request { key, op: Op::Del(reply) }, gone).await
    }
}

async fn run(results: RedisLink, mut requests: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        send(&results, &mut batch).await;
    }
}

/// Sends one batch in one pipeline and answers each request; leaves `batch` empty.
async fn send(results: &RedisLink, batch: &mut Vec<Request>) {
    let mut pipe = redis::pipe();
    // One key's error (a key of another type) is that key's answer, not the batch's.
    pipe.ignore_errors();
    for request in batch.iter() {
        match request.op {
            Op::Get(_) => pipe.get(&request.key),
            Op::Del(_) => pipe.del(&request.key),
        };
    }
    let mut results = results.clone();
    let answers = match pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut results).await {
        Ok(values) if values.len() == batch.len() => Ok(values),
        Ok(values) => Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "result-key pipeline answered with the wrong count",
            format!("{} answers for {} commands", values.len(), batch.len()),
        ))),
        Err(error) => Err(error),
    };
    let mut values = answers.map(Vec::into_iter);
    for request in batch.drain(..) {
        let failed = |command: &str, error: redis::RedisError| BrokerError::Unavailable {
            which: RESULT_BACKEND,
            action: format!("{command} {:?}", request.key),
            source: error,
        };
        let value = match &mut values {
            Ok(values) => {
                values.next().unwrap_or_else(|| Err(redis::RedisError::from((redis::ErrorKind::Client, "no answer"))))
            }
            Err(error) => Err(error.clone()),
        };
        // A caller that stopped waiting drops its answer; the command was sent all the same.
        match request.op {
            Op::Get(reply) => {
                let answer = value
                    .and_then(|v| redis::from_redis_value::<Option<Vec<u8>>>(v).map_err(redis::RedisError::from))
                    .map_err(|e| failed("GET", e));
                let _ = reply.send(answer);
            }
            Op::Del(reply) => {
                let answer = value
                    .and_then(|v| redis::from_redis_value::<u64>(v).map_err(redis::RedisError::from))
                    .map(|n| n > 0)
                    .map_err(|e| failed("DEL", e));
                let _ = reply.send(answer);
            }
        }
    }
}
