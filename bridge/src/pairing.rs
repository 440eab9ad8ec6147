//! Pairing a screenless device to an account.
//!
//! 1. The device calls `startPairing` with its P-256 public key, a proof that it holds the
//!    private key (a device token signed by it with `kid` = `"pairing"`), a name and a model. It
//!    gets a pairing id and an 8-digit code, which reaches the user out of band (printed label,
//!    spoken, shown in the headset's own view).
//! 2. The user enters the code in the companion app, signed in to the account:
//!    `confirmPairing(code, name)`.
//! 3. The device learns the result by subscription or by polling `pairing(id)` with tokens
//!    signed by its key.
//!
//! Codes are single-use, expire (`limits.pairing_code_ttl_secs`, 10 minutes), are stored only as
//! SHA-256 hashes and compared in constant time. Wrong codes are counted per account: after
//! `limits.pairing_lockout_after` (5) in a row the account cannot confirm pairings for
//! `limits.pairing_lockout_secs` (15 minutes). Failures are also rate-limited per account
//! (`limits.pairing_failures_per_account_per_hour`, 10); once over it, an account is refused
//! before its code is evaluated. The lockout lives in the database, so it holds
//! across bridge instances. With 10^8 codes, 5 tries per lockout period and a 10-minute code
//! lifetime, guessing a code is hopeless.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::device::{self, DevicePublicKey};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::events::Event;
use crate::id;
use crate::principal::RequestMeta;
use crate::state::AppState;
use crate::store::accounts::{self, Account};
use crate::store::audit::{self, NewEntry};
use crate::store::devices::{self, Device, status};
use crate::store::pairings::{self, Pairing};

/// Digits in a pairing code.
pub const CODE_DIGITS: usize = 8;
/// `kid` of the proof token sent with `startPairing`.
pub const PROOF_KID: &str = "pairing";

/// What `startPairing` returns.
#[derive(Debug, Clone)]
pub struct Started {
    /// The pairing.
    pub pairing: Pairing,
    /// The code to show the user.
    pub code: String,
}

fn code_hash(code: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"tether pairing code v1\0");
    h.update(code.as_bytes());
    h.finalize().to_vec()
}

/// Checks a display name or model: 1–64 characters, no control characters.
pub fn check_label(what: &str, value: &str) -> ApiResult<String> {
    let value = value.trim();
    let count = value.chars().count();
    if count == 0 || count > 64 || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{what} must be 1 to 64 characters without control characters"
        )));
    }
    Ok(value.to_owned())
}

/// Starts pairing a device.
pub async fn start(
    state: &AppState,
    meta: &RequestMeta,
    public_key: &str,
    proof: &str,
    name: &str,
    model: &str,
) -> ApiResult<Started> {
    let name = check_label("name", name)?;
    let model = check_label("model", model)?;
    let key = DevicePublicKey::from_base64url(public_key.trim()).map_err(|_| {
        ApiError::invalid("publicKey must be an uncompressed P-256 point, base64url (65 bytes)")
    })?;
    let address = meta.client_addr.clone().unwrap_or_else(|| "unknown".into());
    if let Err(wait) = state.limits.pairing_starts_per_address.check(&address) {
        audit_now(
            state,
            None,
            &format!("address:{address}"),
            "ratelimit.pairing_start",
            meta,
            "denied",
            None,
        )
        .await?;
        return Err(ApiError::rate_limited(
            "too many pairing attempts from this address",
            wait,
        ));
    }
    let now = state.now_ms();
    let claims = device::verify_device_token(
        proof,
        &key,
        PROOF_KID,
        &state.config.public_url,
        state.clock.now_secs(),
    )
    .map_err(|e| ApiError::unauthenticated(format!("pairing proof rejected ({})", e.code())))?;
    let mut tx = state.store.begin_write().await?;
    if !devices::record_token_id(
        &mut tx.tx,
        &claims.jti,
        (claims.expires_at + crate::auth::device::DEVICE_TOKEN_LEEWAY_SECS).saturating_mul(1000),
    )
    .await?
    {
        return Err(ApiError::unauthenticated(
            "pairing proof rejected (replayed_token)",
        ));
    }
    let device =
        match devices::upsert_pending(&mut tx.tx, &key.to_sec1(), &name, &model, now).await? {
            Ok(device) => device,
            Err(existing) if existing.status == status::ACTIVE => {
                return Err(ApiError::new(
                    ErrorCode::AlreadyUsed,
                    "this device key is already paired",
                ));
            }
            Err(_) => {
                return Err(ApiError::invalid(
                    "this device key was revoked or expired: generate a new key",
                ));
            }
        };
    let (code, hash) = loop {
        let code = id::random_digits(CODE_DIGITS).map_err(|e| ApiError::internal(&e))?;
        let hash = code_hash(&code);
        if !pairings::code_in_use(&mut tx.tx, &hash, now).await? {
            break (code, hash);
        }
    };
    let expires = now + state.config.limits.pairing_code_ttl_secs * 1000;
    let pairing = pairings::create(&mut tx.tx, &device.id, &hash, now, expires).await?;
    audit::append(
        &mut tx.tx,
        now,
        &NewEntry {
            account_id: None,
            actor: &format!("device:{}", device.id),
            event: "pairing.start",
            client_addr: meta.client_addr.as_deref(),
            outcome: "success",
            detail: Some(format!("pairing {}", pairing.id)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Started { pairing, code })
}

/// Normalizes a code as typed: spaces and dashes are ignored.
fn normalize_code(code: &str) -> ApiResult<String> {
    let digits: String = code.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if digits.len() != CODE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(format!(
            "code must be {CODE_DIGITS} digits"
        )));
    }
    Ok(digits)
}

/// Confirms a pairing code for the companion's account, naming the device.
pub async fn confirm(
    state: &AppState,
    meta: &RequestMeta,
    account: &Account,
    code: &str,
    name: Option<&str>,
) -> ApiResult<Device> {
    let code = normalize_code(code)?;
    let name = name.map(|n| check_label("name", n)).transpose()?;
    let now = state.now_ms();
    let actor = format!("account:{}", account.id);
    // Failures are rate-limited per account; an account over the limit is refused before its
    // code is looked at, so it cannot keep guessing.
    if let Some(wait) = state
        .limits
        .pairing_failures_per_account
        .blocked(&account.id)
    {
        audit_now(
            state,
            Some(&account.id),
            &actor,
            "ratelimit.pairing_confirm",
            meta,
            "denied",
            None,
        )
        .await?;
        return Err(ApiError::rate_limited("too many pairing attempts", wait));
    }
    let mut tx = state.store.begin_write().await?;
    let current = accounts::get(&mut tx.tx, &account.id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    if current.pairing_locked_until > now {
        let wait = u64::try_from((current.pairing_locked_until - now + 999) / 1000).unwrap_or(1);
        drop(tx);
        audit_now(
            state,
            Some(&account.id),
            &actor,
            "pairing.locked",
            meta,
            "denied",
            Some(format!("locked for {wait} s")),
        )
        .await?;
        return Err(ApiError::rate_limited(
            "pairing is locked after repeated wrong codes",
            wait,
        ));
    }
    let hash = code_hash(&code);
    let found = pairings::pending_by_code(&mut tx.tx, &hash, now)
        .await?
        .into_iter()
        .find(|(_, stored)| bool::from(stored.as_slice().ct_eq(&hash)));
    let Some((pairing, _)) = found else {
        let limits = &state.config.limits;
        let (failures, locked_until) = accounts::record_pairing_failure(
            &mut tx.tx,
            &account.id,
            now,
            i64::from(limits.pairing_lockout_after),
            limits.pairing_lockout_secs * 1000,
        )
        .await?;
        let event = if locked_until > 0 {
            "pairing.lockout"
        } else {
            "pairing.failure"
        };
        audit::append(
            &mut tx.tx,
            now,
            &NewEntry {
                account_id: Some(&account.id),
                actor: &actor,
                event,
                client_addr: meta.client_addr.as_deref(),
                outcome: "failure",
                detail: Some(format!("{failures} wrong code(s) in a row")),
            },
        )
        .await?;
        tx.commit().await?;
        if let Err(wait) = state
            .limits
            .pairing_failures_per_account
            .record(&account.id)
        {
            return Err(ApiError::rate_limited(
                "too many failed pairing attempts",
                wait,
            ));
        }
        if locked_until > 0 {
            let wait = u64::try_from((locked_until - now + 999) / 1000).unwrap_or(1);
            return Err(ApiError::rate_limited(
                "pairing is locked after repeated wrong codes",
                wait,
            ));
        }
        return Err(ApiError::not_found("pending pairing with this code"));
    };
    if devices::count_active(&mut tx.tx, &account.id).await?
        >= i64::from(state.config.limits.devices_per_account)
    {
        return Err(ApiError::invalid(
            "the account has the most devices allowed: revoke one first",
        ));
    }
    let device = devices::get(&mut tx.tx, &pairing.device_id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    let name = name.unwrap_or_else(|| device.name.clone());
    if !pairings::confirm(&mut tx.tx, &pairing.id, &account.id, now).await? {
        return Err(ApiError::not_found("pending pairing with this code"));
    }
    devices::activate(&mut tx.tx, &device.id, &account.id, &name, now).await?;
    accounts::reset_pairing_failures(&mut tx.tx, &account.id).await?;
    audit::append(
        &mut tx.tx,
        now,
        &NewEntry {
            account_id: Some(&account.id),
            actor: &actor,
            event: "pairing.confirm",
            client_addr: meta.client_addr.as_deref(),
            outcome: "success",
            detail: Some(format!("device {} paired as {name:?}", device.id)),
        },
    )
    .await?;
    let device = devices::get(&mut tx.tx, &device.id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    tx.commit().await?;
    state.events.publish(Event::Pairing { id: pairing.id });
    Ok(device)
}

/// A pairing of the calling device.
pub async fn get_for_device(state: &AppState, device: &Device, id: &str) -> ApiResult<Pairing> {
    let mut conn = state.store.pool().acquire().await?;
    match pairings::get(&mut conn, id).await? {
        Some(p) if p.device_id == device.id => Ok(p),
        _ => Err(ApiError::not_found("pairing")),
    }
}

/// Appends an audit entry in its own statement.
pub(crate) async fn audit_now(
    state: &AppState,
    account_id: Option<&str>,
    actor: &str,
    event: &str,
    meta: &RequestMeta,
    outcome: &str,
    detail: Option<String>,
) -> ApiResult<()> {
    let mut conn = state.store.pool().acquire().await?;
    audit::append(
        &mut conn,
        state.now_ms(),
        &NewEntry {
            account_id,
            actor,
            event,
            client_addr: meta.client_addr.as_deref(),
            outcome,
            detail,
        },
    )
    .await?;
    Ok(())
}
