//! Reading well-formed JSON quickly: the reader behind replay's fast path.
//!
//! serde_json reads through layers of generic visitor calls; on the replay path that was
//! most of the time spent per evaluation. A [`Scanner`] reads text in one pass and writes
//! documents straight into a [`Doc`]'s items.
//!
//! It is deliberately incomplete. Whenever it meets something it is not sure to read
//! exactly as serde_json would (any syntax error, a surrogate escape, a number of a rare
//! shape, deep nesting) it gives up and returns `None`, and its caller reads the text with
//! serde_json instead, which then produces the same result or the exact error message.
//! Numbers of the common shapes are computed here to the same bits serde_json computes;
//! any other number is handed to serde_json's own number parser.

use std::borrow::Cow;
use std::str::FromStr;

use serde_json::Number;

use super::{Builder, Doc, DOC_ITEMS};

/// Deeper documents are left to serde_json, which enforces its own nesting limit (128).
const MAX_DEPTH: usize = 64;

/// Bytes that end a plain run inside a string: the closing quote, an escape, or a control
/// character (which JSON forbids unescaped).
static STRING_SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// A cursor over JSON text. Every reading method returns `None` when the text is not what
/// it can read (the cursor is then somewhere inside it: give the whole text up).
pub(crate) struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    /// Index of the next byte to read.
    at: usize,
    /// The document being read.
    builder: Builder<'a>,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Scanner<'a> {
        Scanner { text, bytes: text.as_bytes(), at: 0, builder: Builder::default() }
    }

    /// True once every byte has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// The next byte, not consumed.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Consumes and returns the next byte.
    pub(crate) fn next_byte(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    /// Consumes `byte` if it comes next.
    pub(crate) fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        self.at += usize::from(found);
        found
    }

    /// Consumes `byte`, which must come next.
    pub(crate) fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// Consumes `word` (`true`, `null`...), which must come next, and returns `value`.
    pub(crate) fn literal<T>(&mut self, word: &[u8], value: T) -> Option<T> {
        if !self.bytes.get(self.at..)?.starts_with(word) {
            return None;
        }
        self.at += word.len();
        Some(value)
    }

    /// Skips JSON white space.
    pub(crate) fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Reads one value, whatever it is, as a document of its own.
    pub(crate) fn document(&mut self) -> Option<Doc<'a>> {
        self.builder.reserve(DOC_ITEMS);
        self.value(0)?;
        Some(std::mem::take(&mut self.builder).finish())
    }

    /// Reads a string: borrowed from the text when it has no escapes.
    pub(crate) fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.at;
        self.skip_plain();
        match self.peek()? {
            b'"' => {
                let text = self.text.get(start..self.at)?;
                self.at += 1;
                Some(Cow::Borrowed(text))
            }
            b'\\' => self.escaped_string(start).map(Cow::Owned),
            _ => None, // a control character
        }
    }

    /// Reads a number.
    pub(crate) fn number(&mut self) -> Option<Number> {
        match self.scan_number()? {
            Scanned::Unsigned(n) => Some(Number::from(n)),
            Scanned::Decimal(x) => Number::from_f64(x),
            Scanned::Other(number) => Some(number),
        }
    }

    /// Reads a number. The common shapes are read here in one pass: integers of up to 18
    /// digits (serde_json keeps them as exactly that `u64`) and decimals of up to 15 digits
    /// (see [`decimal`]). Anything else (a sign on an integer, an exponent, more digits, or
    /// what JSON does not allow: `01`, `1.`, `-`) goes to serde_json's own number parser.
    #[inline(always)]
    fn scan_number(&mut self) -> Option<Scanned> {
        let start = self.at;
        let negative = self.eat(b'-');
        let whole_start = self.at;
        let significand = self.digits(0);
        let whole = self.at - whole_start;
        let (fraction, significand) = if self.eat(b'.') {
            let from = self.at;
            let significand = self.digits(significand);
            (Some(self.at - from), significand)
        } else {
            (None, significand)
        };
        let leading_zero = whole > 1 && self.bytes.get(whole_start) == Some(&b'0');
        let more = matches!(self.peek(), Some(b'0'..=b'9' | b'e' | b'E' | b'+' | b'-' | b'.'));
        if whole > 0 && !leading_zero && !more {
            match fraction {
                None if !negative && whole <= 18 => return Some(Scanned::Unsigned(significand)),
                Some(fraction) if fraction > 0 && whole + fraction <= 15 => {
                    return Some(Scanned::Decimal(decimal(negative, significand, fraction)));
                }
                _ => {}
            }
        }
        self.at = start;
        while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
            self.at += 1;
        }
        Number::from_str(self.text.get(start..self.at)?).ok().map(Scanned::Other)
    }

    /// Moves past a run of digits, appending them to `significand` (wrapping around when
    /// too long, which [`Scanner::scan_number`] then does not use).
    #[inline(always)]
    fn digits(&mut self, mut significand: u64) -> u64 {
        let mut at = self.at;
        while let Some(digit @ b'0'..=b'9') = self.bytes.get(at).copied() {
            significand = significand.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
            at += 1;
        }
        self.at = at;
        significand
    }

    /// Writes one value into the document.
    // Inlined into its callers, so that a scalar goes from the text into its item in
    // registers. Containers stay calls: there are few of them.
    #[inline(always)]
    fn value(&mut self, depth: usize) -> Option<()> {
        self.skip_whitespace();
        match self.peek()? {
            b'"' => self.string_item(false),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true", ()).map(|()| self.builder.bool(true)),
            b'f' => self.literal(b"false", ()).map(|()| self.builder.bool(false)),
            b'n' => self.literal(b"null", ()).map(|()| self.builder.null()),
            b'-' | b'0'..=b'9' => {
                match self.scan_number()? {
                    Scanned::Unsigned(n) => self.builder.unsigned(n),
                    Scanned::Decimal(x) => self.builder.float(x),
                    Scanned::Other(number) => self.builder.number(&number),
                }
                Some(())
            }
            _ => None,
        }
    }

    #[inline(never)]
    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'{')?;
        let at = self.builder.open(true);
        let mut count = 0;
        self.skip_whitespace();
        if !self.eat(b'}') {
            loop {
                self.skip_whitespace();
                self.string_item(true)?;
                self.skip_whitespace();
                self.expect(b':')?;
                self.value(depth)?;
                count += 1;
                self.skip_whitespace();
                match self.next_byte()? {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        self.builder.close(at, count);
        Some(())
    }

    #[inline(never)]
    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'[')?;
        let at = self.builder.open(false);
        let mut count = 0;
        self.skip_whitespace();
        if !self.eat(b']') {
            loop {
                self.value(depth)?;
                count += 1;
                self.skip_whitespace();
                match self.next_byte()? {
                    b',' => {}
                    b']' => break,
                    _ => return None,
                }
            }
        }
        self.builder.close(at, count);
        Some(())
    }

    /// Writes the string at the cursor, a value or (`key`) an object key, into the document.
    #[inline(always)]
    fn string_item(&mut self, key: bool) -> Option<()> {
        self.expect(b'"')?;
        let start = self.at;
        self.skip_plain();
        match self.peek()? {
            b'"' => {
                let text = self.text.get(start..self.at)?;
                self.at += 1;
                self.builder.text(text, key);
            }
            b'\\' => {
                let decoded = self.escaped_string(start)?;
                self.builder.decoded(decoded, key);
            }
            _ => return None, // a control character
        }
        Some(())
    }

    /// The rest of a string that has escapes, from `start` (just after its opening quote).
    #[inline(never)]
    fn escaped_string(&mut self, start: usize) -> Option<String> {
        let mut out = String::with_capacity(self.at - start + 16);
        out.push_str(self.text.get(start..self.at)?);
        loop {
            match self.next_byte()? {
                b'"' => return Some(out),
                b'\\' => out.push(self.escape()?),
                _ => return None, // a control character
            }
            let run = self.at;
            self.skip_plain();
            out.push_str(self.text.get(run..self.at)?);
        }
    }

    /// The character an escape (after its backslash) stands for. Surrogates, paired or not,
    /// are left to serde_json: `char::from_u32` refuses them.
    fn escape(&mut self) -> Option<char> {
        Some(match self.next_byte()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hex = self.text.get(self.at..self.at + 4)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                self.at += 4;
                char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
            }
            _ => return None,
        })
    }

    /// Moves past bytes that need no attention inside a string: eight at a time (outputs can
    /// be megabytes long), then one at a time for the last few bytes of the text.
    #[inline(always)]
    fn skip_plain(&mut self) {
        // A local cursor: the compiler keeps it in a register, not in `self`.
        let mut at = self.at;
        while let Some(chunk) = self.bytes.get(at..at + 8) {
            match first_special(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]))) {
                Some(offset) => {
                    self.at = at + offset;
                    return;
                }
                None => at += 8,
            }
        }
        while self.bytes.get(at).is_some_and(|&b| !STRING_SPECIAL[usize::from(b)]) {
            at += 1;
        }
        self.at = at;
    }
}

/// A number as read: the common shapes skip `serde_json::Number` on their way to an item.
enum Scanned {
    Unsigned(u64),
    Decimal(f64),
    Other(Number),
}

/// Where the first quote, backslash or control character is among the eight bytes of
/// `word` (little-endian: byte 0 first), if any. The classic bit tricks: in
/// `(x - 0x01..01 * n) & !x & 0x80..80` the lowest byte with its high bit set is the first
/// byte of `x` below `n` (for `n` <= 128; bytes after it may be flagged by the borrow, but
/// never bytes before), and a byte equal to `c` is a zero byte of `x ^ (0x01..01 * c)`.
/// Tested exhaustively below.
#[inline(always)]
fn first_special(word: u64) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let flagged = below(quote, 1) | below(backslash, 1) | below(word, 0x20);
    (flagged != 0).then(|| flagged.trailing_zeros() as usize / 8)
}

/// Exact powers of ten, as `f64`.
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// The decimal with these digits (as one integer, below 10^15) and this many of them after
/// the point. The integer is exact in an `f64` (below 2^53) and so is the power of ten, so
/// the division is a single correctly rounded operation: the `f64` serde_json reads too,
/// whether or not its `float_roundtrip` feature is on.
fn decimal(negative: bool, significand: u64, fraction_digits: usize) -> f64 {
    let value = significand as f64 / POW10[fraction_digits];
    if negative {
        -value
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_special_finds_the_first_special_byte_in_every_position() {
        let specials = [b'"', b'\\', 0, 0x1f, b'\n'];
        for filler in [b'a', b' ', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']', 0x20] {
            for at in 0..8 {
                for byte in 0..=255u8 {
                    // One chosen byte, and after it (sometimes) a second special one.
                    for later in [None, Some(specials[usize::from(byte) % specials.len()])] {
                        let mut bytes = [filler; 8];
                        bytes[at] = byte;
                        if let (Some(special), true) = (later, at < 7) {
                            bytes[7] = special;
                        }
                        let expected = bytes.iter().position(|&b| STRING_SPECIAL[usize::from(b)]);
                        assert_eq!(first_special(u64::from_le_bytes(bytes)), expected, "{bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn numbers_are_what_serde_json_reads() {
        let tokens = [
            "0",
            "7",
            "49.791",
            "0.1",
            "-0.5",
            "24.0",
            "0.30000000000004",
            "123456789.012345",
            "9.999999999999999",
            "-0.0",
            "-0",
            "-12",
            "1e3",
            "1.5E-3",
            "123456789012345678",
            "1234567890123456789",
            "18446744073709551616",
            "1234567890.1234567",
            "0.000000000000001",
        ];
        for token in tokens {
            let mut scanner = Scanner::new(token);
            let number = scanner.number().expect("a number");
            assert!(scanner.at_end(), "{token}");
            let expected: Number = serde_json::from_str(token).expect("serde_json reads it");
            assert_eq!(number, expected, "{token}");
            assert_eq!(number.as_f64().map(f64::to_bits), expected.as_f64().map(f64::to_bits), "{token}");
        }
        for token in ["01", "01.5", "1.", "-", "1.2.3", "+1", "1e", "--1"] {
            assert!(Scanner::new(token).number().is_none(), "{token}");
        }
    }

    #[test]
    fn documents_are_what_serde_json_reads() {
        let texts = [
            r#"{"a":[true,false,null,-3,1.5e3,"x\u00e9\n\"\\\/\b\f\r\t"],"b":{},"c":[],"a":{"k":[[]]}}"#,
            " [ 1 , { \"k\" : \"v\" } ] ",
            r#""plain""#,
        ];
        for text in texts {
            let mut scanner = Scanner::new(text);
            let doc = scanner.document().expect("readable");
            scanner.skip_whitespace();
            assert!(scanner.at_end(), "{text}");
            assert_eq!(Ok(doc), serde_json::from_str::<Doc>(text).map_err(|e| e.to_string()), "{text}");
        }
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        for text in [r#"["\ud83d\ude00"]"#, "[\"\u{1}\"]", "[1,]", "{\"a\" 1}", "[tru]", &deep] {
            assert!(Scanner::new(text).document().is_none(), "{text}");
        }
    }
}
