//! An in-process stand-in for `api-service`, to put behind (legacy) and beside (HTTP
//! shadow) shadowdiff in tests: `POST /evaluations` queues, `GET /evaluations/{id}`
//! answers `running` for a few polls and then the outcome its behaviour computes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

/// How the stand-in computes an outcome from `(eval_id, code)`.
pub type OutcomeFn = Arc<dyn Fn(&str, &str) -> Value + Send + Sync>;

/// What the stand-in does.
#[derive(Clone)]
pub struct Behaviour {
    /// The outcome of an evaluation.
    pub outcome: OutcomeFn,
    /// Polls answered `running` before the outcome.
    pub polls_before_done: usize,
    /// Delay before answering a submission.
    pub submit_delay: Duration,
    /// Never reach a final status.
    pub never_done: bool,
    /// Answer the submission with the outcome itself (a synchronous API).
    pub synchronous: bool,
    /// Assign `ev-<n>` ids instead of reading them from the body.
    pub assign_ids: bool,
}

/// The outcome every test expects from `print(N)`: stdout `N\n`.
pub fn echo_outcome(eval_id: &str, code: &str) -> Value {
    let printed = code.trim_start_matches("print(").trim_end_matches(')');
    json!({"eval_id": eval_id, "status": "completed", "stdout": format!("{printed}\n"), "stderr": "", "exit_code": 0,
           "duration_ms": 12.5})
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            outcome: Arc::new(echo_outcome),
            polls_before_done: 1,
            submit_delay: Duration::ZERO,
            never_done: false,
            synchronous: false,
            assign_ids: false,
        }
    }
}

/// A submission as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub target: String,
    /// Headers.
    pub headers: hyper::HeaderMap,
    /// Body.
    pub body: Bytes,
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    evaluations: Mutex<HashMap<String, (usize, Value)>>,
    submissions: AtomicUsize,
    polls: AtomicUsize,
    next_id: AtomicUsize,
}

/// A running stand-in.
pub struct EvalApi {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl EvalApi {
    /// Starts one on 127.0.0.1:0.
    pub async fn start(behaviour: Behaviour) -> EvalApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let served = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = Arc::clone(&served);
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let state = Arc::clone(&state);
                        let behaviour = behaviour.clone();
                        async move { Ok::<_, Infallible>(handle(&state, &behaviour, request).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        EvalApi { addr, state }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Submissions received.
    pub fn submissions(&self) -> usize {
        self.state.submissions.load(Ordering::SeqCst)
    }

    /// Every submission received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Result polls received.
    pub fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", "application/json".parse().expect("header"));
    response
}

async fn handle(state: &State, behaviour: &Behaviour, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    if request.method() == Method::POST && path == "/evaluations" {
        state.submissions.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        // Small ones only: the memory tests send hundreds of megabytes.
        if body.len() < 4096 {
            let received = Received { method: parts.method, target, headers: parts.headers, body: body.clone() };
            state.received.lock().expect("lock").push(received);
        }
        tokio::time::sleep(behaviour.submit_delay).await;
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let eval_id = if behaviour.assign_ids {
            format!("ev-{}", state.next_id.fetch_add(1, Ordering::SeqCst) + 1)
        } else {
            parsed.get("eval_id").and_then(Value::as_str).unwrap_or("anonymous").to_string()
        };
        let code = parsed.get("code").and_then(Value::as_str).unwrap_or("");
        let outcome = (behaviour.outcome)(&eval_id, code);
        if behaviour.synchronous {
            return json_response(StatusCode::OK, outcome);
        }
        let polls = if behaviour.never_done { usize::MAX } else { behaviour.polls_before_done };
        state.evaluations.lock().expect("lock").insert(eval_id.clone(), (polls, outcome));
        return json_response(StatusCode::ACCEPTED, json!({"eval_id": eval_id, "status": "queued"}));
    }
    if request.method() == Method::GET && path == "/queue" {
        let evaluations = state.evaluations.lock().expect("lock");
        let waiting = evaluations.values().filter(|(remaining, _)| *remaining > 0).count();
        return json_response(StatusCode::OK, json!({"queue_length": waiting}));
    }
    if request.method() == Method::GET {
        if let Some(id) = path.strip_prefix("/evaluations/") {
            state.polls.fetch_add(1, Ordering::SeqCst);
            let mut evaluations = state.evaluations.lock().expect("lock");
            return match evaluations.get_mut(id) {
                None => json_response(StatusCode::NOT_FOUND, json!({"error": "unknown"})),
                Some((remaining, _)) if *remaining > 0 => {
                    *remaining = remaining.saturating_sub(1);
                    json_response(StatusCode::OK, json!({"eval_id": id, "status": "running"}))
                }
                Some((_, outcome)) => json_response(StatusCode::OK, outcome.clone()),
            };
        }
    }
    json_response(StatusCode::NOT_FOUND, json!({"error": "no route"}))
}

/// A shadow that accepts connections and never reads or answers: the stalled upstream.
/// It counts the connections it holds, and the most it held at once.
pub struct Stalled {
    /// Where it listens.
    pub addr: SocketAddr,
    open: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Stalled {
    /// Starts one on 127.0.0.1:0.
    pub async fn start() -> Stalled {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (open, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (held, peak) = (Arc::clone(&open), Arc::clone(&most));
        tokio::spawn(async move {
            let mut streams: Vec<std::net::TcpStream> = Vec::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let Ok(stream) = stream.into_std() else { continue };
                streams.push(stream);
                // Forget the ones the peer closed, asking the kernel itself (reading what
                // they sent answers nothing).
                let mut sink = vec![0u8; 64 * 1024];
                streams.retain(|s| loop {
                    match std::io::Read::read(&mut &*s, &mut sink) {
                        Ok(0) => break false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                        Err(_) => break false,
                    }
                });
                held.store(streams.len(), Ordering::SeqCst);
                peak.fetch_max(streams.len(), Ordering::SeqCst);
            }
        });
        Stalled { addr, open, most }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The most connections it held at once.
    pub fn most_connections(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}
