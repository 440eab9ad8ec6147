//! The BLE seam of Tether: where hybrid adverts (20 bytes of service data) come from.
//!
//! In FIDO hybrid transport the phone proves it is near the client by broadcasting a 20-byte
//! encrypted advert as BLE *service data* under the 16-bit UUID `0xFFF9` (FIDO Alliance) or
//! `0xFDE2` (Google, older Android phones). The client only listens (central role); it never
//! connects to the phone over BLE. Everything the agent needs from the radio is therefore a stream
//! of [`Advert`]s, which is what [`AdvertSource`] gives:
//!
//! ```text
//!   phone ──20-byte service data──► AdvertSource::next_advert ──► device agent driver loop
//!                                      │                              (trial-decrypts with
//!                                      ├─ btle::BtleScanner           hybrid::initiator)
//!                                      └─ sim::SimScanner
//! ```
//!
//! * [`btle::BtleScanner`] (cargo feature `btleplug`, on by default) scans with the host's
//!   Bluetooth stack through `btleplug`. It builds everywhere; at run time it needs D-Bus and
//!   BlueZ on Linux and answers [`BleError::Unavailable`] (never a panic) when they are missing.
//! * [`sim::SimMedium`] is a simulated medium carrying the same 20-byte adverts, either inside one
//!   process or between processes on one machine (a directory of Unix datagram sockets), so tests
//!   and the demo can run a simulated phone and a device agent as separate programs.
//!
//! Neither source decrypts anything: adverts of every nearby session come through, and the
//! driver's hybrid session ignores the ones that are not its own. Both apply the proximity filter
//! of [`ScanConfig::rssi_floor`].

pub mod sim;

#[cfg(feature = "btleplug")]
pub mod btle;

use thiserror::Error;

/// Length of the service data of a hybrid advert (CTAP 2.2 §11.5.1.2). Sources deliver only
/// service data of exactly this length.
pub const SERVICE_DATA_LEN: usize = 20;

/// The default proximity floor of [`ScanConfig`], in dBm.
///
/// -90 dBm is at the edge of what BLE receivers decode at all: the default keeps every advert a
/// receiver can hear reliably and drops only the faintest (typically a phone in another room or
/// behind several walls). Deployments wanting "same room" should raise it (about -70 dBm).
pub const DEFAULT_RSSI_FLOOR: i16 = -90;

/// The 16-bit service UUIDs under which phones advertise hybrid service data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceUuid {
    /// `0xFFF9`, registered to the FIDO Alliance; used by current phones.
    Fido,
    /// `0xFDE2`, Google's; used by older Android phones.
    Google,
}

impl ServiceUuid {
    /// The 16-bit UUID.
    pub const fn uuid16(self) -> u16 {
        match self {
            Self::Fido => 0xFFF9,
            Self::Google => 0xFDE2,
        }
    }

    /// The service for a 16-bit UUID, if it is one of the two hybrid services.
    pub const fn from_uuid16(uuid: u16) -> Option<Self> {
        match uuid {
            0xFFF9 => Some(Self::Fido),
            0xFDE2 => Some(Self::Google),
            _ => None,
        }
    }
}

/// One received hybrid advert: 20 bytes of service data under a hybrid service UUID.
///
/// The data is ciphertext (only the session that made the QR secret can decrypt it), so it may
/// be printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    /// The service UUID the data was advertised under.
    pub service: ServiceUuid,
    /// The service data.
    pub data: [u8; SERVICE_DATA_LEN],
    /// Received signal strength in dBm, when the source knows it.
    pub rssi: Option<i16>,
}

/// How a source filters what it hears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanConfig {
    /// Adverts received weaker than this (in dBm) are dropped: a crude proximity check, since a
    /// phone approving a sign-in should be next to the device. Adverts whose strength the
    /// source does not know are kept. `None` keeps everything. Default:
    /// [`DEFAULT_RSSI_FLOOR`].
    pub rssi_floor: Option<i16>,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            rssi_floor: Some(DEFAULT_RSSI_FLOOR),
        }
    }
}

impl ScanConfig {
    /// Whether an advert with this signal strength passes the floor.
    pub fn admits(&self, rssi: Option<i16>) -> bool {
        match (self.rssi_floor, rssi) {
            (Some(floor), Some(rssi)) => rssi >= floor,
            _ => true,
        }
    }
}

/// A source of hybrid adverts: a BLE scanner or a simulated medium.
///
/// `next_advert` is cancel safe: a driver may drop its future (for example in `tokio::select!`)
/// without losing anything but, at worst, one repetition of an advert (phones repeat theirs
/// many times a second).
#[async_trait::async_trait]
pub trait AdvertSource: Send {
    /// Waits for the next advert that passes the source's [`ScanConfig`].
    async fn next_advert(&mut self) -> Result<Advert, BleError>;
}

/// Why a source cannot deliver adverts.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BleError {
    /// There is no usable Bluetooth: no D-Bus system bus, no BlueZ, no adapter, or the adapter
    /// is powered off. The text says which, for the user.
    #[error("Bluetooth unavailable: {0}")]
    Unavailable(String),
    /// The source ended: the adapter went away, or every handle of a simulated medium was
    /// dropped.
    #[error("advert source closed")]
    Closed,
    /// An I/O error on the simulated medium (its socket directory).
    #[error("simulated BLE medium: {0}")]
    Io(#[from] std::io::Error),
    /// The Bluetooth stack reported an error while scanning.
    #[error("Bluetooth error: {0}")]
    Bluetooth(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip() {
        for s in [ServiceUuid::Fido, ServiceUuid::Google] {
            assert_eq!(ServiceUuid::from_uuid16(s.uuid16()), Some(s));
        }
        assert_eq!(ServiceUuid::Fido.uuid16(), 0xFFF9);
        assert_eq!(ServiceUuid::Google.uuid16(), 0xFDE2);
        assert_eq!(ServiceUuid::from_uuid16(0x180F), None);
    }

    #[test]
    fn floor_keeps_unknown_strength_and_is_inclusive() {
        let c = ScanConfig {
            rssi_floor: Some(-70),
        };
        assert!(c.admits(None));
        assert!(c.admits(Some(-70)));
        assert!(!c.admits(Some(-71)));
        assert!(ScanConfig { rssi_floor: None }.admits(Some(-127)));
        assert_eq!(ScanConfig::default().rssi_floor, Some(-90));
    }
}
