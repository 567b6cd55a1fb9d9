//! The legacy path, end to end: a real upstream, the proxy, a real client, all on
//! 127.0.0.1:0. Each test states what the client and the upstream must see, byte for byte.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode, Version};
use shadowdiff::live::proxy::{serve, Captured, LegacyOutcome, ProxyConfig, ProxyStats, ProxyStatsSnapshot};
use support::*;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const EVAL: &str = r#"{"eval_id":"e-1","code":"print(1)","language":"python"}"#;
const QUEUED: &str = r#"{"eval_id":"e-1","status":"queued"}"#;

fn evaluations_only(method: &Method, path: &str) -> bool {
    method == Method::POST && path.starts_with("/evaluations")
}

#[tokio::test]
async fn status_headers_and_body_pass_through_unchanged() {
    let legacy = upstream()
        .route(
            "/evaluations",
            reply(202)
                .header("content-type", "application/json")
                .header("set-cookie", "a=1")
                .header("x-legacy", "yes")
                .header("set-cookie", "b=2; Path=/")
                .header("set-cookie", "c=3")
                .body(QUEUED),
        )
        .start()
        .await;
    let proxy = proxy_to(&legacy).start().await;

    let mut request = with_body(Method::POST, &proxy.url("/evaluations?priority=high"), EVAL);
    request.headers_mut().insert("x-client", "kept".parse().expect("value"));
    let response = Client::http1().send(request).await;

    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header_values(&response, "set-cookie"), ["a=1", "b=2; Path=/", "c=3"]);
    assert_eq!(header_values(&response, "x-legacy"), ["yes"]);
    assert_eq!(header_values(&response, "content-type"), ["application/json"]);
    assert_eq!(header_values(&response, "content-length"), [QUEUED.len().to_string()]);
    assert_eq!(header_values(&response, "via"), Vec::<String>::new());
    assert_eq!(body_of(response).await, QUEUED);

    let seen = legacy.only_request();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.target, "/evaluations?priority=high");
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.body, EVAL);
    assert_eq!(seen.header_values("x-client"), ["kept"]);
    assert_eq!(seen.header_values("host"), [proxy.addr.to_string()], "Host is forwarded as the client sent it");
    assert_eq!(seen.header_values("via"), Vec::<String>::new());
    assert_eq!(seen.header_values("x-forwarded-for"), Vec::<String>::new());

    assert_eq!(
        proxy.settled_stats().await,
        ProxyStatsSnapshot {
            requests_total: 1,
            legacy_unreachable_total: 0,
            legacy_timeout_total: 0,
            in_flight: 0,
            client_errors_total: 0,
            accept_errors_total: 0,
        }
    );
}

#[tokio::test]
async fn chunked_response_is_streamed_chunk_by_chunk() {
    let gate = Arc::new(Notify::new());
    let legacy =
        upstream().route("/results/e-1", reply(200).send("first;").wait_for(&gate).send("second")).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).tap(&tap).start().await;

    let response = Client::http1().send(request(Method::GET, &proxy.url("/results/e-1"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_values(&response, "transfer-encoding"), ["chunked"]);
    assert_eq!(header_values(&response, "content-length"), Vec::<String>::new());

    // The first chunk must arrive while the upstream is still holding the rest back.
    let mut body = response.into_body();
    let first = within("the first chunk", body.frame()).await.expect("a frame").expect("no error");
    assert_eq!(first.into_data().expect("data frame"), "first;");
    // The tap hears nothing until the response body has ended.
    tap.assert_no_more_exchanges(Duration::from_millis(100)).await;
    gate.notify_one();
    let rest = within("the rest", body.collect()).await.expect("rest of body").to_bytes();
    assert_eq!(rest, "second");

    let exchange = tap.next_exchange().await;
    assert_eq!(
        exchange.outcome,
        LegacyOutcome::Response { status: StatusCode::OK, body: Captured::Complete(Bytes::from("first;second")) }
    );
}

#[tokio::test]
async fn large_response_streams_byte_exact() {
    let payload = pattern(8 << 20);
    let legacy = upstream().route("/artifact", reply(200).stream(payload.clone(), 64 << 10)).start().await;
    let proxy = proxy_to(&legacy).start().await;

    let response = Client::http1().send(request(Method::GET, &proxy.url("/artifact"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let received = body_of(response).await;
    assert_eq!(received.len(), payload.len());
    assert!(received == payload, "8 MiB body differs after the proxy");
}

#[tokio::test]
async fn large_request_body_streams_byte_exact() {
    let payload = pattern(8 << 20);
    let legacy = upstream().route("/upload", reply(204)).start().await;
    let proxy = proxy_to(&legacy).start().await;

    let (chunks, post) = streaming_post(&proxy.url("/upload"));
    let client = Client::http1();
    let sending = tokio::spawn(async move { client.send(post).await.status() });

    let first = payload.slice(..64 << 10);
    chunks.send(first.clone()).await.expect("send first chunk");
    // Nothing more is sent until the upstream has the first chunk: a buffering proxy
    // would wait here forever.
    legacy.wait_for_body_bytes(first.len()).await;
    let mut offset = first.len();
    while offset < payload.len() {
        let end = (offset + (64 << 10)).min(payload.len());
        chunks.send(payload.slice(offset..end)).await.expect("send chunk");
        offset = end;
    }
    drop(chunks);

    assert_eq!(within("the upload response", sending).await.expect("client task"), StatusCode::NO_CONTENT);
    let seen = legacy.only_request();
    assert_eq!(seen.body.len(), payload.len());
    assert!(seen.body == payload, "8 MiB request body differs after the proxy");
}

#[tokio::test]
async fn head_keeps_content_length_and_sends_no_body() {
    let legacy = upstream().route("/results/e-1", reply(200).body("hello world")).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).tap(&tap).start().await;

    let response = Client::http1().send(request(Method::HEAD, &proxy.url("/results/e-1"))).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_values(&response, "content-length"), ["11"]);
    assert_eq!(body_of(response).await, Bytes::new());
    assert_eq!(legacy.only_request().method, Method::HEAD);
    let exchange = tap.next_exchange().await;
    assert_eq!(
        exchange.outcome,
        LegacyOutcome::Response { status: StatusCode::OK, body: Captured::Complete(Bytes::new()) }
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    let legacy = upstream()
        .route(
            "/evaluations",
            reply(200)
                .header("connection", "x-legacy-private")
                .header("x-legacy-private", "secret")
                .header("keep-alive", "timeout=5")
                .header("proxy-authenticate", "Basic realm=legacy")
                .header("trailer", "x-sum")
                .header("upgrade", "websocket")
                .header("x-legacy-public", "shown")
                .body("ok"),
        )
        .start()
        .await;
    let proxy = proxy_to(&legacy).start().await;

    let mut request = with_body(Method::POST, &proxy.url("/evaluations"), "{}");
    for (name, value) in [
        ("connection", "x-custom"),
        ("x-custom", "private"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("te", "trailers"),
        ("trailer", "x-sum"),
        ("upgrade", "websocket"),
        ("x-kept", "yes"),
    ] {
        request.headers_mut().append(name, value.parse().expect("value"));
    }
    let response = Client::http1().send(request).await;

    assert_eq!(response.status(), StatusCode::OK);
    let leaked_to_client: Vec<&str> = ["x-legacy-private", "keep-alive", "proxy-authenticate", "trailer", "upgrade"]
        .into_iter()
        .filter(|name| response.headers().contains_key(*name))
        .collect();
    assert_eq!(leaked_to_client, Vec::<&str>::new(), "hop-by-hop fields reached the client");
    assert_eq!(header_values(&response, "x-legacy-public"), ["shown"]);
    assert_eq!(body_of(response).await, "ok");

    let seen = legacy.only_request();
    let leaked_to_legacy: Vec<&str> =
        ["x-custom", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade", "connection"]
            .into_iter()
            .filter(|name| seen.headers.contains_key(*name))
            .collect();
    assert_eq!(leaked_to_legacy, Vec::<&str>::new(), "hop-by-hop fields reached the legacy upstream");
    assert_eq!(seen.header_values("x-kept"), ["yes"]);
    assert_eq!(seen.body, "{}");
}

#[tokio::test]
async fn via_and_forwarded_headers_are_added() {
    let legacy = upstream().route("/evaluations", reply(202).header("via", "1.1 legacy-lb").body(QUEUED)).start().await;
    let proxy = proxy_to(&legacy).via("1.1 shadowdiff").forwarded_headers().start().await;

    let mut request = with_body(Method::POST, &proxy.url("/evaluations"), EVAL);
    request.headers_mut().insert("via", "1.0 corporate".parse().expect("value"));
    request.headers_mut().insert("x-forwarded-for", "203.0.113.7".parse().expect("value"));
    let response = Client::http1().send(request).await;

    assert_eq!(header_values(&response, "via"), ["1.1 legacy-lb, 1.1 shadowdiff"]);
    assert_eq!(body_of(response).await, QUEUED);
    let seen = legacy.only_request();
    assert_eq!(seen.header_values("via"), ["1.0 corporate, 1.1 shadowdiff"]);
    assert_eq!(seen.header_values("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(seen.header_values("x-forwarded-proto"), ["http"]);
}

#[tokio::test]
async fn http2_prior_knowledge_client_is_served_over_http1_upstream() {
    let legacy = upstream().route("/evaluations", reply(202).header("set-cookie", "a=1").body(QUEUED)).start().await;
    let proxy = proxy_to(&legacy).start().await;

    let response = Client::http2().send(with_body(Method::POST, &proxy.url("/evaluations"), EVAL)).await;

    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(header_values(&response, "set-cookie"), ["a=1"]);
    assert_eq!(body_of(response).await, QUEUED);
    let seen = legacy.only_request();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.body, EVAL);
    assert_eq!(seen.header_values("host"), [proxy.addr.to_string()], ":authority becomes Host");
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let legacy = upstream().route("/results/e-1", reply(200).body("done")).start().await;
    let proxy = proxy_to(&legacy).start().await;
    let client = Client::http1();

    for _ in 0..5 {
        let response = client.send(request(Method::GET, &proxy.url("/results/e-1"))).await;
        assert_eq!(body_of(response).await, "done");
    }

    assert_eq!(legacy.seen().len(), 5);
    assert_eq!(legacy.connections(), 1, "sequential requests should reuse one pooled connection");
}

#[tokio::test]
async fn closed_upstream_port_answers_502_and_tells_the_tap() {
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to_base(&closed_port().await).tap(&tap).start().await;

    let response = Client::http1().send(with_body(Method::POST, &proxy.url("/evaluations"), EVAL)).await;

    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header_values(&response, "content-type"), ["application/json"]);
    assert_eq!(body_of(response).await, r#"{"error":"legacy upstream unreachable"}"#);
    assert_eq!(
        proxy.settled_stats().await,
        ProxyStatsSnapshot {
            requests_total: 1,
            legacy_unreachable_total: 1,
            legacy_timeout_total: 0,
            in_flight: 0,
            client_errors_total: 0,
            accept_errors_total: 0,
        }
    );
    let exchange = tap.next_exchange().await;
    match &exchange.outcome {
        LegacyOutcome::Unreachable(reason) => {
            assert!(reason.contains("Connection refused"), "reason should name the refusal: {reason}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(exchange.request_body, Captured::Failed, "the legacy upstream never read the body");
}

#[tokio::test]
async fn slow_upstream_answers_504_after_the_timeout() {
    let legacy = upstream().route("/evaluations", reply(202).after(Duration::from_secs(3)).body(QUEUED)).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).legacy_timeout(Duration::from_millis(200)).tap(&tap).start().await;

    let started = Instant::now();
    let response = Client::http1().send(with_body(Method::POST, &proxy.url("/evaluations"), EVAL)).await;
    let waited = started.elapsed();

    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(header_values(&response, "content-type"), ["application/json"]);
    assert_eq!(body_of(response).await, r#"{"error":"legacy upstream timed out"}"#);
    assert!(waited >= Duration::from_millis(200), "answered before the timeout: {waited:?}");
    assert!(waited < Duration::from_secs(2), "did not time out promptly: {waited:?}");
    assert_eq!(
        proxy.settled_stats().await,
        ProxyStatsSnapshot {
            requests_total: 1,
            legacy_unreachable_total: 0,
            legacy_timeout_total: 1,
            in_flight: 0,
            client_errors_total: 0,
            accept_errors_total: 0,
        }
    );
    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.outcome, LegacyOutcome::Timeout);
    assert_eq!(exchange.request_body, Captured::Complete(Bytes::from(EVAL)), "the upstream had read the body");
    assert!(exchange.submit >= Duration::from_millis(200), "submit {:?}", exchange.submit);
}

#[tokio::test]
async fn captured_exchange_reaches_the_tap_with_exact_bytes() {
    let legacy = upstream()
        .route("/evaluations", reply(202).header("content-type", "application/json").body(QUEUED))
        .start()
        .await;
    let tap = RecordingTap::capturing(evaluations_only);
    let proxy = proxy_to(&legacy).tap(&tap).start().await;

    let started = Instant::now();
    let response = Client::http1().send(with_body(Method::POST, &proxy.url("/evaluations?priority=high"), EVAL)).await;
    assert_eq!(body_of(response).await, QUEUED);
    let elapsed = started.elapsed();

    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.method, Method::POST);
    assert_eq!(exchange.path_and_query, "/evaluations?priority=high");
    assert_eq!(exchange.request_body, Captured::Complete(Bytes::from(EVAL)));
    assert_eq!(
        exchange.outcome,
        LegacyOutcome::Response { status: StatusCode::ACCEPTED, body: Captured::Complete(Bytes::from(QUEUED)) }
    );
    assert!(exchange.submit > Duration::ZERO && exchange.submit <= elapsed, "submit {:?}", exchange.submit);
    tap.assert_no_more_exchanges(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn bodies_over_the_cap_are_too_large_but_forwarded_whole() {
    let big_response = pattern(4096);
    let legacy = upstream()
        .route("/evaluations", reply(200).stream(big_response.clone(), 1000))
        .route("/evaluations/bulk", reply(202).body(QUEUED))
        .start()
        .await;
    let tap = RecordingTap::capturing(evaluations_only);
    let proxy = proxy_to(&legacy).capture_cap(1024).tap(&tap).start().await;
    let client = Client::http1();

    let response = client.send(with_body(Method::POST, &proxy.url("/evaluations"), EVAL)).await;
    assert_eq!(body_of(response).await, big_response, "the client must get every byte");
    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.request_body, Captured::Complete(Bytes::from(EVAL)));
    assert_eq!(exchange.outcome, LegacyOutcome::Response { status: StatusCode::OK, body: Captured::TooLarge });

    let big_request = pattern(2048);
    let response = client.send(with_body(Method::POST, &proxy.url("/evaluations/bulk"), big_request.clone())).await;
    assert_eq!(body_of(response).await, QUEUED);
    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.request_body, Captured::TooLarge);
    assert_eq!(
        exchange.outcome,
        LegacyOutcome::Response { status: StatusCode::ACCEPTED, body: Captured::Complete(Bytes::from(QUEUED)) }
    );
    assert!(legacy.seen()[1].body == big_request, "the upstream must get every byte");
}

#[tokio::test]
async fn requests_the_tap_declines_are_never_delivered() {
    let legacy =
        upstream().route("/health", reply(200).body("ok")).route("/evaluations", reply(202).body(QUEUED)).start().await;
    let tap = RecordingTap::capturing(evaluations_only);
    let proxy = proxy_to(&legacy).tap(&tap).start().await;
    let client = Client::http1();

    let response = client.send(request(Method::GET, &proxy.url("/health"))).await;
    assert_eq!(body_of(response).await, "ok");
    let response = client.send(with_body(Method::POST, &proxy.url("/evaluations"), EVAL)).await;
    assert_eq!(body_of(response).await, QUEUED);

    assert_eq!(tap.asked(), [(Method::GET, "/health".to_owned()), (Method::POST, "/evaluations".to_owned())]);
    let exchange = tap.next_exchange().await;
    assert_eq!((exchange.method, exchange.path_and_query.as_str()), (Method::POST, "/evaluations"));
    tap.assert_no_more_exchanges(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn client_leaving_mid_response_delivers_a_failed_response_body() {
    let never = Arc::new(Notify::new());
    let legacy =
        upstream().route("/results/e-1", reply(200).send("partial").wait_for(&never).send("rest")).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).tap(&tap).start().await;

    let client = Client::http1();
    let response = client.send(request(Method::GET, &proxy.url("/results/e-1"))).await;
    let mut body = response.into_body();
    let first = within("the first chunk", body.frame()).await.expect("a frame").expect("no error");
    assert_eq!(first.into_data().expect("data frame"), "partial");
    drop(body);
    drop(client);

    let exchange = tap.next_exchange().await;
    assert_eq!(exchange.outcome, LegacyOutcome::Response { status: StatusCode::OK, body: Captured::Failed });
    assert_eq!(exchange.request_body, Captured::Complete(Bytes::new()));
    assert_eq!(proxy.settled_stats().await.in_flight, 0);
}

#[tokio::test]
async fn client_leaving_after_its_whole_request_still_gets_the_legacy_response_captured() {
    let legacy =
        upstream().route("/evaluations", reply(202).after(Duration::from_millis(300)).body(QUEUED)).start().await;
    let tap = RecordingTap::capturing_everything();
    let proxy = proxy_to(&legacy).tap(&tap).start().await;

    let url = proxy.url("/evaluations");
    let pending = tokio::spawn(async move { Client::http1().send(with_body(Method::POST, &url, EVAL)).await });
    legacy.wait_for_requests(1).await;
    pending.abort();

    // Legacy ran the submission: the exchange carries its answer, not a cancellation.
    let exchange = tap.next_exchange().await;
    assert_eq!(
        exchange.outcome,
        LegacyOutcome::Response { status: StatusCode::ACCEPTED, body: Captured::Complete(Bytes::from(QUEUED)) }
    );
    assert_eq!(exchange.request_body, Captured::Complete(Bytes::from(EVAL)));
    let stats = proxy.settled_stats().await;
    assert_eq!((stats.in_flight, stats.legacy_unreachable_total, stats.client_errors_total), (0, 0, 0));
}

#[tokio::test]
async fn shutdown_stops_accepting_and_finishes_the_in_flight_request() {
    let legacy = upstream().route("/slow", reply(200).after(Duration::from_millis(500)).body("finished")).start().await;
    let mut proxy = proxy_to(&legacy).start().await;

    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move {
        let response = Client::http1().send(request(Method::GET, &url)).await;
        (response.status(), body_of(response).await)
    });
    legacy.wait_for_requests(1).await;
    proxy.begin_shutdown();

    let (status, body) = within("the in-flight response", in_flight).await.expect("client task");
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("finished")));
    proxy.finished().await.expect("serve returns Ok after draining");
    assert!(tokio::net::TcpStream::connect(proxy.addr).await.is_err(), "the listener should be closed");
}

#[tokio::test]
async fn invalid_config_is_refused_before_serving() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = ProxyConfig {
        legacy: "https://127.0.0.1:1".parse().expect("uri"),
        legacy_timeout: Duration::from_secs(1),
        via: None,
        forwarded_headers: false,
        max_capture_bytes: 1024,
        limits: Default::default(),
    };
    let tap = RecordingTap::capturing_everything();
    let error = serve(listener, config, tap, Arc::new(ProxyStats::new()), CancellationToken::new())
        .await
        .expect_err("https legacy must be refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(error.to_string(), "legacy upstream `https://127.0.0.1:1/` must use the http scheme");
}
