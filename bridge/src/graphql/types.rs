//! GraphQL object and input types.

use async_graphql::{Enum, ID, InputObject, SimpleObject};

use crate::delivery::StoredContext;
use crate::id::rfc3339;
use crate::store::audit::Entry;
use crate::store::companions::Companion;
use crate::store::deliveries::Delivery;
use crate::store::devices::Device;
use crate::store::pairings::Pairing;

/// Push platform of a companion install.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum Platform {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging (HTTP v1).
    Fcm,
}

impl Platform {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Apns => "APNS",
            Self::Fcm => "FCM",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "FCM" { Self::Fcm } else { Self::Apns }
    }
}

/// A companion app install of the account.
#[derive(SimpleObject, Debug)]
#[graphql(name = "Companion")]
pub struct CompanionObject {
    /// Id.
    pub id: ID,
    /// Push platform.
    pub platform: Platform,
    /// APNs topic (bundle id) or FCM app id.
    pub app_id: String,
    /// Name shown to the user.
    pub display_name: String,
    /// Whether pushes reach it (a provider may report its token dead).
    pub active: bool,
    /// Registered at (RFC 3339).
    pub created_at: String,
    /// Last changed at (RFC 3339).
    pub updated_at: String,
}

impl From<Companion> for CompanionObject {
    fn from(c: Companion) -> Self {
        Self {
            id: ID(c.id),
            platform: Platform::parse(&c.platform),
            app_id: c.app_id,
            display_name: c.display_name,
            active: c.active,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
        }
    }
}

/// Device lifecycle.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum DeviceStatus {
    /// Pairing not yet confirmed.
    Pending,
    /// Paired.
    Active,
    /// Revoked.
    Revoked,
    /// Expired after inactivity.
    Expired,
}

fn device_status(s: &str) -> DeviceStatus {
    match s {
        "ACTIVE" => DeviceStatus::Active,
        "REVOKED" => DeviceStatus::Revoked,
        "EXPIRED" => DeviceStatus::Expired,
        _ => DeviceStatus::Pending,
    }
}

/// A screenless device.
#[derive(SimpleObject, Debug)]
#[graphql(name = "Device")]
pub struct DeviceObject {
    /// Id.
    pub id: ID,
    /// Name, e.g. "Living room".
    pub name: String,
    /// Model, e.g. "Quest 3".
    pub model: String,
    /// Lifecycle state.
    pub status: DeviceStatus,
    /// Created at (RFC 3339).
    pub created_at: String,
    /// Last authenticated call (RFC 3339, updated at most once a minute).
    pub last_seen_at: String,
}

impl From<Device> for DeviceObject {
    fn from(d: Device) -> Self {
        Self {
            id: ID(d.id),
            name: d.name,
            model: d.model,
            status: device_status(&d.status),
            created_at: rfc3339(d.created_at),
            last_seen_at: rfc3339(d.last_seen_at),
        }
    }
}

/// What a device gets from `startPairing`.
#[derive(SimpleObject, Debug)]
pub struct PairingStart {
    /// The pairing (poll or subscribe with it).
    pub pairing_id: ID,
    /// The device's id (the `kid` of its tokens from now on).
    pub device_id: ID,
    /// The code the user types into the companion app.
    pub code: String,
    /// When the code stops working (RFC 3339).
    pub expires_at: String,
}

/// Pairing state.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum PairingStatus {
    /// Waiting for the code.
    Pending,
    /// Confirmed: the device is paired.
    Confirmed,
    /// The code expired.
    Expired,
}

/// A pairing.
#[derive(SimpleObject, Debug)]
#[graphql(name = "Pairing")]
pub struct PairingObject {
    /// Id.
    pub id: ID,
    /// State.
    pub status: PairingStatus,
    /// The device.
    pub device_id: ID,
    /// Expiry of the code (RFC 3339).
    pub expires_at: String,
}

impl From<Pairing> for PairingObject {
    fn from(p: Pairing) -> Self {
        Self {
            id: ID(p.id),
            status: match p.status.as_str() {
                "CONFIRMED" => PairingStatus::Confirmed,
                "EXPIRED" => PairingStatus::Expired,
                _ => PairingStatus::Pending,
            },
            device_id: ID(p.device_id),
            expires_at: rfc3339(p.expires_at),
        }
    }
}

/// Sign-in or registration.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum DeliveryKind {
    /// getAssertion.
    SignIn,
    /// makeCredential.
    Registration,
}

/// Delivery status.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum DeliveryStatus {
    /// Stored, push pending.
    Queued,
    /// Pushed.
    Sent,
    /// A companion took the URL.
    Claimed,
    /// The device finished successfully.
    Completed,
    /// Declined on the phone.
    Denied,
    /// Five minutes passed.
    Expired,
    /// Failed; see `reason`.
    Failed,
}

impl DeliveryStatus {
    /// Whether no further change can happen.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Denied | Self::Expired | Self::Failed
        )
    }

    fn parse(s: &str) -> Self {
        match s {
            "SENT" => Self::Sent,
            "CLAIMED" => Self::Claimed,
            "COMPLETED" => Self::Completed,
            "DENIED" => Self::Denied,
            "EXPIRED" => Self::Expired,
            "FAILED" => Self::Failed,
            _ => Self::Queued,
        }
    }
}

/// A sign-in or registration request on its way to the account's phones.
#[derive(SimpleObject, Debug)]
#[graphql(name = "Delivery")]
pub struct DeliveryObject {
    /// Id.
    pub id: ID,
    /// Sign-in or registration.
    pub kind: DeliveryKind,
    /// Status.
    pub status: DeliveryStatus,
    /// Why it failed or was denied (`NO_ACTIVE_COMPANION`, `DECLINED`, `NOT_ME`, ...).
    pub reason: Option<String>,
    /// Relying party id.
    pub rp_id: String,
    /// The two-digit number both screens show (number matching).
    pub number_code: String,
    /// Requesting device.
    pub device_id: ID,
    /// Its name when the request was made.
    pub device_name: String,
    /// Its model.
    pub device_model: String,
    /// Origin the device said the user signs in to.
    pub origin: Option<String>,
    /// Account name hint from the relying party.
    pub user_name: Option<String>,
    /// The signed envelope (JWS, ES256) also carried by the push; verify it with the JWKS.
    pub envelope: String,
    /// Created at (RFC 3339).
    pub created_at: String,
    /// Expires at (RFC 3339): created + 300 s.
    pub expires_at: String,
    /// Last status change (RFC 3339).
    pub updated_at: String,
}

impl From<Delivery> for DeliveryObject {
    fn from(d: Delivery) -> Self {
        let ctx: StoredContext = serde_json::from_str(&d.context).unwrap_or_default();
        Self {
            id: ID(d.id),
            kind: if d.kind == "REGISTRATION" {
                DeliveryKind::Registration
            } else {
                DeliveryKind::SignIn
            },
            status: DeliveryStatus::parse(&d.status),
            reason: d.reason,
            rp_id: d.rp_id,
            number_code: d.number_code,
            device_id: ID(d.device_id),
            device_name: ctx.device_name,
            device_model: ctx.device_model,
            origin: ctx.display.origin,
            user_name: ctx.display.user_name,
            envelope: d.envelope,
            created_at: rfc3339(d.created_at),
            expires_at: rfc3339(d.expires_at),
            updated_at: rfc3339(d.updated_at),
        }
    }
}

/// A claimed delivery: the URL, handed out once.
#[derive(SimpleObject, Debug)]
pub struct ClaimedDelivery {
    /// The delivery, now `CLAIMED`.
    pub delivery: DeliveryObject,
    /// The `FIDO:/` URL to open with the platform authenticator.
    pub fido_url: String,
}

/// Why the user declined.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum DenyReason {
    /// Declined.
    Declined,
    /// "This wasn't me": the device is flagged in the audit log.
    NotMe,
}

/// How the device's session ended.
#[derive(Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum DeliveryOutcome {
    /// Success.
    Success,
    /// Gave up.
    Cancelled,
    /// Phone not found nearby.
    PhoneNotFound,
    /// Tunnel or handshake failed.
    TunnelFailed,
    /// The authenticator returned an error.
    AuthenticatorError,
}

/// An audit log entry.
#[derive(SimpleObject, Debug)]
#[graphql(name = "AuditEntry")]
pub struct AuditEntryObject {
    /// Sequence id.
    pub id: ID,
    /// When (RFC 3339).
    pub at: String,
    /// Who: `device:…`, `companion:…`, `account:…`, `address:…` or `system`.
    pub actor: String,
    /// What, e.g. `delivery.claim`.
    pub event: String,
    /// Client address.
    pub client_address: Option<String>,
    /// `success`, `failure`, `denied`, `expired` or `flagged`.
    pub outcome: String,
    /// Detail.
    pub detail: Option<String>,
}

impl From<Entry> for AuditEntryObject {
    fn from(e: Entry) -> Self {
        Self {
            id: ID(e.id.to_string()),
            at: rfc3339(e.at),
            actor: e.actor,
            event: e.event,
            client_address: e.client_addr,
            outcome: e.outcome,
            detail: e.detail,
        }
    }
}

/// A page of the audit log, newest first.
#[derive(SimpleObject, Debug)]
pub struct AuditPage {
    /// Entries.
    pub entries: Vec<AuditEntryObject>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The calling account.
#[derive(SimpleObject, Debug)]
#[graphql(name = "Account")]
pub struct AccountObject {
    /// Id.
    pub id: ID,
}

/// `registerCompanion` input.
#[derive(InputObject, Debug)]
pub struct RegisterCompanionInput {
    /// Push platform.
    pub platform: Platform,
    /// The provider's device token (APNs hex token or FCM registration token).
    pub push_token: String,
    /// APNs topic (bundle id) or FCM app id.
    pub app_id: String,
    /// Name shown to the user, e.g. "Alice's iPhone".
    pub display_name: String,
}

/// `startPairing` input.
#[derive(InputObject, Debug)]
pub struct StartPairingInput {
    /// The device key: uncompressed P-256 point (65 bytes), base64url without padding.
    pub public_key: String,
    /// A device token signed with that key, `kid` = "pairing" (proof of possession).
    pub proof: String,
    /// Device name, e.g. "Living room".
    pub name: String,
    /// Device model, e.g. "Quest 3".
    pub model: String,
}

/// Display context of a delivery.
#[derive(InputObject, Debug, Default)]
pub struct DeliveryContextInput {
    /// Origin the user signs in to, e.g. `https://example.com`.
    pub origin: Option<String>,
    /// Account name hint.
    pub user_name: Option<String>,
}

/// `requestSignIn` / `requestRegistration` input.
#[derive(InputObject, Debug)]
pub struct DeliveryInput {
    /// The `FIDO:/` URL (request type must match the mutation; timestamp fresh).
    pub fido_url: String,
    /// Relying party id.
    pub rp_id: String,
    /// Retry key: the same key returns the same delivery.
    pub idempotency_key: String,
    /// What the phone shows.
    #[graphql(default)]
    pub context: Option<DeliveryContextInput>,
}
