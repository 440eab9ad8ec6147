//! Background work: the expiry sweeper and the push worker ([`crate::outbox`]).
//!
//! Each step is a plain async function taking the state, so tests run one step at a time on a
//! manual clock; [`spawn`] runs them in loops until shutdown.

use std::time::Duration;

use tokio::sync::watch;

use crate::events::Event;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::audit::{self, NewEntry};
use crate::store::deliveries;
use crate::store::{devices, pairings};

/// How often the sweeper runs.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often the identity provider's keys are re-fetched.
pub const JWKS_REFRESH_MS: i64 = 10 * 60 * 1000;
/// Advisory lock key of the sweeper ("TETHSWEP").
const SWEEP_LOCK: i64 = 0x5445_5448_5357_4550;

/// Expires deliveries (erasing their URLs), pairings and inactive devices; forgets expired token
/// ids and idle rate-limit keys. Returns how many deliveries expired.
pub async fn sweep(state: &AppState) -> Result<usize, StoreError> {
    let now = state.now_ms();
    let mut tx = state.store.begin_write().await?;
    // One sweeper at a time across bridge instances; the others wait and find less to do.
    tx.exclusive(state.store.backend(), SWEEP_LOCK).await?;
    let expired = deliveries::expire(&mut tx.tx, now).await?;
    for d in &expired {
        audit::append(
            &mut tx.tx,
            now,
            &NewEntry {
                account_id: Some(&d.account_id),
                actor: "system",
                event: "delivery.expire",
                client_addr: None,
                outcome: "expired",
                detail: Some(format!("{} was {}", d.id, d.status)),
            },
        )
        .await?;
    }
    deliveries::erase_finished_urls(&mut tx.tx).await?;
    let expired_pairings = pairings::expire(&mut tx.tx, now).await?;
    let cutoff = now - state.config.limits.device_inactivity_days * 86_400_000;
    let expired_devices = devices::expire_inactive(&mut tx.tx, cutoff).await?;
    for (device, account) in &expired_devices {
        audit::append(
            &mut tx.tx,
            now,
            &NewEntry {
                account_id: account.as_deref(),
                actor: "system",
                event: "device.expire",
                client_addr: None,
                outcome: "expired",
                detail: Some(format!(
                    "{device} inactive for {} days",
                    state.config.limits.device_inactivity_days
                )),
            },
        )
        .await?;
    }
    devices::prune_token_ids(&mut tx.tx, now).await?;
    tx.commit().await?;
    state.limits.retain_recent();
    for d in &expired {
        state.events.publish(Event::Delivery { id: d.id.clone() });
    }
    for p in expired_pairings {
        state.events.publish(Event::Pairing { id: p });
    }
    Ok(expired.len())
}

/// How long the push worker sleeps when nothing woke it (retries come due on this beat).
pub const PUSH_POLL: Duration = Duration::from_millis(250);

/// Runs the sweeper and the push worker until `shutdown` turns true. The push worker runs in
/// its own task so a slow provider never delays the sweeper, and vice versa.
pub fn spawn(state: AppState, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let push = tokio::spawn(crate::outbox::run(state.clone(), shutdown.clone()));
    tokio::spawn(async move {
        let mut sweep_tick = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    if *shutdown.borrow() { break; }
                }
                _ = sweep_tick.tick() => {
                    if let Err(e) = sweep(&state).await {
                        tracing::warn!(error = %e, "sweep failed");
                    }
                    if let Err(e) = crate::outbox::observe_depth(&state).await {
                        tracing::warn!(error = %e, "outbox depth not read");
                    }
                    state.refresh_jwks(JWKS_REFRESH_MS).await;
                }
            }
        }
        if let Err(e) = push.await {
            tracing::warn!(error = %e, "push worker ended abnormally");
        }
    })
}
