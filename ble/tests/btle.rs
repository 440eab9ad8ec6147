//! The btleplug scanner without a D-Bus system bus: a typed `Unavailable`, never a panic.
//!
//! The check runs in a child process (this test binary, re-run) whose `DBUS_SYSTEM_BUS_ADDRESS`
//! points at a socket that does not exist, so it holds on any machine, with or without BlueZ.

#![cfg(feature = "btleplug")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::process::Command;

use tether_ble::btle::BtleScanner;
use tether_ble::{BleError, ScanConfig};

const CHILD: &str = "TETHER_BLE_TEST_NO_DBUS_CHILD";

#[test]
fn scanner_without_a_system_bus_is_unavailable() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "no_dbus_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/tether-test/system_bus_socket",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("result: unavailable: Bluetooth unavailable: no Bluetooth service"),
        "{stdout}"
    );
}

/// Runs only as the child of the test above.
#[test]
fn no_dbus_child() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(BtleScanner::new(ScanConfig::default()));
    match result {
        Err(e @ BleError::Unavailable(_)) => println!("result: unavailable: {e}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
