//! What a Tether companion app needs, and the simulated phone built on it.
//!
//! A screenless device (headset, hub) asks the bridge to sign its user in; the bridge pushes a
//! signed *envelope* to the user's phones; the companion app verifies it, shows the user what is
//! being asked and a number to compare with the device, and on approval claims the delivery's
//! `FIDO:/` URL and hands it to the phone's passkey authenticator, which then runs the standard
//! FIDO hybrid flow with the device. This crate is that app's side:
//!
//! * [`client`]: [`CompanionClient`] — register the push token, list, claim, deny and watch
//!   deliveries, and turn a push payload into a [`VerifiedEnvelope`].
//! * [`envelope`]: the envelope format and its checks ([`VerifiedEnvelope`], [`EnvelopeError`]),
//!   without any I/O; also the [`Clock`] seam.
//! * [`jwks`]: the bridge's signing keys, fetched from `/.well-known/jwks.json` and cached
//!   ([`JwksCache`]).
//!
//! The crate does not link the bridge: an app needs only this crate and the bridge's URL.
//!
//! # The sequence, for mobile developers
//!
//! 1. **Sign the user in** with the operator's identity provider, and give the client a
//!    [`TokenProvider`] that returns a current access token (any async closure will do). The
//!    client asks it before every request, and once more after the bridge refused a token.
//! 2. **Register the push token** with [`CompanionClient::register`] (platform, the APNs or FCM
//!    token, the app's bundle or app id, a name like "Alice's iPhone") at every launch, and call
//!    [`CompanionClient::update_push_token`] when the OS rotates it. Keep the returned companion
//!    id; [`CompanionClient::remove`] it at sign-out. (Pairing a new device is the one other
//!    thing the app does: the user types the code the device shows and the app calls
//!    [`CompanionClient::confirm_pairing`].)
//! 3. **Receive a delivery.** Pass the notification payload as JSON to
//!    [`CompanionClient::handle_push`] (APNs: the `userInfo` dictionary, which carries `envelope`
//!    at the top level; FCM: the data map, which carries `data.envelope`). With pushes turned off,
//!    poll [`CompanionClient::pending_deliveries`] (or, in the foreground, follow
//!    [`CompanionClient::incoming_deliveries`]) and pass each [`Delivery::envelope`] to
//!    [`CompanionClient::verify_envelope`].
//! 4. **Verify before showing anything.** Either call returns a [`VerifiedEnvelope`] only if the
//!    signature, key id, issuer, audience, expiry and account all check out; on any
//!    [`EnvelopeError`] show nothing and drop the notification. Never display the unsigned fields
//!    of a [`Delivery`].
//! 5. **Ask the user.** Show [`VerifiedEnvelope::prompt`] (e.g. `Sign in to example.com on
//!    Quest 3 'Living room'?`) and [`VerifiedEnvelope::number_code`]; the user checks that the
//!    device shows the same number. Hide the prompt at [`VerifiedEnvelope::expires_at`].
//! 6. **On approval, claim** with [`CompanionClient::claim`]: it returns the [`ClaimedUrl`]
//!    exactly once. [`ErrorCode::AlreadyUsed`] means another phone (or an earlier tap) took it,
//!    [`ErrorCode::Expired`] that the five minutes passed: tell the user and stop.
//! 7. **Hand the URL to the authenticator** ([`ClaimedUrl::expose`]: on iOS and Android the
//!    platform's hybrid (caBLE) handler, as if the user had scanned the device's QR code) and drop
//!    it. Do not log or store it. The device follows the result over the bridge.
//! 8. **On refusal, deny** with [`CompanionClient::deny`] — [`DenyReason::NotMe`] when the user
//!    did not start this, which flags the device in the account's audit log.
//!
//! Optionally [`CompanionClient::watch_delivery`] follows the delivery's status (e.g. to close
//! the prompt when another phone answered).
//!
//! ```no_run
//! use companion::{
//!     AccessToken, BridgeConfig, ClientError, CompanionClient, DenyReason, ErrorCode, Platform,
//!     TokenError,
//! };
//! # async fn identity_provider_token() -> String { String::new() }
//! # async fn ask_user(_prompt: &str, _number: &str) -> bool { true }
//! # fn open_with_platform_authenticator(_fido_url: &str) {}
//!
//! async fn on_push(apns_user_info_json: &str) -> Result<(), ClientError> {
//!     // 1. The client, with the identity provider's token.
//!     let client = CompanionClient::new(BridgeConfig::new("https://bridge.example.com"), || async {
//!         Ok::<_, TokenError>(AccessToken::new(identity_provider_token().await))
//!     })?;
//!     // 2. At launch (and when the OS rotates the token).
//!     client
//!         .register(Platform::Apns, "a1b2c3d4", "com.example.tether", "Alice's iPhone")
//!         .await?;
//!     // 3 and 4. The push arrives: verify before showing anything.
//!     let envelope = client.handle_push(apns_user_info_json).await?;
//!     // 5. Ask, with the number the device shows.
//!     if ask_user(&envelope.prompt(), envelope.number_code()).await {
//!         // 6. Claim: the URL comes exactly once.
//!         match client.claim(envelope.delivery_id()).await {
//!             // 7. Hand it to the authenticator, then drop it.
//!             Ok(url) => open_with_platform_authenticator(url.expose()),
//!             Err(e) if e.code() == Some(&ErrorCode::AlreadyUsed) => { /* answered elsewhere */ }
//!             Err(e) => return Err(e),
//!         }
//!     } else {
//!         // 8. Refuse.
//!         client.deny(envelope.delivery_id(), DenyReason::Declined).await?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # Choices
//!
//! * HTTP is `reqwest` with rustls and the platform's certificate verifier (the system trust
//!   store on iOS, Android, macOS, Windows and Linux), plus an optional extra CA; WebSockets are
//!   `tokio-tungstenite` over a `reqwest` HTTP/1.1 upgrade, so both share one TLS setup.
//! * Envelope signatures are checked with the RustCrypto `p256` crate the rest of the workspace
//!   uses; the envelope parser is our own, small and strict (see [`envelope`]), rather than a
//!   general JWT library with algorithm negotiation.

pub mod authenticator;
pub mod client;
pub mod envelope;
pub mod jwks;
#[cfg(feature = "phone")]
pub mod phone;
pub mod store;

pub use client::{
    AccessToken, ApiError, BridgeConfig, ClaimedUrl, ClientError, Companion, CompanionClient,
    Delivery, DeliveryStatus, DeliveryWatch, DenyReason, Device, DeviceStatus, ErrorCode, Platform,
    StaticToken, TokenError, TokenProvider,
};
pub use envelope::{
    Clock, EnvelopeError, Expectations, ManualClock, PushPayloadError, RequestKind, SystemClock,
    VerifiedEnvelope,
};
pub use jwks::{JwksCache, JwksError, JwksPolicy};
