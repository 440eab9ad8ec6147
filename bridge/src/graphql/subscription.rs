//! Subscriptions (`graphql-transport-ws`): delivery and pairing status, and the deliveries
//! arriving for a companion's account.
//!
//! Each stream yields the current state at once, then every change, and ends after a final
//! state. Changes arrive through the in-process event bus; every second the stream also re-reads
//! the database, so changes made by another bridge instance arrive too.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use async_graphql::{Context, ID, Result, Subscription as GqlSubscription};
use futures_util::Stream;
use futures_util::stream;
use tokio::sync::broadcast;

use super::types::{DeliveryObject, PairingObject, PairingStatus};
use super::{check_id, parts};
use crate::events::Event;
use crate::state::AppState;
use crate::store::{deliveries, pairings};

/// How often a subscription re-reads the database.
const RECHECK: Duration = Duration::from_secs(1);

/// Streams.
#[derive(Debug, Default, Clone, Copy)]
pub struct Subscription;

/// Waits until `id` may have changed: an event for it, a lagged bus, or the recheck period.
async fn changed(rx: &mut broadcast::Receiver<Event>, is_ours: impl Fn(&Event) -> bool) {
    let deadline = tokio::time::sleep(RECHECK);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => return,
            ev = rx.recv() => match ev {
                Ok(ev) if is_ours(&ev) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => {
                    (&mut deadline).await;
                    return;
                }
            },
        }
    }
}

struct Incoming {
    state: AppState,
    account_id: String,
    rx: broadcast::Receiver<Event>,
    seen: HashSet<String>,
    queue: VecDeque<DeliveryObject>,
    first: bool,
}

struct Watch<T> {
    state: AppState,
    id: String,
    rx: broadcast::Receiver<Event>,
    first: Option<T>,
    last: Option<(String, String)>,
    done: bool,
}

#[GqlSubscription]
impl Subscription {
    /// Status of a delivery, for its device and for the account's companions.
    async fn delivery_status(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = DeliveryObject> + use<>> {
        let (state, caller) = parts(ctx)?;
        let id = check_id("dlv", &id, "delivery")?;
        let rx = state.events.subscribe();
        let d = if caller
            .meta
            .token
            .as_deref()
            .is_some_and(super::query::is_device_token)
        {
            let device = caller.device(state, false).await?;
            crate::delivery::get_for_device(state, &device, &id).await?
        } else {
            let account = caller.companion(state).await?;
            crate::delivery::get_for_account(state, &account.id, &id).await?
        };
        let first: DeliveryObject = d.into();
        let watch = Watch {
            state: state.clone(),
            id,
            rx,
            last: Some((format!("{:?}", first.status), first.updated_at.clone())),
            done: first.status.is_final(),
            first: Some(first),
        };
        Ok(stream::unfold(watch, |mut w| async move {
            if let Some(first) = w.first.take() {
                return Some((first, w));
            }
            while !w.done {
                let id = w.id.clone();
                changed(
                    &mut w.rx,
                    |ev| matches!(ev, Event::Delivery { id: e } if *e == id),
                )
                .await;
                let mut conn = match w.state.store.pool().acquire().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(error = %e, "subscription could not read the database");
                        continue;
                    }
                };
                let Ok(Some(d)) = deliveries::get(&mut conn, &w.id).await else {
                    continue;
                };
                let obj: DeliveryObject = d.into();
                let key = (format!("{:?}", obj.status), obj.updated_at.clone());
                if w.last.as_ref() != Some(&key) {
                    w.last = Some(key);
                    w.done = obj.status.is_final();
                    return Some((obj, w));
                }
            }
            None
        }))
    }

    /// Deliveries for the calling companion's account as they arrive: first those already
    /// pending, then each new one once, oldest first. For apps in the foreground and for the
    /// development push sink, which hands deliveries over through this stream instead of a
    /// push provider.
    async fn incoming_deliveries(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = DeliveryObject> + use<>> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let incoming = Incoming {
            state: state.clone(),
            account_id: account.id,
            rx: state.events.subscribe(),
            seen: HashSet::new(),
            queue: VecDeque::new(),
            first: true,
        };
        Ok(stream::unfold(incoming, |mut w| async move {
            loop {
                if let Some(d) = w.queue.pop_front() {
                    return Some((d, w));
                }
                if !w.first {
                    let account_id = w.account_id.clone();
                    changed(&mut w.rx, |ev| {
                        matches!(ev, Event::Incoming { account_id: a, .. } if *a == account_id)
                    })
                    .await;
                }
                w.first = false;
                let Ok(mut conn) = w.state.store.pool().acquire().await else {
                    continue;
                };
                let now = w.state.now_ms();
                let Ok(mut pending) = deliveries::pending(&mut conn, &w.account_id, now).await
                else {
                    continue;
                };
                pending.reverse();
                // Forget ids that are no longer pending, so the set stays small.
                let live: HashSet<&str> = pending.iter().map(|d| d.id.as_str()).collect();
                w.seen.retain(|id| live.contains(id.as_str()));
                for d in pending {
                    if w.seen.insert(d.id.clone()) {
                        w.queue.push_back(d.into());
                    }
                }
            }
        }))
    }

    /// Status of a pairing, for the device being paired.
    async fn pairing_status(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<impl Stream<Item = PairingObject> + use<>> {
        let (state, caller) = parts(ctx)?;
        let device = caller.device(state, true).await?;
        let id = check_id("par", &id, "pairing")?;
        let rx = state.events.subscribe();
        let first: PairingObject = crate::pairing::get_for_device(state, &device, &id)
            .await?
            .into();
        let watch = Watch {
            state: state.clone(),
            id,
            rx,
            last: Some((format!("{:?}", first.status), String::new())),
            done: first.status != PairingStatus::Pending,
            first: Some(first),
        };
        Ok(stream::unfold(watch, |mut w| async move {
            if let Some(first) = w.first.take() {
                return Some((first, w));
            }
            while !w.done {
                let id = w.id.clone();
                changed(
                    &mut w.rx,
                    |ev| matches!(ev, Event::Pairing { id: e } if *e == id),
                )
                .await;
                let Ok(mut conn) = w.state.store.pool().acquire().await else {
                    continue;
                };
                let Ok(Some(p)) = pairings::get(&mut conn, &w.id).await else {
                    continue;
                };
                let obj: PairingObject = p.into();
                let key = (format!("{:?}", obj.status), String::new());
                if w.last.as_ref() != Some(&key) {
                    w.last = Some(key);
                    w.done = obj.status != PairingStatus::Pending;
                    return Some((obj, w));
                }
            }
            None
        }))
    }
}
