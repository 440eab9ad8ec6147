//! Time as the sessions see it: a value the driver passes in, never read from a clock here.

use core::time::Duration;

/// A point on the driver's monotonic clock, in milliseconds since an epoch the driver chooses
/// (for example the moment it created the session).
///
/// The protocol core never reads a clock; drivers convert their own instants to `Time`, and tests
/// run on a virtual clock by constructing values directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The epoch of the driver's clock.
    pub const ZERO: Time = Time(0);

    /// `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating at the end of the clock.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// The time from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
