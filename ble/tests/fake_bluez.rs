//! The production scanner ([`BtleScanner`]: btleplug → bluez-async → libdbus) against a fake
//! BlueZ on a private D-Bus bus: what it finds, what it ignores, and how it fails.
//!
//! Each test re-runs this binary for one case (test `child`), with `DBUS_SYSTEM_BUS_ADDRESS`
//! pointing at a `dbus-daemon` that the child starts, and `fake_bluez.py` serving `org.bluez`
//! on it (see `fake_bluez/harness.rs` and `docs/ble-testing.md`). Without `dbus-daemon` or
//! Python's `dbus`/`gi` modules the tests fail in CI and are skipped with a note elsewhere.

#![cfg(feature = "btleplug")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "fake_bluez/harness.rs"]
mod harness;

use harness::{Adapter, FakeBluez, SOON};
use tether_ble::btle::BtleScanner;
use tether_ble::{Advert, AdvertSource, BleError, SERVICE_DATA_LEN, ScanConfig, ServiceUuid};

/// The child entry point's test name.
const CHILD: &str = "child";

fn case(name: &str) {
    harness::run_child(CHILD, name);
}

#[test]
fn fido_advert_is_found_with_its_bytes_and_rssi() {
    case("fido_found");
}

#[test]
fn google_advert_is_found_with_its_bytes_and_rssi() {
    case("google_found");
}

#[test]
fn scans_without_a_service_filter() {
    case("discovery_filter");
}

#[test]
fn adverts_below_the_rssi_floor_are_ignored() {
    case("rssi_floor");
}

#[test]
fn wrong_lengths_and_other_uuids_are_ignored() {
    case("wrong_adverts");
}

#[test]
fn advert_changed_on_a_known_device_is_delivered() {
    case("properties_changed");
}

#[test]
fn adapter_reporting_nothing_gives_no_advert() {
    case("nothing");
}

#[test]
fn powered_off_adapter_is_unavailable() {
    case("powered_off");
}

#[test]
fn adapter_switched_off_while_scanning_is_unavailable() {
    case("switched_off");
}

#[test]
fn no_adapter_is_unavailable() {
    case("no_adapter");
}

#[test]
fn no_bluez_is_unavailable() {
    case("no_bluez");
}

#[test]
fn adapter_chosen_by_name() {
    case("by_name");
}

#[test]
fn dropping_the_scanner_stops_discovery() {
    case("drop_stops");
}

/// Runs only as a child of the tests above (the case is in its environment).
#[test]
fn child() {
    let Some(name) = harness::child_case() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match name.as_str() {
            "fido_found" => found("fff9", ServiceUuid::Fido, -52).await,
            "google_found" => found("fde2", ServiceUuid::Google, -77).await,
            "discovery_filter" => discovery_filter().await,
            "rssi_floor" => rssi_floor().await,
            "wrong_adverts" => wrong_adverts().await,
            "properties_changed" => properties_changed().await,
            "nothing" => nothing().await,
            "powered_off" => powered_off().await,
            "switched_off" => switched_off().await,
            "no_adapter" => no_adapter().await,
            "no_bluez" => no_bluez().await,
            "by_name" => by_name().await,
            "drop_stops" => drop_stops().await,
            other => panic!("unknown case {other}"),
        }
    });
    harness::passed(&name);
}

/// 20 distinct bytes.
fn data(seed: u8) -> [u8; SERVICE_DATA_LEN] {
    core::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
}

fn advert(service: ServiceUuid, seed: u8, rssi: Option<i16>) -> Advert {
    Advert {
        service,
        data: data(seed),
        rssi,
    }
}

/// A fake with a powered adapter and a scanner on it that is scanning.
async fn scanning(config: ScanConfig) -> (FakeBluez, BtleScanner) {
    let mut fake = FakeBluez::start(Adapter::PoweredOn).await;
    let scanner = BtleScanner::new(config).await.unwrap();
    fake.wait_call("StartDiscovery").await;
    (fake, scanner)
}

async fn next(scanner: &mut BtleScanner) -> Advert {
    tokio::time::timeout(SOON, scanner.next_advert())
        .await
        .expect("an advert in time")
        .unwrap()
}

async fn found(uuid: &str, service: ServiceUuid, rssi: i16) {
    let (mut fake, mut scanner) = scanning(ScanConfig::default()).await;
    fake.advert("5A:00:00:00:00:01", uuid, &data(1), Some(rssi))
        .await;
    assert_eq!(next(&mut scanner).await, advert(service, 1, Some(rssi)));
}

/// The scanner powers the adapter (a no-op here), asks for duplicates (a phone's advert may
/// repeat) and sets no UUID filter (BlueZ may drop service-data adverts with one).
async fn discovery_filter() {
    let mut fake = FakeBluez::start(Adapter::PoweredOn).await;
    let _scanner = BtleScanner::new(ScanConfig::default()).await.unwrap();
    assert_eq!(
        fake.calls().await,
        vec![
            "CALL SetPowered true".to_owned(),
            r#"CALL SetDiscoveryFilter {"DuplicateData": true, "Transport": "auto"}"#.to_owned(),
            "CALL StartDiscovery".to_owned(),
        ]
    );
}

/// Below the floor: dropped; at the floor: kept; unknown strength: kept. Every advert comes by
/// the same signal (InterfacesAdded, in order), so the first one out shows that the ones before
/// it were seen and dropped.
async fn rssi_floor() {
    let floor = -70;
    let (mut fake, mut scanner) = scanning(ScanConfig {
        rssi_floor: Some(floor),
    })
    .await;
    fake.advert("5A:00:00:00:00:01", "fff9", &data(1), Some(floor - 1))
        .await;
    fake.advert("5A:00:00:00:00:02", "fde2", &data(2), Some(-127))
        .await;
    fake.advert("5A:00:00:00:00:03", "fff9", &data(3), Some(floor))
        .await;
    assert_eq!(
        next(&mut scanner).await,
        advert(ServiceUuid::Fido, 3, Some(floor))
    );
    fake.advert("5A:00:00:00:00:04", "fff9", &data(4), None)
        .await;
    assert_eq!(next(&mut scanner).await, advert(ServiceUuid::Fido, 4, None));
    // A known device moving away and back (PropertiesChanged, in order).
    fake.advert("5A:00:00:00:00:03", "fff9", &data(5), Some(-90))
        .await;
    fake.advert("5A:00:00:00:00:03", "fff9", &data(6), Some(-60))
        .await;
    assert_eq!(
        next(&mut scanner).await,
        advert(ServiceUuid::Fido, 6, Some(-60))
    );
}

async fn wrong_adverts() {
    let (mut fake, mut scanner) = scanning(ScanConfig::default()).await;
    let d = data(7);
    fake.advert("5A:00:00:00:00:01", "fff9", &d[..19], Some(-50))
        .await;
    fake.advert(
        "5A:00:00:00:00:02",
        "fff9",
        &[d.as_slice(), &[0]].concat(),
        Some(-50),
    )
    .await;
    fake.advert("5A:00:00:00:00:03", "fde2", &[], Some(-50))
        .await;
    fake.advert("5A:00:00:00:00:04", "180f", &d, Some(-50))
        .await;
    // 0xFFF9's bytes, but not in the Bluetooth base UUID.
    fake.advert(
        "5A:00:00:00:00:05",
        "0000fff9-0000-1000-8000-00805f9b34fc",
        &d,
        Some(-50),
    )
    .await;
    fake.command("device 5A:00:00:00:00:06 -50").await;
    fake.advert("5A:00:00:00:00:07", "fde2", &data(8), Some(-51))
        .await;
    assert_eq!(
        next(&mut scanner).await,
        advert(ServiceUuid::Google, 8, Some(-51))
    );
}

/// A device BlueZ already knows (with an earlier advert) is reported when scanning starts; its
/// next advert arrives as PropertiesChanged (RSSI and ServiceData) and is delivered too.
async fn properties_changed() {
    let mut fake = FakeBluez::start(Adapter::PoweredOn).await;
    fake.command(&format!(
        "cache 5A:00:00:00:00:01 fff9 {} -60",
        harness::hex(&data(1))
    ))
    .await;
    let mut scanner = BtleScanner::new(ScanConfig::default()).await.unwrap();
    fake.wait_call("StartDiscovery").await;
    assert_eq!(
        next(&mut scanner).await,
        advert(ServiceUuid::Fido, 1, Some(-60))
    );
    // The phone's next advert (a new session, or the same one under 0xFDE2), from nearer.
    fake.advert("5A:00:00:00:00:01", "fde2", &data(2), Some(-45))
        .await;
    assert_eq!(
        next(&mut scanner).await,
        advert(ServiceUuid::Google, 2, Some(-45))
    );
    // The same bytes again (BlueZ repeats them: the scanner asked for duplicates).
    fake.advert("5A:00:00:00:00:01", "fde2", &data(2), Some(-46))
        .await;
    assert_eq!(
        next(&mut scanner).await,
        advert(ServiceUuid::Google, 2, Some(-46))
    );
}

/// Devices without service data come and go; no advert ever comes out. (The agent's deadline
/// turns this into "phone not found nearby".)
async fn nothing() {
    let (mut fake, mut scanner) = scanning(ScanConfig::default()).await;
    fake.command("device 5A:00:00:00:00:01 -40").await;
    fake.command("device 5A:00:00:00:00:01 -41").await;
    fake.command("remove 5A:00:00:00:00:01").await;
    let waited =
        tokio::time::timeout(std::time::Duration::from_millis(500), scanner.next_advert()).await;
    assert!(waited.is_err(), "expected no advert, got {waited:?}");
}

fn assert_unavailable(result: Result<BtleScanner, BleError>, expected: &str) {
    match result {
        Err(e @ BleError::Unavailable(_)) => assert_eq!(e.to_string(), expected),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// The scanner does not switch the user's Bluetooth on: it reports it off, and never scans.
async fn powered_off() {
    let mut fake = FakeBluez::start(Adapter::PoweredOff).await;
    assert_unavailable(
        BtleScanner::new(ScanConfig::default()).await,
        "Bluetooth unavailable: the Bluetooth adapter is off",
    );
    assert_eq!(fake.calls().await, Vec::<String>::new());
}

async fn switched_off() {
    let (mut fake, mut scanner) = scanning(ScanConfig::default()).await;
    fake.command("power off").await;
    let result = tokio::time::timeout(SOON, scanner.next_advert())
        .await
        .expect("an answer in time");
    match result {
        Err(e @ BleError::Unavailable(_)) => assert_eq!(
            e.to_string(),
            "Bluetooth unavailable: the Bluetooth adapter is off"
        ),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

async fn no_adapter() {
    let _fake = FakeBluez::start(Adapter::None).await;
    assert_unavailable(
        BtleScanner::new(ScanConfig::default()).await,
        "Bluetooth unavailable: no Bluetooth adapter",
    );
}

async fn no_bluez() {
    let _bus = FakeBluez::start(Adapter::NoBluez).await;
    match BtleScanner::new(ScanConfig::default()).await {
        Err(e @ BleError::Unavailable(_)) => {
            let text = e.to_string();
            assert!(
                text.starts_with("Bluetooth unavailable: cannot list Bluetooth adapters: ")
                    && text.contains("org.bluez"),
                "{text}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

async fn by_name() {
    let mut fake = FakeBluez::start(Adapter::PoweredOn).await;
    assert_unavailable(
        BtleScanner::with_adapter(ScanConfig::default(), "hci1").await,
        "Bluetooth unavailable: no Bluetooth adapter named hci1",
    );
    let mut scanner = BtleScanner::with_adapter(ScanConfig::default(), "hci0")
        .await
        .unwrap();
    fake.wait_call("StartDiscovery").await;
    fake.advert("5A:00:00:00:00:01", "fff9", &data(3), Some(-30))
        .await;
    assert_eq!(
        next(&mut scanner).await,
        advert(ServiceUuid::Fido, 3, Some(-30))
    );
}

async fn drop_stops() {
    let (mut fake, scanner) = scanning(ScanConfig::default()).await;
    drop(scanner);
    fake.wait_call("StopDiscovery").await;
    // Discovery is off again: a new scanner can start it.
    let _scanner = BtleScanner::new(ScanConfig::default()).await.unwrap();
    fake.wait_call("StartDiscovery").await;
}
