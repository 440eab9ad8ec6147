//! Fixed-size secrets that zeroize on drop and never print.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `N` secret bytes. Zeroized on drop; `Debug` prints `[redacted]`; equality is constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret<const N: usize>([u8; N]);

impl<const N: usize> Secret<N> {
    /// Wraps bytes as a secret.
    pub const fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies a slice of exactly `N` bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; N]>::try_from(bytes).ok().map(Self)
    }

    /// The secret bytes. Callers must not log them.
    pub const fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<const N: usize> PartialEq for Secret<N> {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl<const N: usize> Eq for Secret<N> {}

/// The 16-byte QR secret of a hybrid session (CTAP 2.2 §11.5.1.1, `FIDO:/` URL key 1).
///
/// Everything else of a QR-initiated session is derived from it: the advert key, the tunnel id and
/// the Noise PSK ([`crate::derive`]).
pub type QrSecret = Secret<16>;
