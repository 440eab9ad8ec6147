//! Tether's device agent: runs on a headset, hub or sensor that has no screen and signs its user
//! in with the passkey on their phone over FIDO hybrid transport.
//!
//! [`flow`] is the entry point, as a library (async functions XR and hub apps embed) and as the
//! `device-agent` command line ([`cli`]): [`flow::pair`] pairs the device with a bridge once;
//! [`flow::sign_in`] and [`flow::register`] take WebAuthn options, ask the bridge to push the
//! request to the user's phone, find the phone over BLE, run the hybrid tunnel and return the
//! standard `AuthenticationResponseJSON` / `RegistrationResponseJSON`. Underneath:
//! [`device_key`] (the device's key and identity file), [`bridge_client`] (the bridge API),
//! [`webauthn`] (options, `clientDataJSON`, response JSON), [`session`] (the driver loop around
//! the sans-I/O `hybrid` initiator), [`tunnel`] (the relay WebSocket), and [`inspect`] (an
//! interop debugging tool that decodes URLs, adverts and domain ids exactly as the agent does).
//! The protocol itself lives in the `hybrid` crate; BLE sources in `tether-ble`.

pub mod bridge_client;
pub mod cli;
pub mod device_key;
pub mod flow;
pub mod inspect;
pub mod session;
pub mod tunnel;
pub mod webauthn;
