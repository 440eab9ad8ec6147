//! Tether's device agent: runs on a headset, hub or sensor that has no screen and signs its user
//! in with the passkey on their phone over FIDO hybrid transport.
//!
//! So far this crate holds the interop debugging tool, [`inspect`]: it decodes a `FIDO:/` URL, a
//! phone's BLE advert and a tunnel domain id exactly as the agent does, so an integrator can see
//! what a phone or a client actually sent. The protocol itself lives in the sans-I/O `hybrid`
//! crate; this crate will add the I/O drivers (bridge client, BLE scanner, tunnel client).

pub mod bridge_client;
pub mod cli;
pub mod device_key;
pub mod inspect;
pub mod session;
pub mod tunnel;
pub mod webauthn;
