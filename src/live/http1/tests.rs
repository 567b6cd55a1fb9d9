use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderName, CONTENT_LENGTH, HOST};
use hyper::{HeaderMap, Request as HttpRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

/// An upstream answering each request it reads with the next of `answers` (its raw
/// bytes); it closes a connection after an answer marked `close`. Returns its address,
/// the requests it read (raw), and how many connections it accepted.
async fn upstream(answers: Vec<(&'static str, bool)>) -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (into, count) = (Arc::clone(&seen), Arc::clone(&accepted));
    tokio::spawn(async move {
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let (answers, into) = (Arc::clone(&answers), Arc::clone(&into));
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    // One request: its head, then its Content-Length bytes or its chunks.
                    let request = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                            let length = if head.contains("\r\ntransfer-encoding: chunked") {
                                buffer[end..].windows(7).position(|w| w == b"\r\n0\r\n\r\n").map(|at| at + 7 - 4)
                            } else {
                                Some(
                                    head.lines()
                                        .find_map(|line| line.strip_prefix("content-length: "))
                                        .map_or(0, |n| n.trim().parse::<usize>().expect("length")),
                                )
                            };
                            if let Some(length) = length.filter(|length| buffer.len() >= end + 4 + length) {
                                break buffer.drain(..end + 4 + length).collect::<Vec<u8>>();
                            }
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    into.lock().expect("test lock").push(String::from_utf8_lossy(&request).into_owned());
                    let Some((answer, close)) = answers.lock().expect("test lock").next() else { return };
                    let _ = stream.write_all(answer.as_bytes()).await;
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (address, seen, accepted)
}

fn pool(address: &str) -> Pool {
    let config = PoolConfig { max_idle: 4, idle_timeout: Duration::from_secs(90), tcp_keepalive: None };
    Pool::new(&address.parse().expect("authority"), config, None)
}

/// One exchange through `pool`: status, body, and whether the connection went back.
async fn exchange(pool: &Pool, method: Method, body: &str) -> Result<(u16, String, bool), Error> {
    let mut headers = HeaderMap::new();
    headers.insert("x-marker", HeaderValue::from_static("m"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
    let request =
        Request { method: &method, target: "/evaluations?x=1", headers: &headers, replace: &[], body: body.as_bytes() };
    let (mut connection, head) = pool.send(&request).await?;
    let (bytes, reusable) = connection.body(&head, 64).await?;
    pool.checkin(connection, reusable);
    Ok((head.status.as_u16(), String::from_utf8_lossy(&bytes).into_owned(), reusable))
}

#[tokio::test]
async fn the_request_is_written_with_host_and_its_own_length() {
    let (address, seen, _) = upstream(vec![("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false)]).await;
    let pool = pool(&address);
    assert_eq!(exchange(&pool, Method::POST, "{\"a\":1}").await.expect("answered"), (200, "ok".into(), true));
    assert_eq!(
        seen.lock().expect("test lock")[0],
        format!(
            "POST /evaluations?x=1 HTTP/1.1\r\nhost: {address}\r\nx-marker: m\r\ncontent-length: 7\r\n\r\n{{\"a\":1}}"
        )
    );
}

#[tokio::test]
async fn replaced_fields_are_left_out_and_written_after_the_others() {
    let (address, seen, _) = upstream(vec![("HTTP/1.1 204 No Content\r\n\r\n", false)]).await;
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("client.example"));
    headers.insert("authorization", HeaderValue::from_static("Bearer client"));
    headers.insert("x-tenant", HeaderValue::from_static("t-1"));
    headers.insert("cookie", HeaderValue::from_static("a=1"));
    let replace = [
        (HOST, None),
        (HeaderName::from_static("cookie"), None),
        (HeaderName::from_static("authorization"), Some(HeaderValue::from_static("Bearer shadow"))),
        (HeaderName::from_static("x-shadowdiff"), Some(HeaderValue::from_static("shadow"))),
    ];
    let request = Request { method: &Method::GET, target: "/r", headers: &headers, replace: &replace, body: b"" };
    let (mut connection, head) = pool(&address).send(&request).await.expect("sent");
    assert_eq!(connection.body(&head, 64).await.expect("body").0.len(), 0);
    assert_eq!(
        seen.lock().expect("test lock")[0],
        format!(
            "GET /r HTTP/1.1\r\nhost: {address}\r\nx-tenant: t-1\r\nauthorization: Bearer shadow\r\n\
             x-shadowdiff: shadow\r\n\r\n"
        )
    );
}

/// One exchange of a keep-alive run: what the upstream answers (and whether it then
/// closes the connection), the method sent, and what comes of it: status, body, and
/// whether the connection went back to the pool.
type Step = (&'static str, bool, Method, (u16, &'static str, bool));

/// Sends the steps' requests in turn through one pool, pausing after each so that an
/// upstream's close reaches the idle connection; how many connections they took.
async fn keep_alive_run(steps: Vec<Step>) -> usize {
    let answers = steps.iter().map(|(answer, close, _, _)| (*answer, *close)).collect();
    let (address, _, accepted) = upstream(answers).await;
    let pool = pool(&address);
    for (answer, _, method, (status, body, reused)) in steps {
        let got = exchange(&pool, method, "x").await.expect(answer);
        assert_eq!(got, (status, body.to_owned(), reused), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    accepted.load(Ordering::SeqCst)
}

#[tokio::test]
async fn every_framing_is_read_to_its_end() {
    let chunked = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n";
    let steps = vec![
        ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, Method::POST, (200, "hello", true)),
        (chunked, false, Method::POST, (201, "abcde", true)),
        ("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n", false, Method::GET, (204, "", true)),
        ("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\nxyz", false, Method::GET, (200, "xyz", true)),
        ("HTTP/1.1 503 Busy\r\n\r\nuntil close", true, Method::GET, (503, "until close", false)),
    ];
    assert_eq!(keep_alive_run(steps).await, 1, "one keep-alive connection for all five");
}

#[tokio::test]
async fn an_idle_connection_keeps_no_large_body_alive() {
    let answer: &'static str =
        format!("HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n{}", "x".repeat(100_000)).leak();
    let (address, _, _) = upstream(vec![(answer, false)]).await;
    let pool = pool(&address);
    let headers = HeaderMap::new();
    let request = Request { method: &Method::GET, target: "/", headers: &headers, replace: &[], body: b"" };
    let (mut connection, head) = pool.send(&request).await.expect("sent");
    let (body, reusable) = connection.body(&head, 1 << 20).await.expect("body");
    assert_eq!((body.len(), reusable), (100_000, true));
    let body_memory = body.as_ptr_range();
    let read_at = connection.read.as_ptr();
    assert!(!(body_memory.start..=body_memory.end).contains(&read_at), "the body's buffer is the body's alone");
}

#[tokio::test]
async fn a_connection_asked_to_close_or_closed_while_idle_is_not_reused() {
    let steps = vec![
        ("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\na", true, Method::GET, (200, "a", false)),
        // Kept as reusable, then closed by the upstream while idle.
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb", true, Method::GET, (200, "b", true)),
        // HTTP/1.0 without keep-alive closes after its response.
        ("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nc", false, Method::GET, (200, "c", false)),
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nd", false, Method::GET, (200, "d", true)),
    ];
    assert_eq!(keep_alive_run(steps).await, 4);
}

#[tokio::test]
async fn broken_heads_and_bodies_are_errors_naming_what_broke() {
    let endless_trailers: &'static str =
        format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n{}\r\n", "t: x\r\n".repeat(101)).leak();
    let cases: Vec<(&'static str, &str)> = vec![
        (endless_trailers, "more than 100 trailer fields"),
        ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "body broke off: connection closed early"),
        ("HTTP/1.1 200 OK\r\ncontent-length: 65\r\n\r\n", "length limit exceeded (64 bytes)"),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size line"),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabXY", "chunk not followed by CRLF"),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n41\r\n", "length limit exceeded (64 bytes)"),
        ("HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\nx", "invalid response head: content-length values differ"),
        ("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "invalid response head: invalid content-length \"-1\""),
        ("SMTP ready\r\n\r\n", "invalid response head: invalid HTTP version"),
        ("HTTP/1.1 200 OK\r\ncontent-le", "connection closed before the response head was complete"),
        ("HTTP/1.1 101 Switching Protocols\r\n\r\n", "invalid response head: 101 Switching Protocols is not supported"),
    ];
    for (answer, want) in cases {
        let (address, _, _) = upstream(vec![(answer, true)]).await;
        let error = exchange(&pool(&address), Method::POST, "x").await.expect_err(answer);
        assert_eq!(error.to_string(), want, "{answer:?}");
    }
    let refused = pool("127.0.0.1:1");
    let error = exchange(&refused, Method::GET, "").await.expect_err("nothing listens on port 1");
    assert!(matches!(error, Error::Connect(_)), "{error}");
}

#[tokio::test]
async fn under_a_cap_a_request_waits_for_a_connection_to_come_back() {
    let answers = vec![("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1", false); 3];
    let (address, _, accepted) = upstream(answers).await;
    let config = PoolConfig { max_idle: 1, idle_timeout: Duration::from_secs(90), tcp_keepalive: None };
    let pool = Pool::new(&address.parse().expect("authority"), config, Some(Arc::new(Semaphore::new(1))));
    let headers = HeaderMap::new();
    let request = Request { method: &Method::GET, target: "/", headers: &headers, replace: &[], body: b"" };
    let (mut first, head) = pool.send(&request).await.expect("first");
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let headers = HeaderMap::new();
            let request = Request { method: &Method::GET, target: "/", headers: &headers, replace: &[], body: b"" };
            let (mut connection, head) = pool.send(&request).await.expect("second");
            connection.body(&head, 64).await.expect("body").0
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "the second request waits: the only place is taken");
    let (body, reusable) = first.body(&head, 64).await.expect("body");
    assert_eq!((body.as_ref(), reusable), (&b"1"[..], true));
    pool.checkin(first, reusable);
    assert_eq!(waiting.await.expect("joined").as_ref(), b"1");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "the second request took the first's connection");
}

#[test]
fn the_host_header_names_the_port_unless_it_is_80() {
    let pool = pool("api:8000");
    assert_eq!((pool.inner.host.as_bytes(), pool.inner.address.as_str()), (&b"api:8000"[..], "api:8000"));
    let pool = pool_for(&Authority::from_static("api"));
    assert_eq!((pool.inner.host.as_bytes(), pool.inner.address.as_str()), (&b"api"[..], "api:80"));
}

fn pool_for(authority: &Authority) -> Pool {
    let config = PoolConfig { max_idle: 4, idle_timeout: Duration::from_secs(90), tcp_keepalive: None };
    Pool::new(authority, config, None)
}

#[derive(Debug, thiserror::Error)]
#[error("outer")]
struct Outer(#[source] std::io::Error);

#[test]
fn error_chain_keeps_every_cause() {
    let error = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
    assert_eq!(error_chain(&error), "outer: refused");
}

/// A request body fed through a channel: no size known, each frame as it is sent, over
/// when the sender is dropped; an `Err` sent is the body failing.
struct Fed(mpsc::UnboundedReceiver<Result<Bytes, &'static str>>);

impl Body for Fed {
    type Data = Bytes;
    type Error = &'static str;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
        self.0.poll_recv(cx).map(|sent| sent.map(|sent| sent.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn fed(pieces: &[&'static str]) -> (Fed, mpsc::UnboundedSender<Result<Bytes, &'static str>>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    for piece in pieces {
        sender.send(Ok(Bytes::from_static(piece.as_bytes()))).expect("open");
    }
    (Fed(receiver), sender)
}

fn parts(method: Method, uri: &str, headers: &[(&'static str, &'static str)]) -> hyper::http::request::Parts {
    let mut request = HttpRequest::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).expect("request").into_parts().0
}

/// A streamed exchange as seen: status, header fields (`name=value`), whole body.
type Seen = (u16, String, String);

/// One streamed exchange.
async fn streamed<B>(pool: &Pool, parts: hyper::http::request::Parts, body: B) -> Result<Seen, Error>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let response = pool.send_streamed(&parts, body).await?;
    let status = response.status().as_u16();
    let fields = response.headers().iter().map(|(name, value)| format!("{name}={}", value.to_str().unwrap_or("?")));
    let fields = fields.collect::<Vec<_>>().join(" ");
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, fields, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn a_streamed_request_is_framed_as_hyper_frames_it_on_one_kept_connection() {
    let answers = vec![
        ("HTTP/1.1 202 Accepted\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok", false),
        ("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nt: x\r\n\r\n", false),
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nc", false),
        ("HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", false),
    ];
    let (address, seen, accepted) = upstream(answers).await;
    let pool = pool(&address);
    let body = Full::new(Bytes::from_static(b"{\"a\":1}"));
    let declared = parts(Method::POST, "http://legacy:8000/e?x=1", &[("content-length", "7"), ("x-marker", "m")]);
    assert_eq!(
        streamed(&pool, declared, body).await.expect("declared length"),
        (202, "content-type=text/plain content-length=2".into(), "ok".into())
    );
    let (chunks, sender) = fed(&["ab", "cde"]);
    drop(sender);
    let chunked = streamed(&pool, parts(Method::PUT, "/c", &[("host", "client.example")]), chunks);
    assert_eq!(chunked.await.expect("chunked"), (200, "transfer-encoding=chunked".into(), "abcde".into()));
    let sized = streamed(&pool, parts(Method::PATCH, "/s", &[]), Full::new(Bytes::from_static(b"12345")));
    assert_eq!(sized.await.expect("sized"), (200, "content-length=1".into(), "c".into()));
    let empty = streamed(&pool, parts(Method::GET, "/g", &[]), Full::new(Bytes::new()));
    assert_eq!(empty.await.expect("no body"), (304, "content-length=9".into(), String::new()));
    assert_eq!(
        *seen.lock().expect("test lock"),
        [
            format!("POST /e?x=1 HTTP/1.1\r\nhost: {address}\r\ncontent-length: 7\r\nx-marker: m\r\n\r\n{{\"a\":1}}"),
            "PUT /c HTTP/1.1\r\nhost: client.example\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
                .to_owned(),
            format!("PATCH /s HTTP/1.1\r\nhost: {address}\r\ncontent-length: 5\r\n\r\n12345"),
            format!("GET /g HTTP/1.1\r\nhost: {address}\r\n\r\n"),
        ]
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one keep-alive connection for all four");
}

#[tokio::test]
async fn a_response_body_dropped_half_read_takes_its_connection_with_it() {
    let answers = vec![
        ("HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello", false),
        ("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb", false),
    ];
    let (address, _, accepted) = upstream(answers).await;
    let pool = pool(&address);
    let response = pool.send_streamed(&parts(Method::GET, "/", &[]), Full::new(Bytes::new())).await.expect("head");
    let mut body = response.into_body();
    assert_eq!(body.size_hint().exact(), Some(10));
    let first = body.frame().await.expect("a frame").expect("no error").into_data().expect("data");
    assert_eq!((&first[..], body.size_hint().exact(), body.is_end_stream()), (&b"hello"[..], Some(5), false));
    drop(body);
    let next = streamed(&pool, parts(Method::GET, "/", &[]), Full::new(Bytes::new())).await.expect("next");
    assert_eq!(next.2, "b");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the half-read connection was not reused");
}

#[tokio::test]
async fn an_answer_before_the_request_body_ends_is_the_response_and_its_connection_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("head"));
        }
        let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig";
        stream.write_all(answer).await.expect("answer");
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let pool = pool(&address);
    // The body never ends: its sender stays open.
    let (body, _sender) = fed(&["ab"]);
    let answered = streamed(&pool, parts(Method::POST, "/", &[]), body);
    let answered = tokio::time::timeout(Duration::from_secs(2), answered).await.expect("in time");
    assert_eq!(answered.expect("answered"), (413, "content-length=3".into(), "big".into()));
    assert!(pool.inner.lock().is_empty(), "a connection whose request was cut short is not kept");
}

#[tokio::test]
async fn a_request_body_that_breaks_or_misstates_its_length_is_named() {
    let (address, _, _) = upstream(vec![]).await;
    let pool = pool(&address);
    let (failing, sender) = fed(&["ab"]);
    sender.send(Err("client went away")).expect("open");
    let cases: Vec<(&str, Result<Seen, Error>)> = vec![
        ("request body failed: client went away", streamed(&pool, parts(Method::POST, "/", &[]), failing).await),
        (
            "request body failed: ended 5 bytes short of its content-length",
            streamed(&pool, parts(Method::POST, "/", &[("content-length", "10")]), Full::new(Bytes::from("short")))
                .await,
        ),
        (
            "request body failed: longer than its content-length",
            streamed(&pool, parts(Method::POST, "/", &[("content-length", "2")]), Full::new(Bytes::from("long"))).await,
        ),
    ];
    for (want, got) in cases {
        assert_eq!(got.expect_err(want).to_string(), want);
    }
}
