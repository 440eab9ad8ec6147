//! Sign-in and registration deliveries: the device's request, pushed to the account's phones,
//! claimed once, then completed, denied or expired.
//!
//! A delivery expires 300 seconds after it is created — never later, whatever happens to it.
//! Its FIDO URL is stored only until it is claimed, denied or expired, and is returned once,
//! to a companion of the same account, before expiry. The push carries only the signed
//! envelope, never the URL.

use hybrid::url::{FidoUrl, RequestType};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::events::Event;
use crate::id;
use crate::principal::{RequestMeta, TokenUse};
use crate::signing::EnvelopeClaims;
use crate::state::AppState;
use crate::store::accounts::Account;
use crate::store::audit::{self, NewEntry};
use crate::store::companions;
use crate::store::deliveries::{self, Delivery, NewDelivery, status};
use crate::store::devices::Device;

/// Lifetime of a delivery.
pub const DELIVERY_LIFETIME_MS: i64 = 300_000;

/// Sign-in or registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// getAssertion (`"ga"`).
    SignIn,
    /// makeCredential (`"mc"`).
    Registration,
}

impl Kind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "SIGN_IN",
            Self::Registration => "REGISTRATION",
        }
    }

    fn request_type(self) -> RequestType {
        match self {
            Self::SignIn => RequestType::GetAssertion,
            Self::Registration => RequestType::MakeCredential,
        }
    }
}

/// What the companion shows besides the device's name and model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayContext {
    /// The web origin or app the user is signing in to, e.g. `https://example.com`.
    pub origin: Option<String>,
    /// The account name the relying party suggested, if any.
    pub user_name: Option<String>,
}

/// What is stored with a delivery for display: the device's context and its name and model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredContext {
    /// From the device.
    #[serde(flatten)]
    pub display: DisplayContext,
    /// The device's name when the request was made.
    pub device_name: String,
    /// The device's model.
    pub device_model: String,
}

/// A new delivery request.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// Sign-in or registration.
    pub kind: Kind,
    /// The `FIDO:/` URL.
    pub fido_url: &'a str,
    /// Relying party id.
    pub rp_id: &'a str,
    /// Device-chosen key; a retry with the same key returns the same delivery.
    pub idempotency_key: &'a str,
    /// Display context.
    pub context: DisplayContext,
}

fn check_text(what: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to {max} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_rp_id(rp_id: &str) -> ApiResult<()> {
    let ok = !rp_id.is_empty()
        && rp_id.len() <= 253
        && rp_id.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "rpId must be a domain name, e.g. example.com",
        ))
    }
}

/// Validates and stores a delivery with its outbox rows; returns it (or the earlier delivery
/// for the same idempotency key).
pub async fn request(
    state: &AppState,
    meta: &RequestMeta,
    device: &Device,
    token: &mut TokenUse<'_>,
    req: Request<'_>,
) -> ApiResult<Delivery> {
    check_rp_id(req.rp_id)?;
    check_text("idempotencyKey", req.idempotency_key, 128)?;
    if let Some(origin) = &req.context.origin {
        check_text("context.origin", origin, 512)?;
    }
    if let Some(user) = &req.context.user_name {
        check_text("context.userName", user, 256)?;
    }
    let url = FidoUrl::parse(req.fido_url)
        .map_err(|e| ApiError::invalid(format!("fidoUrl invalid ({}): {e}", e.code())))?;
    if url.request_type != req.kind.request_type() {
        return Err(ApiError::invalid(format!(
            "fidoUrl requests {:?} but this is a {} request",
            url.request_type.as_str(),
            req.kind.as_str()
        )));
    }
    let now = state.now_ms();
    let max_age = state.config.limits.fido_url_max_age_secs;
    let fresh = url
        .timestamp
        .and_then(|t| i64::try_from(t).ok())
        .is_some_and(|t| (state.clock.now_secs() - t).abs() <= max_age);
    if !fresh {
        return Err(ApiError::invalid(format!(
            "fidoUrl timestamp (key 3) must be within {max_age} s of the bridge's time"
        )));
    }
    let Some(account_id) = device.account_id.clone() else {
        return Err(ApiError::unauthenticated("device is not paired"));
    };
    // A retry of a stored request is answered as it was, and does not count against the limits.
    if let Some(found) = existing(state, device, req.idempotency_key).await? {
        return same_request(found, &req);
    }
    let actor = format!("device:{}", device.id);
    for (limit, key, what) in [
        (
            &state.limits.deliveries_per_device,
            device.id.as_str(),
            "device",
        ),
        (
            &state.limits.deliveries_per_account,
            account_id.as_str(),
            "account",
        ),
    ] {
        if let Err(wait) = limit.check(key) {
            crate::pairing::audit_now(
                state,
                Some(&account_id),
                &actor,
                "ratelimit.delivery",
                meta,
                "denied",
                Some(format!("per {what}")),
            )
            .await?;
            return Err(ApiError::rate_limited(
                format!("too many requests for this {what}"),
                wait,
            ));
        }
    }
    let number_code = id::random_digits(2).map_err(|e| ApiError::internal(&e))?;
    let delivery_id = id::new("dlv");
    let expires_at = now + DELIVERY_LIFETIME_MS;
    let claims = EnvelopeClaims {
        iss: state.config.public_url.clone(),
        aud: state.config.envelope_audience.clone(),
        sub: account_id.clone(),
        delivery_id: delivery_id.clone(),
        device_id: device.id.clone(),
        device_name: device.name.clone(),
        device_model: device.model.clone(),
        rp_id: req.rp_id.to_owned(),
        request_type: url.request_type.as_str().to_owned(),
        number_code: number_code.clone(),
        origin: req.context.origin.clone(),
        user_name: req.context.user_name.clone(),
        iat: now.div_euclid(1000),
        exp: expires_at.div_euclid(1000),
    };
    let envelope = state
        .keys
        .read()
        .map_err(|_| ApiError::internal(&"signing key lock poisoned"))?
        .sign(&claims)
        .map_err(|e| ApiError::internal(&e))?;
    let delivery = Delivery {
        id: delivery_id,
        account_id: account_id.clone(),
        device_id: device.id.clone(),
        kind: req.kind.as_str().to_owned(),
        rp_id: req.rp_id.to_owned(),
        idempotency_key: req.idempotency_key.to_owned(),
        number_code,
        context: serde_json::to_string(&StoredContext {
            display: req.context.clone(),
            device_name: device.name.clone(),
            device_model: device.model.clone(),
        })
        .map_err(|e| ApiError::internal(&e))?,
        envelope,
        status: status::QUEUED.to_owned(),
        reason: None,
        created_at: now,
        expires_at,
        updated_at: now,
    };
    // One write transaction: the token id, the delivery, its outbox rows, the audit entry. A
    // retry with the same idempotency key fails the unique index and returns the stored one.
    let detail = format!("{} {} for {}", delivery.id, delivery.kind, delivery.rp_id);
    let entry = NewEntry {
        account_id: Some(&account_id),
        actor: &actor,
        event: "delivery.create",
        client_addr: meta.client_addr.as_deref(),
        outcome: "success",
        detail: Some(detail),
    };
    let mut tx = state.store.begin_write().await?;
    let inserted = deliveries::insert(
        &mut tx.tx,
        state.store.backend(),
        &NewDelivery {
            delivery: &delivery,
            fido_url: req.fido_url,
        },
        token.pending_record(),
        &entry,
    )
    .await;
    match inserted {
        // A replayed token: roll back; `settle` records the attempt and refuses it.
        Ok(done) if !done.token_fresh => {
            drop(tx);
            return Err(ApiError::unauthenticated(
                "device token rejected (replayed_token)",
            ));
        }
        Ok(done) if done.outbox_rows == 0 => {
            // No install to push to: nothing is stored but the token id and the audit entry.
            drop(tx);
            let mut tx = state.store.begin_write().await?;
            token.record_in(&mut tx.tx).await?;
            audit::append(
                &mut tx.tx,
                now,
                &NewEntry {
                    outcome: "failure",
                    detail: Some("NO_ACTIVE_COMPANION".into()),
                    ..entry
                },
            )
            .await?;
            tx.commit().await?;
            token.committed();
            return Err(ApiError::new(
                ErrorCode::NoActiveCompanion,
                "the account has no companion app that can receive the request",
            ));
        }
        Ok(_) => {}
        Err(e) if e.is_unique_violation() => {
            drop(tx);
            return match existing(state, device, req.idempotency_key).await? {
                Some(found) => same_request(found, &req),
                None => Err(ApiError::internal(&"idempotent delivery vanished")),
            };
        }
        Err(e) => return Err(e.into()),
    }
    tx.commit().await?;
    token.committed();
    state.events.publish(Event::Delivery {
        id: delivery.id.clone(),
    });
    state.outbox_wakeup.notify_one();
    Ok(delivery)
}

/// The delivery this device stored under `key`, if any.
async fn existing(state: &AppState, device: &Device, key: &str) -> ApiResult<Option<Delivery>> {
    let mut conn = state.store.pool().acquire().await?;
    Ok(deliveries::by_idempotency_key(&mut conn, &device.id, key).await?)
}

fn same_request(existing: Delivery, req: &Request<'_>) -> ApiResult<Delivery> {
    if existing.kind == req.kind.as_str() && existing.rp_id == req.rp_id {
        Ok(existing)
    } else {
        Err(ApiError::invalid(
            "idempotencyKey was already used for a different request",
        ))
    }
}

/// A delivery the caller may see: the requesting device, or a companion of the account.
pub async fn get_for_account(state: &AppState, account_id: &str, id: &str) -> ApiResult<Delivery> {
    let mut conn = state.store.pool().acquire().await?;
    match deliveries::get(&mut conn, id).await? {
        Some(d) if d.account_id == account_id => Ok(d),
        _ => Err(ApiError::not_found("delivery")),
    }
}

/// A delivery of the calling device.
pub async fn get_for_device(state: &AppState, device: &Device, id: &str) -> ApiResult<Delivery> {
    let mut conn = state.store.pool().acquire().await?;
    match deliveries::get(&mut conn, id).await? {
        Some(d) if d.device_id == device.id => Ok(d),
        _ => Err(ApiError::not_found("delivery")),
    }
}

fn closed_error(d: &Delivery, now: i64) -> ApiError {
    if d.status == status::EXPIRED || d.expires_at <= now {
        ApiError::new(ErrorCode::Expired, "the delivery has expired")
    } else {
        ApiError::new(
            ErrorCode::AlreadyUsed,
            format!("the delivery is already {}", d.status.to_lowercase()),
        )
    }
}

/// Hands the FIDO URL to a companion of the account, once.
pub async fn claim(
    state: &AppState,
    meta: &RequestMeta,
    account: &Account,
    id: &str,
    companion_id: Option<&str>,
) -> ApiResult<(Delivery, String)> {
    let now = state.now_ms();
    let mut tx = state.store.begin_write().await?;
    let d = match deliveries::get(&mut tx.tx, id).await? {
        Some(d) if d.account_id == account.id => d,
        _ => return Err(ApiError::not_found("delivery")),
    };
    if let Some(cid) = companion_id
        && companions::get(&mut tx.tx, &account.id, cid)
            .await?
            .is_none()
    {
        return Err(ApiError::not_found("companion"));
    }
    let url = deliveries::fido_url(&mut tx.tx, id).await?;
    let open = [status::QUEUED, status::SENT];
    let moved = url.is_some()
        && deliveries::transition(
            &mut tx.tx,
            id,
            &open,
            status::CLAIMED,
            None,
            companion_id,
            true,
            now,
        )
        .await?;
    let (Some(url), true) = (url, moved) else {
        let err = closed_error(&d, now);
        drop(tx);
        crate::pairing::audit_now(
            state,
            Some(&account.id),
            &format!("account:{}", account.id),
            "delivery.claim",
            meta,
            "failure",
            Some(format!("{id}: {}", err.code.as_str())),
        )
        .await?;
        return Err(err);
    };
    audit::append(
        &mut tx.tx,
        now,
        &NewEntry {
            account_id: Some(&account.id),
            actor: &companion_id.map_or_else(
                || format!("account:{}", account.id),
                |c| format!("companion:{c}"),
            ),
            event: "delivery.claim",
            client_addr: meta.client_addr.as_deref(),
            outcome: "success",
            detail: Some(id.to_owned()),
        },
    )
    .await?;
    let d = deliveries::get(&mut tx.tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    tx.commit().await?;
    state.events.publish(Event::Delivery { id: id.to_owned() });
    Ok((d, url))
}

/// Why the user declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// Declined.
    Declined,
    /// The user did not start this: flags the device in the audit log.
    NotMe,
}

/// The companion declines a delivery.
pub async fn deny(
    state: &AppState,
    meta: &RequestMeta,
    account: &Account,
    id: &str,
    reason: DenyReason,
) -> ApiResult<Delivery> {
    let now = state.now_ms();
    let reason_str = match reason {
        DenyReason::Declined => "DECLINED",
        DenyReason::NotMe => "NOT_ME",
    };
    let mut tx = state.store.begin_write().await?;
    let d = match deliveries::get(&mut tx.tx, id).await? {
        Some(d) if d.account_id == account.id => d,
        _ => return Err(ApiError::not_found("delivery")),
    };
    let open = [status::QUEUED, status::SENT, status::CLAIMED];
    if !deliveries::transition(
        &mut tx.tx,
        id,
        &open,
        status::DENIED,
        Some(reason_str),
        None,
        true,
        now,
    )
    .await?
    {
        return Err(closed_error(&d, now));
    }
    audit::append(
        &mut tx.tx,
        now,
        &NewEntry {
            account_id: Some(&account.id),
            actor: &format!("account:{}", account.id),
            event: if reason == DenyReason::NotMe {
                "delivery.deny.not_me"
            } else {
                "delivery.deny"
            },
            client_addr: meta.client_addr.as_deref(),
            outcome: if reason == DenyReason::NotMe {
                "flagged"
            } else {
                "success"
            },
            detail: Some(format!("{id} from device {}", d.device_id)),
        },
    )
    .await?;
    let d = deliveries::get(&mut tx.tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    tx.commit().await?;
    state.events.publish(Event::Delivery { id: id.to_owned() });
    Ok(d)
}

/// How the device's hybrid session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The relying party got its response.
    Success,
    /// The user or the device gave up.
    Cancelled,
    /// The phone was not found nearby over BLE.
    PhoneNotFound,
    /// The tunnel or handshake failed.
    TunnelFailed,
    /// The authenticator returned an error.
    AuthenticatorError,
}

impl Outcome {
    fn reason(self) -> Option<&'static str> {
        match self {
            Self::Success => None,
            Self::Cancelled => Some("CANCELLED"),
            Self::PhoneNotFound => Some("PHONE_NOT_FOUND"),
            Self::TunnelFailed => Some("TUNNEL_FAILED"),
            Self::AuthenticatorError => Some("AUTHENTICATOR_ERROR"),
        }
    }
}

/// The device reports how the delivery ended.
pub async fn complete(
    state: &AppState,
    meta: &RequestMeta,
    device: &Device,
    id: &str,
    outcome: Outcome,
) -> ApiResult<Delivery> {
    let now = state.now_ms();
    let mut tx = state.store.begin_write().await?;
    let d = match deliveries::get(&mut tx.tx, id).await? {
        Some(d) if d.device_id == device.id => d,
        _ => return Err(ApiError::not_found("delivery")),
    };
    let (from, to): (&[&str], &str) = match outcome {
        Outcome::Success => (&[status::CLAIMED], status::COMPLETED),
        _ => (
            &[status::QUEUED, status::SENT, status::CLAIMED],
            status::FAILED,
        ),
    };
    if !deliveries::transition(&mut tx.tx, id, from, to, outcome.reason(), None, true, now).await? {
        if outcome == Outcome::Success
            && matches!(d.status.as_str(), "QUEUED" | "SENT")
            && d.expires_at > now
        {
            return Err(ApiError::invalid(
                "a delivery can complete successfully only after a companion claimed it",
            ));
        }
        return Err(closed_error(&d, now));
    }
    audit::append(
        &mut tx.tx,
        now,
        &NewEntry {
            account_id: d.account_id.as_str().into(),
            actor: &format!("device:{}", device.id),
            event: "delivery.complete",
            client_addr: meta.client_addr.as_deref(),
            outcome: if outcome == Outcome::Success {
                "success"
            } else {
                "failure"
            },
            detail: Some(format!(
                "{id}{}",
                outcome
                    .reason()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
        },
    )
    .await?;
    let d = deliveries::get(&mut tx.tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    tx.commit().await?;
    state.events.publish(Event::Delivery { id: id.to_owned() });
    Ok(d)
}

/// Deliveries waiting for the account's companions (the pull fallback).
pub async fn pending(state: &AppState, account: &Account) -> ApiResult<Vec<Delivery>> {
    let mut conn = state.store.pool().acquire().await?;
    Ok(deliveries::pending(&mut conn, &account.id, state.now_ms()).await?)
}
