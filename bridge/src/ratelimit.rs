//! Rate limits (GCRA, via `governor`) on the bridge's injectable clock.
//!
//! Limits are per bridge instance and held in memory: with N instances behind a load balancer
//! an attacker gets at most N times the configured rate. The pairing lockout, which must hold
//! across instances, is stored in the database instead (see `pairing`).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::SharedClock;
use crate::config::Limits;

/// Adapts the bridge clock to `governor`.
#[derive(Clone, Debug)]
pub struct LimiterClock(SharedClock);

impl GovernorClock for LimiterClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, LimiterClock, NoOpMiddleware<Duration>>;

/// One keyed limit.
#[derive(Debug, Clone)]
pub struct Limit {
    limiter: Arc<Keyed>,
    clock: LimiterClock,
    /// Keys refused by [`Limit::record`], with the time (ms) until which they stay refused.
    blocked: Arc<std::sync::Mutex<std::collections::HashMap<String, i64>>>,
}

impl Limit {
    fn new(per: Duration, count: u32, clock: &LimiterClock) -> Self {
        let count = NonZeroU32::new(count).unwrap_or(NonZeroU32::MIN);
        let period = per / count.get();
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(count);
        Self {
            limiter: Arc::new(RateLimiter::new(
                quota,
                DefaultKeyedStateStore::default(),
                clock.clone(),
            )),
            clock: clock.clone(),
            blocked: Arc::default(),
        }
    }

    /// Counts one event (e.g. a failure) for `key`. When that exceeds the limit the key stays
    /// blocked until the limit recovers: [`Limit::blocked`] then refuses it up front.
    pub fn record(&self, key: &str) -> Result<(), u64> {
        self.check(key).inspect_err(|&wait| {
            let until = self.clock.0.now_ms() + i64::try_from(wait).unwrap_or(i64::MAX / 2) * 1000;
            if let Ok(mut blocked) = self.blocked.lock() {
                blocked.insert(key.to_owned(), until);
            }
        })
    }

    /// Seconds until `key` may act again, if [`Limit::record`] blocked it.
    pub fn blocked(&self, key: &str) -> Option<u64> {
        let now = self.clock.0.now_ms();
        let until = *self.blocked.lock().ok()?.get(key)?;
        (until > now).then(|| u64::try_from((until - now + 999) / 1000).unwrap_or(1))
    }

    /// Takes one unit for `key`; `Err(seconds to wait)` when over the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| {
                let now = self.clock.now();
                let wait = not_until.earliest_possible().duration_since(now);
                Duration::from(wait).as_secs().max(1)
            })
    }

    fn retain_recent(&self) {
        self.limiter.retain_recent();
        let now = self.clock.0.now_ms();
        if let Ok(mut blocked) = self.blocked.lock() {
            blocked.retain(|_, until| *until > now);
        }
    }
}

/// Every limit the bridge applies.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// Deliveries per device.
    pub deliveries_per_device: Limit,
    /// Deliveries per account.
    pub deliveries_per_account: Limit,
    /// `startPairing` per client address.
    pub pairing_starts_per_address: Limit,
    /// Failed pairing confirmations per account.
    pub pairing_failures_per_account: Limit,
}

impl RateLimits {
    /// Limits from configuration.
    pub fn new(limits: &Limits, clock: SharedClock) -> Self {
        let clock = LimiterClock(clock);
        let minute = Duration::from_secs(60);
        Self {
            deliveries_per_device: Limit::new(
                minute,
                limits.deliveries_per_device_per_minute,
                &clock,
            ),
            deliveries_per_account: Limit::new(
                minute,
                limits.deliveries_per_account_per_minute,
                &clock,
            ),
            pairing_starts_per_address: Limit::new(
                minute,
                limits.pairing_starts_per_address_per_minute,
                &clock,
            ),
            pairing_failures_per_account: Limit::new(
                Duration::from_secs(3600),
                limits.pairing_failures_per_account_per_hour,
                &clock,
            ),
        }
    }

    /// Forgets keys whose limits have fully recovered (bounded memory).
    pub fn retain_recent(&self) {
        for l in [
            &self.deliveries_per_device,
            &self.deliveries_per_account,
            &self.pairing_starts_per_address,
            &self.pairing_failures_per_account,
        ] {
            l.retain_recent();
        }
    }
}
