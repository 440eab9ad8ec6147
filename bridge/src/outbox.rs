//! The push worker: leases due outbox rows, sends them through the provider senders, and
//! records each outcome with exactly one action.
//!
//! | outcome | outbox row | install | delivery |
//! | --- | --- | --- | --- |
//! | delivered | `SENT` | — | `QUEUED → SENT` |
//! | token dead | `FAILED` | deactivated, audited | `FAILED (NO_ACTIVE_COMPANION)` if no row is left pending or sent |
//! | retry | back to pending at the next backoff time, or `FAILED` when that would be past the deadline | — | `FAILED (PUSH_FAILED)` if no row is left |
//! | permanent | `FAILED` with the provider's reason | — | `FAILED (PUSH_FAILED)` if no row is left |
//! | delivery finished, expired or install removed | `CANCELLED` | — | — |
//!
//! Retries back off exponentially from `retry_base_ms` to `retry_max_ms` with jitter (each
//! delay drawn from its upper half), never earlier than the provider's `Retry-After`, and never
//! at or past the delivery's deadline.
//!
//! Crash safety: the outbox row is written in the delivery's own transaction; a worker commits
//! its lease before sending and the outcome after. If the process dies in between, the lease
//! lapses after `lease_secs` and another (or the restarted) worker sends again — with the same
//! collapse id, so the phone shows one notification. A delivery whose pushes never went out
//! expires at its deadline like any other, and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::delivery::StoredContext;
use crate::events::Event;
use crate::push::{Provider, PushMessage, PushOutcome, Senders, payload, token_hint};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::audit::{self, NewEntry};
use crate::store::outbox::{self, Leased, status};

/// `reason` of a delivery whose every push failed for another reason than dead tokens.
pub const PUSH_FAILED: &str = "PUSH_FAILED";
/// `reason` of a delivery whose every install's token turned out dead.
pub const NO_ACTIVE_COMPANION: &str = "NO_ACTIVE_COMPANION";

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// Rows leased.
    pub leased: usize,
    /// Pushes the providers accepted.
    pub delivered: usize,
    /// Rows scheduled for another attempt.
    pub retried: usize,
    /// Rows given up.
    pub failed: usize,
    /// Rows no longer needed.
    pub cancelled: usize,
}

#[derive(Debug)]
enum Action {
    Cancel(&'static str),
    Send(PushOutcome, Provider, Duration),
}

/// Random jitter source in [0, 1).
fn unit_random() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

/// The delay before attempt `attempts + 1` (after `attempts` failures), in ms: exponential
/// from `base` to `max`, drawn from the upper half of that range (`jitter` in [0, 1)), and at
/// least `retry_after`.
pub fn backoff_ms(
    attempts: i64,
    base: i64,
    max: i64,
    jitter: f64,
    retry_after: Option<i64>,
) -> i64 {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let ceiling = base.saturating_mul(1_i64 << exp).min(max).max(1);
    let half = ceiling / 2;
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let drawn = half + ((ceiling - half) as f64 * jitter.clamp(0.0, 1.0)) as i64;
    drawn.max(retry_after.unwrap_or(0))
}

fn message_for(row: &Leased, token: &str) -> PushMessage {
    let context: StoredContext = serde_json::from_str(&row.context).unwrap_or_default();
    PushMessage {
        delivery_id: row.delivery_id.clone(),
        push_token: token.to_owned(),
        app_id: row.app_id.clone(),
        envelope: row.envelope.clone(),
        alert: payload::alert(
            &row.kind,
            &row.rp_id,
            &context.device_model,
            &context.device_name,
        ),
        deadline_ms: row.expires_at,
    }
}

/// One leased row and what became of it.
#[derive(Debug)]
pub struct Attempt {
    lease: String,
    row: Leased,
    action: Action,
}

/// Leases up to `limit` due rows under a fresh lease token.
pub async fn lease(
    state: &AppState,
    worker: &str,
    limit: u32,
) -> Result<Vec<(String, Leased)>, StoreError> {
    let now = state.now_ms();
    let lease = format!("{worker}:{}", crate::id::new("lse"));
    let lease_until = now + i64::from(state.config.push.worker.lease_secs) * 1000;
    let mut tx = state.store.begin_write().await?;
    let rows = outbox::lease(
        &mut tx.tx,
        state.store.backend(),
        &lease,
        now,
        lease_until,
        i64::from(limit),
    )
    .await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|r| (lease.clone(), r)).collect())
}

/// Sends one leased row (or decides it no longer needs sending).
pub async fn attempt(state: &AppState, senders: &Senders, lease: String, row: Leased) -> Attempt {
    let action = if !matches!(row.delivery_status.as_str(), "QUEUED" | "SENT") {
        Action::Cancel("delivery finished")
    } else if row.expires_at <= state.now_ms() {
        Action::Cancel("delivery expired")
    } else if !row.companion_active {
        Action::Cancel("install inactive")
    } else if let Some(sender) = senders.for_platform(&row.platform) {
        match row.push_token.as_deref() {
            None => Action::Cancel("install removed"),
            Some(token) => {
                let message = message_for(&row, token);
                let started = Instant::now();
                let outcome = sender.send(&message, state.now_ms()).await;
                Action::Send(outcome, sender.provider(), started.elapsed())
            }
        }
    } else {
        Action::Send(
            PushOutcome::Permanent {
                reason: format!("no sender configured for {}", row.platform),
            },
            Provider::Dev,
            Duration::ZERO,
        )
    };
    Attempt { lease, row, action }
}

/// Leases due rows, sends them all, records the outcomes: one synchronous pass (tests and
/// tools; the running bridge pipelines the same parts in [`run`]).
pub async fn step(
    state: &AppState,
    senders: &Senders,
    worker: &str,
) -> Result<StepReport, StoreError> {
    let cfg = &state.config.push.worker;
    let rows = lease(state, worker, cfg.batch).await?;
    let leased = rows.len();
    let concurrency = usize::try_from(cfg.concurrency).unwrap_or(1).max(1);
    let attempts: Vec<Attempt> = futures_util::stream::iter(rows)
        .map(|(lease, row)| attempt(state, senders, lease, row))
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut report = record(state, attempts).await?;
    report.leased = leased;
    Ok(report)
}

/// The push worker of one bridge process: leases rows while send slots are free, sends each in
/// its own task (a slow provider answer holds one slot, never the others), and records
/// finished attempts in batches. Runs until `shutdown` turns true, then lets the attempts in
/// flight finish and records them.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let worker = crate::id::new("wrk");
    let cfg = state.config.push.worker.clone();
    let slots = Arc::new(Semaphore::new(
        usize::try_from(cfg.concurrency).unwrap_or(1).max(1),
    ));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Attempt>();
    let recorder_state = state.clone();
    let recorder = tokio::spawn(async move {
        while let Some(first) = done_rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 1024 {
                match done_rx.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            if let Err(e) = record(&recorder_state, batch).await {
                // The rows stay leased and are sent again once the lease lapses.
                tracing::warn!(error = %e, "push outcomes not recorded");
            }
        }
    });
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Wait for at least one free slot.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            r = shutdown.changed() => {
                if r.is_err() { break; }
                continue;
            }
        };
        let free = u32::try_from(slots.available_permits() + 1).unwrap_or(u32::MAX);
        let limit = free.min(cfg.batch);
        let rows = match lease(&state, &worker, limit).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "push worker could not lease");
                Vec::new()
            }
        };
        let full = u32::try_from(rows.len()).unwrap_or(u32::MAX) >= limit;
        let mut first = Some(first);
        for (lease, row) in rows {
            let permit = match first.take() {
                Some(p) => p,
                None => match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let state = state.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let a = attempt(&state, &state.senders, lease, row).await;
                let _ = done.send(a);
                drop(permit);
            });
        }
        drop(first);
        if full {
            continue;
        }
        tokio::select! {
            r = shutdown.changed() => if r.is_err() { break },
            () = state.outbox_wakeup.notified() => {}
            () = tokio::time::sleep(crate::worker::PUSH_POLL) => {}
        }
    }
    // Let the attempts in flight finish (each is bounded by the request timeout).
    let all = cfg.concurrency.max(1);
    let _ = slots.acquire_many(all).await;
    drop(done_tx);
    if let Err(e) = recorder.await {
        tracing::warn!(error = %e, "push recorder ended abnormally");
    }
}

/// Records finished attempts in one transaction and announces the changes.
pub async fn record(state: &AppState, attempts: Vec<Attempt>) -> Result<StepReport, StoreError> {
    let cfg = &state.config.push.worker;
    let now = state.now_ms();
    let mut sent_rows: Vec<(&str, &Leased)> = Vec::new();
    let mut cancelled: BTreeMap<(&str, &'static str), Vec<&str>> = BTreeMap::new();
    let mut failed: Vec<(&str, &Leased, String, &'static str)> = Vec::new();
    let mut retries: Vec<(&str, &Leased, i64, String)> = Vec::new();
    let mut dead: Vec<(&str, &Leased, String, Provider)> = Vec::new();
    for Attempt { lease, row, action } in &attempts {
        let lease = lease.as_str();
        let (outcome, provider, latency) = match action {
            Action::Cancel(why) => {
                cancelled.entry((lease, why)).or_default().push(&row.id);
                continue;
            }
            Action::Send(outcome, provider, latency) => (outcome, *provider, *latency),
        };
        metrics::counter!("tether_push_total", "provider" => provider.as_str(), "outcome" => outcome.label())
            .increment(1);
        metrics::histogram!("tether_push_send_seconds", "provider" => provider.as_str())
            .record(latency.as_secs_f64());
        let token = row.push_token.as_deref().unwrap_or_default();
        tracing::info!(
            delivery = %row.delivery_id,
            provider = provider.as_str(),
            outcome = outcome.label(),
            reason = match outcome {
                PushOutcome::Delivered { .. } => "",
                PushOutcome::TokenDead { reason }
                | PushOutcome::Retry { reason, .. }
                | PushOutcome::Permanent { reason } => reason.as_str(),
            },
            attempt = row.attempts,
            latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            token = %token_hint(token),
            "push attempt"
        );
        match outcome {
            PushOutcome::Delivered { .. } => sent_rows.push((lease, row)),
            PushOutcome::TokenDead { reason } => dead.push((lease, row, reason.clone(), provider)),
            PushOutcome::Permanent { reason } => {
                failed.push((lease, row, reason.clone(), PUSH_FAILED));
            }
            PushOutcome::Retry {
                reason,
                retry_after_ms,
            } => {
                metrics::counter!("tether_push_retries_total", "provider" => provider.as_str())
                    .increment(1);
                let delay = backoff_ms(
                    row.attempts,
                    i64::from(cfg.retry_base_ms),
                    i64::from(cfg.retry_max_ms),
                    unit_random(),
                    *retry_after_ms,
                );
                if now + delay >= row.expires_at {
                    failed.push((
                        lease,
                        row,
                        format!("{reason}; no retry before the deadline"),
                        PUSH_FAILED,
                    ));
                } else {
                    retries.push((lease, row, now + delay, reason.clone()));
                }
            }
        }
    }

    let mut tx = state.store.begin_write().await?;
    let mut by_lease: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (lease, row) in &sent_rows {
        by_lease.entry(lease).or_default().push(&row.id);
    }
    for (lease, ids) in &by_lease {
        outbox::finish(&mut tx.tx, lease, ids, status::SENT, None, now).await?;
    }
    for ((lease, why), ids) in &cancelled {
        outbox::finish(&mut tx.tx, lease, ids, status::CANCELLED, Some(why), now).await?;
    }
    for (lease, row, at, reason) in &retries {
        outbox::retry_at(&mut tx.tx, lease, &row.id, *at, reason, now).await?;
    }
    let mut exhausted: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
    for (lease, row, reason, delivery_reason) in &failed {
        outbox::finish(
            &mut tx.tx,
            lease,
            &[row.id.as_str()],
            status::FAILED,
            Some(reason),
            now,
        )
        .await?;
        exhausted.insert(&row.delivery_id, (delivery_reason, &row.account_id));
    }
    for (lease, row, reason, provider) in &dead {
        outbox::finish(
            &mut tx.tx,
            lease,
            &[row.id.as_str()],
            status::FAILED,
            Some(reason),
            now,
        )
        .await?;
        let token = row.push_token.as_deref().unwrap_or_default();
        if outbox::deactivate_companion(&mut tx.tx, &row.companion_id, token, now).await? {
            metrics::counter!("tether_push_token_deactivations_total", "provider" => provider.as_str())
                .increment(1);
            audit::append(
                &mut tx.tx,
                now,
                &NewEntry {
                    account_id: Some(&row.account_id),
                    actor: "system",
                    event: "companion.deactivate",
                    client_addr: None,
                    outcome: "deactivated",
                    detail: Some(format!(
                        "{} {} token {} rejected: {reason}",
                        row.companion_id,
                        provider.as_str(),
                        token_hint(token)
                    )),
                },
            )
            .await?;
        }
        exhausted.insert(&row.delivery_id, (NO_ACTIVE_COMPANION, &row.account_id));
    }
    let delivery_ids: Vec<&str> = sent_rows
        .iter()
        .map(|(_, r)| r.delivery_id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let moved = outbox::mark_sent(&mut tx.tx, &delivery_ids, now).await?;
    let mut failed_deliveries = Vec::new();
    for (delivery_id, (reason, account_id)) in &exhausted {
        if outbox::fail_if_exhausted(&mut tx.tx, delivery_id, reason, now).await? {
            audit::append(
                &mut tx.tx,
                now,
                &NewEntry {
                    account_id: Some(account_id),
                    actor: "system",
                    event: "delivery.fail",
                    client_addr: None,
                    outcome: "failed",
                    detail: Some(format!("{delivery_id}: {reason}")),
                },
            )
            .await?;
            failed_deliveries.push((*delivery_id).to_owned());
        }
    }
    tx.commit().await?;

    let accounts: BTreeMap<&str, &str> = sent_rows
        .iter()
        .map(|(_, r)| (r.delivery_id.as_str(), r.account_id.as_str()))
        .collect();
    for id in &moved {
        if let Some(account_id) = accounts.get(id.as_str()) {
            state.events.publish(Event::Incoming {
                account_id: (*account_id).to_owned(),
                delivery_id: id.clone(),
            });
        }
        state.events.publish(Event::Delivery { id: id.clone() });
    }
    for id in failed_deliveries {
        state.events.publish(Event::Delivery { id });
    }
    Ok(StepReport {
        leased: attempts.len(),
        delivered: sent_rows.len(),
        retried: retries.len(),
        failed: failed.len() + dead.len(),
        cancelled: cancelled.values().map(Vec::len).sum(),
    })
}

/// Updates the outbox depth gauges.
pub async fn observe_depth(state: &AppState) -> Result<(), StoreError> {
    let mut conn = state.store.pool().acquire().await?;
    let (depth, oldest_ms) = outbox::depth(&mut conn, state.now_ms()).await?;
    #[allow(clippy::cast_precision_loss)]
    {
        metrics::gauge!("tether_outbox_depth").set(depth as f64);
        metrics::gauge!("tether_outbox_oldest_age_seconds").set(oldest_ms as f64 / 1000.0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_honours_retry_after() {
        assert_eq!(backoff_ms(1, 1000, 60_000, 0.0, None), 500);
        assert_eq!(backoff_ms(1, 1000, 60_000, 0.999_999, None), 999);
        assert_eq!(backoff_ms(3, 1000, 60_000, 0.0, None), 2000);
        assert_eq!(backoff_ms(30, 1000, 60_000, 0.0, None), 30_000);
        assert!(backoff_ms(30, 1000, 60_000, 0.999, None) <= 60_000);
        assert_eq!(backoff_ms(1, 1000, 60_000, 0.0, Some(7000)), 7000);
        assert_eq!(backoff_ms(i64::MAX, 1000, 60_000, 0.5, None), 45_000);
        assert_eq!(backoff_ms(0, 1000, 60_000, 0.0, None), 500);
    }
}
