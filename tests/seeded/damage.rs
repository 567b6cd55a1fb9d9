//! Damage done to bytes: what the property tests do to well-formed input to find where a
//! parser gives way. Each test chooses which kinds, how often and which bytes to insert;
//! applying them is shared.

use proptest::sample::Index;

/// One change to a byte string; positions are proportions of its length at that moment.
#[derive(Debug, Clone)]
pub enum Damage {
    /// Cut it at a position.
    Truncate(Index),
    /// Flip one bit of one byte.
    FlipBit(Index, u8),
    /// Insert these bytes at a position.
    Insert(Index, Vec<u8>),
    /// Remove one byte.
    Delete(Index),
    /// Overwrite one byte.
    Replace(Index, u8),
    /// Repeat up to this many bytes from a position.
    RepeatSpan(Index, u8),
}

/// Applies one change.
pub fn apply_one(bytes: &mut Vec<u8>, damage: Damage) {
    let len = bytes.len();
    match damage {
        Damage::Truncate(i) => bytes.truncate(i.index(len + 1)),
        Damage::Insert(i, inserted) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, inserted);
        }
        _ if len == 0 => {}
        Damage::FlipBit(i, bit) => bytes[i.index(len)] ^= 1 << bit,
        Damage::Delete(i) => {
            bytes.remove(i.index(len));
        }
        Damage::Replace(i, b) => bytes[i.index(len)] = b,
        Damage::RepeatSpan(i, n) => {
            let at = i.index(len);
            let span = bytes[at..(at + usize::from(n)).min(len)].to_vec();
            bytes.splice(at..at, span);
        }
    }
}

/// Applies every change, in order.
pub fn apply(mut bytes: Vec<u8>, damages: Vec<Damage>) -> Vec<u8> {
    for damage in damages {
        apply_one(&mut bytes, damage);
    }
    bytes
}
