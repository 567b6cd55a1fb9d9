//! A minimal, fast stand-in for the legacy `api-service`, for load tests of the proxy.
//!
//! `cargo run --release --example fast_upstream -- [ADDR]` (default `127.0.0.1:0`) prints
//! `LISTENING <addr>`, then answers `POST /evaluations` with 202
//! `{"eval_id":"<from the body>","status":"queued"}` and anything else with 200
//! `{"ok":true}`. HTTP/1.1 with keep-alive.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Largest request body the stand-in reads to find an `eval_id`.
const MAX_BODY: usize = 64 * 1024;
/// The id answered when the body has none.
const DEFAULT_EVAL_ID: &str = "eval-0";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&addr).await?;
    println!("LISTENING {}", listener.local_addr()?);

    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("accept failed: {error}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = if request.method() == Method::POST && request.uri().path() == "/evaluations" {
        let eval_id = eval_id_of(request.into_body()).await;
        let body = serde_json::json!({ "eval_id": eval_id, "status": "queued" }).to_string();
        (StatusCode::ACCEPTED, Bytes::from(body))
    } else {
        (StatusCode::OK, Bytes::from_static(br#"{"ok":true}"#))
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// The `eval_id` string of a JSON body, or [`DEFAULT_EVAL_ID`].
async fn eval_id_of(body: Incoming) -> String {
    let Ok(collected) = Limited::new(body, MAX_BODY).collect().await else {
        return DEFAULT_EVAL_ID.to_owned();
    };
    serde_json::from_slice::<serde_json::Value>(&collected.to_bytes())
        .ok()
        .and_then(|json| json.get("eval_id")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_EVAL_ID.to_owned())
}
