//! A response body's framing, undone a piece at a time (RFC 9112 §6 and §7.1): pure, over
//! the bytes read so far, so the same rules serve a body read whole and one that streams.

use bytes::{Buf, Bytes, BytesMut};

use super::{Error, MAX_HEADERS};

/// Longest chunk-size or trailer line.
pub(super) const MAX_LINE_BYTES: usize = 4096;

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// Where a body stands: what is left of it, as far as its framing tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decoder {
    /// This many bytes are still to come.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Everything until the connection closes.
    UntilClose,
    /// The body is over.
    Done,
}

/// The part of a chunked body next expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// A chunk-size line.
    Size,
    /// This many bytes of chunk data.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields (this many read so far), up to an empty line.
    Trailers(usize),
}

impl Decoder {
    /// The decoder for a body framed so.
    pub(super) fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty | Framing::Length(0) => Decoder::Done,
            Framing::Length(length) => Decoder::Length(length),
            Framing::Chunked => Decoder::Chunked(Chunk::Size),
            Framing::UntilClose => Decoder::UntilClose,
        }
    }

    /// Whether the body is over.
    pub(super) fn is_done(&self) -> bool {
        *self == Decoder::Done
    }

    /// Bytes of body data known to be still to come: the rest of the body or, in a chunked
    /// one, of the current chunk.
    pub(super) fn announced(&self) -> u64 {
        match self {
            Decoder::Length(left) | Decoder::Chunked(Chunk::Data(left)) => *left,
            _ => 0,
        }
    }

    /// Takes the next piece of body data off the front of `read`: `None` when `read` holds
    /// no more of it (more must be read, unless the body [is done](Self::is_done)). Framing
    /// bytes are consumed on the way; data comes out without a copy.
    pub(super) fn decode(&mut self, read: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        loop {
            match self {
                Decoder::Done => return Ok(None),
                Decoder::Length(left) => {
                    let Some(piece) = take(read, left) else { return Ok(None) };
                    if *left == 0 {
                        *self = Decoder::Done;
                    }
                    return Ok(Some(piece));
                }
                Decoder::UntilClose => {
                    return Ok((!read.is_empty()).then(|| read.split().freeze()));
                }
                Decoder::Chunked(Chunk::Data(left)) => {
                    let Some(piece) = take(read, left) else { return Ok(None) };
                    if *left == 0 {
                        *self = Decoder::Chunked(Chunk::DataEnd);
                    }
                    return Ok(Some(piece));
                }
                Decoder::Chunked(Chunk::DataEnd) => {
                    if read.len() < 2 {
                        return Ok(None);
                    }
                    if &read[..2] != b"\r\n" {
                        return Err(Error::Body("chunk not followed by CRLF".into()));
                    }
                    read.advance(2);
                    *self = Decoder::Chunked(Chunk::Size);
                }
                Decoder::Chunked(Chunk::Size) => {
                    let Some(line) = line(read)? else { return Ok(None) };
                    *self = match chunk_size(&line)? {
                        0 => Decoder::Chunked(Chunk::Trailers(0)),
                        size => Decoder::Chunked(Chunk::Data(size)),
                    };
                }
                Decoder::Chunked(Chunk::Trailers(count)) => {
                    let Some(line) = line(read)? else { return Ok(None) };
                    if line.is_empty() {
                        *self = Decoder::Done;
                    } else if *count == MAX_HEADERS {
                        return Err(Error::Body(format!("more than {MAX_HEADERS} trailer fields")));
                    } else {
                        *count += 1;
                    }
                }
            }
        }
    }

    /// The connection closed after everything read was decoded: the end of a body that
    /// runs until then, and a broken one otherwise.
    pub(super) fn closed(&mut self) -> Result<(), Error> {
        match self {
            Decoder::UntilClose | Decoder::Done => {
                *self = Decoder::Done;
                Ok(())
            }
            _ => Err(Error::Body("body broke off: connection closed early".into())),
        }
    }
}

/// Up to `left` bytes off the front of `read`, counted off `left`; `None` if it is empty.
fn take(read: &mut BytesMut, left: &mut u64) -> Option<Bytes> {
    if read.is_empty() {
        return None;
    }
    let length = usize::try_from(*left).map_or(read.len(), |left| left.min(read.len()));
    *left -= length as u64;
    Some(read.split_to(length).freeze())
}

/// The next line off the front of `read`, without its CRLF; `None` until it is all there.
fn line(read: &mut BytesMut) -> Result<Option<BytesMut>, Error> {
    match read.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) if end <= MAX_LINE_BYTES => {
            let mut line = read.split_to(end + 2);
            line.truncate(end);
            Ok(Some(line))
        }
        None if read.len() <= MAX_LINE_BYTES => Ok(None),
        _ => Err(Error::Body(format!("chunk line longer than {MAX_LINE_BYTES} bytes"))),
    }
}

/// The size a chunk-size line gives, its extensions ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let size = line.split(|byte| *byte == b';').next().unwrap_or_default();
    std::str::from_utf8(size)
        .ok()
        .map(str::trim)
        .filter(|size| !size.is_empty())
        .and_then(|size| u64::from_str_radix(size, 16).ok())
        .ok_or_else(|| Error::Body("invalid chunk size line".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed `step` bytes at a time: the pieces, and whether the body ended.
    fn feed(framing: Framing, wire: &[u8], step: usize) -> Result<(Vec<Bytes>, bool), Error> {
        let mut decoder = Decoder::new(framing);
        let mut read = BytesMut::new();
        let mut pieces = Vec::new();
        for part in wire.chunks(step.max(1)) {
            read.extend_from_slice(part);
            while let Some(piece) = decoder.decode(&mut read)? {
                pieces.push(piece);
            }
        }
        Ok((pieces, decoder.is_done()))
    }

    fn joined(pieces: &[Bytes]) -> Vec<u8> {
        pieces.iter().flat_map(|piece| piece.iter().copied()).collect()
    }

    #[test]
    fn a_chunked_body_decodes_the_same_however_it_is_split() {
        let wire = b"3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\ntrailer: t\r\n\r\n";
        for step in 1..=wire.len() {
            let (pieces, done) = feed(Framing::Chunked, wire, step).expect("valid");
            assert_eq!((joined(&pieces), done), (b"abc0123456789".to_vec(), true), "step {step}");
        }
        let (pieces, _) = feed(Framing::Chunked, wire, wire.len()).expect("valid");
        assert_eq!(pieces, ["abc", "0123456789"], "read at once, one piece per chunk");
    }

    #[test]
    fn a_length_body_stops_at_its_length_and_leaves_the_rest() {
        let mut decoder = Decoder::new(Framing::Length(5));
        let mut read = BytesMut::from(&b"hel"[..]);
        assert_eq!(decoder.decode(&mut read).expect("ok"), Some(Bytes::from("hel")));
        assert_eq!((decoder.decode(&mut read).expect("ok"), decoder.announced()), (None, 2));
        read.extend_from_slice(b"loHTTP/1.1");
        assert_eq!(decoder.decode(&mut read).expect("ok"), Some(Bytes::from("lo")));
        assert!(decoder.is_done());
        assert_eq!(&read[..], b"HTTP/1.1", "the next response's bytes stay");
        assert_eq!(Decoder::new(Framing::Length(0)), Decoder::Done);
        assert_eq!(Decoder::new(Framing::Empty), Decoder::Done);
    }

    #[test]
    fn only_a_body_that_runs_until_close_ends_at_a_close() {
        let mut until_close = Decoder::new(Framing::UntilClose);
        assert!(until_close.closed().is_ok() && until_close.is_done());
        for mut broken in [Decoder::new(Framing::Length(3)), Decoder::new(Framing::Chunked)] {
            let error = broken.closed().expect_err("broke off");
            assert_eq!(error.to_string(), "body broke off: connection closed early");
        }
    }

    #[test]
    fn broken_framing_is_named() {
        let cases: [(&[u8], String); 5] = [
            (b"zz\r\n", "invalid chunk size line".into()),
            (b"\r\n", "invalid chunk size line".into()),
            (b"2\r\nabXY", "chunk not followed by CRLF".into()),
            (&[b'1'; MAX_LINE_BYTES + 1], format!("chunk line longer than {MAX_LINE_BYTES} bytes")),
            (b"1ffffffffffffffff\r\n", "invalid chunk size line".into()),
        ];
        for (wire, want) in cases {
            let error = feed(Framing::Chunked, wire, wire.len()).expect_err("broken");
            assert_eq!(error.to_string(), want, "{:?}", String::from_utf8_lossy(wire));
        }
    }
}
