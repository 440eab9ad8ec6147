//! `tether-demo`: Tether in one process — bridge, tunnel relay, simulated BLE, simulated phone
//! and device agent — so anyone can watch a screenless device sign in with a passkey on a
//! (simulated) phone, and so the end-to-end tests and the benchmark have one harness.
//!
//! ```text
//!  tether-demo register|sign-in --options FILE --origin URL --state DIR
//!   ┌──────────────────────────── one process ─────────────────────────────────────┐
//!   │ device_agent::flow ──GraphQL──► bridge (SQLite in DIR, dev issuer, dev push   │
//!   │   │   ▲                          sink, relay /cable/…)                        │
//!   │   │   └─ SimMedium (in process) ◄── advert ── PhoneService (simulated phone):  │
//!   │   └────── tunnel (ws://127.0.0.1, Noise) ──► relay ◄── incomingDeliveries,    │
//!   │                                                       verify, claim, answer   │
//!   └──────────────────────────────────────────────────────────────────────────────┘
//!   stdout: the RegistrationResponseJSON / AuthenticationResponseJSON only; stderr: progress
//! ```
//!
//! * [`phone_service`]: the simulated phone as a running companion app ([`PhoneService`]):
//!   registers its install, follows deliveries (push subscription or pull fallback), verifies,
//!   applies a [`Policy`], claims and answers with the software authenticator.
//! * [`identity`]: development-issuer access tokens for the phone ([`DevTokens`]).
//! * [`stack`]: bridge + medium + phone + agent configuration in one process ([`Stack`]);
//!   pairs on first use.
//! * [`options`]: sample WebAuthn options for the walkthrough.
//! * [`bench`]: sequential sign-ins with latency and agent CPU figures.
//! * [`cli`]: the `tether-demo` command line; `docs/demo.md` is its guide.
//!
//! The demo runs everything on loopback without TLS; the one place this needs a `danger_`
//! option (plaintext `ws://` tunnels) is marked in [`stack`].

pub mod bench;
pub mod cli;
pub mod identity;
pub mod options;
pub mod phone_service;
pub mod stack;

pub use identity::{BridgeClock, DevTokens};
pub use phone_service::{PhoneConfig, PhoneService, Policy, ServiceEvent, Source};
pub use stack::{DemoError, Stack, StackConfig};
