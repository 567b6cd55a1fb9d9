//! The admin listener as a browser and as a script see it, through the real binary: the
//! login form and its session cookie, bearer tokens, `HEAD` on every route, and plain logs.

#[path = "support/sidecar.rs"]
mod sidecar;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use bytes::Bytes;
use hyper::{Method, StatusCode};
use sidecar::{client, http_config, send, Reply, Sidecar};

const TOKEN: &str = "s3cret/+&";
const BROWSER: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
/// Nothing listens there: the admin routes need no upstream.
const NOWHERE: &str = "http://127.0.0.1:9";

fn with_token() -> Sidecar {
    let config = http_config(NOWHERE, NOWHERE, "").replace("[admin]\n", "[admin]\ntoken = \"s3cret/+&\"\n");
    Sidecar::start(&config)
}

async fn request(sidecar: &Sidecar, method: Method, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    send(&client(), method, &sidecar.admin_url(path), headers, Bytes::from(body.to_string())).await
}

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test]
async fn a_browser_logs_in_with_the_token_and_gets_a_session_cookie() {
    let sidecar = with_token();

    // A browser without a session gets the login form, a script the JSON 401.
    let page = request(&sidecar, Method::GET, "/report", &[("accept", BROWSER)], "").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert!(text(&page).contains("<form method=\"post\" action=\"/login\">"), "{}", text(&page));
    assert!(!text(&page).contains("not the admin token"));
    let script = request(&sidecar, Method::GET, "/report", &[], "").await;
    assert_eq!(script.status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&script, "content-type"), "application/json");
    assert_eq!(text(&script), r#"{"error":"missing or wrong bearer token"}"#);
    assert_eq!(header(&script, "www-authenticate"), "Bearer realm=\"shadowdiff\"");

    // A wrong token: the form again, saying so, and no cookie.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let wrong = request(&sidecar, Method::POST, "/login", &form, "token=s3cret").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(text(&wrong).contains("That token is not the admin token."), "{}", text(&wrong));
    assert!(wrong.headers.get("set-cookie").is_none());

    // The right token (form-encoded): a cookie that is not the token, and the report.
    let right = request(&sidecar, Method::POST, "/login", &form, "token=s3cret%2F%2B%26").await;
    assert_eq!(right.status, StatusCode::SEE_OTHER, "{}", text(&right));
    assert_eq!(header(&right, "location"), "/report");
    let cookie = header(&right, "set-cookie");
    let (pair, attributes) = cookie.split_once("; ").expect("attributes");
    assert_eq!(attributes, "HttpOnly; SameSite=Strict; Path=/; Max-Age=43200");
    let id = pair.strip_prefix("shadowdiff_session=").expect("cookie name");
    assert_eq!(id.len(), 64);
    assert!(!id.contains("s3cret"), "the cookie is not the token");
    let session = [("cookie", pair), ("accept", BROWSER)];
    for path in ["/report", "/report.json", "/metrics"] {
        let reply = request(&sidecar, Method::GET, path, &session, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let report = request(&sidecar, Method::GET, "/report", &session, "").await;
    assert!(text(&report).contains("<h1>shadowdiff report</h1>"));

    // The cookie reads; it does not change the sampling (that takes the bearer token).
    let put = request(&sidecar, Method::PUT, "/admin/sampling", &[("cookie", pair)], r#"{"percent": 5}"#).await;
    assert_eq!(put.status, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {TOKEN}");
    let put =
        request(&sidecar, Method::PUT, "/admin/sampling", &[("authorization", &bearer)], r#"{"percent": 5}"#).await;
    assert_eq!(put.status, StatusCode::OK);

    // A made-up cookie opens nothing; logging out closes the session.
    let forged = request(&sidecar, Method::GET, "/report.json", &[("cookie", "shadowdiff_session=00")], "").await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let out = request(&sidecar, Method::POST, "/logout", &[("cookie", pair)], "").await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert_eq!(header(&out, "set-cookie"), "shadowdiff_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    let after = request(&sidecar, Method::GET, "/report.json", &[("cookie", pair)], "").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_a_token_the_login_form_leads_straight_to_the_report() {
    let sidecar = Sidecar::start(&http_config(NOWHERE, NOWHERE, ""));
    let login = request(&sidecar, Method::GET, "/login", &[("accept", BROWSER)], "").await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(header(&login, "location"), "/report");
    let report = request(&sidecar, Method::GET, "/report", &[("accept", BROWSER)], "").await;
    assert_eq!(report.status, StatusCode::OK);
}

#[tokio::test]
async fn head_answers_like_get_on_every_admin_route_without_the_body() {
    let sidecar = with_token();
    let bearer = format!("Bearer {TOKEN}");
    let cases: [(&str, Vec<(&str, &str)>); 9] = [
        ("/healthz", vec![]),
        ("/report", vec![("authorization", &bearer)]),
        ("/report.json", vec![("authorization", &bearer)]),
        ("/metrics", vec![("authorization", &bearer)]),
        ("/report", vec![]),
        ("/report", vec![("accept", BROWSER)]),
        ("/login", vec![]),
        ("/admin/sampling", vec![("authorization", &bearer)]),
        ("/nowhere", vec![("authorization", &bearer)]),
    ];
    for (path, headers) in cases {
        let get = request(&sidecar, Method::GET, path, &headers, "").await;
        let head = request(&sidecar, Method::HEAD, path, &headers, "").await;
        assert_eq!(head.status, get.status, "{path} {headers:?}");
        let mut get_headers = get.headers.clone();
        let mut head_headers = head.headers.clone();
        get_headers.remove("date");
        head_headers.remove("date");
        assert_eq!(head_headers, get_headers, "{path} {headers:?}");
        assert_eq!(header(&head, "content-length"), get.body.len().to_string(), "{path}");
        assert!(head.body.is_empty(), "{path}: HEAD has no body");
    }
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shadowdiff.toml");
    std::fs::write(&path, http_config(NOWHERE, NOWHERE, "")).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowdiff"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("SHADOWDIFF_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("LISTENING line");
    assert!(line.starts_with("LISTENING "), "{line}");
    // The log lines up to the one that says it serves, then the process is ended (how it
    // ends is not the point here).
    let mut logs = String::new();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    for _ in 0..10 {
        if stderr.read_line(&mut logs).expect("stderr") == 0 || logs.contains("shadowdiff serving") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(logs.contains(" INFO shadowdiff::live::serve: shadowdiff serving proxy=127.0.0.1:"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escape codes in piped logs:\n{logs:?}");
}
