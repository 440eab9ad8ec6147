//! The simulated medium, in one process and across processes (the test binary re-runs itself as
//! the other program): delivery, late scanners, the RSSI floor, foreign datagrams, stale sockets
//! and advertising that stops when its handle is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_ble::sim::SimMedium;
use tether_ble::{Advert, AdvertSource, BleError, SERVICE_DATA_LEN, ScanConfig, ServiceUuid};
use tokio::time::timeout;

const CHILD_ROLE: &str = "TETHER_BLE_TEST_CHILD_ROLE";
const CHILD_DIR: &str = "TETHER_BLE_TEST_CHILD_DIR";
/// Generous bound for things that happen at once; only failing tests wait this long.
const SOON: Duration = Duration::from_secs(10);

fn advert(byte: u8, rssi: Option<i16>) -> Advert {
    Advert {
        service: ServiceUuid::Fido,
        data: [byte; SERVICE_DATA_LEN],
        rssi,
    }
}

fn no_floor() -> ScanConfig {
    ScanConfig { rssi_floor: None }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("tether-ble-{}-{nanos}", std::process::id()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn socket_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sock"))
        .collect();
    files.sort();
    files
}

async fn next(scanner: &mut impl AdvertSource) -> Advert {
    timeout(SOON, scanner.next_advert())
        .await
        .expect("an advert in time")
        .expect("an advert")
}

/// Takes everything already queued (until `quiet` passes without an advert); returns how many
/// adverts that was.
async fn drain(scanner: &mut impl AdvertSource, quiet: Duration) -> usize {
    let mut n = 0;
    while let Ok(result) = timeout(quiet, scanner.next_advert()).await {
        result.unwrap();
        n += 1;
    }
    n
}

#[tokio::test]
async fn in_process_scanners_hear_every_advert() {
    let medium = SimMedium::in_process();
    let mut a = medium.scanner(no_floor()).unwrap();
    let mut b = medium.scanner(no_floor()).unwrap();
    let sent = advert(1, Some(-40));
    let _ad = medium.advertise(sent).unwrap();
    assert_eq!(next(&mut a).await, sent);
    assert_eq!(next(&mut b).await, sent);
    // It repeats.
    assert_eq!(next(&mut a).await, sent);
}

#[tokio::test]
async fn a_late_scanner_hears_a_repeating_advert() {
    let medium = SimMedium::in_process().with_interval(Duration::from_millis(5));
    let sent = Advert {
        service: ServiceUuid::Google,
        ..advert(2, None)
    };
    let _ad = medium.advertise(sent).unwrap();
    let mut late = medium.scanner(no_floor()).unwrap();
    assert_eq!(next(&mut late).await, sent);
}

#[tokio::test]
async fn the_rssi_floor_drops_weak_adverts_only() {
    let medium = SimMedium::in_process().with_interval(Duration::from_millis(2));
    let mut scanner = medium
        .scanner(ScanConfig {
            rssi_floor: Some(-70),
        })
        .unwrap();
    let weak = medium.advertise(advert(3, Some(-71))).unwrap();
    let edge = medium.advertise(advert(4, Some(-70))).unwrap();
    let unknown = medium.advertise(advert(5, None)).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let got = next(&mut scanner).await;
        assert_ne!(got.data[0], 3, "an advert below the floor came through");
        seen.insert(got.data[0]);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![4, 5]);
    drop((weak, edge, unknown));
}

#[tokio::test]
async fn advertising_stops_when_the_handle_is_dropped() {
    let medium = SimMedium::in_process().with_interval(Duration::from_millis(2));
    let mut scanner = medium.scanner(no_floor()).unwrap();
    let ad = medium.advertise(advert(6, None)).unwrap();
    assert_eq!(ad.advert().data, [6; SERVICE_DATA_LEN]);
    next(&mut scanner).await;
    next(&mut scanner).await;
    drop(ad);
    drain(&mut scanner, Duration::ZERO).await;
    // Nothing transmits after the drop returned: 50 intervals pass in silence.
    let after = timeout(Duration::from_millis(100), scanner.next_advert()).await;
    assert!(after.is_err(), "advert after drop: {after:?}");
}

#[tokio::test]
async fn a_scanner_is_closed_when_the_medium_is_gone() {
    let medium = SimMedium::in_process();
    let mut scanner = medium.scanner(no_floor()).unwrap();
    drop(medium);
    let got = timeout(SOON, scanner.next_advert()).await.unwrap();
    assert!(matches!(got, Err(BleError::Closed)), "{got:?}");
}

#[tokio::test]
async fn a_slow_scanner_loses_repetitions_not_the_medium() {
    let medium = SimMedium::in_process().with_interval(Duration::from_secs(3600));
    let mut slow = medium.scanner(no_floor()).unwrap();
    let mut fast = medium.scanner(no_floor()).unwrap();
    // Each advertisement transmits once inside `advertise`; nobody reads meanwhile.
    for byte in 0..100u8 {
        drop(medium.advertise(advert(byte, None)).unwrap());
        // The fast scanner keeps up.
        assert_eq!(next(&mut fast).await.data[0], byte);
    }
    let mut kept = Vec::new();
    while let Ok(got) = timeout(Duration::ZERO, slow.next_advert()).await {
        kept.push(got.unwrap().data[0]);
    }
    let expected: Vec<u8> = (0..100u8).take(tether_ble::sim::SCANNER_QUEUE).collect();
    assert_eq!(kept, expected);
}

#[tokio::test]
async fn directory_medium_in_one_process() {
    let dir = TempDir::new();
    let medium = SimMedium::at_dir(&dir.0).unwrap();
    let mut scanner = medium.scanner(no_floor()).unwrap();
    assert_eq!(socket_files(&dir.0).len(), 1);
    let sent = advert(8, Some(-55));
    let ad = medium.advertise(sent).unwrap();
    assert_eq!(next(&mut scanner).await, sent);
    drop(ad);
    drop(scanner);
    assert!(
        socket_files(&dir.0).is_empty(),
        "scanner socket left behind"
    );
}

#[tokio::test]
async fn foreign_and_malformed_datagrams_are_ignored() {
    let dir = TempDir::new();
    let medium = SimMedium::at_dir(&dir.0).unwrap();
    let mut scanner = medium.scanner(no_floor()).unwrap();
    let target = socket_files(&dir.0).pop().unwrap();
    let raw = UnixDatagram::unbound().unwrap();
    let good = |uuid: u16, byte: u8| {
        let mut f = b"TBLE\x01".to_vec();
        f.extend_from_slice(&uuid.to_be_bytes());
        f.extend_from_slice(&[1, 0xff, 0xb0]); // RSSI -80
        f.extend_from_slice(&[byte; SERVICE_DATA_LEN]);
        f
    };
    let mut long = good(0xFFF9, 9);
    long.push(0);
    let mut short = good(0xFFF9, 9);
    short.pop();
    let mut magic = good(0xFFF9, 9);
    magic[0] = b'X';
    for junk in [good(0x180F, 9), long, short, magic, Vec::new()] {
        raw.send_to(&junk, &target).unwrap();
    }
    // A hand-made frame following the documented format is accepted.
    raw.send_to(&good(0xFDE2, 10), &target).unwrap();
    assert_eq!(
        next(&mut scanner).await,
        Advert {
            service: ServiceUuid::Google,
            data: [10; SERVICE_DATA_LEN],
            rssi: Some(-80),
        }
    );
    assert_eq!(drain(&mut scanner, Duration::from_millis(50)).await, 0);
}

#[tokio::test]
async fn stale_scanner_sockets_are_removed() {
    let dir = TempDir::new();
    let medium = SimMedium::at_dir(&dir.0).unwrap();
    // A socket file nobody listens on: what a crashed scanner leaves behind.
    let stale = dir.0.join("12345-0-0.sock");
    drop(UnixDatagram::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut live = medium.scanner(no_floor()).unwrap();
    let _ad = medium.advertise(advert(11, None)).unwrap();
    assert!(!stale.exists(), "stale socket kept");
    assert_eq!(next(&mut live).await.data[0], 11);
    assert_eq!(socket_files(&dir.0).len(), 1);
}

fn child(role: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_DIR, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads the child's stdout until a line containing `prefix` (the test harness may print its
/// own text first on the same line); returns the rest of the line.
fn read_line_with(out: &mut impl BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(out.read_line(&mut line).unwrap(), 0, "child ended early");
        if let Some(at) = line.find(prefix) {
            return line[at + prefix.len()..].trim_end().to_owned();
        }
    }
}

#[tokio::test]
async fn another_process_advertises_to_us() {
    let dir = TempDir::new();
    let medium = SimMedium::at_dir(&dir.0).unwrap();
    let mut scanner = medium
        .scanner(ScanConfig {
            rssi_floor: Some(-70),
        })
        .unwrap();
    let mut child = child("advertise", &dir.0);
    let got = next(&mut scanner).await;
    assert_eq!(
        got,
        Advert {
            service: ServiceUuid::Google,
            data: [0x42; SERVICE_DATA_LEN],
            rssi: Some(-60),
        }
    );
    // Closing its stdin stops the child; its advert stops with it.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    drain(&mut scanner, Duration::from_millis(50)).await;
    let after = timeout(Duration::from_millis(200), scanner.next_advert()).await;
    assert!(after.is_err(), "advert after the child exited: {after:?}");
}

#[tokio::test]
async fn another_process_hears_our_advert() {
    let dir = TempDir::new();
    let medium = SimMedium::at_dir(&dir.0).unwrap();
    let mut child = child("scan", &dir.0);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    read_line_with(&mut out, "ready");
    let _ad = medium
        .advertise(Advert {
            service: ServiceUuid::Fido,
            data: [0x17; SERVICE_DATA_LEN],
            rssi: None,
        })
        .unwrap();
    let heard = read_line_with(&mut out, "heard ");
    assert_eq!(heard, format!("fff9 {} none", "17".repeat(20)));
    assert!(child.wait().unwrap().success());
}

/// The other program of the cross-process tests; does nothing in a normal test run.
#[test]
fn child_process_role() {
    let (Ok(role), Ok(dir)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_DIR)) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let medium = SimMedium::at_dir(Path::new(&dir))
        .unwrap()
        .with_interval(Duration::from_millis(5));
    match role.as_str() {
        "advertise" => {
            let ad = medium
                .advertise(Advert {
                    service: ServiceUuid::Google,
                    data: [0x42; SERVICE_DATA_LEN],
                    rssi: Some(-60),
                })
                .unwrap();
            // Until the parent closes our stdin.
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
            drop(ad);
        }
        "scan" => {
            let mut scanner = medium.scanner(no_floor()).unwrap();
            println!("ready");
            std::io::stdout().flush().unwrap();
            let got = runtime.block_on(next(&mut scanner));
            let hex: String = got.data.iter().map(|b| format!("{b:02x}")).collect();
            let rssi = got.rssi.map_or("none".to_owned(), |r| r.to_string());
            println!("heard {:04x} {hex} {rssi}", got.service.uuid16());
        }
        other => panic!("unknown role {other}"),
    }
}
