//! A simulated BLE medium: the same 20-byte adverts as the air carries, without a radio.
//!
//! A [`SimMedium`] is shared by advertisers (a simulated phone) and scanners (the device agent):
//!
//! * [`SimMedium::in_process`]: everything in one process (tests, the one-process demo).
//! * [`SimMedium::at_dir`]: processes on one machine meet in a directory. Each scanner binds a
//!   Unix datagram socket `<pid>-<n>-<nanos>.sock` there; each advertiser sends every frame to
//!   every `*.sock` in the directory, and deletes sockets nobody listens on any more (left behind
//!   by a scanner that crashed). Unreadable or foreign datagrams are ignored.
//!
//! Like a real phone, an advertiser repeats its advert (every [`DEFAULT_INTERVAL`] unless set
//! with [`SimMedium::with_interval`]) until the [`Advertisement`] handle is dropped, so a scanner
//! that starts late still hears it, and a scanner that falls behind loses repetitions (its
//! queue holds [`SCANNER_QUEUE`] adverts), not the medium. The first transmission happens inside
//! [`SimMedium::advertise`], so every scanner that existed before the call has the advert queued
//! when it returns.
//!
//! # Datagram format (cross-process)
//!
//! 30 bytes: the magic `TBLE`, version `1`, the 16-bit service UUID (big-endian), an RSSI
//! presence byte (`0` or `1`), the RSSI in dBm (`i16`, big-endian; zero when absent), then the
//! 20 bytes of service data. Datagrams of another length, magic or version, or with a service
//! UUID other than `0xFFF9` / `0xFDE2`, are dropped.

use std::path::Path;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::{Advert, AdvertSource, BleError, SERVICE_DATA_LEN, ScanConfig, ServiceUuid};

/// How often an advertiser repeats its advert by default (phones use 20 ms to 100 ms).
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

/// How many received adverts a scanner holds before further repetitions are dropped.
pub const SCANNER_QUEUE: usize = 64;

const MAGIC: &[u8; 4] = b"TBLE";
const VERSION: u8 = 1;
const FRAME_LEN: usize = 10 + SERVICE_DATA_LEN;

type Registry = Arc<Mutex<Vec<mpsc::Sender<Advert>>>>;

#[derive(Clone)]
enum Kind {
    InProcess(Registry),
    #[cfg(unix)]
    Dir(Arc<PathBuf>),
}

/// A simulated BLE medium shared by advertisers and scanners. Clones share the medium. See the
/// [module docs](self).
#[derive(Clone)]
pub struct SimMedium {
    kind: Kind,
    interval: Duration,
}

impl core::fmt::Debug for SimMedium {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut d = f.debug_struct("SimMedium");
        match &self.kind {
            Kind::InProcess(_) => d.field("kind", &"in-process"),
            #[cfg(unix)]
            Kind::Dir(dir) => d.field("dir", dir),
        };
        d.field("interval", &self.interval).finish()
    }
}

impl SimMedium {
    /// A medium inside this process.
    pub fn in_process() -> Self {
        Self {
            kind: Kind::InProcess(Arc::new(Mutex::new(Vec::new()))),
            interval: DEFAULT_INTERVAL,
        }
    }

    /// A medium shared by the processes that use the same directory (created, mode 0700, if
    /// missing). Needs Unix datagram sockets; elsewhere it answers [`BleError::Unavailable`].
    pub fn at_dir(dir: &Path) -> Result<Self, BleError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            Ok(Self {
                kind: Kind::Dir(Arc::new(dir.to_path_buf())),
                interval: DEFAULT_INTERVAL,
            })
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Err(BleError::Unavailable(
                "the cross-process simulated medium needs Unix sockets".into(),
            ))
        }
    }

    /// The same medium, with advertisements started from this handle repeating every
    /// `interval` (at least 1 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Starts listening. The scanner hears every advert sent on the medium from now on that
    /// passes `config`.
    pub fn scanner(&self, config: ScanConfig) -> Result<SimScanner, BleError> {
        let inner = match &self.kind {
            Kind::InProcess(registry) => {
                let (tx, rx) = mpsc::channel(SCANNER_QUEUE);
                registry
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(tx);
                ScannerKind::InProcess(rx)
            }
            #[cfg(unix)]
            Kind::Dir(dir) => ScannerKind::Dir(dir::Listener::bind(dir)?),
        };
        Ok(SimScanner { inner, config })
    }

    /// Starts advertising `advert`: it is sent now and then repeated until the returned handle
    /// is dropped.
    pub fn advertise(&self, advert: Advert) -> Result<Advertisement, BleError> {
        let transmitter = match &self.kind {
            Kind::InProcess(registry) => Transmitter::InProcess(Arc::clone(registry)),
            #[cfg(unix)]
            Kind::Dir(dir) => Transmitter::Dir(dir::Sender::new(dir)?),
        };
        transmitter.send(&advert);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let interval = self.interval;
        let thread = std::thread::Builder::new()
            .name("sim-ble-advertiser".into())
            .spawn(move || {
                // Ends when the handle drops its end of the channel.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    transmitter.send(&advert);
                }
            })?;
        Ok(Advertisement {
            advert,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// A running advertisement; advertising stops when it is dropped (no transmission starts
/// after the drop returns).
pub struct Advertisement {
    advert: Advert,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Advertisement {
    /// The advert being broadcast.
    pub fn advert(&self) -> &Advert {
        &self.advert
    }
}

impl core::fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Advertisement")
            .field("advert", &self.advert)
            .finish_non_exhaustive()
    }
}

impl Drop for Advertisement {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread wakes at once when the channel closes; at most one send is in flight.
            let _ = thread.join();
        }
    }
}

enum Transmitter {
    InProcess(Registry),
    #[cfg(unix)]
    Dir(dir::Sender),
}

impl Transmitter {
    fn send(&self, advert: &Advert) {
        match self {
            Self::InProcess(registry) => {
                let mut scanners = registry.lock().unwrap_or_else(PoisonError::into_inner);
                // A full queue loses this repetition; a dropped scanner is forgotten.
                scanners.retain(|tx| {
                    !matches!(
                        tx.try_send(*advert),
                        Err(mpsc::error::TrySendError::Closed(_))
                    )
                });
            }
            #[cfg(unix)]
            Self::Dir(sender) => sender.send(&encode_frame(advert)),
        }
    }
}

/// A scanner on a [`SimMedium`]; an [`AdvertSource`].
pub struct SimScanner {
    inner: ScannerKind,
    config: ScanConfig,
}

enum ScannerKind {
    InProcess(mpsc::Receiver<Advert>),
    #[cfg(unix)]
    Dir(dir::Listener),
}

impl core::fmt::Debug for SimScanner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let kind = match &self.inner {
            ScannerKind::InProcess(_) => "in-process",
            #[cfg(unix)]
            ScannerKind::Dir(_) => "directory",
        };
        f.debug_struct("SimScanner")
            .field("kind", &kind)
            .field("config", &self.config)
            .finish()
    }
}

#[async_trait::async_trait]
impl AdvertSource for SimScanner {
    async fn next_advert(&mut self) -> Result<Advert, BleError> {
        loop {
            let advert = match &mut self.inner {
                ScannerKind::InProcess(rx) => rx.recv().await.ok_or(BleError::Closed)?,
                #[cfg(unix)]
                ScannerKind::Dir(listener) => listener.recv().await?,
            };
            if self.config.admits(advert.rssi) {
                return Ok(advert);
            }
            tracing::trace!(rssi = ?advert.rssi, "simulated advert below the RSSI floor");
        }
    }
}

fn encode_frame(advert: &Advert) -> [u8; FRAME_LEN] {
    let mut frame = [0u8; FRAME_LEN];
    frame[..4].copy_from_slice(MAGIC);
    frame[4] = VERSION;
    frame[5..7].copy_from_slice(&advert.service.uuid16().to_be_bytes());
    if let Some(rssi) = advert.rssi {
        frame[7] = 1;
        frame[8..10].copy_from_slice(&rssi.to_be_bytes());
    }
    frame[10..].copy_from_slice(&advert.data);
    frame
}

fn decode_frame(frame: &[u8]) -> Option<Advert> {
    let frame: &[u8; FRAME_LEN] = frame.try_into().ok()?;
    if &frame[..4] != MAGIC || frame[4] != VERSION {
        return None;
    }
    let service = ServiceUuid::from_uuid16(u16::from_be_bytes([frame[5], frame[6]]))?;
    let rssi = match frame[7] {
        0 => None,
        1 => Some(i16::from_be_bytes([frame[8], frame[9]])),
        _ => return None,
    };
    let mut data = [0u8; SERVICE_DATA_LEN];
    data.copy_from_slice(&frame[10..]);
    Some(Advert {
        service,
        data,
        rssi,
    })
}

#[cfg(unix)]
mod dir {
    //! The cross-process medium: a directory of Unix datagram sockets.

    use std::io::ErrorKind;
    use std::os::unix::net::UnixDatagram;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::{FRAME_LEN, decode_frame};
    use crate::{Advert, BleError};

    static NEXT_SCANNER: AtomicU64 = AtomicU64::new(0);

    /// An advertiser's unbound socket and the directory it sends into.
    pub(super) struct Sender {
        socket: UnixDatagram,
        dir: PathBuf,
    }

    impl Sender {
        pub(super) fn new(dir: &Path) -> Result<Self, BleError> {
            let socket = UnixDatagram::unbound()?;
            // A scanner whose queue is full loses the datagram instead of blocking us.
            socket.set_nonblocking(true)?;
            Ok(Self {
                socket,
                dir: dir.to_path_buf(),
            })
        }

        pub(super) fn send(&self, frame: &[u8]) {
            let Ok(entries) = std::fs::read_dir(&self.dir) else {
                return;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|ext| ext != "sock") {
                    continue;
                }
                match self.socket.send_to(frame, &path) {
                    Ok(_) => {}
                    // Nobody is bound to it: its scanner exited without cleaning up.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        tracing::debug!(path = %path.display(), "removing a stale scanner socket");
                        let _ = std::fs::remove_file(&path);
                    }
                    // Full queue, or the scanner just left: a lost packet, as on air.
                    Err(_) => {}
                }
            }
        }
    }

    /// A scanner's bound socket; removed from the directory on drop.
    pub(super) struct Listener {
        std_socket: Option<UnixDatagram>,
        socket: Option<tokio::net::UnixDatagram>,
        path: PathBuf,
    }

    impl Listener {
        pub(super) fn bind(dir: &Path) -> Result<Self, BleError> {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let n = NEXT_SCANNER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!("{}-{n}-{nanos}.sock", std::process::id()));
            let socket = UnixDatagram::bind(&path)?;
            socket.set_nonblocking(true)?;
            Ok(Self {
                std_socket: Some(socket),
                socket: None,
                path,
            })
        }

        pub(super) async fn recv(&mut self) -> Result<Advert, BleError> {
            if self.socket.is_none() {
                // Registered with the reactor on first use, so that `scanner()` needs no
                // runtime.
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(BleError::Unavailable(
                        "the simulated medium needs a Tokio runtime".into(),
                    ));
                }
                if let Some(socket) = self.std_socket.take() {
                    self.socket = Some(tokio::net::UnixDatagram::from_std(socket)?);
                }
            }
            let Some(socket) = &self.socket else {
                return Err(BleError::Closed);
            };
            // Larger than a frame, so that longer datagrams are seen as wrong, not truncated.
            let mut buf = [0u8; FRAME_LEN + 1];
            loop {
                let n = socket.recv(&mut buf).await?;
                match buf.get(..n).and_then(decode_frame) {
                    Some(advert) => return Ok(advert),
                    None => tracing::trace!(len = n, "ignoring a foreign datagram"),
                }
            }
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_reject_damage() {
        let advert = Advert {
            service: ServiceUuid::Google,
            data: [7; SERVICE_DATA_LEN],
            rssi: Some(-61),
        };
        let frame = encode_frame(&advert);
        assert_eq!(&frame[..10], b"TBLE\x01\xfd\xe2\x01\xff\xc3");
        assert_eq!(decode_frame(&frame), Some(advert));
        let none = Advert {
            rssi: None,
            ..advert
        };
        assert_eq!(decode_frame(&encode_frame(&none)), Some(none));
        assert_eq!(decode_frame(&frame[..FRAME_LEN - 1]), None);
        let mut bad = frame;
        bad[5..7].copy_from_slice(&0x180Fu16.to_be_bytes());
        assert_eq!(decode_frame(&bad), None);
        let mut bad = frame;
        bad[4] = 2;
        assert_eq!(decode_frame(&bad), None);
        let mut bad = frame;
        bad[7] = 2;
        assert_eq!(decode_frame(&bad), None);
        assert_eq!(decode_frame(&[]), None);
    }
}
