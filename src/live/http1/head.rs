//! Response heads (RFC 9112 §4, §6.3): what a final head says about its body and its
//! connection, and, for a response that is passed on, its header fields.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, StatusCode};

use super::decode::Framing;
use super::{Error, MAX_HEADERS};

/// A final response head, read; its body still on the connection.
#[derive(Debug)]
pub struct Head {
    /// The status.
    pub status: StatusCode,
    /// Its header fields, when they were asked for (else empty).
    pub(super) headers: HeaderMap,
    pub(super) framing: Framing,
    /// Whether the connection may carry another exchange after this one.
    pub(super) keep_alive: bool,
}

/// The final response head at the front of `read`, taken off it if it is all there; an
/// interim (1xx) one is taken off and skipped. With `fields`, the head keeps its header
/// fields, their values sharing the bytes read.
pub(super) fn parse(read: &mut BytesMut, method: &Method, fields: bool) -> Result<Option<Head>, Error> {
    loop {
        // Left uninitialised: zeroing room for every possible field costs more than the
        // parse of a usual head.
        let mut parsed = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            read,
            &mut parsed,
        ) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(error) => return Err(Error::Head(error.to_string())),
        };
        let code = response.code.unwrap_or_default();
        let status = StatusCode::from_u16(code).map_err(|_| Error::Head(format!("status {code}")))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Head("101 Switching Protocols is not supported".into()));
        }
        if status.is_informational() {
            let _ = read.split_to(length);
            continue;
        }
        let (framing, keep_alive) = framing(status, response.version == Some(1), response.headers, method)?;
        if !fields {
            let _ = read.split_to(length);
            return Ok(Some(Head { status, headers: HeaderMap::new(), framing, keep_alive }));
        }
        // Where each field lies in the head, so that the values can share its bytes.
        let start = read.as_ptr() as usize;
        let places: Vec<_> = response
            .headers
            .iter()
            .map(|field| {
                let name = field.name.as_ptr() as usize - start;
                let value = field.value.as_ptr() as usize - start;
                (name, field.name.len(), value, field.value.len())
            })
            .collect();
        let head = read.split_to(length).freeze();
        let headers = header_map(&head, &places)?;
        return Ok(Some(Head { status, headers, framing, keep_alive }));
    }
}

/// The fields at `places` (name and value offsets and lengths) in `head`.
fn header_map(head: &Bytes, places: &[(usize, usize, usize, usize)]) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::with_capacity(places.len());
    for &(name, name_length, value, value_length) in places {
        let name = HeaderName::from_bytes(&head[name..name + name_length]).map_err(|_| {
            Error::Head(format!("invalid field name {:?}", String::from_utf8_lossy(&head[name..name + name_length])))
        })?;
        let value = HeaderValue::from_maybe_shared(head.slice(value..value + value_length))
            .map_err(|_| Error::Head(format!("invalid value in field {name}")))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// How the body of a final response is framed, and whether its connection stays open.
fn framing(
    status: StatusCode,
    http11: bool,
    fields: &[httparse::Header<'_>],
    method: &Method,
) -> Result<(Framing, bool), Error> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut close = !http11;
    for field in fields {
        // Only three names matter here; the length rules out most fields at once.
        if !matches!(field.name.len(), 10 | 14 | 17) {
            continue;
        }
        let value = std::str::from_utf8(field.value).unwrap_or("");
        if field.name.eq_ignore_ascii_case("content-length") {
            fold_content_length(value, &mut length).map_err(Error::Head)?;
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            // Chunked counts only as the last coding.
            chunked = value.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if field.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && !http11 {
                    close = false;
                }
            }
        }
    }
    let framing = if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        Framing::Empty
    } else if encoded {
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(length) => Framing::Length(length),
            None => Framing::UntilClose,
        }
    };
    // A body that runs until the close leaves nothing to reuse.
    Ok((framing, !close && framing != Framing::UntilClose))
}

/// Folds one `Content-Length` field's value into `length`, what the fields before it gave:
/// a list of equal lengths is one length (RFC 9110 §8.6); anything else is named.
pub(super) fn fold_content_length(value: &str, length: &mut Option<u64>) -> Result<(), String> {
    for part in value.split(',') {
        let parsed: u64 = part.trim().parse().map_err(|_| format!("invalid content-length {value:?}"))?;
        if length.is_some_and(|known| known != parsed) {
            return Err("content-length values differ".into());
        }
        *length = Some(parsed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_repeats_and_interim_heads_are_skipped() {
        let wire = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\
                    Set-Cookie: a=1\r\nX-Obs: caf\u{e9}\r\nset-cookie: b=2\r\ncontent-length: 2\r\n\r\nok";
        let mut read = BytesMut::from(wire.as_bytes());
        let head = parse(&mut read, &Method::POST, true).expect("valid").expect("whole");
        assert_eq!((head.status, head.framing, head.keep_alive), (StatusCode::CREATED, Framing::Length(2), true));
        let fields: Vec<(String, &[u8])> =
            head.headers.iter().map(|(name, value)| (name.to_string(), value.as_bytes())).collect();
        assert_eq!(
            fields,
            [
                ("content-type".to_owned(), &b"application/json"[..]),
                ("set-cookie".to_owned(), b"a=1"),
                ("set-cookie".to_owned(), b"b=2"),
                ("x-obs".to_owned(), "caf\u{e9}".as_bytes()),
                ("content-length".to_owned(), b"2"),
            ]
        );
        assert_eq!(&read[..], b"ok", "the body stays behind");
    }

    #[test]
    fn without_fields_the_head_is_only_its_framing() {
        let mut read = BytesMut::from(&b"HTTP/1.0 200 OK\r\nx: y\r\n\r\n"[..]);
        let head = parse(&mut read, &Method::GET, false).expect("valid").expect("whole");
        assert!(head.headers.is_empty());
        assert_eq!((head.framing, head.keep_alive), (Framing::UntilClose, false));
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx: "[..]);
        assert!(parse(&mut partial, &Method::GET, true).expect("valid so far").is_none());
        assert_eq!(partial.len(), 20, "nothing taken off a partial head");
    }
}
