//! The decimal digit encoding of `FIDO:/` URLs (CTAP 2.2 §11.5.1.1; Chromium `qr::BytesToDigits`,
//! `DigitsToBytes`).
//!
//! Bytes are taken in 7-byte chunks; each chunk is read as a little-endian integer and written in
//! decimal, zero-padded to 17 digits. A final chunk of `n` bytes (1 to 6) uses 3, 5, 8, 10, 13 or 15
//! digits. QR codes encode digits compactly, which is why the format exists.

use thiserror::Error;

/// Bytes per full chunk.
const CHUNK_BYTES: usize = 7;
/// Digits per full chunk.
const CHUNK_DIGITS: usize = 17;
/// Digits for a final chunk of `n` bytes, indexed by `n` (index 0 unused).
const TAIL_DIGITS: [usize; 7] = [0, 3, 5, 8, 10, 13, 15];

/// Why a digit string does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DigitsError {
    /// A character is not one of the ASCII digits `0`–`9`.
    #[error("character {index} is not an ASCII digit")]
    NonDigit {
        /// Byte offset of the offending character.
        index: usize,
    },
    /// The last group has a length no chunk size produces.
    #[error("a final group of {digits} digits matches no chunk size")]
    Length {
        /// Length of the final group.
        digits: usize,
    },
    /// A group's value does not fit the bytes it stands for.
    #[error("group {group} is too large for its {bytes} bytes")]
    Range {
        /// Index of the offending group.
        group: usize,
        /// Bytes the group decodes to.
        bytes: usize,
    },
}

impl DigitsError {
    /// A stable identifier for the failed check.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NonDigit { .. } => "non_digit",
            Self::Length { .. } => "length",
            Self::Range { .. } => "range",
        }
    }
}

/// Encodes bytes as digits.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() / CHUNK_BYTES * CHUNK_DIGITS + CHUNK_DIGITS);
    for chunk in bytes.chunks(CHUNK_BYTES) {
        let mut le = [0u8; 8];
        le[..chunk.len()].copy_from_slice(chunk);
        let value = u64::from_le_bytes(le);
        let width = if chunk.len() == CHUNK_BYTES {
            CHUNK_DIGITS
        } else {
            TAIL_DIGITS[chunk.len()]
        };
        out.push_str(&format!("{value:0width$}"));
    }
    out
}

/// Decodes digits to bytes, rejecting anything [`encode`] cannot produce.
pub fn decode(digits: &str) -> Result<Vec<u8>, DigitsError> {
    let raw = digits.as_bytes();
    if let Some(index) = raw.iter().position(|b| !b.is_ascii_digit()) {
        return Err(DigitsError::NonDigit { index });
    }
    let mut out = Vec::with_capacity(raw.len() / CHUNK_DIGITS * CHUNK_BYTES + CHUNK_BYTES);
    for (group, chunk) in raw.chunks(CHUNK_DIGITS).enumerate() {
        let bytes = if chunk.len() == CHUNK_DIGITS {
            CHUNK_BYTES
        } else {
            TAIL_DIGITS
                .iter()
                .position(|&d| d == chunk.len() && d != 0)
                .ok_or(DigitsError::Length {
                    digits: chunk.len(),
                })?
        };
        // At most 17 ASCII digits: the value is below 10^17 < 2^64, so this cannot overflow.
        let value = chunk
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        if value >> (8 * bytes) != 0 {
            return Err(DigitsError::Range { group, bytes });
        }
        out.extend_from_slice(&value.to_le_bytes()[..bytes]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chromium_example() {
        assert_eq!(encode(&[0x61, 0x62, 0xff]), "16736865");
        assert_eq!(decode("16736865").unwrap(), vec![0x61, 0x62, 0xff]);
    }

    #[test]
    fn empty_is_empty() {
        assert_eq!(encode(&[]), "");
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn full_chunk_maximum() {
        let max = [0xff; 7];
        let digits = encode(&max);
        assert_eq!(digits, "72057594037927935");
        assert_eq!(decode(&digits).unwrap(), max);
        assert!(matches!(
            decode("72057594037927936"),
            Err(DigitsError::Range { group: 0, bytes: 7 })
        ));
    }
}
