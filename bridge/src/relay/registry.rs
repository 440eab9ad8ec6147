//! The table of tunnels: reservation (`/cable/new`), joining (`/cable/connect`), expiry, and
//! the ids of finished tunnels.
//!
//! One `std::sync::Mutex` guards the table; every critical section is a few hash-map operations
//! and never awaits. Expiry is a sweep over the table on the bridge clock (every
//! `relay.sweep_interval_ms`, or when [`Relay::sweep`] is called), so no tunnel carries a timer
//! of its own and tests move time with a manual clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::{Clock as GovernorClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use hybrid::tunnel::{RoutingId, TunnelId};
use tokio::sync::{Notify, oneshot};

use super::config::RelayConfig;
use super::tunnel::Joiner;
use super::{Refusal, TUNNELS_OPEN, TUNNELS_PENDING};
use crate::clock::SharedClock;

/// Adapts the bridge clock to `governor`, so the per-address limit follows injected time.
#[derive(Clone, Debug)]
struct RelayClock(SharedClock);

impl GovernorClock for RelayClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.now_ms()).unwrap_or(0))
    }
}

type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, RelayClock, NoOpMiddleware<Duration>>;

/// The hosted tunnel relay: which tunnels exist and the limits they live under. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

struct Shared {
    config: RelayConfig,
    clock: SharedClock,
    limiter: Limiter,
    limiter_clock: RelayClock,
    table: Mutex<Table>,
    sweeper_started: AtomicBool,
}

/// How many tunnels exist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelCounts {
    /// Opened with `/cable/new`, not yet joined.
    pub pending: usize,
    /// Joined by a client.
    pub open: usize,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.shared.config)
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Table {
    tunnels: HashMap<TunnelId, Entry>,
    routing_ids: HashSet<RoutingId>,
    open: usize,
    /// Ids of finished tunnels with their routing ids.
    finished: HashMap<TunnelId, RoutingId>,
    /// The same ids, oldest first, with the time (ms) they are forgotten.
    finished_order: VecDeque<(TunnelId, i64)>,
}

struct Entry {
    routing_id: RoutingId,
    created_ms: i64,
    phase: Phase,
    control: Arc<Control>,
}

enum Phase {
    /// Waiting for `/cable/connect`; the sender hands the client's socket to the tunnel task.
    Pending(oneshot::Sender<Joiner>),
    /// Joined.
    Open { opened_ms: i64 },
}

/// Why the relay (rather than a peer) ends a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum CloseReason {
    /// No client joined within `pending_lifetime_secs`.
    PendingExpired = 1,
    /// `tunnel_lifetime_secs` reached.
    LifetimeReached = 2,
    /// No binary message for `idle_timeout_secs`.
    Idle = 3,
    /// The bridge is stopping.
    ShuttingDown = 4,
}

impl CloseReason {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::PendingExpired),
            2 => Some(Self::LifetimeReached),
            3 => Some(Self::Idle),
            4 => Some(Self::ShuttingDown),
            _ => None,
        }
    }
}

/// What the table and a tunnel's task share: a few words per tunnel.
#[derive(Debug)]
pub(crate) struct Control {
    cancel: Notify,
    reason: AtomicU8,
    last_activity_ms: AtomicI64,
    frames: AtomicU32,
}

impl Control {
    fn new(now_ms: i64) -> Self {
        Self {
            cancel: Notify::new(),
            reason: AtomicU8::new(0),
            last_activity_ms: AtomicI64::new(now_ms),
            frames: AtomicU32::new(0),
        }
    }

    /// Asks the tunnel's task to close it; the first reason given wins.
    pub(crate) fn cancel(&self, reason: CloseReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.cancel.notify_one();
    }

    /// The reason given to [`Control::cancel`], if any.
    pub(crate) fn reason(&self) -> Option<CloseReason> {
        CloseReason::from_u8(self.reason.load(Ordering::Acquire))
    }

    /// Completes once the tunnel is cancelled (the wake-up is kept if nobody waits yet).
    pub(crate) async fn cancelled(&self) -> CloseReason {
        loop {
            if let Some(reason) = self.reason() {
                return reason;
            }
            self.cancel.notified().await;
        }
    }

    /// Records a relayed message.
    pub(crate) fn touch(&self, now_ms: i64) {
        self.last_activity_ms.store(now_ms, Ordering::Release);
    }

    /// Counts one relayed message; returns the count including it.
    pub(crate) fn count_frame(&self) -> u32 {
        self.frames.fetch_add(1, Ordering::AcqRel).saturating_add(1)
    }
}

/// A tunnel id taken by `/cable/new`.
#[derive(Debug)]
pub(crate) struct Reservation {
    pub(crate) tunnel_id: TunnelId,
    pub(crate) routing_id: RoutingId,
    pub(crate) control: Arc<Control>,
    pub(crate) join: oneshot::Receiver<Joiner>,
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// The key an address is rate-limited under: IPv4 as is, IPv6 by its /64 (one host usually
/// holds a whole /64).
fn address_key(addr: Option<IpAddr>) -> IpAddr {
    match addr {
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some(IpAddr::V4(v4)) => IpAddr::V4(v4),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Table {
    fn forget_expired(&mut self, now_ms: i64) {
        while let Some(&(id, until)) = self.finished_order.front() {
            if until > now_ms {
                break;
            }
            self.finished_order.pop_front();
            self.finished.remove(&id);
        }
    }

    fn remember(&mut self, id: TunnelId, routing_id: RoutingId, now_ms: i64, c: &RelayConfig) {
        self.forget_expired(now_ms);
        while self.finished.len() >= c.max_remembered_tunnels {
            match self.finished_order.pop_front() {
                Some((old, _)) => {
                    self.finished.remove(&old);
                }
                None => break,
            }
        }
        if c.max_remembered_tunnels > 0 && self.finished.insert(id, routing_id).is_none() {
            let until = now_ms.saturating_add(secs_to_ms(c.closed_tunnel_memory_secs));
            self.finished_order.push_back((id, until));
        }
    }

    fn remove(&mut self, id: &TunnelId, now_ms: i64, c: &RelayConfig) -> Option<Entry> {
        let entry = self.tunnels.remove(id)?;
        self.routing_ids.remove(&entry.routing_id);
        if matches!(entry.phase, Phase::Open { .. }) {
            self.open = self.open.saturating_sub(1);
        }
        self.remember(*id, entry.routing_id, now_ms, c);
        Some(entry)
    }

    fn counts(&self) -> TunnelCounts {
        TunnelCounts {
            pending: self.tunnels.len().saturating_sub(self.open),
            open: self.open,
        }
    }
}

impl Relay {
    /// An empty relay with these limits on this clock.
    pub fn new(config: &RelayConfig, clock: SharedClock) -> Self {
        let limiter_clock = RelayClock(clock.clone());
        let per_minute =
            NonZeroU32::new(config.new_tunnels_per_address_per_minute).unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::new(
            Quota::per_minute(per_minute),
            DefaultKeyedStateStore::default(),
            limiter_clock.clone(),
        );
        Self {
            shared: Arc::new(Shared {
                config: config.clone(),
                clock,
                limiter,
                limiter_clock,
                table: Mutex::new(Table::default()),
                sweeper_started: AtomicBool::new(false),
            }),
        }
    }

    /// The limits in effect.
    pub fn config(&self) -> &RelayConfig {
        &self.shared.config
    }

    /// How many tunnels are pending and open now.
    pub fn counts(&self) -> TunnelCounts {
        self.table().counts()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent (every update is a
        // handful of map operations), so a poisoned lock is still usable.
        self.shared
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(table: &Table) {
        let counts = table.counts();
        ::metrics::gauge!(TUNNELS_PENDING).set(counts.pending as f64);
        ::metrics::gauge!(TUNNELS_OPEN).set(counts.open as f64);
    }

    fn check_rate(&self, addr: Option<IpAddr>) -> Result<(), Refusal> {
        let key = address_key(addr);
        self.shared.limiter.check_key(&key).map_err(|not_until| {
            let wait = Duration::from(
                not_until
                    .earliest_possible()
                    .duration_since(self.shared.limiter_clock.now()),
            );
            Refusal::RateLimited {
                per_minute: self.shared.config.new_tunnels_per_address_per_minute,
                retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            }
        })
    }

    /// Takes `tunnel_id` for a phone calling from `addr` and assigns it a routing id.
    pub(crate) fn reserve(
        &self,
        tunnel_id: TunnelId,
        addr: Option<IpAddr>,
    ) -> Result<Reservation, Refusal> {
        self.check_rate(addr)?;
        let c = &self.shared.config;
        let now = self.now_ms();
        let mut table = self.table();
        table.forget_expired(now);
        if table.tunnels.contains_key(&tunnel_id) || table.finished.contains_key(&tunnel_id) {
            return Err(Refusal::TunnelIdTaken);
        }
        if table.tunnels.len() >= c.max_tunnels {
            return Err(Refusal::AtCapacity { max: c.max_tunnels });
        }
        let routing_id = fresh_routing_id(&table.routing_ids)?;
        let (join_tx, join_rx) = oneshot::channel();
        let control = Arc::new(Control::new(now));
        table.routing_ids.insert(routing_id);
        table.tunnels.insert(
            tunnel_id,
            Entry {
                routing_id,
                created_ms: now,
                phase: Phase::Pending(join_tx),
                control: control.clone(),
            },
        );
        Self::publish(&table);
        drop(table);
        self.ensure_sweeper();
        Ok(Reservation {
            tunnel_id,
            routing_id,
            control,
            join: join_rx,
        })
    }

    /// Joins the pending tunnel `tunnel_id` if `routing_id` is its routing id; returns where
    /// to hand the client's socket.
    pub(crate) fn join(
        &self,
        routing_id: RoutingId,
        tunnel_id: TunnelId,
    ) -> Result<oneshot::Sender<Joiner>, Refusal> {
        let now = self.now_ms();
        let mut guard = self.table();
        let table = &mut *guard;
        table.forget_expired(now);
        match table.tunnels.get_mut(&tunnel_id) {
            Some(entry) if entry.routing_id != routing_id => Err(Refusal::UnknownTunnel),
            Some(entry) => {
                match std::mem::replace(&mut entry.phase, Phase::Open { opened_ms: now }) {
                    Phase::Pending(join) => {
                        entry.control.touch(now);
                        table.open += 1;
                        Self::publish(table);
                        Ok(join)
                    }
                    open @ Phase::Open { .. } => {
                        entry.phase = open;
                        Err(Refusal::Gone)
                    }
                }
            }
            None => match table.finished.get(&tunnel_id) {
                Some(rid) if *rid == routing_id => Err(Refusal::Gone),
                _ => Err(Refusal::UnknownTunnel),
            },
        }
    }

    /// Removes the tunnel (if `control` is still the one registered under its id) and
    /// remembers its id.
    pub(crate) fn release(&self, tunnel_id: &TunnelId, control: &Arc<Control>) {
        let now = self.now_ms();
        let mut table = self.table();
        if table
            .tunnels
            .get(tunnel_id)
            .is_some_and(|e| Arc::ptr_eq(&e.control, control))
        {
            table.remove(tunnel_id, now, &self.shared.config);
            Self::publish(&table);
        }
    }

    /// Applies the pending lifetime, tunnel lifetime and idle timeout at the clock's current
    /// time, and forgets old state. Runs every `relay.sweep_interval_ms` once the first
    /// tunnel is opened; tests call it after moving a manual clock.
    pub fn sweep(&self) {
        let c = &self.shared.config;
        let now = self.now_ms();
        let pending_ms = secs_to_ms(c.pending_lifetime_secs);
        let lifetime_ms = secs_to_ms(c.tunnel_lifetime_secs);
        let idle_ms = secs_to_ms(c.idle_timeout_secs);
        let mut table = self.table();
        let mut expired = Vec::new();
        for (id, entry) in &table.tunnels {
            match entry.phase {
                Phase::Pending(_) => {
                    if now.saturating_sub(entry.created_ms) >= pending_ms {
                        expired.push(*id);
                    }
                }
                Phase::Open { opened_ms } => {
                    let last = entry.control.last_activity_ms.load(Ordering::Acquire);
                    if now.saturating_sub(opened_ms) >= lifetime_ms {
                        entry.control.cancel(CloseReason::LifetimeReached);
                    } else if now.saturating_sub(last) >= idle_ms {
                        entry.control.cancel(CloseReason::Idle);
                    }
                }
            }
        }
        for id in expired {
            // Removed here as well as by the task: a phone whose upgrade never completed has
            // no task to do it.
            if let Some(entry) = table.remove(&id, now, c) {
                entry.control.cancel(CloseReason::PendingExpired);
            }
        }
        table.forget_expired(now);
        Self::publish(&table);
        drop(table);
        self.shared.limiter.retain_recent();
    }

    /// Closes every tunnel (close code 1001): the bridge is stopping.
    pub fn close_all(&self) {
        let table = self.table();
        for entry in table.tunnels.values() {
            entry.control.cancel(CloseReason::ShuttingDown);
        }
    }

    fn ensure_sweeper(&self) {
        if self.shared.sweeper_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.shared.sweeper_started.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(&self.shared);
        let every = Duration::from_millis(self.shared.config.sweep_interval_ms.max(1));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else {
                    break;
                };
                Relay { shared }.sweep();
            }
        });
    }
}

/// A random routing id not used by a live tunnel.
fn fresh_routing_id(taken: &HashSet<RoutingId>) -> Result<RoutingId, Refusal> {
    for _ in 0..64 {
        let mut bytes = [0u8; 3];
        getrandom::fill(&mut bytes).map_err(|_| Refusal::Internal)?;
        let id = RoutingId::new(bytes);
        if !taken.contains(&id) {
            return Ok(id);
        }
    }
    Err(Refusal::Internal)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::clock::ManualClock;

    fn relay(c: RelayConfig) -> (Relay, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (Relay::new(&c, Arc::new(clock.clone())), clock)
    }

    fn tid(n: u8) -> TunnelId {
        TunnelId::new([n; 16])
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(address_key(Some(a)), address_key(Some(b)));
        let m: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(Some(m)), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn finished_ids_are_remembered_for_a_while_and_bounded() {
        let (r, clock) = relay(RelayConfig {
            max_remembered_tunnels: 2,
            closed_tunnel_memory_secs: 10,
            ..RelayConfig::default()
        });
        let mut rids = Vec::new();
        for n in 1..=3 {
            let res = r.reserve(tid(n), None).unwrap();
            rids.push(res.routing_id);
            r.release(&tid(n), &res.control);
        }
        // Only the two newest are remembered.
        assert!(matches!(
            r.join(rids[0], tid(1)),
            Err(Refusal::UnknownTunnel)
        ));
        assert!(matches!(r.join(rids[1], tid(2)), Err(Refusal::Gone)));
        assert!(matches!(
            r.reserve(tid(3), None),
            Err(Refusal::TunnelIdTaken)
        ));
        clock.advance_ms(10_000);
        assert!(matches!(
            r.join(rids[2], tid(3)),
            Err(Refusal::UnknownTunnel)
        ));
        assert!(r.reserve(tid(3), None).is_ok());
    }

    #[tokio::test]
    async fn sweep_expires_pending_and_cancels_idle_and_old() {
        let (r, clock) = relay(RelayConfig::default());
        let pending = r.reserve(tid(1), None).unwrap();
        let idle = r.reserve(tid(2), None).unwrap();
        let _join = r.join(idle.routing_id, tid(2)).unwrap();
        assert_eq!(
            r.counts(),
            TunnelCounts {
                pending: 1,
                open: 1
            }
        );
        clock.advance_ms(119_999);
        r.sweep();
        assert_eq!(idle.control.reason(), None);
        clock.advance_ms(1);
        r.sweep();
        assert_eq!(idle.control.reason(), Some(CloseReason::Idle));
        clock.advance_ms(180_000);
        r.sweep();
        assert_eq!(pending.control.reason(), Some(CloseReason::PendingExpired));
        assert_eq!(
            r.counts(),
            TunnelCounts {
                pending: 0,
                open: 1
            }
        );
        r.release(&tid(2), &idle.control);
        assert_eq!(r.counts(), TunnelCounts::default());
    }
}
