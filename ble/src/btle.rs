//! The real scanner: the host's Bluetooth stack through `btleplug` (feature `btleplug`).
//!
//! [`BtleScanner`] takes the central role on the first adapter (or one chosen by name), scans
//! *without* a service filter (BlueZ may drop service-data adverts when a UUID filter is set)
//! and keeps service data under `0xFFF9` / `0xFDE2` that is exactly 20 bytes long. Service data
//! arrives in `CentralEvent::ServiceDataAdvertisement`; a device seen for the first time arrives
//! as `DeviceDiscovered`, whose properties already carry its service data. The signal strength
//! checked against [`ScanConfig::rssi_floor`] is the one measured with the advert: the stack
//! reports it (`RssiUpdate`) just before the service data of the same advertising report when it
//! changed, so the scanner keeps the last one per device; only a device whose strength it has not
//! seen yet is asked for its properties. (Asking every time would judge an advert by whatever the
//! device reported last, possibly a later and stronger report: a far advert would pass.)
//!
//! Without a D-Bus system bus, BlueZ or an adapter (CI machines, containers) the constructors
//! return [`BleError::Unavailable`]; they never panic. Scanning stops when the scanner is dropped.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;

use btleplug::api::bleuuid::BleUuid;
use btleplug::api::{Central, CentralEvent, CentralState, Manager as _, Peripheral, ScanFilter};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures_util::{Stream, StreamExt};

use crate::{Advert, AdvertSource, BleError, SERVICE_DATA_LEN, ScanConfig, ServiceUuid};

type Events = Pin<Box<dyn Stream<Item = CentralEvent> + Send>>;

/// How many devices' signal strengths are remembered; past that the memory starts afresh
/// (phones change their random address often, so old entries are useless).
const RSSI_MEMORY: usize = 1024;

/// A BLE scanner on the host's Bluetooth adapter; an [`AdvertSource`].
pub struct BtleScanner {
    adapter: Adapter,
    events: Events,
    config: ScanConfig,
    pending: VecDeque<Advert>,
    /// The last signal strength the stack reported for each device.
    rssi: HashMap<PeripheralId, i16>,
}

impl core::fmt::Debug for BtleScanner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BtleScanner")
            .field("config", &self.config)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl BtleScanner {
    /// Starts scanning on the first Bluetooth adapter.
    pub async fn new(config: ScanConfig) -> Result<Self, BleError> {
        Self::open(config, None).await
    }

    /// Starts scanning on the adapter whose name (for example `hci1` on Linux) starts
    /// `adapter_info` of the stack.
    pub async fn with_adapter(config: ScanConfig, name: &str) -> Result<Self, BleError> {
        Self::open(config, Some(name)).await
    }

    async fn open(config: ScanConfig, name: Option<&str>) -> Result<Self, BleError> {
        let manager = Manager::new()
            .await
            .map_err(|e| BleError::Unavailable(format!("no Bluetooth service: {e}")))?;
        let adapters = manager
            .adapters()
            .await
            .map_err(|e| BleError::Unavailable(format!("cannot list Bluetooth adapters: {e}")))?;
        let adapter = match name {
            None => adapters.into_iter().next(),
            Some(name) => {
                let mut found = None;
                for adapter in adapters {
                    let info = adapter.adapter_info().await.unwrap_or_default();
                    if info.starts_with(name) {
                        found = Some(adapter);
                        break;
                    }
                }
                found
            }
        };
        let adapter = adapter.ok_or_else(|| match name {
            None => BleError::Unavailable("no Bluetooth adapter".into()),
            Some(name) => BleError::Unavailable(format!("no Bluetooth adapter named {name}")),
        })?;
        if let Ok(CentralState::PoweredOff) = adapter.adapter_state().await {
            return Err(BleError::Unavailable("the Bluetooth adapter is off".into()));
        }
        // Subscribe before scanning so that no advert falls between the two.
        let events = adapter
            .events()
            .await
            .map_err(|e| BleError::Bluetooth(e.to_string()))?;
        adapter
            .start_scan(ScanFilter::default())
            .await
            .map_err(|e| BleError::Unavailable(format!("cannot start scanning: {e}")))?;
        Ok(Self {
            adapter,
            events,
            config,
            pending: VecDeque::new(),
            rssi: HashMap::new(),
        })
    }

    fn remember_rssi(&mut self, id: PeripheralId, rssi: i16) {
        if self.rssi.len() >= RSSI_MEMORY && !self.rssi.contains_key(&id) {
            self.rssi.clear();
        }
        self.rssi.insert(id, rssi);
    }

    fn accept(&mut self, service: ServiceUuid, data: [u8; SERVICE_DATA_LEN], rssi: Option<i16>) {
        if self.config.admits(rssi) {
            self.pending.push_back(Advert {
                service,
                data,
                rssi,
            });
        } else {
            tracing::trace!(?rssi, "advert below the RSSI floor");
        }
    }
}

#[async_trait::async_trait]
impl AdvertSource for BtleScanner {
    async fn next_advert(&mut self) -> Result<Advert, BleError> {
        loop {
            if let Some(advert) = self.pending.pop_front() {
                return Ok(advert);
            }
            let event = self.events.next().await.ok_or(BleError::Closed)?;
            let (id, found) = match event {
                CentralEvent::ServiceDataAdvertisement { id, service_data } => {
                    let found: Vec<_> = service_data
                        .iter()
                        .filter_map(|(uuid, data)| hybrid_service_data(uuid, data))
                        .collect();
                    (id, found)
                }
                CentralEvent::DeviceDiscovered(id) => {
                    let Ok(peripheral) = self.adapter.peripheral(&id).await else {
                        continue;
                    };
                    let Ok(Some(props)) = peripheral.properties().await else {
                        continue;
                    };
                    if let Some(rssi) = props.rssi {
                        self.remember_rssi(id, rssi);
                    }
                    let found: Vec<_> = props
                        .service_data
                        .iter()
                        .filter_map(|(uuid, data)| hybrid_service_data(uuid, data))
                        .collect();
                    for (service, data) in found {
                        self.accept(service, data, props.rssi);
                    }
                    continue;
                }
                CentralEvent::RssiUpdate { id, rssi } => {
                    self.remember_rssi(id, rssi);
                    continue;
                }
                CentralEvent::StateUpdate(CentralState::PoweredOff) => {
                    return Err(BleError::Unavailable("the Bluetooth adapter is off".into()));
                }
                _ => continue,
            };
            if found.is_empty() {
                continue;
            }
            let rssi = match self.rssi.get(&id) {
                Some(&rssi) => Some(rssi),
                None => rssi(&self.adapter, &id).await,
            };
            for (service, data) in found {
                self.accept(service, data, rssi);
            }
        }
    }
}

impl Drop for BtleScanner {
    fn drop(&mut self) {
        // Stopping is asynchronous; without a runtime the stack stops it when we disconnect.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let adapter = self.adapter.clone();
            handle.spawn(async move {
                let _ = adapter.stop_scan().await;
            });
        }
    }
}

/// The last signal strength the stack measured for a peripheral.
async fn rssi(adapter: &Adapter, id: &PeripheralId) -> Option<i16> {
    let peripheral = adapter.peripheral(id).await.ok()?;
    peripheral.properties().await.ok()??.rssi
}

/// The hybrid advert in one service-data entry: a hybrid service UUID and exactly 20 bytes.
fn hybrid_service_data(
    uuid: &impl BleUuid,
    data: &[u8],
) -> Option<(ServiceUuid, [u8; SERVICE_DATA_LEN])> {
    let service = ServiceUuid::from_uuid16(uuid.to_ble_u16()?)?;
    Some((service, data.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use btleplug::api::bleuuid::uuid_from_u16;

    use super::*;

    #[test]
    fn only_hybrid_uuids_with_twenty_bytes() {
        let data = [3u8; 20];
        assert_eq!(
            hybrid_service_data(&uuid_from_u16(0xFFF9), &data),
            Some((ServiceUuid::Fido, data))
        );
        assert_eq!(
            hybrid_service_data(&uuid_from_u16(0xFDE2), &data),
            Some((ServiceUuid::Google, data))
        );
        assert_eq!(hybrid_service_data(&uuid_from_u16(0x180F), &data), None);
        assert_eq!(
            hybrid_service_data(&uuid_from_u16(0xFFF9), &data[..19]),
            None
        );
        assert_eq!(
            hybrid_service_data(&uuid_from_u16(0xFFF9), &[3u8; 21]),
            None
        );
    }
}
