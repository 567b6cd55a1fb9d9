//! A browser's way past the admin token: a small login form that exchanges the token for
//! a session cookie, so that a person can open `/report` where scripts send
//! `Authorization: Bearer`.
//!
//! The cookie is never the token: it is a random session id (from the OS generator),
//! kept in memory by [`Sessions`], at most [`MAX_SESSIONS`] at once, each for
//! [`SESSION_TTL`]; a restart logs everyone out. It is `HttpOnly` (no script reads it)
//! and `SameSite=Strict` (no other site's page sends it), and it opens the read-only
//! routes only: changing the sampling still takes the bearer token. The HTTP exchange
//! itself is `crate::live::admin`'s; this module holds the sessions and the page.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie's name.
pub const COOKIE: &str = "shadowdiff_session";
/// Sessions kept at once; the oldest goes first.
pub const MAX_SESSIONS: usize = 64;
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The sessions opened by the login form.
#[derive(Debug, Default)]
pub struct Sessions {
    /// A std mutex: push, retain and a scan of at most 64 short strings, never across an
    /// await. Oldest first.
    open: Mutex<VecDeque<(String, Instant)>>,
}

impl Sessions {
    /// Opens a session and returns its id, the cookie's value.
    pub fn open(&self) -> String {
        let id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|(_, since)| now.duration_since(*since) < SESSION_TTL);
        while open.len() >= MAX_SESSIONS {
            open.pop_front();
        }
        open.push_back((id.clone(), now));
        id
    }

    /// Whether `id` is an open session. Every id is compared in constant time.
    pub fn is_open(&self, id: &str) -> bool {
        let now = Instant::now();
        let open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.iter().fold(false, |found, (session, since)| {
            found | (constant_time_eq(session.as_bytes(), id.as_bytes()) && now.duration_since(*since) < SESSION_TTL)
        })
    }

    /// Closes a session (logout).
    pub fn close(&self, id: &str) {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|(session, _)| !constant_time_eq(session.as_bytes(), id.as_bytes()));
    }
}

/// Compares two secrets in time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Set-Cookie` value that opens a session in the browser.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION_TTL.as_secs())
}

/// The `Set-Cookie` value that removes it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session id in a `Cookie` header value, if there is one.
pub fn session_in(cookie_header: &str) -> Option<&str> {
    cookie_header.split(';').find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The `token` field of a form body (`application/x-www-form-urlencoded`), decoded.
pub fn token_in_form(body: &[u8]) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|pair| pair.strip_prefix(b"token=")).map(form_decode)
}

fn form_decode(text: &[u8]) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let escaped = match text.get(i + 1..i + 3) {
            Some(hex) if text[i] == b'%' && hex.iter().all(u8::is_ascii_hexdigit) => {
                std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            }
            _ => None,
        };
        match (escaped, text[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The login page; `failed` says the last token was wrong. Self-contained: no script, no
/// external resource.
pub fn page(failed: bool) -> String {
    let notice = if failed { "<p class=\"bad\">That token is not the admin token.</p>" } else { "" };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>shadowdiff: log in</title><style>\
         body{{font:16px system-ui,sans-serif;margin:3em auto;max-width:24em;padding:0 1em}}\
         input{{font:inherit;width:100%;box-sizing:border-box;margin:.4em 0;padding:.4em}}\
         .bad{{color:#b00020}}</style></head><body>\
         <h1>shadowdiff</h1><p>This report needs the admin token (<code>[admin] token</code>).</p>{}\
         <form method=\"post\" action=\"/login\">\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <input type=\"submit\" value=\"Open the report\"></form></body></html>\n",
        notice
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_bounded_and_closable() {
        let sessions = Sessions::default();
        let first = sessions.open();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(sessions.is_open(&first));
        assert!(!sessions.is_open("nope"));
        assert!(!sessions.is_open(""));
        for _ in 0..MAX_SESSIONS {
            assert_ne!(sessions.open(), first);
        }
        assert!(!sessions.is_open(&first), "the oldest session goes when the store is full");
        let last = sessions.open();
        sessions.close(&last);
        assert!(!sessions.is_open(&last));
    }

    #[test]
    fn cookies_and_forms_are_read() {
        assert_eq!(session_in("a=b; shadowdiff_session=abc; c=d"), Some("abc"));
        assert_eq!(session_in("shadowdiff_sessionx=abc"), None);
        assert_eq!(session_in("a=b"), None);
        assert_eq!(token_in_form(b"token=s3%2Fcr+et%21&x=1").as_deref(), Some("s3/cr et!"));
        assert_eq!(token_in_form(b"x=1").as_deref(), None);
        assert_eq!(token_in_form(b"token=100%").as_deref(), Some("100%"));
        assert_eq!(set_cookie("abc"), "shadowdiff_session=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200");
    }
}
