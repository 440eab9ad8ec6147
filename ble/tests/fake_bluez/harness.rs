//! Test harness for the fake BlueZ: a private `dbus-daemon` and `fake_bluez.py` on it.
//!
//! Shared by `ble/tests/fake_bluez.rs` and `device-agent/tests/fake_bluez_session.rs` (through
//! `#[path]`). A test runs in two processes:
//!
//! * the **parent** (the `#[test]` cargo runs) checks that `dbus-daemon` and Python's `dbus` and
//!   `gi` modules are there ([`require_tools`]: a failure naming what to install when `CI` is
//!   set, a skip with a note otherwise) and re-runs its own test binary for one case with
//!   [`run_child`], exporting `DBUS_SYSTEM_BUS_ADDRESS` to that child only;
//! * the **child** ([`child_case`] says which case it is) starts the daemon on that address and
//!   the fake service on it ([`FakeBluez::start`]), runs the real scanner, which finds the
//!   "system bus" through the variable, and steers the fake through its control channel (lines on
//!   its standard input; replies and reports of the scanner's calls on its standard output).
//!
//! No other test in either binary sees the variable, and nothing here touches the host's buses.

#![allow(dead_code, clippy::print_stderr)]

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use tokio::sync::mpsc;

/// The fake service. Both test crates sit next to `ble/` in the workspace.
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../ble/tests/fake_bluez/fake_bluez.py"
);

const CASE_ENV: &str = "TETHER_FAKE_BLUEZ_CASE";
const DIR_ENV: &str = "TETHER_FAKE_BLUEZ_DIR";
const PYTHON_ENV: &str = "TETHER_FAKE_BLUEZ_PYTHON";
const DAEMON_ENV: &str = "TETHER_FAKE_BLUEZ_DAEMON";
const SOCKET: &str = "system_bus_socket";
/// What a passing child prints last, so that the parent knows the case really ran.
const PASSED: &str = "fake-bluez case passed:";
/// Generous bound for things that happen at once; only a failing test waits this long.
pub(crate) const SOON: Duration = Duration::from_secs(10);

/// What to install when the tools are missing (Debian package names).
pub(crate) const INSTALL: &str = "apt-get install -y dbus-daemon python3-dbus python3-gi";

/// The programs a fake-BlueZ test runs.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// `dbus-daemon`.
    pub(crate) daemon: PathBuf,
    /// A Python 3 that can `import dbus` and `gi.repository.GLib`.
    pub(crate) python: PathBuf,
}

/// Finds `dbus-daemon` and a Python 3 with dbus-python and PyGObject, or says what is missing.
///
/// `TETHER_DBUS_DAEMON` and `TETHER_FAKE_BLUEZ_PYTHON` override the search. Python is tried as
/// `/usr/bin/python3` first (where Debian's `python3-dbus` installs), then `python3` on `PATH`.
pub(crate) fn find_tools() -> Result<Tools, String> {
    let mut missing = Vec::new();
    let daemon = std::env::var_os("TETHER_DBUS_DAEMON")
        .map(PathBuf::from)
        .or_else(|| on_path("dbus-daemon"))
        .filter(|d| runs(Command::new(d).arg("--version")));
    if daemon.is_none() {
        missing.push("dbus-daemon".to_owned());
    }
    let candidates: Vec<PathBuf> = match std::env::var_os(PYTHON_ENV) {
        Some(python) => vec![PathBuf::from(python)],
        None => ["/usr/bin/python3"]
            .iter()
            .map(PathBuf::from)
            .chain(on_path("python3"))
            .collect(),
    };
    let python = candidates.into_iter().find(|p| {
        runs(Command::new(p).args([
            "-c",
            "import dbus, dbus.service, dbus.mainloop.glib; from gi.repository import GLib",
        ]))
    });
    if python.is_none() {
        missing.push("Python 3 with the dbus and gi modules".to_owned());
    }
    match (daemon, python) {
        (Some(daemon), Some(python)) => Ok(Tools { daemon, python }),
        _ => Err(format!(
            "the fake BlueZ needs {} (Debian: {INSTALL})",
            missing.join(" and ")
        )),
    }
}

/// The tools, or `None` after a printed note when they are missing outside CI. In CI (`CI` set
/// and not `false`/`0`) a missing tool fails the test with what to install.
pub(crate) fn require_tools(test: &str) -> Option<Tools> {
    match find_tools() {
        Ok(tools) => Some(tools),
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(!ci, "{test}: {why}");
            eprintln!("note: skipping {test}: {why}");
            None
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn runs(command: &mut Command) -> bool {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Parent side: runs `case` in a child (this test binary again, only its test `child_test`),
/// with the private bus's address as `DBUS_SYSTEM_BUS_ADDRESS`, and asserts that it passed.
/// Returns the child's standard output. Skips (see [`require_tools`]) without the tools.
pub(crate) fn run_child(child_test: &str, case: &str) -> Option<String> {
    let tools = require_tools(case)?;
    let dir = tempfile::Builder::new()
        .prefix("fake-bluez")
        .tempdir()
        .unwrap();
    let address = format!("unix:path={}", dir.path().join(SOCKET).display());
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .env(CASE_ENV, case)
        .env(DIR_ENV, dir.path())
        .env(PYTHON_ENV, &tools.python)
        .env(DAEMON_ENV, &tools.daemon)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("{PASSED} {case}\n")),
        "case {case} failed ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    Some(stdout)
}

/// Child side: the case to run, or `None` when this is not a child (the test then does nothing).
pub(crate) fn child_case() -> Option<String> {
    std::env::var(CASE_ENV).ok()
}

/// Child side: marks the case as passed (the parent looks for this line).
pub(crate) fn passed(case: &str) {
    // Standard output is what the parent reads; the test harness does not capture it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{PASSED} {case}").unwrap();
    out.flush().unwrap();
}

/// How the fake adapter starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Adapter {
    /// `hci0`, powered.
    PoweredOn,
    /// `hci0`, powered off (and powering it on works).
    PoweredOff,
    /// BlueZ runs but has no adapter.
    None,
    /// Nobody owns `org.bluez` on the bus (BlueZ is not running).
    NoBluez,
}

/// A line the fake printed.
#[derive(Debug)]
enum Line {
    Text(String),
    Closed,
}

/// The private bus and the fake BlueZ on it (child side). Both processes end on drop.
#[derive(Debug)]
pub(crate) struct FakeBluez {
    daemon: Child,
    fake: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Line>,
    /// Call reports (`CALL …`) read while waiting for something else, oldest first.
    calls: VecDeque<String>,
}

impl FakeBluez {
    /// Starts the daemon on the address of `DBUS_SYSTEM_BUS_ADDRESS` (set by [`run_child`]) and
    /// the fake on it, and returns once the fake owns `org.bluez` (or, for
    /// [`Adapter::NoBluez`], once the daemon listens).
    pub(crate) async fn start(adapter: Adapter) -> Self {
        let dir = PathBuf::from(env_os(DIR_ENV));
        let config = dir.join("bus.conf");
        std::fs::write(&config, bus_config(&dir.join(SOCKET))).unwrap();
        let mut daemon = Command::new(env_os(DAEMON_ENV))
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // The daemon prints its address once it listens.
        let mut address = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_owned();
        assert!(
            address.starts_with("unix:path="),
            "dbus-daemon did not start: {address:?}"
        );
        let (tx, lines) = mpsc::unbounded_channel();
        let mut this = Self {
            daemon,
            fake: None,
            stdin: None,
            lines,
            calls: VecDeque::new(),
        };
        let option = match adapter {
            Adapter::NoBluez => return this,
            Adapter::PoweredOn => None,
            Adapter::PoweredOff => Some("--powered-off"),
            Adapter::None => Some("--no-adapter"),
        };
        let mut fake = Command::new(env_os(PYTHON_ENV));
        fake.arg(SCRIPT)
            .arg("--bus")
            .arg(&address)
            .args(option)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut fake = fake.spawn().unwrap();
        this.stdin = fake.stdin.take();
        let stdout = BufReader::new(fake.stdout.take().unwrap());
        this.fake = Some(fake);
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(Line::Text(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Line::Closed);
        });
        // READY comes before any reply or report.
        let first = this.next_line().await;
        assert_eq!(first, "READY", "the fake BlueZ did not start");
        this
    }

    async fn next_line(&mut self) -> String {
        match tokio::time::timeout(SOON, self.lines.recv()).await {
            Ok(Some(Line::Text(line))) => line,
            Ok(Some(Line::Closed) | None) => panic!("the fake BlueZ exited"),
            Err(_) => panic!("the fake BlueZ said nothing for {SOON:?}"),
        }
    }

    /// Sends one control command and waits for its `OK` (panics on `ERR`).
    pub(crate) async fn command(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("a fake BlueZ to command");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        loop {
            let line = self.next_line().await;
            if line == "OK" {
                return;
            }
            if line.starts_with("CALL ") {
                self.calls.push_back(line);
                continue;
            }
            panic!("fake BlueZ refused {command:?}: {line}");
        }
    }

    /// A new device (or a known one) advertising `data` under `uuid` (`"fff9"`, `"fde2"`, or a
    /// 128-bit UUID) with signal strength `rssi`.
    pub(crate) async fn advert(&mut self, mac: &str, uuid: &str, data: &[u8], rssi: Option<i16>) {
        let rssi = rssi.map_or_else(|| "-".to_owned(), |r| r.to_string());
        let data = if data.is_empty() {
            "-".to_owned()
        } else {
            hex(data)
        };
        self.command(&format!("advert {mac} {uuid} {data} {rssi}"))
            .await;
    }

    /// Waits for the scanner's call `name` (`StartDiscovery`, `SetDiscoveryFilter`, …) and
    /// returns its report's arguments (the text after the name).
    pub(crate) async fn wait_call(&mut self, name: &str) -> String {
        let prefix = format!("CALL {name}");
        loop {
            if let Some(i) = self.calls.iter().position(|c| is_call(c, &prefix)) {
                let call = self.calls.remove(i).unwrap();
                return call[prefix.len()..].trim_start().to_owned();
            }
            let line = self.next_line().await;
            assert!(line.starts_with("CALL "), "unexpected line {line:?}");
            self.calls.push_back(line);
        }
    }

    /// Every call reported so far and not yet taken by [`Self::wait_call`], oldest first (a
    /// `ping` first makes sure that every call the scanner completed is in).
    pub(crate) async fn calls(&mut self) -> Vec<String> {
        self.command("ping").await;
        self.calls.drain(..).collect()
    }
}

fn is_call(line: &str, prefix: &str) -> bool {
    line.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

impl Drop for FakeBluez {
    fn drop(&mut self) {
        // Closing standard input ends the fake; then the daemon.
        drop(self.stdin.take());
        if let Some(mut fake) = self.fake.take() {
            let _ = fake.kill();
            let _ = fake.wait();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// A bus that lets anyone connect (on a socket in a private directory), the fake own
/// `org.bluez`, and everyone talk to everyone.
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="org.bluez"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

fn env_os(name: &str) -> OsString {
    std::env::var_os(name).unwrap_or_else(|| panic!("{name} is set by run_child"))
}

/// Lower-case hex.
pub(crate) fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}
