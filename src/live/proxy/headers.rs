//! Header rewriting between the client and the legacy upstream (RFC 9110 §7.6).
//!
//! Pure functions over [`HeaderMap`]: hop-by-hop removal and list-valued additions
//! (`Via`, `X-Forwarded-For`). Everything not named here passes through untouched and in
//! order, repeated fields included.

use std::net::IpAddr;

use hyper::header::{
    Entry, HeaderName, HeaderValue, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use hyper::HeaderMap;

/// `X-Forwarded-For`: the chain of client addresses.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the original client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Connection-specific fields that a proxy must not forward (RFC 9110 §7.6.1), plus the
/// legacy `Keep-Alive` and `Proxy-Connection`.
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
];

/// Removes the hop-by-hop fields and every field named in `Connection`.
///
/// Costs one pass over the field names when the message has none of them.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which of the nine are there (most messages carry
    // none, or only `Connection`): cheaper than nine removals, each hashing its name.
    let mut present = [false; 9];
    for name in headers.keys() {
        if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[index] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    if present[0] {
        // Only the listed fields the message has; most lists hold nothing but
        // `keep-alive` or `close`, and `Keep-Alive` goes below anyway.
        let listed: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|token| headers.keys().any(|name| name.as_str().eq_ignore_ascii_case(token)))
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, present) in HOP_BY_HOP.into_iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

/// Appends `value` to the list-valued field `name`, keeping one field line: existing lines
/// are joined with `", "` in order, then `value` goes last.
pub fn append_to_list(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    // One lookup: the usual case (no such field yet) inserts where it looked.
    let mut entry = match headers.entry(name) {
        Entry::Vacant(vacant) => {
            vacant.insert(value);
            return;
        }
        Entry::Occupied(occupied) => occupied,
    };
    let mut joined: Vec<u8> = Vec::new();
    for line in entry.iter() {
        joined.extend_from_slice(line.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(value.as_bytes());
    // Joining valid field values with ", " yields a valid field value; fall back to a
    // separate line rather than lose the addition if that ever fails.
    match HeaderValue::from_bytes(&joined) {
        Ok(merged) => {
            entry.insert(merged);
        }
        Err(_) => entry.append(value),
    }
}

/// The client address as an `X-Forwarded-For` entry (IPv4-mapped addresses as IPv4).
/// A connection computes it once for all its requests.
pub fn forwarded_for(client: IpAddr) -> Option<HeaderValue> {
    HeaderValue::from_str(&client.to_canonical().to_string()).ok()
}

/// Adds the client address (made a header value by [`forwarded_for`]) to
/// `X-Forwarded-For` and `X-Forwarded-Proto: http` when the client did not already name a
/// scheme (a TLS terminator in front knows better).
pub fn add_forwarded(headers: &mut HeaderMap, client: Option<&HeaderValue>) {
    if let Some(value) = client {
        append_to_list(headers, X_FORWARDED_FOR, value.clone());
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{CONTENT_TYPE, SET_COOKIE, VIA};

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
        headers.iter().map(|(n, v)| (n.as_str().to_owned(), v.to_str().expect("ascii").to_owned())).collect()
    }

    #[test]
    fn hop_by_hop_and_connection_listed_fields_go() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Custom"),
            ("connection", "x-second"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic Zm9v"),
            ("x-custom", "1"),
            ("x-second", "2"),
            ("content-type", "text/plain"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(
            pairs(&headers),
            vec![
                ("content-type".to_owned(), "text/plain".to_owned()),
                ("set-cookie".to_owned(), "a=1".to_owned()),
                ("set-cookie".to_owned(), "b=2".to_owned()),
            ]
        );
    }

    #[test]
    fn connection_tokens_that_are_not_names_are_ignored() {
        let mut headers = map(&[("connection", "close, , bad name"), ("content-type", "a")]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(pairs(&headers), vec![("content-type".to_owned(), "a".to_owned())]);
    }

    #[test]
    fn list_append_joins_existing_lines_in_order() {
        let mut headers = map(&[("via", "1.0 fred"), ("via", "1.1 p.example"), ("content-type", "x")]);
        append_to_list(&mut headers, VIA, HeaderValue::from_static("1.1 shadowdiff"));
        assert_eq!(headers.get_all(VIA).iter().count(), 1);
        assert_eq!(headers[VIA], "1.0 fred, 1.1 p.example, 1.1 shadowdiff");
        assert_eq!(headers[CONTENT_TYPE], "x");
    }

    #[test]
    fn list_append_inserts_when_absent() {
        let mut headers = HeaderMap::new();
        append_to_list(&mut headers, VIA, HeaderValue::from_static("1.1 shadowdiff"));
        assert_eq!(pairs(&headers), vec![("via".to_owned(), "1.1 shadowdiff".to_owned())]);
    }

    #[test]
    fn forwarded_appends_client_and_keeps_an_existing_proto() {
        let mut headers = map(&[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]);
        add_forwarded(&mut headers, forwarded_for("::ffff:127.0.0.1".parse().expect("ip")).as_ref());
        assert_eq!(headers[X_FORWARDED_FOR], "203.0.113.9, 127.0.0.1");
        assert_eq!(headers[X_FORWARDED_PROTO], "https");

        let mut fresh = HeaderMap::new();
        add_forwarded(&mut fresh, forwarded_for("192.0.2.7".parse().expect("ip")).as_ref());
        assert_eq!(fresh[X_FORWARDED_FOR], "192.0.2.7");
        assert_eq!(fresh[X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn set_cookie_is_never_merged() {
        let mut headers = map(&[("set-cookie", "a=1"), ("set-cookie", "b=2")]);
        remove_hop_by_hop(&mut headers);
        let cookies: Vec<_> = headers.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }
}
