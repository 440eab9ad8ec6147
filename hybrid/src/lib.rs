//! Sans-I/O implementation of FIDO CTAP 2.2 hybrid transport ("caBLE v2"), both roles.
//!
//! This crate does no I/O: it never opens a socket, reads a clock or asks the operating system for
//! randomness. Time arrives as a [`Time`] argument and randomness as an injected
//! [`rand_core::CryptoRng`]; bytes go in through `handle_*` methods and come out of `poll_*`
//! methods. Drivers in `device-agent` (the client, or *initiator*) and the simulated phone (the
//! *authenticator*) own the sockets, the BLE radio and the timers.
//!
//! # Message flow (QR-initiated)
//!
//! 1. The client builds a [`url::FidoUrl`] (its P-256 identity key, a 16-byte QR secret and the
//!    request type). Tether delivers that URL by push instead of a QR code.
//! 2. The phone derives the tunnel id ([`derive`]), opens `/cable/new/<tunnel id>` on a relay
//!    ([`tunnel`]) and receives a routing id.
//! 3. The phone advertises 20 encrypted bytes over BLE ([`advert`]); the client trial-decrypts them,
//!    maps the domain id to a host ([`domain`]) and connects to `/cable/connect/...`.
//! 4. Both run a Noise `KNpsk0` handshake ([`noise`]); then every message is encrypted with the
//!    hybrid [`crypter`] and framed ([`frame`]).
//! 5. The phone sends its post-handshake message (getInfo); the client sends exactly one CTAP2
//!    command ([`ctap`]), reads the reply and sends shutdown.
//!
//! [`initiator::Initiator`] and [`authenticator::Authenticator`] run these steps as state
//! machines ([`session`] has what they share). Every decoder here is total: bad bytes give a
//! typed error, never a panic.
//!
//! The protocol reference with its sources is `docs/hybrid-protocol.md` in the repository.

pub mod advert;
pub mod authenticator;
pub mod cbor;
pub mod crypter;
pub mod ctap;
pub mod derive;
pub mod digits;
pub mod domain;
pub mod frame;
pub mod initiator;
pub mod noise;
mod secret;
pub mod session;
#[cfg(feature = "test-util")]
pub mod test_util;
mod time;
pub mod tunnel;
pub mod url;

pub use secret::{QrSecret, Secret};
pub use time::Time;
