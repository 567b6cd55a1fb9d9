//! Faults of the client's making, and connections that never speak: answered and counted
//! as the client's, never as legacy's. Raw sockets on 127.0.0.1:0 play the bad clients.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};
use shadowdiff::live::proxy::{Captured, ClientFault, LegacyOutcome};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EVAL: &str = r#"{"eval_id":"e-1","code":"print(1)","language":"python"}"#;
const QUEUED: &str = r#"{"eval_id":"e-1","status":"queued"}"#;

/// Writes `bytes` on a fresh connection to `proxy` and returns the stream.
async fn raw(proxy: &Proxy, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Reads until the peer closes; returns everything read.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    within("the proxy to close the connection", stream.read_to_end(&mut out)).await.expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_and_a_client_error_not_a_legacy_fault() {
    let legacy = upstream().route("/evaluations", reply(202).body(QUEUED)).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).tap(&tap).start().await;

    let mut stream = raw(
        &proxy,
        b"POST /evaluations HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await;
    let answer = read_to_close(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.ends_with(r#"{"error":"malformed or incomplete request body"}"#), "{answer}");

    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.outcome, LegacyOutcome::ClientError(ClientFault::Malformed));
    assert_eq!(exchange.request_body, Captured::Failed);
    let stats = proxy.settled_stats().await;
    assert_eq!((stats.client_errors_total, stats.legacy_unreachable_total, stats.legacy_timeout_total), (1, 0, 0));
}

#[tokio::test]
async fn a_body_slower_than_the_legacy_timeout_is_a_408_not_a_504() {
    let legacy = upstream().route("/evaluations", reply(202).body(QUEUED)).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).tap(&tap).legacy_timeout(Duration::from_millis(300)).start().await;

    let mut stream =
        raw(&proxy, b"POST /evaluations HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\nconnection: close\r\n\r\n123")
            .await;
    let started = Instant::now();
    let mut head = [0u8; 64];
    let read = within("the 408", stream.read(&mut head)).await.expect("read");
    let answer = String::from_utf8_lossy(&head[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.outcome, LegacyOutcome::ClientError(ClientFault::Slow));
    drop(stream);
    let stats = proxy.settled_stats().await;
    assert_eq!((stats.client_errors_total, stats.legacy_unreachable_total, stats.legacy_timeout_total), (1, 0, 0));
}

#[tokio::test]
async fn a_client_leaving_mid_body_is_a_client_error() {
    let legacy = upstream().route("/evaluations", reply(202).body(QUEUED)).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).tap(&tap).start().await;

    let stream =
        raw(&proxy, b"POST /evaluations HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"eval_id\":").await;
    legacy.wait_for_requests(1).await;
    drop(stream);

    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.outcome, LegacyOutcome::ClientError(ClientFault::Gone));
    let stats = proxy.settled_stats().await;
    assert_eq!((stats.client_errors_total, stats.legacy_unreachable_total, stats.legacy_timeout_total), (1, 0, 0));
}

#[tokio::test]
async fn connect_is_refused_with_405_and_never_reaches_legacy() {
    let legacy = upstream().start().await;
    let proxy = proxy_to(&legacy).start().await;

    let mut stream = raw(&proxy, b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n").await;
    let mut head = [0u8; 64];
    let read = within("the 405", stream.read(&mut head)).await.expect("read");
    let answer = String::from_utf8_lossy(&head[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{answer}");
    assert_eq!(legacy.seen().len(), 0);
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_at_the_header_timeout() {
    let legacy = upstream().route("/", reply(200).body("ok")).start().await;
    let proxy = proxy_to(&legacy).timeouts(Duration::from_millis(300), Duration::from_secs(30)).start().await;

    let started = Instant::now();
    let mut silent = raw(&proxy, b"").await;
    assert_eq!(read_to_close(&mut silent).await, "");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_idle_timeout_not_before() {
    let legacy = upstream().route("/", reply(200).body("ok")).start().await;
    let proxy = proxy_to(&legacy).timeouts(Duration::from_millis(200), Duration::from_millis(600)).start().await;

    let mut stream = raw(&proxy, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buffer = [0u8; 256];
    let read = within("the answer", stream.read(&mut buffer)).await.expect("read");
    assert!(String::from_utf8_lossy(&buffer[..read]).ends_with("ok"));
    let answered = Instant::now();
    // Past the header timeout, within the idle one: still open, and it serves again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("second request");
    let read = within("the second answer", stream.read(&mut buffer)).await.expect("read");
    assert!(String::from_utf8_lossy(&buffer[..read]).ends_with("ok"));
    let closed = read_to_close(&mut stream).await;
    assert_eq!(closed, "");
    assert!(answered.elapsed() >= Duration::from_millis(900), "{:?}", answered.elapsed());
    assert_eq!(legacy.seen().len(), 2);
}

#[tokio::test]
async fn the_exchange_carries_the_clients_headers_without_hop_by_hop_fields() {
    let legacy = upstream().route("/evaluations", reply(202).body(QUEUED)).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).via("1.1 shadowdiff").forwarded_headers().tap(&tap).start().await;

    let mut request = with_body(Method::POST, &proxy.url("/evaluations?tenant=t1"), EVAL);
    let headers = request.headers_mut();
    headers.insert("authorization", HeaderValue::from_static("Bearer client"));
    headers.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
    headers.insert("connection", HeaderValue::from_static("x-hop"));
    headers.insert("x-hop", HeaderValue::from_static("1"));
    let response = Client::http1().send(request).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(body_of(response).await, Bytes::from(QUEUED));

    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.path_and_query, "/evaluations?tenant=t1");
    assert_eq!(exchange.headers["authorization"], "Bearer client");
    assert_eq!(exchange.headers["traceparent"], "00-abc-def-01");
    for absent in ["connection", "x-hop", "via", "x-forwarded-for"] {
        assert!(!exchange.headers.contains_key(absent), "{absent} in {:?}", exchange.headers);
    }
}

#[tokio::test]
async fn a_later_head_that_stalls_is_closed_at_the_header_timeout() {
    let legacy = upstream().route("/", reply(200).body("ok")).start().await;
    let proxy = proxy_to(&legacy).timeouts(Duration::from_millis(300), Duration::from_secs(30)).start().await;

    let mut stream = raw(&proxy, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut buffer = [0u8; 256];
    let read = within("the answer", stream.read(&mut buffer)).await.expect("read");
    assert!(String::from_utf8_lossy(&buffer[..read]).ends_with("ok"));
    // Half a head, then nothing: closed after the header timeout, long before the idle one.
    stream.write_all(b"GET / HTTP/1.1\r\nhos").await.expect("partial head");
    let started = Instant::now();
    assert_eq!(read_to_close(&mut stream).await, "");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "{waited:?}");
    assert_eq!(legacy.seen().len(), 1);
}
