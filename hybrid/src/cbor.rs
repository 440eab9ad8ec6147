//! Strict CTAP2 CBOR: a total decoder and a canonical encoder.
//!
//! Everything the hybrid protocol puts on the wire is CBOR (RFC 8949): the `FIDO:/` URL map
//! (`docs/hybrid-protocol.md` §2.1), the post-handshake message, updates and linking maps (§9, §10)
//! and the CTAP2 messages themselves (CTAP 2.2 §8 "Message Encoding"). This module turns bytes into
//! [`Value`]s and back.
//!
//! # What is accepted
//!
//! Both [`Strictness`] levels accept only the CTAP2 subset of CBOR: definite lengths, unsigned and
//! negative integers over the full 64-bit CBOR range, byte strings, UTF-8 text strings, arrays,
//! maps whose keys are integers or text strings with no key repeated, and the simple values
//! `false`, `true` and `null`. Tags, floats, other simple values, reserved additional
//! information (28–30) and indefinite lengths are rejected, as are inputs longer than
//! [`MAX_SIZE`] and nesting deeper than [`MAX_DEPTH`].
//!
//! [`Strictness::Canonical`] additionally requires the CTAP2 canonical form: every integer and
//! length in its shortest head, and map keys in strictly ascending [`canonical_cmp`] order. That is
//! what Chromium's reader demands of the URL (`chromium/chromium:components/cbor/reader.cc`).
//! [`Strictness::Lenient`] is for CBOR from a phone, which we interoperate with rather than police
//! (hybrid-protocol §9, "Strictness on receive"): it accepts any key order and non-minimal heads.
//!
//! [`encode`] always writes the canonical form, so `decode(&encode(v), Canonical)` gives `v` back
//! whenever `v` is in the accepted subset with its map keys already in canonical order.
//!
//! # Why a hand-written reader
//!
//! The decoder reads straight into [`ciborium::Value`] with a small reader of our own instead of
//! validating first and then calling ciborium's decoder. One pass does both jobs, every check is
//! visible in this file (so the error names exactly the check that failed), and nothing is ever
//! preallocated from a length the peer declared: a 5-byte input claiming a 2^60-byte string fails
//! with [`CborError::Truncated`] before any allocation. Lengths are compared with the remaining
//! input using checked conversions, and recursion is bounded by [`MAX_DEPTH`], so the stack use
//! is bounded too. The encoder is also ours: it is a few lines and makes the canonical key sort
//! explicit.

use core::cmp::Ordering;

pub use ciborium::Value;
use ciborium::value::Integer;

/// Deepest nesting [`decode`] accepts.
///
/// The top-level item is at depth 0 and each item inside an array or map is one deeper than
/// its container (map keys and values alike). An item deeper than `MAX_DEPTH` fails with
/// [`CborError::TooDeep`]: sixteen nested arrays around an integer are accepted, seventeen are
/// not. This is exactly the limit of Chromium's reader (`kCBORMaxDepth = 16`, checked before each
/// item is read), which also means an *empty* container may still sit at depth 16.
pub const MAX_DEPTH: usize = 16;

/// Largest input, in bytes, that [`decode`] and [`decode_prefix`] accept (1 MiB).
///
/// Longer inputs fail with [`CborError::TooLarge`] before anything is read
/// (hybrid-protocol §9, "Strictness on receive").
pub const MAX_SIZE: usize = 1 << 20;

/// How strictly [`decode`] checks the encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strictness {
    /// CTAP2 canonical form: minimal heads and map keys strictly ascending in
    /// [`canonical_cmp`] order. Use it for what Chromium would reject otherwise (the URL map).
    Canonical,
    /// Any head width and any map key order (duplicates are still rejected). Use it for CBOR
    /// received from a phone.
    Lenient,
}

/// Why bytes are not an acceptable CBOR item. Each variant is one failed check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CborError {
    /// The input ended inside an item (including an empty input, and a length that claims more
    /// bytes than remain).
    #[error("CBOR input ends before the item is complete")]
    Truncated,
    /// [`decode`] found bytes after the single top-level item.
    #[error("CBOR input has bytes after the item")]
    TrailingBytes,
    /// The input is longer than [`MAX_SIZE`].
    #[error("CBOR input is longer than {MAX_SIZE} bytes")]
    TooLarge,
    /// An item is nested deeper than [`MAX_DEPTH`].
    #[error("CBOR nesting is deeper than {MAX_DEPTH}")]
    TooDeep,
    /// An indefinite-length string, array or map, or a stray "break" byte (`0xff`).
    #[error("CBOR indefinite lengths are not allowed")]
    IndefiniteLength,
    /// Additional information 28, 29 or 30, or 31 on an integer or tag: not well-formed CBOR.
    #[error("CBOR head uses reserved additional information")]
    ReservedInfo,
    /// A tag (major type 6).
    #[error("CBOR tags are not allowed")]
    Tag,
    /// A half-, single- or double-precision float.
    #[error("CBOR floats are not allowed")]
    Float,
    /// A simple value other than `false`, `true` and `null` (this includes `undefined`).
    #[error("CBOR simple value is not false, true or null")]
    UnsupportedSimple,
    /// A text string that is not valid UTF-8.
    #[error("CBOR text string is not valid UTF-8")]
    InvalidUtf8,
    /// (Canonical only) an integer or length not written in its shortest head.
    #[error("CBOR integer or length is not in its shortest form")]
    NonMinimalHead,
    /// (Canonical only) a map key not greater than the key before it in canonical order.
    #[error("CBOR map keys are not in canonical order")]
    UnsortedKeys,
    /// A map key that appears twice in the same map.
    #[error("CBOR map has a duplicate key")]
    DuplicateKey,
    /// A map key that is neither an integer nor a text string.
    #[error("CBOR map key is not an integer or a text string")]
    UnsupportedKeyType,
}

/// Decodes exactly one CBOR item that fills all of `bytes`.
///
/// # Errors
///
/// Any failed check, as a [`CborError`]; bytes after the item give [`CborError::TrailingBytes`].
pub fn decode(bytes: &[u8], strictness: Strictness) -> Result<Value, CborError> {
    let (value, consumed) = decode_prefix(bytes, strictness)?;
    if consumed != bytes.len() {
        return Err(CborError::TrailingBytes);
    }
    Ok(value)
}

/// Decodes one CBOR item from the start of `bytes` and returns it with the number of bytes it
/// took. Whatever follows the item is not looked at.
///
/// # Errors
///
/// Any failed check, as a [`CborError`]. The [`MAX_SIZE`] limit applies to all of `bytes`.
pub fn decode_prefix(bytes: &[u8], strictness: Strictness) -> Result<(Value, usize), CborError> {
    if bytes.len() > MAX_SIZE {
        return Err(CborError::TooLarge);
    }
    let mut reader = Reader {
        input: bytes,
        pos: 0,
        canonical: strictness == Strictness::Canonical,
    };
    let value = reader.item(0)?;
    Ok((value, reader.pos))
}

/// Encodes `value` in CTAP2 canonical form: definite lengths, shortest heads, and the entries of
/// every map sorted by [`canonical_cmp`] of their keys.
///
/// Encoding cannot fail. Values outside the CTAP2 subset are still written, and [`decode`] will
/// then reject them: a float as a 64-bit float (`0xfb`), a tag as its head followed by the tagged
/// item, a map with a repeated key with both entries (in their original relative order). Build
/// only values made of integers, strings, arrays, maps with integer or text keys, booleans and
/// null. The encoder recurses once per nesting level, like `Value`'s own `Drop`.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_item(value, &mut out);
    out
}

/// The CTAP2 canonical order of two CBOR items (Chromium's `cbor::Value::Less`), used to sort
/// map keys.
///
/// Lower major type first (unsigned < negative < byte string < text string < array < map < tag <
/// simple); within one major type, shorter encoding first; for equal lengths, bytewise on the
/// encoding. So unsigned integers sort numerically, negative integers run -1, -2, -3, ..., and
/// strings sort by length and then by their bytes. Integers and strings are compared without
/// encoding them; other values are encoded and compared by the same rule.
pub fn canonical_cmp(a: &Value, b: &Value) -> Ordering {
    let by_major = major_type(a).cmp(&major_type(b));
    if by_major != Ordering::Equal {
        return by_major;
    }
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => {
            let (x, y) = (i128::from(*x), i128::from(*y));
            // Same major type, so same sign. A larger magnitude needs an equal or longer head,
            // and heads of equal length compare like the numbers they carry.
            if x >= 0 { x.cmp(&y) } else { y.cmp(&x) }
        }
        (Value::Bytes(x), Value::Bytes(y)) => cmp_content(x, y),
        (Value::Text(x), Value::Text(y)) => cmp_content(x.as_bytes(), y.as_bytes()),
        _ => cmp_encoded(&encode(a), &encode(b)),
    }
}

/// The value of integer key `key` in a map's entries, if present.
pub fn map_get(map: &[(Value, Value)], key: u64) -> Option<&Value> {
    map.iter()
        .find(|(k, _)| uint(k) == Some(key))
        .map(|(_, v)| v)
}

/// The value of text key `key` in a map's entries, if present.
pub fn map_get_text<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
        .map(|(_, v)| v)
}

/// An unsigned integer value.
pub fn int(v: u64) -> Value {
    Value::Integer(v.into())
}

/// The number in `value` if it is a non-negative integer (CBOR major type 0).
pub fn uint(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder

/// Cursor over the input. Invariant: `pos <= input.len()`.
struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    canonical: bool,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.input.len().saturating_sub(self.pos)
    }

    fn byte(&mut self) -> Result<u8, CborError> {
        let b = *self.input.get(self.pos).ok_or(CborError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `len` bytes, checked against what remains before anything is allocated.
    fn take(&mut self, len: u64) -> Result<&'a [u8], CborError> {
        let len = usize::try_from(len).map_err(|_| CborError::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(CborError::Truncated)?;
        let slice = self.input.get(self.pos..end).ok_or(CborError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    /// The argument of a head whose additional information `info` is 0..=27.
    fn argument(&mut self, info: u8) -> Result<u64, CborError> {
        // Width of the argument and the smallest value that needs that width.
        let (width, smallest) = match info {
            0..=23 => return Ok(u64::from(info)),
            24 => (1, 24),
            25 => (2, 1 << 8),
            26 => (4, 1 << 16),
            27 => (8, 1 << 32),
            _ => return Err(CborError::ReservedInfo),
        };
        let value = self
            .take(width)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if self.canonical && value < smallest {
            return Err(CborError::NonMinimalHead);
        }
        Ok(value)
    }

    fn item(&mut self, depth: usize) -> Result<Value, CborError> {
        if depth > MAX_DEPTH {
            return Err(CborError::TooDeep);
        }
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        match info {
            28..=30 => return Err(CborError::ReservedInfo),
            31 if matches!(major, 0 | 1 | 6) => return Err(CborError::ReservedInfo),
            31 => return Err(CborError::IndefiniteLength),
            _ => {}
        }
        match major {
            0 => Ok(Value::Integer(self.argument(info)?.into())),
            1 => Ok(Value::Integer(negative(self.argument(info)?))),
            2 => {
                let len = self.argument(info)?;
                Ok(Value::Bytes(self.take(len)?.to_vec()))
            }
            3 => {
                let len = self.argument(info)?;
                let text =
                    core::str::from_utf8(self.take(len)?).map_err(|_| CborError::InvalidUtf8)?;
                Ok(Value::Text(text.to_owned()))
            }
            4 => {
                let len = self.argument(info)?;
                self.array(len, depth)
            }
            5 => {
                let len = self.argument(info)?;
                self.map(len, depth)
            }
            6 => Err(CborError::Tag),
            _ => match info {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 => Ok(Value::Null),
                25..=27 => Err(CborError::Float),
                _ => Err(CborError::UnsupportedSimple),
            },
        }
    }

    /// Capacity for `len` declared items of at least `min_size` bytes each, never more than the
    /// remaining input could hold.
    fn capacity(&self, len: u64, min_size: usize) -> usize {
        usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.remaining() / min_size)
    }

    fn array(&mut self, len: u64, depth: usize) -> Result<Value, CborError> {
        let mut items = Vec::with_capacity(self.capacity(len, 1));
        // Each item takes at least one byte, so a false `len` fails after at most
        // `remaining` rounds.
        for _ in 0..len {
            items.push(self.item(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: u64, depth: usize) -> Result<Value, CborError> {
        let mut entries: Vec<(Value, Value)> = Vec::with_capacity(self.capacity(len, 2));
        for _ in 0..len {
            let key = self.item(depth + 1)?;
            if !matches!(key, Value::Integer(_) | Value::Text(_)) {
                return Err(CborError::UnsupportedKeyType);
            }
            if self.canonical
                && let Some((previous, _)) = entries.last()
            {
                match canonical_cmp(previous, &key) {
                    Ordering::Less => {}
                    Ordering::Equal => return Err(CborError::DuplicateKey),
                    Ordering::Greater => return Err(CborError::UnsortedKeys),
                }
            }
            let value = self.item(depth + 1)?;
            entries.push((key, value));
        }
        if !self.canonical {
            // Keys may come in any order: sort references to find repeats in O(n log n).
            let mut keys: Vec<&Value> = entries.iter().map(|(k, _)| k).collect();
            keys.sort_by(|a, b| canonical_cmp(a, b));
            if keys
                .windows(2)
                .any(|w| canonical_cmp(w[0], w[1]) == Ordering::Equal)
            {
                return Err(CborError::DuplicateKey);
            }
        }
        Ok(Value::Map(entries))
    }
}

/// The integer `-1 - n`, CBOR's negative integer with argument `n`.
#[allow(
    clippy::expect_used,
    reason = "-1 - n for n in 0..=u64::MAX is -2^64..=-1, inside Integer's range"
)]
fn negative(n: u64) -> Integer {
    Integer::try_from(-1 - i128::from(n)).expect("in range")
}

// ---------------------------------------------------------------------------------------------
// Encoder

fn write_head(out: &mut Vec<u8>, major: u8, argument: u64) {
    let m = major << 5;
    if let Ok(small) = u8::try_from(argument) {
        if small < 24 {
            out.push(m | small);
        } else {
            out.extend_from_slice(&[m | 24, small]);
        }
    } else if let Ok(v) = u16::try_from(argument) {
        out.push(m | 25);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = u32::try_from(argument) {
        out.push(m | 26);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&argument.to_be_bytes());
    }
}

/// A collection length as a CBOR argument. `usize` is at most 64 bits on every target Rust
/// supports, so this never saturates in practice.
fn length(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

fn write_item(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Integer(i) => {
            let n = i128::from(*i);
            // Integer holds -2^64..=2^64-1, so both arguments fit in a u64.
            if n >= 0 {
                write_head(out, 0, u64::try_from(n).unwrap_or(u64::MAX));
            } else {
                write_head(out, 1, u64::try_from(-1 - n).unwrap_or(u64::MAX));
            }
        }
        Value::Bytes(b) => {
            write_head(out, 2, length(b.len()));
            out.extend_from_slice(b);
        }
        Value::Text(t) => {
            write_head(out, 3, length(t.len()));
            out.extend_from_slice(t.as_bytes());
        }
        Value::Array(items) => {
            write_head(out, 4, length(items.len()));
            for item in items {
                write_item(item, out);
            }
        }
        Value::Map(entries) => {
            write_head(out, 5, length(entries.len()));
            let mut keyed: Vec<(Vec<u8>, &Value)> =
                entries.iter().map(|(k, v)| (encode(k), v)).collect();
            // Stable, so repeated keys keep their relative order.
            keyed.sort_by(|a, b| cmp_encoded(&a.0, &b.0));
            for (key, item) in keyed {
                out.extend_from_slice(&key);
                write_item(item, out);
            }
        }
        Value::Tag(tag, inner) => {
            write_head(out, 6, *tag);
            write_item(inner, out);
        }
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
        Value::Float(f) => {
            out.push(0xfb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        // `Value` is `#[non_exhaustive]`; ciborium 0.2.2 has no other variant. Write
        // `undefined`, which `decode` rejects, rather than nothing.
        _ => out.push(0xf7),
    }
}

/// The CBOR major type `value` is encoded with.
fn major_type(value: &Value) -> u8 {
    match value {
        Value::Integer(i) if i128::from(*i) >= 0 => 0,
        Value::Integer(_) => 1,
        Value::Bytes(_) => 2,
        Value::Text(_) => 3,
        Value::Array(_) => 4,
        Value::Map(_) => 5,
        Value::Tag(..) => 6,
        _ => 7,
    }
}

/// Order of two strings of one major type: their heads grow with the content length, so this is
/// "shorter encoding first, then bytewise".
fn cmp_content(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Canonical order of two encoded items: major type, then length, then bytes.
fn cmp_encoded(a: &[u8], b: &[u8]) -> Ordering {
    let major = |e: &[u8]| e.first().map(|b| b >> 5);
    major(a)
        .cmp(&major(b))
        .then_with(|| a.len().cmp(&b.len()))
        .then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn heads_are_minimal_at_every_boundary() {
        for (n, expected) in [
            (0u64, "00"),
            (23, "17"),
            (24, "1818"),
            (255, "18ff"),
            (256, "190100"),
            (65535, "19ffff"),
            (65536, "1a00010000"),
            (u64::from(u32::MAX), "1affffffff"),
            (1 << 32, "1b0000000100000000"),
            (u64::MAX, "1bffffffffffffffff"),
        ] {
            assert_eq!(encode(&int(n)), hex(expected), "{n}");
        }
    }

    #[test]
    fn negative_integers_cover_the_cbor_range() {
        let min = decode(&hex("3bffffffffffffffff"), Strictness::Canonical).unwrap();
        assert_eq!(min, Value::Integer(negative(u64::MAX)));
        assert_eq!(i128::from(negative(u64::MAX)), -(1i128 << 64));
        assert_eq!(encode(&min), hex("3bffffffffffffffff"));
        assert_eq!(encode(&Value::Integer((-1i64).into())), hex("20"));
        assert_eq!(encode(&Value::Integer((-25i64).into())), hex("3818"));
    }

    #[test]
    fn canonical_order_follows_chromium() {
        let order = [
            int(0),
            int(23),
            int(24),
            int(1000),
            int(u64::MAX),
            Value::Integer((-1i64).into()),
            Value::Integer((-2i64).into()),
            Value::Integer((-1000i64).into()),
            Value::Bytes(vec![]),
            Value::Bytes(vec![0xff]),
            Value::Bytes(vec![0, 0]),
            Value::Text("".into()),
            Value::Text("b".into()),
            Value::Text("aa".into()),
            Value::Array(vec![]),
        ];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                assert_eq!(canonical_cmp(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn huge_declared_lengths_fail_without_allocating() {
        // Byte string, text, array and map each claiming 2^60 items with 0 or 1 bytes present.
        for input in [
            "5b1000000000000000",
            "7b1000000000000000",
            "9b100000000000000000",
            "bb10000000000000000000",
        ] {
            assert_eq!(
                decode(&hex(input), Strictness::Lenient),
                Err(CborError::Truncated)
            );
        }
    }

    #[test]
    fn helpers_find_keys() {
        let map = vec![
            (int(1), Value::Bool(true)),
            (Value::Text("id".into()), Value::Null),
        ];
        assert_eq!(map_get(&map, 1), Some(&Value::Bool(true)));
        assert_eq!(map_get(&map, 2), None);
        assert_eq!(map_get_text(&map, "id"), Some(&Value::Null));
        assert_eq!(map_get_text(&map, "i"), None);
        assert_eq!(uint(&Value::Integer((-1i64).into())), None);
        assert_eq!(uint(&int(7)), Some(7));
    }
}
