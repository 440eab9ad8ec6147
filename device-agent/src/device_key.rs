//! The device's long-lived P-256 key and its identity file.
//!
//! A device creates one key pair the first time it runs and keeps it for life: the bridge stores
//! only the public key, bound to the device id when a companion confirms the pairing code, and
//! from then on every call carries a short-lived token signed with this key
//! ([`crate::bridge_client`]). Whoever holds the private key *is* the device, so it lives in one
//! file that only its owner can read.
//!
//! # The identity file
//!
//! `device.json` ([`IDENTITY_FILE`]) in the agent's state directory, JSON:
//!
//! ```text
//! {"version":1,
//!  "privateKey":"<32-byte P-256 scalar, base64url without padding>",
//!  "publicKey":"<65-byte uncompressed point, base64url>",      (checked against the key)
//!  "bridgeUrl":"https://bridge.example.com",                   (once paired)
//!  "deviceId":"dev_…",                                         (once paired)
//!  "audience":"https://bridge.example.com"}                    (optional: the bridge's
//!                                                                public_url when it differs)
//! ```
//!
//! - The file is created with mode `0600` by the `open` call itself (never `chmod` afterwards, so
//!   there is no moment when it is readable by others), in a directory created with mode `0700`.
//! - Loading refuses a file that group or others can read or write, and anything that is not a
//!   regular file, with an error that names the path and the fix.
//! - Every write is atomic: a new file (`0600`) is written beside the old one, synced, renamed
//!   over it, and the directory is synced. A crash leaves the old file or the new one, never a
//!   torn one.
//! - Key bytes are zeroized after use and never printed: [`DeviceKey`] and [`DeviceIdentity`]
//!   print the public key's fingerprint only, and parse errors report a line and column, never
//!   the content.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use p256::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The identity file's name inside the state directory.
pub const IDENTITY_FILE: &str = "device.json";
/// The identity file format written by this version.
pub const IDENTITY_VERSION: u32 = 1;
/// Largest identity file read, in bytes (a real one is under 400).
const MAX_IDENTITY_FILE_LEN: u64 = 16 * 1024;

/// Why the device key or identity file could not be created, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceKeyError {
    /// A file system call failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The identity file can be read or written by group or others.
    #[error(
        "{} is accessible by other users (mode {mode:03o}); it holds the device's private key: \
         run `chmod 600 {}` if the file is yours, otherwise pair the device again",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The identity path is a directory, socket, device or other non-regular file.
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// An identity file already exists where a new one was to be created.
    #[error("{} already exists", path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a valid identity file. The reason never quotes the file's content.
    #[error("{} is not a valid device identity file: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer agent.
    #[error("{} has identity format version {version}; this agent reads version 1", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its version.
        version: u32,
    },
    /// Key bytes are not a valid P-256 private key.
    #[error("not a valid P-256 private key")]
    InvalidKey,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Randomness,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DeviceKeyError + '_ {
    move |source| DeviceKeyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The device's P-256 private key. Zeroized on drop; prints only its public fingerprint.
#[derive(Clone)]
pub struct DeviceKey {
    secret: SecretKey,
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("fingerprint", &self.fingerprint())
            .field("private", &"[redacted]")
            .finish()
    }
}

impl DeviceKey {
    /// A new random key from the operating system's generator.
    ///
    /// # Errors
    ///
    /// [`DeviceKeyError::Randomness`] if the generator fails.
    pub fn generate() -> Result<Self, DeviceKeyError> {
        SecretKey::try_generate()
            .map(|secret| Self { secret })
            .map_err(|_| DeviceKeyError::Randomness)
    }

    /// The key with the 32-byte big-endian scalar `bytes`.
    ///
    /// # Errors
    ///
    /// [`DeviceKeyError::InvalidKey`] unless `bytes` is 32 bytes encoding a scalar in `1..n`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DeviceKeyError> {
        // `from_slice` would left-pad a shorter slice: insist on exactly 32 bytes.
        if bytes.len() != 32 {
            return Err(DeviceKeyError::InvalidKey);
        }
        SecretKey::from_slice(bytes)
            .map(|secret| Self { secret })
            .map_err(|_| DeviceKeyError::InvalidKey)
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.secret.public_key()
    }

    /// The public key as a 65-byte uncompressed SEC1 point (`04 || x || y`).
    pub fn public_key_sec1(&self) -> [u8; 65] {
        let point = self.public_key().to_sec1_point(false);
        let mut out = [0u8; 65];
        // An uncompressed encoding of a non-identity point is always 65 bytes.
        if point.as_bytes().len() == 65 {
            out.copy_from_slice(point.as_bytes());
        }
        out
    }

    /// The public key as `startPairing` takes it: base64url (no padding) of the SEC1 point.
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key_sec1())
    }

    /// A short, stable fingerprint of the public key for logs and display: the first 8 bytes
    /// of SHA-256 over the SEC1 point, in hex.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.public_key_sec1());
        hex::encode(&digest[..8])
    }

    /// The ECDSA signing key.
    pub(crate) fn signing_key(&self) -> SigningKey {
        SigningKey::from(&self.secret)
    }

    fn secret_base64url(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.secret.to_bytes());
        let mut out = Zeroizing::new(String::with_capacity(64));
        URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut out);
        out
    }
}

/// Where a paired device belongs: written once a companion has confirmed the pairing code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairedBridge {
    /// The bridge's base URL, e.g. `https://bridge.example.com`.
    pub bridge_url: String,
    /// The device id the bridge assigned (the `kid` of the device's tokens).
    pub device_id: String,
    /// The bridge's `public_url` (the tokens' audience) when it differs from `bridge_url`.
    pub audience: Option<String>,
}

/// The device key and, once paired, its bridge and device id.
#[derive(Clone, Debug)]
pub struct DeviceIdentity {
    /// The device key.
    pub key: DeviceKey,
    /// The bridge this device is paired with, if any.
    pub paired: Option<PairedBridge>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileOut<'a> {
    version: u32,
    private_key: &'a str,
    public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    bridge_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileIn {
    private_key: SecretText,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    bridge_url: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    audience: Option<String>,
}

/// A string from the file that is zeroized on drop.
struct SecretText(Zeroizing<String>);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| Self(Zeroizing::new(text)))
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

impl DeviceIdentity {
    /// An unpaired identity with a fresh key (not yet saved).
    ///
    /// # Errors
    ///
    /// [`DeviceKeyError::Randomness`].
    pub fn generate() -> Result<Self, DeviceKeyError> {
        Ok(Self {
            key: DeviceKey::generate()?,
            paired: None,
        })
    }

    /// The identity file's path in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(IDENTITY_FILE)
    }

    /// Loads the identity from `state_dir`, or `None` if there is no identity file yet.
    ///
    /// # Errors
    ///
    /// [`DeviceKeyError::InsecurePermissions`] when group or others can access the file,
    /// [`DeviceKeyError::NotAFile`], [`DeviceKeyError::Malformed`],
    /// [`DeviceKeyError::UnsupportedVersion`], or [`DeviceKeyError::Io`].
    pub fn load(state_dir: &Path) -> Result<Option<Self>, DeviceKeyError> {
        let path = Self::path(state_dir);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        // Check the opened file itself (fstat), not the path, so the file cannot be swapped
        // between the check and the read.
        let meta = file.metadata().map_err(io_error(&path))?;
        if !meta.is_file() {
            return Err(DeviceKeyError::NotAFile { path });
        }
        check_private_mode(&path, &meta)?;
        if meta.len() > MAX_IDENTITY_FILE_LEN {
            return Err(malformed(&path, "file too large"));
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(1024));
        file.take(MAX_IDENTITY_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error(&path))?;
        Self::parse(&path, &bytes).map(Some)
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, DeviceKeyError> {
        let json_error = |e: serde_json::Error| {
            malformed(
                path,
                &format!(
                    "{:?} error at line {}, column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        };
        let version: VersionOnly = serde_json::from_slice(bytes).map_err(json_error)?;
        if version.version != IDENTITY_VERSION {
            return Err(DeviceKeyError::UnsupportedVersion {
                path: path.to_owned(),
                version: version.version,
            });
        }
        let file: FileIn = serde_json::from_slice(bytes).map_err(json_error)?;
        let scalar = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(file.private_key.0.as_bytes())
                .map_err(|_| malformed(path, "privateKey is not base64url"))?,
        );
        let key = DeviceKey::from_bytes(&scalar)
            .map_err(|_| malformed(path, "privateKey is not a P-256 private key"))?;
        if let Some(public) = &file.public_key
            && *public != key.public_key_base64url()
        {
            return Err(malformed(path, "publicKey does not match privateKey"));
        }
        let paired = match (file.bridge_url, file.device_id) {
            (Some(bridge_url), Some(device_id)) => Some(PairedBridge {
                bridge_url,
                device_id,
                audience: file.audience,
            }),
            (None, None) => None,
            _ => {
                return Err(malformed(
                    path,
                    "bridgeUrl and deviceId must both be present or both absent",
                ));
            }
        };
        Ok(Self { key, paired })
    }

    /// Loads the identity from `state_dir`, creating the directory (mode `0700`) and a new
    /// unpaired identity (mode `0600`) if there is none.
    ///
    /// # Errors
    ///
    /// As [`DeviceIdentity::load`] and [`DeviceIdentity::create`].
    pub fn load_or_create(state_dir: &Path) -> Result<Self, DeviceKeyError> {
        if let Some(identity) = Self::load(state_dir)? {
            return Ok(identity);
        }
        match Self::create(state_dir) {
            // Another process created it between our load and create: use theirs.
            Err(DeviceKeyError::AlreadyExists { .. }) => {
                Self::load(state_dir)?.ok_or_else(|| DeviceKeyError::Io {
                    path: Self::path(state_dir),
                    source: io::Error::from(io::ErrorKind::NotFound),
                })
            }
            other => other,
        }
    }

    /// Creates a new unpaired identity in `state_dir` (created with mode `0700` if missing).
    /// Never replaces an existing file.
    ///
    /// # Errors
    ///
    /// [`DeviceKeyError::AlreadyExists`], [`DeviceKeyError::Randomness`] or
    /// [`DeviceKeyError::Io`].
    pub fn create(state_dir: &Path) -> Result<Self, DeviceKeyError> {
        create_private_dir(state_dir)?;
        let identity = Self::generate()?;
        let path = Self::path(state_dir);
        let contents = identity.to_json();
        let mut file = private_file_options()
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => {
                    DeviceKeyError::AlreadyExists { path: path.clone() }
                }
                _ => io_error(&path)(e),
            })?;
        let written = file
            .write_all(&contents)
            .and_then(|()| file.sync_all())
            .map_err(io_error(&path));
        if let Err(e) = written {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        sync_dir(state_dir)?;
        Ok(identity)
    }

    /// Writes the identity to `state_dir` atomically (new file, sync, rename, sync directory),
    /// replacing any existing identity file.
    ///
    /// # Errors
    ///
    /// [`DeviceKeyError::Io`] or [`DeviceKeyError::Randomness`].
    pub fn save(&self, state_dir: &Path) -> Result<(), DeviceKeyError> {
        create_private_dir(state_dir)?;
        let path = Self::path(state_dir);
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|_| DeviceKeyError::Randomness)?;
        let temp = state_dir.join(format!(".{IDENTITY_FILE}.{}.tmp", hex::encode(suffix)));
        let contents = self.to_json();
        let result = (|| {
            let mut file = private_file_options()
                .open(&temp)
                .map_err(io_error(&temp))?;
            file.write_all(&contents).map_err(io_error(&temp))?;
            file.sync_all().map_err(io_error(&temp))?;
            drop(file);
            fs::rename(&temp, &path).map_err(io_error(&path))?;
            sync_dir(state_dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }

    /// Records the bridge this device is now paired with (in memory; call
    /// [`DeviceIdentity::save`] to keep it).
    pub fn set_paired(&mut self, paired: PairedBridge) {
        self.paired = Some(paired);
    }

    fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let private_key = self.key.secret_base64url();
        let out = FileOut {
            version: IDENTITY_VERSION,
            private_key: &private_key,
            public_key: self.key.public_key_base64url(),
            bridge_url: self.paired.as_ref().map(|p| p.bridge_url.as_str()),
            device_id: self.paired.as_ref().map(|p| p.device_id.as_str()),
            audience: self.paired.as_ref().and_then(|p| p.audience.as_deref()),
        };
        // Reserve enough up front that the buffer never reallocates (a reallocation would leave
        // an unzeroized copy of the key behind).
        let mut bytes = Zeroizing::new(Vec::with_capacity(4096));
        // Serializing plain strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer_pretty(&mut *bytes, &out);
        bytes.push(b'\n');
        bytes
    }
}

fn malformed(path: &Path, reason: &str) -> DeviceKeyError {
    DeviceKeyError::Malformed {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(unix)]
fn private_file_options() -> OpenOptions {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    options
}

#[cfg(not(unix))]
fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    options
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), DeviceKeyError> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), DeviceKeyError> {
    fs::create_dir_all(dir).map_err(io_error(dir))
}

#[cfg(unix)]
fn check_private_mode(path: &Path, meta: &fs::Metadata) -> Result<(), DeviceKeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(DeviceKeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path, _meta: &fs::Metadata) -> Result<(), DeviceKeyError> {
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), DeviceKeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), DeviceKeyError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn create_load_save_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(DeviceIdentity::load(&state).unwrap().is_none());
        let created = DeviceIdentity::load_or_create(&state).unwrap();
        assert!(created.paired.is_none());
        #[cfg(unix)]
        {
            assert_eq!(mode_of(&DeviceIdentity::path(&state)), 0o600);
            assert_eq!(mode_of(&state), 0o700);
        }
        let loaded = DeviceIdentity::load_or_create(&state).unwrap();
        assert_eq!(
            loaded.key.public_key_sec1(),
            created.key.public_key_sec1(),
            "the second run must reuse the key"
        );

        let mut paired = loaded.clone();
        paired.set_paired(PairedBridge {
            bridge_url: "https://bridge.example.com".into(),
            device_id: "dev_123".into(),
            audience: None,
        });
        paired.save(&state).unwrap();
        #[cfg(unix)]
        assert_eq!(mode_of(&DeviceIdentity::path(&state)), 0o600);
        let reloaded = DeviceIdentity::load(&state).unwrap().unwrap();
        assert_eq!(reloaded.paired, paired.paired);
        assert_eq!(
            reloaded.key.public_key_sec1(),
            created.key.public_key_sec1()
        );
        // Only the identity file is left: no temporary files.
        let names: Vec<_> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(IDENTITY_FILE)]);
        assert!(matches!(
            DeviceIdentity::create(&state),
            Err(DeviceKeyError::AlreadyExists { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_file_others_can_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        DeviceIdentity::create(dir.path()).unwrap();
        let path = DeviceIdentity::path(dir.path());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = DeviceIdentity::load(dir.path()).unwrap_err();
        assert!(
            matches!(err, DeviceKeyError::InsecurePermissions { mode: 0o640, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("chmod 600"), "{text}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        assert!(matches!(
            DeviceIdentity::load(dir.path()),
            Err(DeviceKeyError::InsecurePermissions { mode: 0o604, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(DeviceIdentity::load(dir.path()).unwrap().is_some());
    }

    #[cfg(unix)]
    #[test]
    fn malformed_files_never_echo_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = DeviceIdentity::path(dir.path());
        let write = |text: &str| {
            let _ = fs::remove_file(&path);
            let mut f = private_file_options().open(&path).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        // 20 bytes: not a P-256 scalar.
        let secret = "bm90LWEta2V5LXR3ZW50eS1iISE";
        write(&format!(r#"{{"version":1,"privateKey":"{secret}"}}"#));
        let err = DeviceIdentity::load(dir.path()).unwrap_err();
        assert!(matches!(err, DeviceKeyError::Malformed { .. }), "{err:?}");
        assert!(!err.to_string().contains(secret));
        write(&format!(
            r#"{{"version":1,"privateKey":{{"k":"{secret}"}}}}"#
        ));
        let err = DeviceIdentity::load(dir.path()).unwrap_err();
        assert!(!err.to_string().contains(secret), "{err}");
        write(r#"{"version":2,"privateKey":"x"}"#);
        assert!(matches!(
            DeviceIdentity::load(dir.path()),
            Err(DeviceKeyError::UnsupportedVersion { version: 2, .. })
        ));
        let key = DeviceKey::generate().unwrap();
        write(&format!(
            r#"{{"version":1,"privateKey":"{}","deviceId":"dev_1"}}"#,
            &*key.secret_base64url()
        ));
        assert!(matches!(
            DeviceIdentity::load(dir.path()),
            Err(DeviceKeyError::Malformed { .. })
        ));
        let other = DeviceKey::generate().unwrap();
        write(&format!(
            r#"{{"version":1,"privateKey":"{}","publicKey":"{}"}}"#,
            &*key.secret_base64url(),
            other.public_key_base64url()
        ));
        let err = DeviceIdentity::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        assert!(matches!(
            DeviceIdentity::load(dir.path()),
            Err(DeviceKeyError::NotAFile { .. })
        ));
    }

    #[test]
    fn debug_never_prints_the_private_key() {
        let key = DeviceKey::from_bytes(&[7u8; 32]).unwrap();
        let identity = DeviceIdentity {
            key: key.clone(),
            paired: None,
        };
        let secret = key.secret_base64url();
        for text in [format!("{key:?}"), format!("{identity:?}")] {
            assert!(!text.contains(secret.as_str()), "{text}");
            assert!(!text.contains(&hex::encode([7u8; 32])), "{text}");
            assert!(text.contains(&key.fingerprint()), "{text}");
        }
        assert!(matches!(
            DeviceKey::from_bytes(&[0u8; 32]),
            Err(DeviceKeyError::InvalidKey)
        ));
        assert!(matches!(
            DeviceKey::from_bytes(&[1u8; 31]),
            Err(DeviceKeyError::InvalidKey)
        ));
    }
}
